"""What every minimal-L2 attack shares: the bisection that removes overshoot, the checks of a
candidate point (finite, inside the bounds, adversarial) and the clean prediction.

Shapes: B inputs, S the input shape of one sample, C classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import bad_argument

__all__ = ["Model", "PassCounter", "adversarial", "clean_check", "kd", "norms", "shrink", "verify"]

#: a classifier: (B, *S) -> logits (B, C)
Model = Callable[[torch.Tensor], torch.Tensor]


class PassCounter(torch.nn.Module):
    """The model, counting the rows it evaluates and the rows its logits are differentiated for.

    A backward pass through the logits of n rows counts n (a Jacobian of C rows by C backward
    passes counts C n). Backward passes inside torch.func transforms are not seen.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.forward_rows = 0
        self.backward_rows = 0
        self.train(net.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        self.forward_rows += x.shape[0]
        if out.requires_grad and not torch._C._are_functorch_transforms_active():
            out.register_hook(self._backward)
        return out

    def _backward(self, grad: torch.Tensor) -> None:
        self.backward_rows += grad.shape[0]

    def counts(self) -> torch.Tensor:
        """(2,) float64: rows evaluated, rows differentiated so far."""
        return torch.tensor([self.forward_rows, self.backward_rows], dtype=torch.float64)


def shrink(model: Model, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
    """Bisection on t in [0, 1] for the smallest adversarial x + t (x_adv - x), per input.

    Inputs whose ``x_adv`` is not adversarial come back unchanged (verification rejects them).
    """
    lo_b, hi_b = opts["bounds"]
    adv = adversarial(model, x_adv, y)
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    step = x_adv - x
    for _ in range(opts["refine_steps"]):
        mid = (lo + hi) / 2
        m_adv = adversarial(model, (x + kd(mid, x.ndim) * step).clamp(lo_b, hi_b), y)
        hi = torch.where(m_adv, mid, hi)
        lo = torch.where(m_adv, lo, mid)
    shrunk = (x + kd(hi, x.ndim) * step).clamp(lo_b, hi_b)
    keep = kd(~adv | (hi == 1), x.ndim)
    return torch.where(keep, x_adv, shrunk)


def verify(
    model: Model, x: torch.Tensor, y: torch.Tensor, cand: torch.Tensor, bounds: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cand, found): found[i] iff cand[i] is finite, inside the box and adversarial."""
    lo, hi = bounds
    flat = cand.flatten(1)
    inside = torch.isfinite(flat).all(1) & (flat >= lo).all(1) & (flat <= hi).all(1)
    safe = torch.where(kd(inside, cand.ndim), cand, x)
    return safe, inside & adversarial(model, safe, y)


@torch.no_grad()
def adversarial(model: Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1) != y


@torch.no_grad()
def clean_check(model: Model, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(B,) bool: clean prediction equals the label; checks the logits shape and label range."""
    correct = []
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start : start + batch_size])
        n = min(batch_size, x.shape[0] - start)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != n:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise bad_argument("model", f"output {got}", f"logits of shape ({n}, C)")
        C = logits.shape[1]
        if C < 2:
            raise bad_argument("model", f"{C} output classes", "C >= 2")
        yb = y[start : start + batch_size]
        if ((yb < 0) | (yb >= C)).any():
            raise bad_argument("y", yb.tolist()[:10], f"class indices in [0, {C})")
        if not torch.isfinite(logits).all():
            raise bad_argument("model", "non-finite logits on x", "finite logits")
        correct.append(logits.argmax(1) == yb)
    return torch.cat(correct)


def norms(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1)


def kd(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))
