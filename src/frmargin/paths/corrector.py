"""The predictor-corrector of the natural-gradient flow (``FisherStepper``): a predictor on the
simplex line, a corrector that pulls the network onto it with the step's Jacobian and forward
passes, Levenberg-Marquardt corrections where the secant updates stop contracting, and the
checks an accepted step must pass. The step-size control it shares with the Euclidean steps is
``converged.ConvergedStepper``.
Shapes: m paths (``idx`` (m,)), C classes, V classes of the view, *S the input shape, D =
prod(S); simplex quantities are float64.
"""

from __future__ import annotations

import torch

from ..geometry import fr_distance
from ..solve import fisher_lsq, largest_eigenvalue_factored
from .base import Direction, descent_gradient, row_direction
from .converged import Attempt, ConvergedStepper, Found, Start
from .events import event_gap
from .linalg import bmv, broyden_update, centred, log_probs, pair_gap, rows_combination
from .options import TracerOptions
from .simplex_line import SimplexLine, anchored_line
from .state import Network

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
