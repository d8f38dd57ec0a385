"""Natural-gradient paths inside a box: the projected direction (an active set), and ``Box``,
the projection strategy the Fisher steps are given in a box.

The projected natural-gradient direction at x in the box [lo, hi]^D solves the quadratic
program

    min_v  g^T v + 1/2 v^T (G + lam I) v   s.t.  v_i >= 0 where x_i = lo,  v_i <= 0 where x_i = hi,

with g = J^T a the gradient of the descended function and G = J^T M J. On a free set F
(the coordinates not held at a bound) the solution is v_F = -J_F^T w with (M K_F + lam I) w = a,
K_F = J_F J_F^T: still a V x V system. The active set is iterated (primal-dual): a free
coordinate at a bound that v pushes outward is added; a held coordinate whose multiplier
mu_i = J_i^T (a - M K_F w) (the QP gradient there) has the sign that lets v move it inward is
released. The direction is zero exactly when x is a KKT point of the box (``box_stationary``).

The ``Box`` also keeps what the box changes in the Fisher steps: the damping floor of a
reduced free set and its escalation along long paths, the damped retry of a stalled path, and
the coordinates a correction drives onto a bound (held for the rest of the step). How the
step control and the corrector treat a step the box touched is in ``step_control`` and
``predictor_corrector``.

Shapes: m paths, V classes of the view, *S the input shape, D = prod(S); float64 algebra.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..solve import fisher_factor, fisher_lsq, fisher_weights
from .directions import damping, descent_gradient
from .linalg import bmv, centred, rows_combination
from .options import ResolvedOptions
from .state import Network
from .step_types import Direction

__all__ = ["BOX_STATIONARY", "Box", "bound_share", "box_direction", "projected_row_direction"]

#: active-set iterations of the projected direction (each one a V x V solve per path)
MAX_ACTIVE_ITERATIONS = 12
#: a projected Fisher speed below this fraction of the unconstrained one is a KKT point
BOX_STATIONARY = 1e-9
#: in the box, solves on a reduced free set keep lam >= this fraction of the largest eigenvalue
#: of G_F: with few free coordinates G_F is near-singular and the undamped direction asks for
#: huge input moves that no step can follow (measured on 8x8 digits: 1e-8 and below leave
#: paths at the budget). On CNN-A (K's eigenvalues 4e-4 to 444) the direction at 1e-6 still
#: moves x ~1,000 in L2 per unit FR: each step drives ~50 more pixels onto a bound (10,000-
#: 16,000 active-set changes on a path), and 22 of 216 paths crept to the budget; at 1e-4 the
#: pixels at a bound at the end fall from 3-6% to 1-4%, 207 instead of 192 end ok (none lost)
#: at half the Jacobians, and on the paths ok at both the FR length changes by a median 0
#: (p90 0.1-6%), the first hit never (1e-3: p90 +39% on cnn-a-adv4, first hits changed)
BOX_DAMPING = 1e-4
#: ... and a path's floor grows by ESCALATE after every ESCALATE_STEPS accepted steps, at most
#: ESCALATE_LEVELS times (1e-3 from step 50, 1e-2 from step 100): a path that creeps along the
#: box's faces leans further toward the Euclidean gradient, paths that finish sooner keep the
#: base floor. Measured on the three CNN-A models (8 images x 9 targets each): 207 -> 213 of
#: 216 ok, none lost, lengths of the paths ok at both within -4.4% / +2.6%; a fixed 1e-3 or
#: 1e-2 floor instead changes lengths by a p90 of +39% on cnn-a-adv4
ESCALATE = 10.0
ESCALATE_STEPS = 50
ESCALATE_LEVELS = 2
#: a box path whose step stalled is retried from the same point with its direction damped by
#: at least BOX_DAMPING x 10^(k - 1) x the largest eigenvalue (free set or not), k = 1 .. RESCUES
RESCUES = 2


def at_bounds(x: torch.Tensor, box: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (m, D) of the coordinates of x (m, *S) at the lower and at the upper bound."""
    xf = x.reshape(x.shape[0], -1)
    return xf <= box[0], xf >= box[1]


def bound_share(x: torch.Tensor, box: tuple[float, float] | None) -> torch.Tensor:
    """Share (m,) float64 of the coordinates of x (m, *S) at a bound of the box (NaN: no box).

    Example:
        >>> bound_share(torch.tensor([[0.0, 0.5, 1.0, 0.2]]), (0.0, 1.0))
        tensor([0.5000], dtype=torch.float64)
    """
    if box is None:
        return torch.full((x.shape[0],), float("nan"), dtype=torch.float64, device=x.device)
    lo, hi = at_bounds(x, box)
    return (lo | hi).to(torch.float64).mean(-1)


