"""``Temperature``: a classifier whose logits are divided by a temperature T.

FR margins depend on the logit scale: with logits z / T every closed form is evaluated at
p(T) = softmax(z / T). The experiment wraps the model in ``Temperature`` when T != 1, so that
paths, closed forms and baselines all see p(T).

Example:
    >>> model = Temperature(nn.Linear(4, 3), 2.0)
    >>> model(torch.ones(1, 4)).shape
    torch.Size([1, 3])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import bad_argument

__all__ = ["Temperature", "check_temperature"]


def check_temperature(value: object, name: str = "temperature") -> float:
    """``value`` as a float when it is a finite number > 0; else FrmarginError naming ``name``."""
    try:
        t = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise bad_argument(name, value, "a number > 0 or 'auto'") from None
    if isinstance(value, bool) or not (math.isfinite(t) and t > 0):
        raise bad_argument(name, value, "a finite number > 0 or 'auto'")
    return t


class Temperature(nn.Module):
    """``net(x) / T`` for logits (B, C); in eval mode, parameters of ``net`` untouched."""

    def __init__(self, net: nn.Module, temperature: float) -> None:
        super().__init__()
        self.net = net
        self.temperature = check_temperature(temperature)
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) / self.temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"
