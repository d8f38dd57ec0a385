"""The converged steppers: step-size control shared by the predictor-corrector (Fisher metric)
and the plain gradient steps (Euclidean metric).

A step starts from the direction at the current point, chooses an FR step h from the turn of
the p-direction since the last step and a logit step hz from the last step's nonlinearity, and
tries up to ``max_attempts`` times, halving h (and dividing hz by 2, by 3 for the Euclidean
steps) after each refusal.
Shapes: m paths (``idx`` (m,)), C classes, V classes of the view, *S the input shape, D =
prod(S); simplex quantities are float64.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.func import jvp, vjp

from ..geometry import fr_distance
from ..solve import fisher_lsq, fisher_weights, largest_eigenvalue_factored
from .base import Direction, Step, Stepper, descent_gradient, row_direction
from .events import event_gap
from .linalg import bmv, broyden_update, centred, frozen, log_probs, pair_gap, rows_combination
from .options import TracerOptions
from .simplex_line import SimplexLine, anchored_line
from .state import Network

#: wanted relative miss of the linear prediction of the logit gap (sets the logit step of
#: the Euclidean steps, and bounds the Fisher steps' where the miss is large)
THETA_TARGET = 0.5
#: the logit step never grows past this multiple of the ``logit_step`` option
MAX_LOGIT_SCALE = 8.0
#: a Fisher step whose corrector converged within this many corrections grows the logit step
#: by GROW (across activation-pattern changes each correction shrinks the residual by a
#: factor ~0.3-0.5 whatever the step, so 4-5 corrections to reach ``rtol`` are normal)
FAST_CORRECTIONS = 5
GROW = 1.5
#: ... and one that needed more than this many shrinks it (by SLOW_SHRINK)
SLOW_CORRECTIONS = 6
SLOW_SHRINK = 0.7
#: a corrector that fails keeps its best point when that point's residual is within this
#: multiple of the tolerance, or no further from the line than the step's start (not on a
#: final step): on the anchored line the next steps pull it back, so the miss does not add up
#: along the path
LOOSE = 3.0
#: an accepted step lands within this share of its own FR length of its target, measured
#: (or within LOOSE x its tolerance, or its drift): the corrector judges its residual in the
#: metric of the step's start, which hardly sees a class that was negligible there, so a long
#: step on which such a class jumps from p ~ 1e-8 to ~0.4 looks converged (ResNet-20 on the
#: official images, targets at p ~ 1e-11: 20 of 6,696 paths were shielded by such a jump,
#: at FR lengths up to 2.3 where the flow's is pi/2)
LANDING = 0.5
#: a linear miss above this (the prediction more wrong than right) shrinks the logit step by
#: THETA_TARGET / theta even when the corrector coped
THETA_LARGE = 1.0
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
#: the last step's absolute tolerance is this share of ``atol``: the length ends where the
#: last segment meets the boundary, so its landing miss is an error of the margin itself, and
#: margins are as small as 0.003 FR between two near-tied classes (cnn-a-adv4: relative errors
#: of 7-20% on such paths at the full atol, p90 0.017 over 72 paths; 0.0044 at 0.1 atol, for
#: 5% more Jacobians)
FINAL_ATOL = 0.1


@dataclass(frozen=True)
class Start:
    """Where m paths start a step: indices, points (m, *S), logits (m, C), probabilities
    (m, V) of the view, p-velocity pdot (m, V), its Fisher speed (m,) and the direction."""

    idx: torch.Tensor
    x: torch.Tensor
    z: torch.Tensor
    p: torch.Tensor
    pdot: torch.Tensor
    speed: torch.Tensor
    direction: Direction

    def take(self, rows: torch.Tensor) -> Start:
        """The paths ``rows`` (a mask or indices) of this start."""
        return Start(
            self.idx[rows],
            self.x[rows],
            self.z[rows],
            self.p[rows],
            self.pdot[rows],
            self.speed[rows],
            self.direction.take(rows),
        )


@dataclass(frozen=True)
class Attempt:
    """The outcome of one try for m paths: new points (m, *S) and logits (m, C), accepted and
    nonfinite masks (m,), the relative miss theta (m,) of the linear prediction of the logit
    gap, and (predictor-corrector) which steps were aimed just past the boundary and how many
    corrections (forward passes) each took (m,) int64."""

    x_new: torch.Tensor
    z_new: torch.Tensor
    good: torch.Tensor
    nonfinite: torch.Tensor
    theta: torch.Tensor
    planned: torch.Tensor | None = None
    corrections: torch.Tensor | None = None


#: (ok (m,) mask of the paths with a finite direction, then for those: z (k, C), p (k, V), direction)
Found = tuple[torch.Tensor, torch.Tensor, torch.Tensor, Direction]


class ConvergedStepper(Stepper):
    """Step control and attempts; subclasses give the direction and one attempt."""

    def direction(self, idx: torch.Tensor, x: torch.Tensor) -> Found:
        """The finite mask ok (m,), and z, p and the direction of the ok rows, at x (m, *S)."""
        raise NotImplementedError

    def attempt(self, s: Start, h: torch.Tensor, hz: torch.Tensor) -> Attempt:
        raise NotImplementedError

    def _start(self, idx: torch.Tensor) -> Start | None:
        st = self.net.state
        x = st.x[idx]
        ok, z, p, d = self.direction(idx, x)
        st.finish(idx[~ok], "nonfinite")
        idx, x = idx[ok], x[ok]
        if idx.numel() == 0:
            return None
        pdot = bmv(d.weights, d.zdot)
        speed = (d.zdot * pdot).sum(-1).clamp_min(0).sqrt()
        moving = torch.isfinite(speed) & (speed > 0) & torch.isfinite(pdot).all(-1)
        st.finish(idx[~moving], "stalled")
        s = Start(idx, x, z, p, pdot, speed, d)
        if not moving.all():
            # each attempt copies its rows (its corrector updates J and K in place), so the
            # start copies only to drop paths (MobileNetV2, m = 10: each copy ~2% of tracing time)
            s = s.take(moving)
        return s if s.idx.numel() else None

    def _fr_step(self, s: Start) -> torch.Tensor:
        """FR step h (m,): the turn of the p-space direction since the last step estimates the
        local error of a straight predictor; zero on the exact flow of a submersion."""
        st, o = self.net.state, self.opts
        unit = s.pdot / s.pdot.norm(dim=-1, keepdim=True)
        h = st.fr_step[s.idx].clone()
        prev = st.has_prev[s.idx]
        err = 0.5 * h * (unit - st.prev_dir[s.idx]).norm(dim=-1)
        factor = (0.9 * (o.rtol * h / err.clamp_min(1e-300)).sqrt()).clamp(0.2, 2.0)
        h = torch.where(prev, (h * factor).clamp(max=o.eta), h)
        st.prev_dir[s.idx] = unit
        st.has_prev[s.idx] = True
        return h

    #: whether a step whose attempts all failed gets a second round (``fallback`` set)
    has_fallback = False

    def __init__(self, net: Network, opts: TracerOptions) -> None:
        super().__init__(net, opts)
        #: (n,) paths in the fallback round of their step
        self.fallback = torch.zeros(len(net.state), dtype=torch.bool, device=net.state.x.device)

    def _retry_sizes(
        self,
        idx: torch.Tensor,
        pending: torch.Tensor,
        h0: torch.Tensor,
        hz0: torch.Tensor,
        h: torch.Tensor,
        hz: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """FR and logit steps (m,) the fallback round of paths idx (m,) starts from, given their
        first sizes h0, hz0 and those the first round ended at, h, hz (rows ``pending`` (k,)
        stalled): the first sizes (the round changes the line, not the size)."""
        return h0.clone(), hz0.clone()

    def _second_round(self, idx: torch.Tensor) -> torch.Tensor:
        """(m,) which of the stalled paths idx (m,) get the fallback round: all of them here."""
        return torch.ones(idx.numel(), dtype=torch.bool, device=idx.device)

    def _fell_back(self, idx: torch.Tensor) -> None:
        """Paths idx (k,) had a step accepted in the fallback round (nothing to do here)."""

    def _stalled(self, idx: torch.Tensor, hz0: torch.Tensor) -> None:
        """No attempt of paths idx (k,) made progress; their step began at logit step hz0 (k,):
        they end ``stalled`` (the box stepper may retry them with a damped direction)."""
        self.net.state.finish(idx, "stalled")

    def propose(self, idx: torch.Tensor) -> Iterator[Step]:
        st, o = self.net.state, self.opts
        s = self._start(idx)
        if s is None:
            return
        idx = s.idx
        h0 = self._fr_step(s)
        hz0 = st.logit_step[idx].clone()
        pending = torch.arange(idx.numel(), device=idx.device)
        h, hz = h0.clone(), hz0.clone()
        for fallback in range(2 if self.has_fallback else 1):
            # the fallback round retries a stalled step from its first size, aimed differently
            self.fallback[idx[pending]] = fallback == 1
            if fallback:
                again = self._second_round(idx[pending])
                self._stalled(idx[pending[~again]], hz0[pending[~again]])
                pending = pending[again]
                h, hz = self._retry_sizes(idx, pending, h0, hz0, h, hz)
            st.logit_step[idx[pending]] = hz[pending]
            for _ in range(o.max_attempts):
                if pending.numel() == 0:
                    break
                a = self.attempt(s.take(pending), h[pending], hz[pending])
                st.finish(idx[pending[a.nonfinite]], "nonfinite")
                acc = pending[a.good]
                if acc.numel():
                    corr = None if a.corrections is None else a.corrections[a.good]
                    scale = logit_step_scale(a.theta[a.good], corr)
                    st.logit_step[idx[acc]] = (hz[acc] * scale).clamp(max=MAX_LOGIT_SCALE * o.logit_step)
                    planned = None if a.planned is None else a.planned[a.good]
                    if fallback:
                        self._fell_back(idx[acc])
                    yield Step(idx[acc], s.x[acc], s.z[acc], a.x_new[a.good], a.z_new[a.good], h[acc], planned)
                pending = pending[~a.good & ~a.nonfinite]
                h[pending] = h[pending] / 2
                hz[pending] = hz[pending] / (3 if a.corrections is None else 2)
                st.logit_step[idx[pending]] = hz[pending]
        self.fallback[idx] = False
        self._stalled(idx[pending], hz0[pending])


def logit_step_scale(theta: torch.Tensor, corrections: torch.Tensor | None) -> torch.Tensor:
    """Factor (k,) on the logit step after k accepted steps, from their linear miss theta (k,)
    and (Fisher steps) the corrections (k,) their corrector took.

    Euclidean steps have no corrector: the miss grows with the step, aim it at THETA_TARGET.
    Fisher steps: a trust region on the realized change. The networks of the zoo are piecewise
    linear (ReLU), and there the miss does not shrink with the step (measured on CNN-A: theta
    ~0.5 at logit steps from 1 down to 0.01 nats, each step crossing activation-pattern
    changes), so shrinking toward it starves the path; what decides whether a step of this
    size works is whether the corrector, whose secant updates learn the kinks met, pulls the
    network onto the line in few forward passes. Steps it managed quickly grow the logit
    step, slow ones shrink it; only a slow step whose miss is above THETA_LARGE shrinks it by theta.
    """
    shrink = (THETA_TARGET / theta.clamp_min(1e-12)).clamp(0.3, 2.0)
    if corrections is None:
        return shrink
    by_corrector = torch.where(
        corrections <= FAST_CORRECTIONS,
        torch.full_like(theta, GROW),
        torch.where(corrections > SLOW_CORRECTIONS, torch.full_like(theta, SLOW_SHRINK), torch.ones_like(theta)),
    )
    # a step the corrector managed quickly grows whatever its miss: at a tiny logit step the miss
    # is that of pulling back the drift (or float rounding) over a vanishing predicted change
    # (theta ~1e10 seen), and shrinking by it ratchets the logit step to zero (cnn-a-adv4:
    # paths at the budget with logit steps < 1e-3)
    large = (theta > THETA_LARGE) & (corrections > FAST_CORRECTIONS)
    return torch.where(large, torch.minimum(shrink, by_corrector), by_corrector)


class FisherStepper(ConvergedStepper):
    """Predictor on the simplex line, corrector with the step's Jacobian (forward passes).

    A step whose attempts on the anchored line all fail is retried on the line through the
    current point (the fallback round): pulling a drift back can need a long move where the
    network is rough."""

    has_fallback = True

    def __init__(self, net: Network, opts: TracerOptions) -> None:
        super().__init__(net, opts)
        st = net.state
        #: (n, V) probabilities of the view at the start points: the flow's line is anchored there
        self.anchor = net.probs(st.z, torch.arange(len(st), device=st.z.device))
        #: (n,) paths that evaluated an extra Jacobian in their current step
        self.refreshed = torch.zeros(len(st), dtype=torch.bool, device=st.z.device)
        #: (n,) paths no longer anchored on the start line: a step of theirs needed the fallback round
        self.loose = torch.zeros(len(st), dtype=torch.bool, device=st.z.device)
        #: (n,) paths whose last attempt aimed at the start line (``anchored_line``)
        self.anchored = torch.zeros(len(st), dtype=torch.bool, device=st.z.device)

    def _second_round(self, idx: torch.Tensor) -> torch.Tensor:
        """Only paths whose first round aimed at the start line from off it get the fallback
        round: for the others (paths no longer anchored, and a path's first step, which starts
        on its line) it would retry the same line from the same sizes, without the extra
        Jacobian (cnn-a-adv4: 6 attempts of 8 forward passes each that repeated the first
        round's misses exactly). The first step is told by the count of accepted steps, not by
        a zero drift: the start's probabilities from the chunk's first forward pass and from
        its Jacobian evaluation may differ in the last bit, by batch."""
        return self.anchored[idx] & (self.net.state.steps[idx] > 0)

    def _fell_back(self, idx: torch.Tensor) -> None:
        """A path whose step needed the fallback round stops aiming at the start line: there
        the network cannot pull back the path's drift (measured on CNN-A: a drift of 0.003-0.09
        FR whose pull-back moves p 10-100x further than asked, at every step size tried), so
        each later step would spend its first round failing (``max_attempts`` tries and the
        step's extra Jacobian) and its logit step would ratchet down (cnn-a-adv2: 191 of one
        path's 200 steps were taken in the fallback round, and the path ended at the budget)."""
        self.loose[idx] = True

    def direction(self, idx: torch.Tensor, x: torch.Tensor) -> Found:
        self.refreshed[idx] = False
        z, J = self.net.jacobian(idx, x)
        ok = torch.isfinite(J).flatten(1).all(-1) & torch.isfinite(z).all(-1)
        if not ok.all():
            idx, x, z, J = idx[ok], x[ok], z[ok], J[ok]
        p = self.net.probs(z, idx)
        return ok, z, p, self.solve_direction(idx, x, J, p)

    def solve_direction(self, idx: torch.Tensor, x: torch.Tensor, J: torch.Tensor, p: torch.Tensor) -> Direction:
        """The descent direction of the finite paths idx (k,) at x (k, *S) from their Jacobian
        rows J (k, V, D) and probabilities p (k, V); the box stepper projects it."""
        return row_direction(self.opts, x, J, p, descent_gradient(self.net, idx, p))

    def _landing_share(self, s: Start) -> torch.Tensor:
        """(m,) share of its own FR length within which a step of paths ``s`` must land of its
        aim, beside LOOSE x its tolerance and its drift (LANDING; the box stepper tightens it)."""
        return torch.full((s.idx.numel(),), LANDING, dtype=torch.float64, device=s.p.device)

    def _never_held(self, s: Start) -> torch.Tensor:
        """(m,) paths whose box never held a coordinate (all of them without a box): there the
        flow is the unconstrained one, and so is the step control."""
        if self.opts.box is None:
            return torch.ones(s.idx.numel(), dtype=torch.bool, device=s.p.device)
        held = self.net.state.box_changes[s.idx] > 0
        if s.direction.active is not None:
            held |= s.direction.active.any(-1)
        return ~held

    def _aim(
        self, s: Start, h: torch.Tensor, hz: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target log-probabilities (m, V), tolerance (m,), the final mask (m,) of a step and
        the FR distance (m,) of its start from its line (the drift the step pulls back).

        The target lies on the line p + t pdot (anchored on the start line where pdot is the
        flow's direction, ``anchored_line``), at FR distance h or log-probability change hz,
        whichever comes first, or just past the class boundary when the line crosses it sooner.
        """
        o, st = self.opts, self.net.state
        top, k = self.net.view.classes(s.idx, st.top[s.idx], st.target[s.idx])
        chase = st.chasing[s.idx]
        # where the box ever held a coordinate the projected flow turns: no fixed line to anchor on
        allowed = ~chase & ~self.fallback[s.idx] & ~self.loose[s.idx] & self._never_held(s)
        line, on = anchored_line(s.p, s.pdot, self.anchor[s.idx], top, k, allowed)
        self.anchored[s.idx] = on
        t = line.step(h, hz)
        # the lumped rest of a many-class view is no class: a tie with it changes nothing (where
        # it outweighs the source, every step had been aimed at that "boundary" at t = 0 and
        # crept by the overshoot: MobileNetV2 images with p_y 0.16-0.38, 199 Jacobians per path)
        t_star = line.crossing(top, skip_last=self.net.view.lumped)
        if chase.any():
            t_star = torch.where(chase, line.overtake(k), t_star)
        final = t_star <= t
        if final.any():
            rows = final.nonzero()[:, 0]
            sub = SimplexLine(line.p[rows], line.d[rows])
            t[rows] = sub.beyond(t_star[rows], o.overshoot)
        p_target = line.at(t)
        target = torch.log(p_target.clamp_min(1e-300))
        # the last step lands tighter than its overshoot: its end point is past the boundary and
        # on the line, where the length to the tie is measured (and its floor is FINAL_ATOL x atol)
        rel = torch.where(final, torch.full_like(h, min(o.rtol, o.overshoot / 4)), torch.full_like(h, o.rtol))
        floor = torch.where(final, torch.full_like(h, FINAL_ATOL * o.atol), torch.full_like(h, o.atol))
        tol = torch.maximum(rel * fr_distance(s.p, p_target), floor)
        return target, tol, final, fr_distance(s.p, line.p)

    def attempt(self, s: Start, h: torch.Tensor, hz: torch.Tensor) -> Attempt:
        """Corrections solve the damped Fisher least-squares problem for the remaining
        log-probability residual r: dx = J^T (M K + lam I)^{-1} M r, which with full-rank J
        reproduces r exactly (mod 1); after each correction a Broyden secant update makes J map
        the move just made onto the logit change the network made (no extra passes). A
        correction that stops contracting goes back to the best point and moves by the damped
        solve with lam + mu (Levenberg-Marquardt, mu from LM_START in LM_LEVELS levels times the
        largest eigenvalue of L^T K L) before the step's one extra Jacobian is evaluated; the residual's
        size is always that of the undamped solve. theta is the relative miss of the first
        linear prediction of the logit gap."""
        o, st, view = self.opts, self.net.state, self.net.view
        d, gidx, x = s.direction, s.idx, s.x
        Lt, K, lam, J64, M = d.factor, d.gram, d.damping, d.jacobian, d.weights
        assert Lt is not None and K is not None and lam is not None and J64 is not None
        top, k = view.classes(gidx, st.top[gidx], st.target[gidx])
        target, tol, final, drift = self._aim(s, h, hz)
        p_target = target.exp()
        r = target - log_probs(view.reduce(s.z, gidx))
        r0_gap = pair_gap(r, top, k)
        m = x.shape[0]
        delta = torch.zeros(m, J64.shape[-1], dtype=torch.float64, device=x.device)
        x_new, z_new = x.clone(), s.z.clone()
        live = torch.ones(m, dtype=torch.bool, device=x.device)
        good = torch.zeros_like(live)
        nonfinite = torch.zeros_like(live)
        size_prev = torch.full((m,), float("inf"), dtype=torch.float64, device=x.device)
        theta = torch.zeros(m, dtype=torch.float64, device=x.device)
        predicted = theta
        corrections = torch.zeros(m, dtype=torch.int64, device=x.device)
        slow = torch.zeros_like(live)
        best = torch.full((m,), float("inf"), dtype=torch.float64, device=x.device)
        x_best, z_best = x.clone(), s.z.clone()
        failed = torch.zeros_like(live)
        refreshed = torch.zeros_like(live)
        # Levenberg-Marquardt level (m,) of each row's corrections: 0 undamped, else damping
        # LM_START x LM_GROW^(level - 1) x lam_max beside the direction's lam
        level = torch.zeros(m, dtype=torch.int64, device=x.device)
        lam_max = largest_eigenvalue_factored(Lt, K)
        for it in range(o.max_corrector + 1):
            # the residual's size is that of the exact (undamped) correction
            w = fisher_lsq(Lt, K, r, lam)
            dz = centred(bmv(K, w), s.p)
            size = (dz * bmv(M, dz)).sum(-1).clamp_min(0).sqrt()
            if it == 0:
                predicted = pair_gap(dz, top, k)
            if it == 1:
                # nonlinearity along the path: how far the change of the logit gap
                # log p_top - log p_target after the first step is from its linear prediction
                miss = ((r0_gap - pair_gap(r, top, k)) - predicted).abs()
                theta = torch.where(live, miss / predicted.abs().clamp_min(1e-300), theta)
            if it > 0:
                better = live & (size < best)
                best = torch.where(better, size, best)
                x_best = torch.where(better.view(-1, *(1,) * (x.ndim - 1)), x_new, x_best)
                z_best = torch.where(better[:, None], z_new, z_best)
                conv = live & (size <= tol)
                # every correction but the first must contract: the first only measures the
                # step's nonlinearity, and its residual may exceed the step itself (a tiny
                # p_target next to a moderately probable third class). Across activation-
                # pattern changes a correction's miss is random, so one that contracts by less
                # than ``contraction`` gets a second chance, if it shrank at all.
                weak = (size > o.contraction * size_prev) & (it > 1)
                diverging = weak & (slow | (size >= size_prev))
                slow = weak
                finite = torch.isfinite(size)
                fail = live & ~conv & (diverging | ~finite | (it == o.max_corrector))
                damp = fail & diverging & finite & (it < o.max_corrector) & (level < LM_LEVELS)
                if damp.any():
                    # Levenberg-Marquardt: back to the best point, a shorter, damped correction
                    rr = damp.nonzero()[:, 0]
                    fail[rr] = False
                    level[rr] += 1
                    x_new[rr], z_new[rr] = x_best[rr], z_best[rr]
                    delta[rr] = (x_best[rr] - x[rr]).reshape(rr.numel(), -1).to(torch.float64)
                    r[rr] = target[rr] - log_probs(view.reduce(z_best[rr], gidx[rr]))
                    size[rr], slow[rr] = best[rr], False
                fresh = fail & diverging & finite & ~refreshed & (it < o.max_corrector)
                fresh &= ~self.refreshed[gidx]  # at most one extra Jacobian per step
                fresh &= self._never_held(s)
                if fresh.any():
                    # the secant updates stopped contracting: one more Jacobian evaluation, at
                    # the best point so far, instead of a shorter step
                    rr = fresh.nonzero()[:, 0]
                    refreshed[rr] = True
                    self.refreshed[gidx[rr]] = True
                    fail[rr] = False
                    x_new[rr], z_new[rr] = x_best[rr], z_best[rr]
                    delta[rr] = (x_best[rr] - x[rr]).reshape(rr.numel(), -1).to(torch.float64)
                    _, Jr = self.net.jacobian(gidx[rr], x_new[rr])
                    J64[rr] = Jr.to(torch.float64)
                    K[rr] = J64[rr] @ J64[rr].transpose(-1, -2)
                    r[rr] = target[rr] - log_probs(view.reduce(z_new[rr], gidx[rr]))
                    w[rr] = fisher_lsq(Lt[rr], K[rr], r[rr], lam[rr])
                    size[rr], slow[rr] = best[rr], False
                good |= conv
                failed |= fail
                live &= ~conv & ~fail
            if not live.any():
                break
            li = live.nonzero()[:, 0]
            corrections[li] += 1
            damped = level > 0
            if damped.any():
                mu = LM_START * LM_GROW ** (level - 1).clamp_min(0).to(torch.float64) * lam_max
                w = torch.where(damped[:, None], fisher_lsq(Lt, K, r, lam + mu), w)
            x_prev, z_prev = x_new.clone(), view.reduce(z_new, gidx).clone()
            # J^T w for every row (cheaper than gathering the live rows of J)
            delta[li] += rows_combination(w, J64)[li]
            x_new[li] = self.clamp(x[li] + delta[li].to(x.dtype).reshape(x[li].shape))
            z_new[li] = self.net.forward(gidx[li], x_new[li])
            bad = ~torch.isfinite(z_new[li]).all(-1)
            nonfinite[li[bad]] = True
            live[li[bad]] = False
            zr_new = view.reduce(torch.nan_to_num(z_new), gidx)
            broyden_update(J64, K, live, x_new - x_prev, zr_new - z_prev)
            rebound = self.bind(x_new, J64, K, live)
            r = target - log_probs(zr_new)
            # a correction after the box changed J (coordinates newly held) need not contract
            size_prev = size if rebound is None else torch.where(rebound, torch.full_like(size, float("inf")), size)
        keep = failed & ~final & ~nonfinite & (best <= torch.maximum(LOOSE * tol, drift))
        # ... and only before the class change: a path ends at its step's tie, nothing pulls it back
        keep &= event_gap(st, gidx, torch.nan_to_num(z_best)) > 0
        # ... and only forward: at least half the planned fall of log p_top - log p_target
        gap_best = pair_gap(log_probs(view.reduce(torch.nan_to_num(z_best), gidx)), top, k)
        gap_start = pair_gap(log_probs(view.reduce(s.z, gidx)), top, k)
        keep &= gap_start - gap_best >= 0.5 * (-r0_gap).clamp_min(0)
        x_new[keep], z_new[keep] = x_best[keep], z_best[keep]
        good |= keep
        p_new = self.net.probs(torch.nan_to_num(z_new), gidx)
        # no accepted step has zero length (a path would spin in place)
        good &= fr_distance(s.p, p_new) > 0
        # ... and every accepted step lands near its target, measured (LANDING)
        near = torch.maximum(torch.maximum(LOOSE * tol, drift), self._landing_share(s) * fr_distance(s.p, p_target))
        good &= fr_distance(p_new, p_target) <= near
        return Attempt(x_new, z_new, good & ~nonfinite, nonfinite, theta, final, corrections)


class EuclideanStepper(ConvergedStepper):
    """Plain steps along the gradient of the descended function, same step control."""

    def direction(self, idx: torch.Tensor, x: torch.Tensor) -> Found:
        """The plain gradient direction v = -J^T a (m, D) and its logit velocity J v (m, V)
        from one vjp and one jvp: V times fewer backward passes than the Jacobian rows. With a
        box, coordinates at a bound that v would push outward are frozen."""
        net, view = self.net, self.net.view

        def both(xx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            zz = net.model(xx)
            return view.reduce(zz, idx), zz

        with torch.enable_grad():
            zr, pullback, z = vjp(both, x.detach(), has_aux=True)  # type: ignore[misc]
        z = z.detach()
        p = torch.softmax(zr.detach().to(torch.float64), -1)
        a = descent_gradient(net, idx, p)
        (g,) = pullback(a.to(zr.dtype))
        v = -g.detach().reshape(x.shape[0], -1).to(torch.float64)
        if self.opts.box is not None:
            v = torch.where(frozen(x, v, self.opts.box), torch.zeros_like(v), v)
        with torch.enable_grad():
            tangent = (v.to(x.dtype).reshape(x.shape),)
            _, zdot = jvp(lambda xx: view.reduce(net.model(xx), idx), (x.detach(),), tangent)  # type: ignore[misc]
        net.state.matvecs[idx] += 1
        zdot = centred(zdot.detach().to(torch.float64), p)
        ok = torch.isfinite(z).all(-1) & torch.isfinite(v).all(-1) & torch.isfinite(zdot).all(-1)
        if not ok.all():
            z, p, v, zdot = z[ok], p[ok], v[ok], zdot[ok]
        return ok, z, p, Direction(v=v, zdot=zdot, weights=fisher_weights(p))

    def attempt(self, s: Start, h: torch.Tensor, hz: torch.Tensor) -> Attempt:
        """FR length h by its linear speed, or a linearly predicted change hz of the logit gap,
        whichever is shorter. A step whose realized FR length exceeds 2 h is refused (the
        linear speed can be tiny near p_y = 1)."""
        st, view = self.net.state, self.net.view
        gidx, x, z, d = s.idx, s.x, s.z, s.direction
        top, k = view.classes(gidx, st.top[gidx], st.target[gidx])
        rate = pair_gap(d.zdot, top, k).abs().clamp_min(1e-300)
        tau = torch.minimum(h / s.speed, hz / rate)
        x_new = self.clamp(x + (tau[:, None] * d.v).to(x.dtype).reshape(x.shape))
        z_new = self.net.forward(gidx, x_new)
        nonfinite = ~torch.isfinite(z_new).all(-1)
        z_safe = view.reduce(torch.nan_to_num(z_new), gidx).to(torch.float64)
        moved = fr_distance(s.p, torch.softmax(z_safe, -1))
        good = ~nonfinite & (moved <= 2 * h) & (moved > 0)
        predicted = tau * pair_gap(d.zdot, top, k)
        change = pair_gap(z_safe - view.reduce(z, gidx).to(torch.float64), top, k)
        theta = (change - predicted).abs() / predicted.abs().clamp_min(1e-300)
        return Attempt(x_new, z_new, good, nonfinite, theta)
