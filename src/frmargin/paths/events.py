"""The event a path waits for, and where inside a step it happened.

Until the first change the event is the argmax leaving ``top``; a path chasing the target
waits for the target to become the argmax. Shapes: m paths (``gidx`` (m,) indices into the
chunk), C classes (full logits: events are read from every class), *S the input shape.
"""

from __future__ import annotations

import torch

from ..geometry import fr_distance
from .linalg import gap
from .simplex_line import SimplexLine
from .state import Network, PathState

#: most regula falsi iterations locating one class change
MAX_BRACKETS = 60
#: a regula falsi point keeps this fraction of the bracket from either end
BRACKET_GUARD = 1e-3


def event_gap(state: PathState, gidx: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """> 0 before the awaited event, <= 0 once it happened, (m,) float64 from logits z (m, C).

    Example: a path leaving class 0 of z = (2, 0.5, 1) has gap 1 (z_0 - z_2).
    """
    g = gap(z, state.top[gidx])
    chase = state.chasing[gidx]
    if chase.any():
        g = torch.where(chase, -gap(z, state.target[gidx]), g)
    return g


def tie(state: PathState, gidx: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
    """Where on the segment pa -> pb (m, C) of full probabilities the awaited event happens,
    (m,) in [0, 1]: the first class to tie with ``top`` (first change) or the target overtaking
    every class (chasing); 1 where the segment never gets there."""
    seg = SimplexLine(pa, pb - pa)
    t = seg.crossing(state.top[gidx])
    chase = state.chasing[gidx]
    if chase.any():
        t = torch.where(chase, seg.overtake(state.target[gidx]), t)
    return torch.nan_to_num(t, nan=1.0, posinf=1.0).clamp(0.0, 1.0)


def locate(
    net: Network,
    gidx: torch.Tensor,
    xa: torch.Tensor,
    za: torch.Tensor,
    xb: torch.Tensor,
    zb: torch.Tensor,
    root_tol: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Illinois regula falsi on the segment xa -> xb (m, *S) for the class change (forward passes).

    The event has not happened at xa (logits za (m, C)) and has at xb (zb). Returns the logits
    at the unchanged side of the final bracket, the first point found on the changed side within
    ``root_tol`` (FR, relative to the step) of the boundary and its logits, and where on the
    straight p-segment between the two sides the awaited event happens (m,) in [0, 1]: the
    boundary to second order in the bracket width, where the path's length ends.
    """
    state = net.state
    ga, gb = event_gap(state, gidx, za), event_gap(state, gidx, zb)
    sa = torch.zeros_like(ga)
    sb = torch.ones_like(ga)
    pa = torch.softmax(za.to(torch.float64), -1)
    pb = torch.softmax(zb.to(torch.float64), -1)
    side = torch.zeros_like(ga)
    xb, zb, za = xb.clone(), zb.clone(), za.clone()
    dx = xb - xa
    width_tol = root_tol * fr_distance(pa, pb).clamp_min(1e-12)
    for _ in range(MAX_BRACKETS):
        live = fr_distance(pa, pb) > width_tol
        if not live.any():
            break
        li = live.nonzero()[:, 0]
        s = sa[li] + ga[li] / (ga[li] - gb[li]) * (sb[li] - sa[li])
        width = sb[li] - sa[li]
        s = torch.minimum(torch.maximum(s, sa[li] + BRACKET_GUARD * width), sb[li] - BRACKET_GUARD * width)
        xs = xa[li] + s.view(-1, *[1] * (xa.ndim - 1)).to(xa.dtype) * dx[li]
        zs = net.forward(gidx[li], xs)
        gs = event_gap(state, gidx[li], zs)
        ps = torch.softmax(zs.to(torch.float64), -1)
        pos = gs >= 0  # a tie is not yet a change
        lo_i, hi_i = li[pos], li[~pos]
        sa[lo_i], ga[lo_i], pa[lo_i], za[lo_i] = s[pos], gs[pos], ps[pos], zs[pos]
        sb[hi_i], gb[hi_i], pb[hi_i] = s[~pos], gs[~pos], ps[~pos]
        xb[hi_i], zb[hi_i] = xs[~pos], zs[~pos]
        # Illinois: halve the stale end's value when the same side moves twice
        gb[lo_i] = torch.where(side[lo_i] > 0, gb[lo_i] / 2, gb[lo_i])
        ga[hi_i] = torch.where(side[hi_i] < 0, ga[hi_i] / 2, ga[hi_i])
        side[lo_i], side[hi_i] = 1.0, -1.0
    return za, xb, zb, tie(state, gidx, pa, pb)
