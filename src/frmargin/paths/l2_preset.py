"""The ``l2`` accuracy preset: an L2 at the class change within about a percent, with a per-path
estimate of its error.

The tracer's L2 error is first order in the step size on ReLU networks: measured against the
exact flow (``frmargin.reference``), halving the steps halves it, while the FR length is
accurate at every step size. So each path is traced at ``L2_PRESET_SCALE`` of the step caps and
at twice them, and the relative difference of the two L2 distances estimates the finer trace's
error. Paths whose estimate exceeds ``L2_TARGET`` (or whose two traces hit different classes
first) are traced again at half the steps, compared with the previous trace, and so on down to
``L2_FINEST`` of the step caps. The result is the finest trace of each path, with the estimate
of its error in ``l2_error`` and the cost of all its traces in the counters. It is an estimate,
not a bound: the ``reference`` benchmark reports how often the true error exceeds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

import torch

from ..options import L2_PRESET_SCALE
from .options import ResolvedOptions

if TYPE_CHECKING:
    from .api import PathResult

__all__ = ["L2_FINEST", "L2_TARGET", "l2_estimate", "trace_l2"]

#: a path is traced again at half the steps while its estimated relative L2 error exceeds this
L2_TARGET = 0.01
#: ... down to this fraction of the step caps ``eta`` and ``logit_step``
L2_FINEST = 1 / 16
#: the cost counters of a path: the sum over all its traces
COUNTERS = ("jacobian_evals", "forward_evals", "matvecs")

Trace = Callable[[ResolvedOptions, "torch.Tensor | None", "Callable[[int], None] | None"], "PathResult"]


def l2_estimate(fine: PathResult, coarse: PathResult) -> torch.Tensor:
    """(P,) float64 |l2_fine - l2_coarse| / l2_fine where both traces ended ``ok`` at the same
    first hit, NaN elsewhere."""
    both = torch.tensor([a == b == "ok" for a, b in zip(fine.status, coarse.status)], device=fine.l2.device)
    both &= fine.success & coarse.success & (fine.first_hit == coarse.first_hit) & (fine.l2 > 0)
    l2_f, l2_c = fine.l2.double(), coarse.l2.double()
    rel = (l2_f - l2_c).abs() / l2_f.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(both, rel, torch.full_like(rel, float("nan")))


def trace_l2(trace: Trace, resolved: ResolvedOptions, total: int, progress: Callable[[int], None] | None) -> PathResult:
    """Every path traced at ``resolved`` (the preset's steps) and at ``resolved.coarser()``, then
    refined where needed (module docstring); ``trace(options, rows, progress)`` traces the paths
    ``rows`` (None: all)."""
    first, second = _halves(progress, total)
    coarse = trace(resolved.coarser(), None, first)
    fine = trace(resolved, None, second)
    result = replace(fine, l2_error=l2_estimate(fine, coarse), **_summed(fine, coarse))
    scale = L2_PRESET_SCALE
    while scale / 2 >= L2_FINEST * (1 - 1e-9):
        assert result.l2_error is not None
        ok = torch.tensor([st == "ok" for st in result.status], device=result.l2.device)
        rows = (ok & ~(result.l2_error <= L2_TARGET)).nonzero()[:, 0]
        if rows.numel() == 0:
            break
        resolved, scale = resolved.finer(), scale / 2
        before = _take(result, rows)
        finer = trace(resolved, rows, None)
        finer = replace(finer, l2_error=l2_estimate(finer, before), **_summed(finer, before))
        result = _put(result, rows, finer)
    return result


def _summed(a: PathResult, b: PathResult) -> dict[str, Any]:
    return {name: getattr(a, name) + getattr(b, name) for name in COUNTERS}


def _take(res: PathResult, rows: torch.Tensor) -> PathResult:
    """The paths ``rows`` of ``res``."""
    picked = rows.tolist()
    out: dict[str, Any] = {}
    for f in fields(res):
        value = getattr(res, f.name)
        if isinstance(value, torch.Tensor):
            out[f.name] = value[rows]
        elif isinstance(value, list):
            out[f.name] = [value[i] for i in picked]
    return replace(res, **out)


def _put(res: PathResult, rows: torch.Tensor, part: PathResult) -> PathResult:
    """``res`` with its paths ``rows`` replaced by ``part``'s."""
    picked = rows.tolist()
    out: dict[str, Any] = {}
    for f in fields(res):
        value, new = getattr(res, f.name), getattr(part, f.name)
        if isinstance(value, torch.Tensor):
            value = value.clone()
            value[rows] = new.to(value.dtype)
            out[f.name] = value
        elif isinstance(value, list):
            value = list(value)
            for i, item in zip(picked, new):
                value[i] = item
            out[f.name] = value
    return replace(res, **out)


def _halves(
    progress: Callable[[int], None] | None, total: int
) -> tuple[Callable[[int], None] | None, Callable[[int], None] | None]:
    """Progress callbacks of the first two traces: together they count ``total`` paths once."""
    if progress is None:
        return None, None
    report = progress
    return (lambda done: report(done // 2)), (lambda done: report((total + done) // 2))
