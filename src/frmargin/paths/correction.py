"""The corrector of the Fisher steps: corrections that pull the network onto a step's target.

Corrections solve the damped Fisher least-squares problem for the remaining log-probability
residual r: dx = J^T (M K + lam I)^{-1} M r, which with full-rank J reproduces r exactly (mod
1); after each correction a Broyden secant update makes J map the move just made onto the
logit change the network made (no extra passes). A correction that stops contracting goes back
to the best point and moves by the damped solve with lam + mu (Levenberg-Marquardt, mu from
LM_START in LM_LEVELS levels times the largest eigenvalue of L^T K L) before the step's one
extra Jacobian is evaluated; the residual's size is always that of the undamped solve.
Shapes: m paths (``gidx`` (m,)), C classes, V classes of the view, *S the input shape, D =
prod(S); simplex quantities are float64.
"""

from __future__ import annotations

import torch

from ..solve import fisher_lsq, largest_eigenvalue_factored
from .linalg import bmv, broyden_update, centred, into_box, log_probs, pair_gap, rows_combination
from .options import ResolvedOptions
from .state import Network
from .step_types import Projection, Start

#: a corrector that fails keeps its best point when that point's residual is within this
#: multiple of the tolerance, or no further from the line than the step's start (not on a
#: final step): on the anchored line the next steps pull it back, so the miss does not add up
#: along the path
LOOSE = 3.0
#: Levenberg-Marquardt damping of a corrector that stopped contracting, as multiples of the
#: largest eigenvalue of L^T K L: it starts at LM_START and grows by LM_GROW at each further
#: divergence, LM_LEVELS levels in all (1e-6, 1e-4, 1e-2), then the step's extra Jacobian is
#: evaluated. The levels are counted, not compared as floats: 1e-6 x 100 x 100 may round
#: below 1e-2, and whether a fourth level followed depended on the batch. Where K = J J^T is
#: ill-conditioned (CNN-A, adversarially trained: eigenvalues 4e-4 to 444) the minimum-norm
#: correction moves x ~1,000 in L2 per unit FR, far outside the region where the network is
#: near-linear (the logit gap changes 9x its prediction at 0.01 FR), while with 1e-4 x the
#: largest eigenvalue it moves 63 and follows its prediction to 2%
LM_START = 1e-6
LM_GROW = 100.0
LM_LEVELS = 3


