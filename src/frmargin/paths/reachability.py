"""Whether the flow in the coordinates u of a perturbation model can still reach a class change:
the early, honest end of a path that cannot (statuses ``subspace_stationary`` and
``subspace_runaway``) or that creeps too slowly to within the step budget
(``subspace_creeping``), detected from the flow itself.

With K < C - 1 directions the flow toward a target often stops short of any class change: the
descended function L (log p_top - log p_target) has a stationary point in u, or p converges
while u runs off. Both are outcomes, not tracer failures. The detector watches each path's
directions (``check``) and its stalls (``rescue``):

- the gradient of L in u vanishes: rho = (the descent rate of L per unit FR length the subspace
  allows) / (its rate on the simplex, sqrt(sum a_i^2 / p_i)) <= ``RHO_ZERO``;
- the flow stops: over the last ``WINDOW`` direction evaluations L fell by less than ``CREEP`` of
  its value and p moved (FR distance between the window's first and last point) by less than
  ``CREEP`` of the FR distance from p to the event (a lower bound on any path's remaining
  length). If meanwhile |u| grew at every evaluation, by at least ``RUNAWAY`` x |u| in all, p
  converges while u runs away: ``subspace_runaway``. Otherwise the flow creeps, at a kink of a
  piecewise-linear network or near a minimum, and the gradient of L in u on both sides of the
  point (the far side probed a small step along the direction, two Jacobians) is tested: the
  two turned against each other with a least-norm convex combination at most ``CLARKE`` of the
  near side's, a Clarke stationary point: ``subspace_stationary``; the far gradient as small but
  pointing the same way, L flattening ahead: ``subspace_runaway``. A valley the flow could slide
  along fails both, and the path goes on (it may end ``budget``);
- a flow judged by neither test, past its first two windows, whose p moved over the last
  window at a pace that would need more than ``PACE_MARGIN`` x the steps left to cover the FR
  distance to the event ends ``subspace_creeping``: undetermined, as ``budget`` is, but
  foreseen from the flow's pace instead of spent (on ReLU networks with few directions, most
  flows toward unlikely targets creep along kinks of L in u);
- a stalled step (all attempts failed): the same test, else it ends ``stalled``.

Shapes: n paths of the chunk, m in a call (``idx``), V classes of the view, K directions in u.
"""

from __future__ import annotations

import math

import torch

from ..geometry import fr_distance
from .directions import descent_gradient, row_direction
from .events import event_gap
from .linalg import bmv
from .options import ResolvedOptions
from .state import Network
from .step_types import Direction, Found, Projection

__all__ = [
    "CLARKE",
    "CREEP",
    "PACE_MARGIN",
    "RHO_ZERO",
    "RUNAWAY",
    "WINDOW",
    "Reachability",
    "SubspaceFlow",
    "WatchedDirection",
]

#: a share of the simplex's descent rate at or below this: the gradient of L in u vanishes
RHO_ZERO = 1e-9
#: direction evaluations over which a path's progress is judged
WINDOW = 8
#: less progress than this share (of L, and of the FR distance to the event) over the window: stopped
CREEP = 0.01
#: ... while |u| grew by at least this share of |u|: p converges while u runs away
RUNAWAY = 0.5
#: a flow neither test judges, whose p moved over the window at a pace that would need more
#: than PACE_MARGIN x the steps left to reach the event, ends ``subspace_creeping``
PACE_MARGIN = 4.0
#: Clarke stationary: the least-norm convex combination of the gradients of L on both sides is
#: at most this share of the near side's
CLARKE = 0.1


