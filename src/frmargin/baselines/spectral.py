"""Minimal-L2 attacks along directions: the top eigenvector of the data-space Fisher (OSSA, Zhao et
al. 2019), two eigenvector steps (TSSA, as CurvNetAttack splits its budget), and a random direction.

Each finds the smallest budget that changes the class by the same search (``smallest_budget``):
budgets on a grid of ratio 2 below the box diameter (``line_levels`` of them, scanned upward, each
input stopping at its first adversarial budget), then ``refine_steps`` bisection steps between that
budget and the one below. Every point is clipped into ``bounds`` (the input range), so the L2
distance of a point is at most its budget and grows with it. A class change confined between two
grid budgets can be missed, as by any bisection.

- ``ossa``: x +- t v_1(x), both signs searched, the smaller distance kept.
- ``tssa``: budget t split 60% / 40%: x_1 = x + s_1 0.6 t v_1(x) with the sign s_1 that lowers the
  predicted class's probability more, then x_1 + s_2 0.4 t v_1(x_1) with v_1 computed at x_1 and
  s_2 aligning it with the first step (CurvNetAttack's rules); one Jacobian per budget tried.
- ``random``: x +- t r, r a Gaussian unit direction seeded by the input's bytes (so an image gets
  the same direction in any batch).

Shapes: B inputs, S the input shape of one sample, D = prod(S), C classes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Any

import torch

from ..spectrum import compute_spectrum
from .common import Model, adversarial, kd, norms

__all__ = [
    "SPECTRAL_ATTACKS",
    "TSSA_FIRST_SHARE",
    "run_ossa",
    "run_random",
    "run_tssa",
    "seeded_directions",
    "smallest_budget",
    "spectral_scores",
    "top_eigenvalue",
    "tssa_point",
]

#: the attacks along the top eigenvector: with one among a run's baselines, every attack's rows carry
#: the top eigenvalue at the image and at its adversarial point
SPECTRAL_ATTACKS = ("ossa", "tssa")

#: share of the budget TSSA spends on its first eigenvector step (CurvNetAttack: 0.6)
TSSA_FIRST_SHARE = 0.6

#: points (n, *S) at budgets t (n,) for the inputs ``idx`` (n,) of the batch
PointFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def run_ossa(fmodel: Any, model: Model, x: torch.Tensor, y: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
    v = compute_spectrum(model, x, 1, opts["top_classes"]).vectors[:, 0].to(x.dtype)
    return _two_sided(model, x, y, v, opts)


def run_random(fmodel: Any, model: Model, x: torch.Tensor, y: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
    return _two_sided(model, x, y, seeded_directions(x), opts)


def run_tssa(fmodel: Any, model: Model, x: torch.Tensor, y: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
    v1 = compute_spectrum(model, x, 1, opts["top_classes"]).vectors[:, 0].to(x.dtype)

    def point(idx: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return tssa_point(model, x[idx], y[idx], v1[idx], t, opts)

    return smallest_budget(model, x, y, point, opts)


def tssa_point(
    model: Model, x: torch.Tensor, y: torch.Tensor, v1: torch.Tensor, t: torch.Tensor, opts: dict[str, Any]
) -> torch.Tensor:
    """(B, *S) TSSA's point at budgets t (B,) from x with its top eigenvectors v1 (B, *S).

    x_1 = clip(x +- 0.6 t v1), the sign giving the lower probability of y; then
    clip(x_1 + s 0.4 t v_1(x_1)), s making the second step's direction agree with x_1 - x.
    """
    lo, hi = opts["bounds"]
    first = kd(TSSA_FIRST_SHARE * t, x.ndim) * v1
    plus, minus = (x + first).clamp(lo, hi), (x - first).clamp(lo, hi)
    with torch.no_grad():
        p_plus = torch.softmax(model(plus).to(torch.float64), -1).gather(1, y[:, None])[:, 0]
        p_minus = torch.softmax(model(minus).to(torch.float64), -1).gather(1, y[:, None])[:, 0]
    x1 = torch.where(kd(p_minus < p_plus, x.ndim), minus, plus)
    v2 = compute_spectrum(model, x1, 1, opts["top_classes"]).vectors[:, 0].to(x.dtype)
    align = torch.where(((x1 - x) * v2).flatten(1).sum(1) < 0, -1.0, 1.0).to(x.dtype)
    second = kd((1 - TSSA_FIRST_SHARE) * t * align, x.ndim) * v2
    return (x1 + second).clamp(lo, hi)


def top_eigenvalue(model: Model, x: torch.Tensor, top_classes: int | None = None, batch_size: int = 64) -> torch.Tensor:
    """(B,) float64 largest eigenvalue of G_x (``spectrum.compute_spectrum``), ``batch_size`` at a time."""
    parts = [
        compute_spectrum(model, x[i : i + batch_size], 1, top_classes).values[:, 0]
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def spectral_scores(model: Model, x: torch.Tensor, result: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) float64 top eigenvalues of G at x and at ``result.x_adv`` (a ``MinL2Result``; NaN where
    its status is not "ok")."""
    ok = torch.tensor([s == "ok" for s in result.status], device=x.device)
    adv = torch.full((x.shape[0],), math.nan, dtype=torch.float64, device=x.device)
    if ok.any():
        adv[ok] = top_eigenvalue(model, result.x_adv[ok]).to(adv.device)
    return top_eigenvalue(model, x).to(adv.device), adv