def _solve(
    opts: ResolvedOptions,
    J: torch.Tensor,
    keep: torch.Tensor,
    Lt: torch.Tensor,
    p: torch.Tensor,
    a: torch.Tensor,
    floor: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """v, w, K_F, lam, J_F for the free coordinates ``keep`` (m, D) of J (m, V, D); with
    ``floor`` (m,), lam >= floor times the largest eigenvalue of G_F."""
    JF = J if bool(keep.all()) else J * keep[:, None, :]  # the very tensor: bit-identical solves
    K = JF @ JF.transpose(-1, -2)
    lam = damping(opts, Lt, K, floor)
    w = fisher_lsq(Lt, K, a / p.clamp_min(1e-300), lam) if opts.metric == "fisher" else a
    return -rows_combination(w, JF), w, K, lam, JF


def box_direction(
    opts: ResolvedOptions,
    x: torch.Tensor,
    J: torch.Tensor,
    p: torch.Tensor,
    a: torch.Tensor,
    M: torch.Tensor,
    Lt: torch.Tensor,
    floor: torch.Tensor | None = None,
    free_floor: torch.Tensor | None = None,
) -> tuple[Direction, torch.Tensor]:
    """The projected descent direction at x (m, *S) in the box, and the ratio (m,) of its
    Fisher speed to the unconstrained direction's.

    J (m, V, D) float64 rows, p (m, V), a (m, V) the logit gradient, M and Lt the Fisher
    weights and factor of p; ``floor`` (m,) the damping floor of solves on a reduced free set
    (BOX_DAMPING by default), ``free_floor`` (m,) that of the unconstrained solve (none where
    0 or None). Rows where no coordinate is held keep the unconstrained solve
    bit for bit. ``Direction.active`` (m, D) marks the held coordinates, whose Jacobian
    columns are zero in ``Direction.jacobian``.
    """
    assert opts.box is not None
    if floor is None:
        floor = torch.full((x.shape[0],), BOX_DAMPING, dtype=torch.float64, device=x.device)
    lo, hi = at_bounds(x, opts.box)
    free = torch.ones_like(lo)
    v, w, K, lam, JF = _solve(opts, J, free, Lt, p, a, free_floor)
    zdot0 = centred(-bmv(K, w), p)
    speed0 = (zdot0 * bmv(M, zdot0)).sum(-1).clamp_min(0).sqrt()
    active = torch.zeros_like(lo)
    for _ in range(MAX_ACTIVE_ITERATIONS):
        push = ~active & ((lo & (v < 0)) | (hi & (v > 0)))
        # the QP gradient on the held coordinates, with the original columns of J: J_i^T (a -
        # M K_F w) = lam J_i^T w (exactly; the difference form cancels catastrophically when lam
        # is tiny). Euclidean metric: the QP's Hessian is I, mu = g.
        mu = rows_combination(w, J) * (lam[:, None] if opts.metric == "fisher" else 1.0)
        release = active & ((lo & (mu < 0)) | (hi & (mu > 0)))
        change = (push | release).any(-1)
        if not change.any():
            break
        active = torch.where(change[:, None], (active | push) & ~release, active)
        v2, w2, K2, lam2, JF2 = _solve(
            opts, J[change], ~active[change], Lt[change], p[change], a[change], floor[change]
        )
        v, w, K, lam, JF = (t.clone() for t in (v, w, K, lam, JF))
        v[change], w[change], K[change], lam[change], JF[change] = v2, w2, K2, lam2, JF2
    # a cycling active set (rare): hold what still points out, so the direction is feasible
    out = (lo & (v < 0)) | (hi & (v > 0))
    if out.any():
        active = active | out
        v = torch.where(out, torch.zeros_like(v), v)
        JF = JF * (~out)[:, None, :]
        K = torch.where(out.any(-1)[:, None, None], JF @ JF.transpose(-1, -2), K)
    zdot = centred(-bmv(K, w), p)
    bad = out.any(-1)
    if bad.any():
        zdot[bad] = centred(bmv(JF[bad], v[bad]), p[bad])
    speed = (zdot * bmv(M, zdot)).sum(-1).clamp_min(0).sqrt()
    ratio = speed / speed0.clamp_min(1e-300)
    d = Direction(v=v, zdot=zdot, weights=M, factor=Lt, gram=K, damping=lam, jacobian=JF, active=active)
    return d, ratio


def projected_row_direction(
    opts: ResolvedOptions, x: torch.Tensor, J: torch.Tensor, p: torch.Tensor, a: torch.Tensor
) -> Direction:
    """``directions.row_direction`` in the box ``opts.box``: the projected direction at x
    (m, *S) from Jacobian rows J (m, V, D), p (m, V), a (m, V), at the base damping floor
    BOX_DAMPING (the paper stepper's direction in a box)."""
    return box_direction(opts, x, J.to(torch.float64), p, a, fisher_weights(p), fisher_factor(p))[0]


class Box:
    """The ``Projection`` of the Fisher steps in the box ``opts.box``.

    The direction is the projected one (``box_direction``), its damping floor on a reduced free
    set growing with the path's steps (``ESCALATE``) and with its rescues; a path at a KKT point
    of the box (projected speed ~ 0, the class unchanged) ends ``box_stationary``; a stalled
    path is retried from its point with a damped direction (``RESCUES``); a coordinate that a
    correction drives onto a bound is held there for the rest of the step (``bind``).
    Active-set changes are counted in ``state.box_changes``.
    """

    def __init__(self, net: Network, opts: ResolvedOptions) -> None:
        assert opts.box is not None
        self.net = net
        self.opts = opts
        self.box: tuple[float, float] = opts.box
        #: (n, D) active set of each path's last direction
        self.held: torch.Tensor | None = None
        st = net.state
        #: (n,) how many times each path's stalled steps were retried damped (``rescue``)
        self.rescued = torch.zeros(len(st), dtype=torch.int64, device=st.x.device)

    def direction(
        self, idx: torch.Tensor, x: torch.Tensor, J: torch.Tensor, p: torch.Tensor
    ) -> tuple[Direction, torch.Tensor | None]:
        """The projected direction (``box_direction``; with nothing held the unconstrained one
        bit for bit), its active-set changes booked; paths at a KKT point of the box end
        ``box_stationary`` and are returned."""
        st = self.net.state
        a = descent_gradient(self.net, idx, p)
        level = (st.steps[idx] // ESCALATE_STEPS).clamp(max=ESCALATE_LEVELS).to(torch.float64)
        floor = BOX_DAMPING * ESCALATE**level
        rescue = self.rescued[idx].to(torch.float64)
        free_floor = torch.where(rescue > 0, BOX_DAMPING * 10.0 ** (rescue - 1), torch.zeros_like(rescue))
        floor = torch.maximum(floor, free_floor)
        d, ratio = box_direction(
            self.opts, x, J.to(torch.float64), p, a, fisher_weights(p), fisher_factor(p), floor, free_floor
        )
        assert d.active is not None
        if self.held is None:
            self.held = torch.zeros(len(st), d.active.shape[-1], dtype=torch.bool, device=x.device)
        changes = (self.held[idx] != d.active).sum(-1)
        st.box_changes[idx] += changes
        self.held[idx] = d.active
        stationary = d.active.any(-1) & (ratio <= BOX_STATIONARY)
        if stationary.any():
            st.finish(idx[stationary], "box_stationary")
        return replace(d, turned=changes > 0), stationary

    def rescue(self, idx: torch.Tensor) -> torch.Tensor:
        """A stalled path is retried from its point with a damped direction, RESCUES times at
        most (``direction``); then it ends ``stalled``. The stiff first steps of CNN-A
        (cnn-a-adv4: the undamped direction moves x ~1,000 in L2 per unit FR, and its predictor
        misses 5x at every step size tried) follow a direction damped by 1e-4 x lam_max to ~2%."""
        again = self.rescued[idx] < RESCUES
        self.rescued[idx[again]] += 1
        return again

    def bind(self, x_new: torch.Tensor, J: torch.Tensor, K: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        """Hold the coordinates of x_new (m, *S) that a correction drove onto a bound: zero
        their columns of the corrector's J (m, V, D) and update K = J J^T, on ``rows`` (m,)."""
        lo, hi = at_bounds(x_new, self.box)
        hit = (lo | hi) & (J != 0).any(1) & rows[:, None]
        r = hit.any(-1)
        if not r.any():
            return None
        J[r] = J[r] * (~hit[r])[:, None, :]
        K[r] = J[r] @ J[r].transpose(-1, -2)
        return r
