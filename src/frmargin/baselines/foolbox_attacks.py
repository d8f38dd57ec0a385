"""The minimal-L2 attacks of foolbox: DeepFool, FMN started from DeepFool (with foolbox 3.3.4's
L2 projection corrected and step sizes relative to each input's DeepFool distance), and the
better of the two per input. Each runner takes (fmodel, model, x, y, opts) on correctly
classified inputs and returns candidate points (B, *S); ``min_l2_attack`` verifies them.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ..errors import FrmarginError
from .common import Model, adversarial, kd, norms, shrink

__all__ = ["foolbox_model", "require_foolbox", "run_best", "run_deepfool", "run_fmn"]


def run_deepfool(fmodel: Any, model: Model, x: torch.Tensor, y: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
    return _deepfool_points(fmodel, model, x, y, opts)[1]


def run_fmn(fmodel: Any, model: Model, x: torch.Tensor, y: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
    return _fmn_from(fmodel, model, x, y, *_deepfool_points(fmodel, model, x, y, opts), opts)


def run_best(fmodel: Any, model: Model, x: torch.Tensor, y: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
    raw, start = _deepfool_points(fmodel, model, x, y, opts)
    out = _fmn_from(fmodel, model, x, y, raw, start, opts)
    d_start = torch.where(adversarial(model, start, y), norms(start - x), math.inf)
    d_out = torch.where(adversarial(model, out, y), norms(out - x), math.inf)
    return torch.where(kd(d_start < d_out, x.ndim), start, out)


def _deepfool_points(
    fmodel: Any, model: Model, x: torch.Tensor, y: torch.Tensor, opts: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw, refined): foolbox's DeepFool points (with overshoot) and their bisection refinement."""
    fb = require_foolbox()
    attack = fb.attacks.L2DeepFoolAttack(
        steps=opts["deepfool_steps"], candidates=opts["candidates"], overshoot=opts["overshoot"]
    )
    raw = attack.run(fmodel, x, fb.criteria.Misclassification(y))
    return raw, shrink(model, x, y, raw, opts)


def _fmn_from(
    fmodel: Any,
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    raw: torch.Tensor,
    refined: torch.Tensor,
    opts: dict[str, Any],
) -> torch.Tensor:
    """FMN started at the DeepFool points ``raw`` where they are adversarial, else from ``x``.

    Step sizes are relative to each input's refined DeepFool distance (to the box size for
    inputs started from ``x``). The refined points sit on the boundary to ~1e-6, so FMN starts
    from the overshooting ``raw`` ones and does its own bisection first.
    """
    fb = require_foolbox()
    lo, hi = opts["bounds"]
    kwargs = dict(
        steps=opts["fmn_steps"],
        max_stepsize=opts["fmn_max_stepsize"],
        min_stepsize=opts["fmn_min_stepsize"],
        gamma=opts["fmn_gamma"],
    )
    out = refined.clone()
    started = _adversarial_subset(model, raw, y)
    if len(started):
        i = started
        scale = norms(refined[i] - x[i]).clamp_min(torch.finfo(x.dtype).tiny)
        attack = _fixed_l2_fmn()(scale=scale, **kwargs)
        crit = fb.criteria.Misclassification(y[i])
        found = attack.run(fmodel, x[i], crit, starting_points=raw[i])
        out[i] = shrink(model, x[i], y[i], found, opts)
    rest = torch.ones(len(y), dtype=torch.bool, device=x.device)
    rest[started] = False
    if rest.any():
        i = rest.nonzero().squeeze(1)
        scale = torch.full((len(i),), hi - lo, dtype=x.dtype, device=x.device)
        attack = _fixed_l2_fmn()(scale=scale, **kwargs)
        found = attack.run(fmodel, x[i], fb.criteria.Misclassification(y[i]))
        out[i] = shrink(model, x[i], y[i], found, opts)
    return out


def _adversarial_subset(model: Model, points: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Indices whose points are adversarial when evaluated together, exactly as FMN will check
    them (it asserts that every starting point is adversarial; results can depend on batch size)."""
    idx = torch.arange(len(y), device=y.device)
    while len(idx):
        adv = adversarial(model, points[idx], y[idx])
        if adv.all():
            break
        idx = idx[adv]
    return idx


_FIXED_FMN: type | None = None


def _fixed_l2_fmn() -> type:
    """foolbox's L2FMNAttack with a working L2 projection and per-input step sizes."""
    global _FIXED_FMN
    if _FIXED_FMN is not None:
        return _FIXED_FMN
    fb = require_foolbox()
    import eagerpy as ep
    from foolbox.devutils import atleast_kd, flatten

    class FixedL2FMN(fb.attacks.L2FMNAttack):  # type: ignore[name-defined]
        def __init__(self, *, scale: torch.Tensor, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.scale = scale  # (B,) step size unit per input

        def normalize(self, gradients: Any) -> Any:  # unit L2 gradient times the per-input scale
            unit = super().normalize(gradients)
            return unit * atleast_kd(ep.astensor(self.scale), unit.ndim)

        def project(self, x: Any, x0: Any, epsilon: Any) -> Any:  # onto the L2 ball of radius epsilon around x0
            delta = x - x0
            lengths = ep.maximum(flatten(delta).norms.l2(axis=-1), 1e-12)
            factor = ep.minimum(1, epsilon / lengths)
            return x0 + delta * atleast_kd(factor, x.ndim)

    _FIXED_FMN = FixedL2FMN
    return FixedL2FMN


def foolbox_model(model: torch.nn.Module, bounds: tuple[float, float], device: torch.device) -> Any:
    return require_foolbox().PyTorchModel(model, bounds=bounds, device=device)


def require_foolbox() -> Any:
    """Import foolbox (the ``attacks`` extra), silencing its scipy deprecation warning."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="foolbox")
            warnings.filterwarnings("ignore", message=".*scipy.ndimage.filters.*")
            import foolbox
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise FrmarginError("the L2 baselines need foolbox: pip install 'frmargin[attacks]'") from err
    return foolbox