def seeded_directions(x: torch.Tensor) -> torch.Tensor:
    """(B, *S) Gaussian unit directions, each drawn from a generator seeded by CRC32 of its input's bytes."""
    rows = []
    for xi in x.detach().cpu():
        gen = torch.Generator().manual_seed(zlib.crc32(xi.numpy().tobytes()))
        r = torch.randn(xi.shape, generator=gen, dtype=torch.float64)
        rows.append(r / r.norm())
    return torch.stack(rows).to(device=x.device, dtype=x.dtype)


def _two_sided(model: Model, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor, opts: dict[str, Any]) -> torch.Tensor:
    """The closer of the smallest adversarial points along +v and along -v (x where neither is)."""
    lo, hi = opts["bounds"]
    xx, vv, yy = torch.cat([x, x]), torch.cat([v, -v]), torch.cat([y, y])

    def point(idx: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (xx[idx] + kd(t, x.ndim) * vv[idx]).clamp(lo, hi)

    found = smallest_budget(model, xx, yy, point, opts)
    d = torch.where(adversarial(model, found, yy), norms(found - xx), math.inf)
    B = x.shape[0]
    return torch.where(kd(d[B:] < d[:B], x.ndim), found[B:], found[:B])


def smallest_budget(
    model: Model, x: torch.Tensor, y: torch.Tensor, point: PointFn, opts: dict[str, Any]
) -> torch.Tensor:
    """(B, *S) the adversarial point at the smallest budget found per input (x where none is).

    Budgets t_j = T 2^(j - L + 1), j = 0 .. L - 1 (L = ``line_levels``, T the box diameter
    (hi - lo) sqrt(D)) are tried upward until ``point(idx, t_j)`` is adversarial, then
    ``refine_steps`` bisection steps on [t_(j-1), t_j] (t_(-1) = 0).
    """
    lo_b, hi_b = opts["bounds"]
    B, levels = x.shape[0], opts["line_levels"]
    top = (hi_b - lo_b) * math.sqrt(x[0].numel())
    out = x.clone()
    lo = torch.zeros(B, dtype=torch.float64, device=x.device)
    hi = torch.full_like(lo, math.inf)
    todo = torch.arange(B, device=x.device)
    for j in range(levels):
        if not len(todo):
            break
        t = torch.full((len(todo),), top * 2.0 ** (j - levels + 1), dtype=torch.float64, device=x.device)
        pts = point(todo, t.to(x.dtype))
        adv = adversarial(model, pts, y[todo])
        out[todo[adv]], hi[todo[adv]], lo[todo[~adv]] = pts[adv], t[adv], t[~adv]
        todo = todo[~adv]
    found = torch.isfinite(hi).nonzero()[:, 0]
    a, b = lo[found], hi[found]
    for _ in range(opts["refine_steps"] if len(found) else 0):
        mid = (a + b) / 2
        pts = point(found, mid.to(x.dtype))
        adv = adversarial(model, pts, y[found])
        out[found[adv]] = pts[adv]
        b, a = torch.where(adv, mid, b), torch.where(adv, a, mid)
    return out