def event_distance(net: Network, idx: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(m,) FR distance from p(z) (z (m, C) logits) to the nearest point where the awaited event
    happened: the largest other class ties the top one (first change), or the target ties the
    argmax (chasing). Every path to the event is at least this long."""
    st = net.state
    p = torch.softmax(z.to(torch.float64), -1)
    top = torch.where(st.chasing[idx], p.argmax(-1), st.top[idx])
    other = torch.where(st.chasing[idx], st.target[idx], p.scatter(1, top[:, None], -1.0).argmax(-1))
    a, b = p.gather(1, top[:, None])[:, 0], p.gather(1, other[:, None])[:, 0]
    return 2.0 * torch.asin(((a.sqrt() - b.clamp_min(0).sqrt()) / math.sqrt(2.0)).clamp(0.0, 1.0))


def descended(net: Network, idx: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(m,) the value of the function each path descends at logits z (m, C): log p_top -
    log p_target, or log(1 - p_target) - log p_target while chasing."""
    st = net.state
    logp = torch.log_softmax(z.to(torch.float64), -1)
    k = logp.gather(1, st.target[idx][:, None])[:, 0]
    first = logp.gather(1, st.top[idx][:, None])[:, 0] - k
    chase = torch.log((-torch.expm1(k)).clamp_min(1e-300)) - k
    return torch.where(st.chasing[idx], chase, first)


class Reachability:
    """The detector of one chunk's flows in u (module docstring); it finishes the paths it
    judges unreachable and says which."""

    def __init__(self, net: Network, opts: ResolvedOptions) -> None:
        self.net, self.opts = net, opts
        st = net.state
        n, dev = len(st), st.x.device
        #: (n, WINDOW + 1) the last evaluations' L, (n, WINDOW + 1, C) their probabilities and
        #: (n, WINDOW + 1, K) their points u
        self.value = torch.zeros(n, WINDOW + 1, dtype=torch.float64, device=dev)
        self.probs = torch.zeros(n, WINDOW + 1, st.z.shape[-1], dtype=torch.float64, device=dev)
        self.points = torch.zeros(n, WINDOW + 1, st.x[0].numel(), dtype=torch.float64, device=dev)
        #: (n,) evaluations recorded since the window was last cleared
        self.count = torch.zeros(n, dtype=torch.int64, device=dev)

    def check(self, idx: torch.Tensor, z: torch.Tensor, p: torch.Tensor, d: Direction) -> torch.Tensor:
        """(m,) the paths idx (m,) whose flow cannot reach the event, judged from their direction
        d at logits z (m, C), view probabilities p (m, V); they are finished."""
        st = self.net.state
        a = descent_gradient(self.net, idx, p)
        speed = (d.zdot * bmv(d.weights, d.zdot)).sum(-1).clamp_min(0).sqrt()
        rate = -(a * d.zdot).sum(-1) / speed.clamp_min(1e-300)
        simplex = (((a * a) / p.clamp_min(1e-300)).sum(-1) - a.sum(-1).square()).clamp_min(0).sqrt()
        rho = torch.where(speed > 0, rate / simplex.clamp_min(1e-300), torch.zeros_like(rate))
        u = st.x[idx].reshape(idx.numel(), -1).to(torch.float64)
        full_p = torch.softmax(z.to(torch.float64), -1)
        for hist, now in ((self.value, descended(self.net, idx, z)), (self.probs, full_p), (self.points, u)):
            hist[idx] = torch.cat([hist[idx, 1:], now[:, None]], 1)
        self.count[idx] += 1
        full = self.count[idx] > WINDOW
        value = self.value[idx]
        stopped = full & (value[:, 0] - value[:, -1] < CREEP * value[:, -1].abs())
        stopped &= fr_distance(self.probs[idx, 0], full_p) < CREEP * event_distance(self.net, idx, z)
        norms = self.points[idx].norm(dim=-1)  # (m, WINDOW + 1)
        growing = (norms[:, 1:] >= norms[:, :-1]).all(-1) & (norms[:, -1] - norms[:, 0] >= RUNAWAY * norms[:, -1])
        away = stopped & growing
        flat = rho <= RHO_ZERO
        creeping = stopped & ~away & ~flat
        if creeping.any():
            rows = creeping.nonzero()[:, 0]
            flat[rows], away[rows] = self.clarke(idx[rows])
            self.count[idx[rows]] = 0  # neither: judged again after another window
        # neither judged: at the pace of p over the window, the event lies beyond PACE_MARGIN x
        # the steps left (an undetermined outcome, foreseen instead of spending the budget)
        pace = fr_distance(self.probs[idx, 0], full_p) / WINDOW
        left = (self.opts.max_steps - st.steps[idx]).clamp_min(0).to(torch.float64)
        slow = full & ~flat & ~away & (st.steps[idx] >= 2 * WINDOW)
        slow &= PACE_MARGIN * left * pace < event_distance(self.net, idx, z)
        st.finish(idx[flat], "subspace_stationary")
        st.finish(idx[away & ~flat], "subspace_runaway")
        st.finish(idx[slow], "subspace_creeping")
        return flat | away | slow

    def clarke(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which of the paths idx (k,) cannot go on, from the gradient of L at u and at a
        point a small step along the direction (past a kink the path cannot cross; no class
        change there), two Jacobians per path: (k,) at a Clarke stationary point (the
        gradients turned against each other, the least-norm convex combination of the two <=
        CLARKE of the first's), and (k,) where L flattens ahead (the far gradient, pointing the
        same way, <= CLARKE of the near one: p converges while u runs on)."""
        st, net, o = self.net.state, self.net, self.opts
        u = st.x[idx]
        z, J = net.jacobian(idx, u)
        p = net.probs(z, idx)
        a = descent_gradient(net, idx, p)
        d = row_direction(o, J, p, a)
        speed = (d.zdot * bmv(d.weights, d.zdot)).sum(-1).clamp_min(0).sqrt()
        probe = (2.0 * st.fr_step[idx] / 2.0**o.max_attempts).clamp_min(1e-6)
        eps = (probe / speed.clamp_min(1e-300))[:, None]
        far = u + (eps * d.v).to(u.dtype).reshape(u.shape)
        z_far, J_far = net.jacobian(idx, far)
        a_far = descent_gradient(net, idx, net.probs(z_far, idx))
        g_near = bmv(J.to(torch.float64).transpose(-1, -2), a)
        g_far = bmv(J_far.to(torch.float64).transpose(-1, -2), a_far)
        diff = g_near - g_far
        t = ((g_near * diff).sum(-1) / diff.square().sum(-1).clamp_min(1e-300)).clamp(0.0, 1.0)
        least = (g_near - t[:, None] * diff).norm(dim=-1)
        valid = torch.isfinite(least) & torch.isfinite(speed) & (speed > 0)
        valid &= event_gap(st, idx, z_far) > 0  # the probe did not cross the boundary
        small = least <= CLARKE * g_near.norm(dim=-1)
        turned = (g_near * g_far).sum(-1) < 0
        return valid & small & turned, valid & small & ~turned

    def rescue(self, idx: torch.Tensor) -> torch.Tensor:
        """Stalled paths idx (k,): those at a Clarke stationary point of L in u end
        ``subspace_stationary`` (the others are left to end ``stalled``). Never retried."""
        none = torch.zeros(idx.numel(), dtype=torch.bool, device=idx.device)
        if idx.numel():
            flat, away = self.clarke(idx)
            self.net.state.finish(idx[flat], "subspace_stationary")
            self.net.state.finish(idx[away], "subspace_runaway")
        return none


class SubspaceFlow:
    """The ``Projection`` of Fisher paths in u: the inner projection's direction (free space)
    watched by a ``Reachability``, which also judges stalled paths."""

    def __init__(self, inner: Projection, reach: Reachability) -> None:
        self.inner, self.reach = inner, reach

    def direction(
        self, idx: torch.Tensor, x: torch.Tensor, J: torch.Tensor, p: torch.Tensor
    ) -> tuple[Direction, torch.Tensor | None]:
        d, stopped = self.inner.direction(idx, x, J, p)
        ended = self.reach.check(idx, self.reach.net.state.z[idx], p, d)
        return d, ended if stopped is None else (ended | stopped)

    def rescue(self, idx: torch.Tensor) -> torch.Tensor:
        return self.reach.rescue(idx)

    def bind(self, x_new: torch.Tensor, J: torch.Tensor, K: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        return self.inner.bind(x_new, J, K, rows)


class WatchedDirection:
    """A ``DirectionSource`` (the Euclidean gradient's) watched by a ``Reachability``."""

    def __init__(self, inner: object, reach: Reachability) -> None:
        self.inner, self.reach = inner, reach

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> Found:
        ok, z, p, d = self.inner(idx, x)  # type: ignore[operator]
        ended = self.reach.check(idx[ok], z, p, d)
        if not ended.any():
            return ok, z, p, d
        ok = ok.clone()
        ok[ok.nonzero()[:, 0][ended]] = False
        keep = ~ended
        return ok, z[keep], p[keep], d.take(keep)
