"""When the exact flow slides along region boundaries, and when it leaves them.

The flow's velocity is the minimum-norm v whose logit velocity, read through the network's
directional derivative at x, is the line's: away from boundaries the region's Jacobian gives
it. On a boundary the directional derivative is piecewise linear in v, one piece per side of
each unit at zero, so the velocity is the least-norm one over the pieces: either one side's
region velocity, when it moves into that side, or the velocity with the unit's slack *held* at
zero (one more row of the minimum-norm solve; the rows must keep full rank), which serves both
sides. So at an event the unit crossing goes to its other side, except where the flow there
points straight back: then the flow *slides* along the boundary, the unit held. Where several
units are at zero at once (a corner), every choice of crossing, staying or holding for each of
them is tried (``resolve``) and the least-norm velocity under which every free unit at zero
moves into its side is taken.

A held unit is released as soon as the free flow of one side (its row dropped, its pattern set
to that side) points into that side. Inside a region the free velocity of a side is
v_A A'(tau) + v_B B'(tau), with A' = -1 / (p_y - tau) and B' = 1 / (p_k + tau), so the rate of
the unit's slack on that side has the sign of (beta p_y - alpha p_k) - tau (alpha + beta), with
alpha, beta the slack's rates along v_A, v_B: the release is found in closed form
(``release_time``).

Shapes: C classes, D input dimensions, h held units of one path; float64.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .linearize import PiecewiseLinear

__all__ = ["MAX_CONDITION", "MAX_CORNER", "Release", "earliest_release", "release_time", "resolve"]

#: a centred Jacobian (with its held rows) whose condition number exceeds this cannot move p
#: along the line
MAX_CONDITION = 1e12
#: a Gram matrix of the rows whose condition exceeds this (rows beyond 1e8) is not trusted for a release
GRAM_CONDITION = 1e16
#: a slack rate above -RATE_TOL x the size of its terms counts as moving into its side
RATE_TOL = 1e-9
#: the most units at zero a corner may hold for ``resolve`` (3^MAX_CORNER choices are tried)
MAX_CORNER = 5

#: (x (1, *S), patterns, held slacks, queried slacks) -> (the free velocities v_A, v_B (D, 2)
#: with ``held`` kept at zero, None where the solve lost rank; gradients (q, D) of the queried slacks)
Side = Callable[[torch.Tensor, list[torch.Tensor], list[int], list[int]], tuple[torch.Tensor | None, torch.Tensor]]

CROSS, STAY, HOLD = "cross", "stay", "hold"


@dataclass(frozen=True)
class Release:
    """The earliest release of a path's held units in its region: at ``tau``, held unit
    number ``position`` goes to its current side (``flip`` False) or across (True)."""

    tau: float
    position: int
    flip: bool


def release_time(alpha: float, beta: float, py: float, pk: float, T: float) -> float:
    """First tau in [0, T] at which the slack rate -alpha / (p_y - tau) + beta / (p_k + tau)
    is positive (inf if none).

    Example:
        >>> release_time(1.0, 1.0, 0.6, 0.2, 0.5)  # (0.6 - 0.2) - 2 tau > 0 at once
        0.0
        >>> release_time(-1.0, -1.0, 0.6, 0.2, 0.5)  # (-0.6 + 0.2) + 2 tau > 0 from tau = 0.2
        0.2
    """
    at0 = beta * py - alpha * pk
    slope = -(alpha + beta)
    tol = RATE_TOL * (abs(beta * py) + abs(alpha * pk))
    # positive, or zero to rounding and rising (a tangency): at once
    if at0 > tol or (at0 >= -tol and slope > 0):
        return 0.0
    if slope > 0:
        tau = -at0 / slope
        return tau if tau <= T else math.inf
    return math.inf


def _crossed(net: PiecewiseLinear, patterns: list[torch.Tensor], j: int) -> int:
    """Cross slack j in ``patterns`` (each (1, ...), changed in place); the slack that crosses back."""
    w, local = net.locate(j)
    switch = net.switches[w]
    back = net.offsets[w] + switch.back(patterns[w], 0, local)
    switch.flip(patterns[w], 0, local)
    return back


def _rates(gram: torch.Tensor, cross: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor | None:
    """(2,) rates cross^T gram^{-1} rhs of a slack along v_A, v_B, where v = rows^T gram^{-1} rhs
    is the minimum-norm solution of rows v = rhs, gram = rows rows^T (r, r), cross = rows a (r,)
    for the slack's gradient a; None where the Gram matrix is too ill-conditioned to tell (its
    eigenvalues, or an exactly singular pivot of the solve itself)."""
    eig = torch.linalg.eigvalsh(gram)
    if not bool(eig[0] > 0) or float(eig[-1] / eig[0]) > GRAM_CONDITION:
        return None
    solution, info = torch.linalg.solve_ex(gram, rhs)
    return None if int(info) != 0 else cross @ solution


def earliest_release(
    D: torch.Tensor,
    rhs: torch.Tensor,
    held: torch.Tensor,
    out_z: torch.Tensor,
    out_held: torch.Tensor,
    kappa: list[float],
    p: tuple[float, float, float],
    settled: bool = False,
) -> Release | None:
    """The earliest release within [0, T] of the h held units of one path, ``p`` = (p_y, p_k, T).

    Args:
        D: (C - 1, D) centred Jacobian; rhs: (C - 1, 2) its right-hand sides (v_A, v_B).
        held: (h, D) gradients of the held slacks.
        out_z: (C - 1, h) centred logit derivatives by the outputs the held units switch;
            out_held: (h, h) those of the held slacks ([i, q]: slack i by output q); kappa: (h,)
            each unit's change of output gradient per slack gradient when it crosses.
        settled: the path's units at zero were just decided together (``resolve``), which
            weighed every release at this point: no release at tau = 0 then.

    A unit released across its boundary changes the rows by a rank-one term (D' = D - kappa
    out_z[:, q] held[q]^T, the other held rows likewise), so every option is solved from the
    Gram matrix of the rows, without another network evaluation or a D-dimensional solve.
    """
    py, pk, T = p
    n, h = D.shape[0], held.shape[0]
    rows = torch.cat([D, held])
    gram = rows @ rows.T
    full_rhs = torch.cat([rhs, torch.zeros(h - 1, 2, dtype=rhs.dtype, device=rhs.device)])
    best: Release | None = None
    for q in range(h):
        iq = n + q
        sub = [i for i in range(n + h) if i != iq]
        g_sub, cross = gram[sub][:, sub], gram[sub, iq]
        keep = [i for i in range(h) if i != q]
        c = torch.cat([out_z[:, q], out_held[keep, q]])
        k, aa = kappa[q], gram[iq, iq]
        flipped = g_sub - k * (torch.outer(c, cross) + torch.outer(cross, c)) + k * k * aa * torch.outer(c, c)
        for flip, g_opt, cr in ((False, g_sub, cross), (True, flipped, -(cross - k * aa * c))):
            rates = _rates(g_opt, cr, full_rhs)
            if rates is None:
                continue
            tau = release_time(float(rates[0]), float(rates[1]), py, pk, T)
            if settled and tau == 0.0:
                continue
            if best is None or tau < best.tau:
                best = Release(tau, q, flip)
    return best if best is not None and math.isfinite(best.tau) else None


def resolve(
    net: PiecewiseLinear,
    side: Side,
    x: torch.Tensor,
    patterns: list[torch.Tensor],
    held: list[int],
    zone: list[int],
    p: tuple[float, float],
) -> tuple[list[torch.Tensor], list[int], list[int]] | None:
    """The patterns, held slacks and the zone's slacks (in the new patterns) of the least-norm
    consistent choice for the units at zero ``zone`` (slack indices, in ``patterns``; those in
    ``held`` are held now; the other held slacks stay held); None where no choice is
    consistent. ``p`` = (p_y, p_k): the velocity's norm is taken at the region's start."""
    py, pk = p
    base = [j for j in held if j not in zone]
    best: tuple[float, tuple[list[torch.Tensor], list[int], list[int]]] | None = None
    for choice in itertools.product((CROSS, STAY, HOLD), repeat=len(zone)):
        pats = [q.clone() for q in patterns]
        now_held, queries, decided = list(base), [], []
        for j, option in zip(zone, choice):
            if option == HOLD:
                now_held.append(j)
                decided.append(j)
                continue
            j_new = _crossed(net, pats, j) if option == CROSS else j
            queries.append(j_new)
            decided.append(j_new)
        v, grads = side(x, pats, now_held, queries)
        if v is None:
            continue
        if queries:
            alpha, beta = grads @ v[:, 0], grads @ v[:, 1]
            rate, size = -alpha / py + beta / pk, (alpha / py).abs() + (beta / pk).abs()
            if not bool((rate >= -RATE_TOL * size).all()):
                continue
        norm = float((v[:, 1] / pk - v[:, 0] / py).norm())
        if best is None or norm < best[0]:
            best = (norm, (pats, now_held, decided))
    return None if best is None else best[1]