class Correction:
    """The running corrections of one attempt of m paths ``s`` toward the log-probabilities
    ``target`` (m, V) within ``tol`` (m,).

    ``measure`` sizes the residual's correction, ``check`` judges the last correction (the
    rows converge, fail, go back to their best point damped, or evaluate the step's extra
    Jacobian), ``correct`` makes the next one. The direction's J and K are updated in place
    (the start ``s`` is a copy per attempt).
    """

    def __init__(
        self,
        net: Network,
        opts: ResolvedOptions,
        projection: Projection,
        s: Start,
        target: torch.Tensor,
        tol: torch.Tensor,
    ) -> None:
        st, view, d, x = net.state, net.view, s.direction, s.x
        assert d.factor is not None and d.gram is not None and d.damping is not None and d.jacobian is not None
        self.net, self.opts, self.projection, self.s = net, opts, projection, s
        self.gidx, self.x, self.target, self.tol = s.idx, x, target, tol
        self.Lt, self.K, self.lam, self.J, self.M = d.factor, d.gram, d.damping, d.jacobian, d.weights
        self.top, self.k = view.classes(s.idx, st.top[s.idx], st.target[s.idx])
        self.r = target - log_probs(view.reduce(s.z, s.idx))
        self.r0_gap = pair_gap(self.r, self.top, self.k)
        m = x.shape[0]
        self.delta = torch.zeros(m, self.J.shape[-1], dtype=torch.float64, device=x.device)
        self.x_new, self.z_new = x.clone(), s.z.clone()
        self.live = torch.ones(m, dtype=torch.bool, device=x.device)
        self.good = torch.zeros_like(self.live)
        self.nonfinite = torch.zeros_like(self.live)
        self.size_prev = torch.full((m,), float("inf"), dtype=torch.float64, device=x.device)
        self.theta = torch.zeros(m, dtype=torch.float64, device=x.device)
        self.predicted = self.theta
        self.corrections = torch.zeros(m, dtype=torch.int64, device=x.device)
        self.slow = torch.zeros_like(self.live)
        self.best = torch.full((m,), float("inf"), dtype=torch.float64, device=x.device)
        self.x_best, self.z_best = x.clone(), s.z.clone()
        self.failed = torch.zeros_like(self.live)
        #: (m,) rows with coordinates a correction drove onto a bound of the box (``Projection.bind``)
        self.clamped = torch.zeros_like(self.live)
        # Levenberg-Marquardt level (m,) of each row's corrections: 0 undamped, else damping
        # LM_START x LM_GROW^(level - 1) x lam_max beside the direction's lam
        self.level = torch.zeros(m, dtype=torch.int64, device=x.device)
        self.lam_max = largest_eigenvalue_factored(self.Lt, self.K)
        #: the undamped correction (m, V) and its size (m,), from ``measure``
        self.w = torch.empty(0, dtype=torch.float64, device=x.device)
        self.size = torch.empty(0, dtype=torch.float64, device=x.device)

    def measure(self, it: int) -> None:
        """The undamped correction w (m, V) of the residual and its size (m,) (the residual's
        size); at the first correction the linear prediction of the logit gap, at the second
        the nonlinearity theta along the path: how far the change of the logit gap log p_top -
        log p_target after the first step is from its linear prediction."""
        self.w = fisher_lsq(self.Lt, self.K, self.r, self.lam)
        dz = centred(bmv(self.K, self.w), self.s.p)
        self.size = (dz * bmv(self.M, dz)).sum(-1).clamp_min(0).sqrt()
        if it == 0:
            self.predicted = pair_gap(dz, self.top, self.k)
        if it == 1:
            miss = ((self.r0_gap - pair_gap(self.r, self.top, self.k)) - self.predicted).abs()
            self.theta = torch.where(self.live, miss / self.predicted.abs().clamp_min(1e-300), self.theta)

    def check(self, it: int, may_refresh: torch.Tensor) -> torch.Tensor:
        """Judge correction ``it`` (> 0): keep each row's best point; rows within tolerance
        converge, rows that diverge fail unless they go back to their best point damped (a
        Levenberg-Marquardt level left) or with the step's extra Jacobian (``may_refresh``
        (m,)). Returns the rows (m,) that evaluated the extra Jacobian."""
        o, live, size = self.opts, self.live, self.size
        better = live & (size < self.best)
        self.best = torch.where(better, size, self.best)
        self.x_best = torch.where(better.view(-1, *(1,) * (self.x.ndim - 1)), self.x_new, self.x_best)
        self.z_best = torch.where(better[:, None], self.z_new, self.z_best)
        conv = live & (size <= self.tol)
        # every correction but the first must contract: the first only measures the step's
        # nonlinearity, and its residual may exceed the step itself (a tiny p_target next to a
        # moderately probable third class). Across activation-pattern changes a correction's
        # miss is random, so one that contracts by less than ``contraction`` gets a second
        # chance, if it shrank at all.
        weak = (size > o.contraction * self.size_prev) & (it > 1)
        diverging = weak & (self.slow | (size >= self.size_prev))
        self.slow = weak
        finite = torch.isfinite(size)
        fail = live & ~conv & (diverging | ~finite | (it == o.max_corrector))
        damp = fail & diverging & finite & (it < o.max_corrector) & (self.level < LM_LEVELS)
        if damp.any():
            # Levenberg-Marquardt: back to the best point, a shorter, damped correction
            rr = damp.nonzero()[:, 0]
            fail[rr] = False
            self.level[rr] += 1
            self._back_to_best(rr)
        fresh = fail & diverging & finite & (it < o.max_corrector) & may_refresh
        if fresh.any():
            # the secant updates stopped contracting: one more Jacobian evaluation, at the best
            # point so far, instead of a shorter step
            rr = fresh.nonzero()[:, 0]
            fail[rr] = False
            self._back_to_best(rr)
            _, Jr = self.net.jacobian(self.gidx[rr], self.x_new[rr])
            self.J[rr] = Jr.to(torch.float64)
            self.K[rr] = self.J[rr] @ self.J[rr].transpose(-1, -2)
            self.w[rr] = fisher_lsq(self.Lt[rr], self.K[rr], self.r[rr], self.lam[rr])
        self.good |= conv
        self.failed |= fail
        self.live &= ~conv & ~fail
        return fresh

    def _back_to_best(self, rr: torch.Tensor) -> None:
        """Rows rr (k,) go on from their best point, with its residual and size."""
        view, x = self.net.view, self.x
        self.x_new[rr], self.z_new[rr] = self.x_best[rr], self.z_best[rr]
        self.delta[rr] = (self.x_best[rr] - x[rr]).reshape(rr.numel(), -1).to(torch.float64)
        self.r[rr] = self.target[rr] - log_probs(view.reduce(self.z_best[rr], self.gidx[rr]))
        self.size[rr], self.slow[rr] = self.best[rr], False

    def correct(self) -> None:
        """One correction of the live rows (a forward pass each), then the secant update of J
        and K, what the box holds, and the new residual."""
        view, x, gidx, live = self.net.view, self.x, self.gidx, self.live
        li = live.nonzero()[:, 0]
        self.corrections[li] += 1
        w = self.w
        damped = self.level > 0
        if damped.any():
            mu = LM_START * LM_GROW ** (self.level - 1).clamp_min(0).to(torch.float64) * self.lam_max
            w = torch.where(damped[:, None], fisher_lsq(self.Lt, self.K, self.r, self.lam + mu), w)
        x_prev, z_prev = self.x_new.clone(), view.reduce(self.z_new, gidx).clone()
        # J^T w for every row (cheaper than gathering the live rows of J)
        self.delta[li] += rows_combination(w, self.J)[li]
        self.x_new[li] = into_box(x[li] + self.delta[li].to(x.dtype).reshape(x[li].shape), self.opts.box)
        self.z_new[li] = self.net.forward(gidx[li], self.x_new[li])
        bad = ~torch.isfinite(self.z_new[li]).all(-1)
        self.nonfinite[li[bad]] = True
        live[li[bad]] = False
        zr_new = view.reduce(torch.nan_to_num(self.z_new), gidx)
        broyden_update(self.J, self.K, live, self.x_new - x_prev, zr_new - z_prev)
        rebound = self.projection.bind(self.x_new, self.J, self.K, live)
        self.r = self.target - log_probs(zr_new)
        # a correction after the box changed J (coordinates newly held) need not contract
        if rebound is None:
            self.size_prev = self.size
        else:
            self.clamped |= rebound
            self.size_prev = torch.where(rebound, torch.full_like(self.size, float("inf")), self.size)
