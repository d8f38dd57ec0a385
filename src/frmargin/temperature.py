"""Temperature: the scale of the logits that Fisher-Rao margins depend on.

FR margins depend on the logit scale: with logits z / T every closed form is evaluated at
p(T) = softmax(z / T). This module holds everything about T: the check of a requested value
(``check_temperature``), the NLL-optimal T of temperature scaling (``fit_temperature``: the logits
are computed once, batched and without gradients, then a 1-D bounded minimization of the mean
negative log-likelihood over log T in float64), the held-out images it is fitted on
(``held_out_indices``), and the ``Temperature`` wrapper a run traces when T != 1, so that paths,
closed forms and baselines all see p(T).

Example:
    >>> model = Temperature(nn.Linear(4, 3), 2.0)
    >>> model(torch.ones(1, 4)).shape
    torch.Size([1, 3])
    >>> fit = fit_temperature(model, torch.randn(50, 4), torch.randint(0, 3, (50,)))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import bad_argument

__all__ = [
    "HELD_OUT_IMAGES",
    "LOG_T_BOUNDS",
    "Temperature",
    "TemperatureFit",
    "check_temperature",
    "fit_summary",
    "fit_temperature",
    "fit_temperature_logits",
    "held_out_indices",
    "mean_nll",
]

#: at most this many held-out images for ``--temperature auto``
HELD_OUT_IMAGES = 2000


#: the search interval of log T (T from 1e-3 to 1e3)
LOG_T_BOUNDS = (-3 * math.log(10), 3 * math.log(10))
LOGIT_BATCH = 256  # images per forward pass
XATOL = 1e-10  # tolerance of the minimizer on log T


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted temperature and the mean NLL of the images before (T = 1) and after."""

    temperature: float
    nll_before: float
    nll_after: float
    n_images: int

    def as_dict(self) -> dict:
        """JSON-friendly entries (for run.json)."""
        return {
            "temperature": self.temperature,
            "nll_before": self.nll_before,
            "nll_after": self.nll_after,
            "n_images": self.n_images,
        }


def mean_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` (B,) under softmax(logits (B, C) / T), float64."""
    z = logits.to(torch.float64) / temperature
    return float(torch.nn.functional.cross_entropy(z, labels.long(), reduction="mean"))


def fit_temperature_logits(logits: torch.Tensor, labels: torch.Tensor) -> TemperatureFit:
    """The NLL-optimal temperature of logits (B, C) with labels (B,).

    Example:
        >>> fit_temperature_logits(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])).temperature > 1
        True
    """
    from scipy.optimize import minimize_scalar

    if logits.ndim != 2 or logits.shape[0] == 0:
        raise bad_argument("x", f"logits of shape {tuple(logits.shape)}", "(B, C) logits of B >= 1 inputs")
    if labels.shape != (logits.shape[0],):
        raise bad_argument("y", f"shape {tuple(labels.shape)}", f"({logits.shape[0]},), one label per input")
    if not bool(torch.isfinite(logits).all()):
        raise bad_argument("model", "non-finite logits", "finite logits on every calibration input")
    z = logits.detach().to("cpu", torch.float64)
    y = labels.detach().to("cpu").long()
    result = minimize_scalar(
        lambda log_t: mean_nll(z, y, math.exp(log_t)),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": XATOL},
    )
    t = float(math.exp(result.x))
    return TemperatureFit(temperature=t, nll_before=mean_nll(z, y, 1.0), nll_after=mean_nll(z, y, t), n_images=len(y))


@torch.no_grad()
def model_logits(model: nn.Module, x: torch.Tensor, batch_size: int = LOGIT_BATCH) -> torch.Tensor:
    """Logits (B, C) of ``model`` at x (B, ...), batched, without gradients."""
    return torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def fit_temperature(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The temperature T > 0 minimizing the mean NLL of labels y (B,) under softmax(model(x) / T).

    Fit it on images not used for the measurement (``frmargin run --temperature auto`` uses test
    images outside the run's selection).

    Example:
        >>> model = torch.nn.Linear(3, 2)
        >>> t = fit_temperature(model, torch.randn(50, 3), torch.randint(0, 2, (50,)))
        >>> t > 0
        True
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise bad_argument("x, y", f"{type(x).__name__}, {type(y).__name__}", "tensors")
    if x.shape[0] != y.shape[0]:
        raise bad_argument("y", f"{y.shape[0]} labels", f"{x.shape[0]}, one per input")
    return fit_temperature_logits(model_logits(model, x), y).temperature


def fit_summary(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> TemperatureFit:
    """``fit_temperature`` with the NLL before and after (what run.json records)."""
    return fit_temperature_logits(model_logits(model, x), y)


def held_out_indices(n_dataset: int, selected: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Up to ``limit`` dataset indices not in ``selected``: a fixed subset drawn with ``seed``, sorted.

    Example:
        >>> held_out_indices(10, np.array([0, 1]), 3, 0).size
        3
    """
    pool = np.setdiff1d(np.arange(n_dataset), np.asarray(selected))
    rng = np.random.default_rng([seed, 7919])  # a stream of its own, independent of the selection's
    return np.sort(rng.permutation(pool)[:limit])


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
