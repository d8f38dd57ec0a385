"""The step attempt of the natural-gradient flow: a predictor on the simplex line, a corrector
that pulls the network onto it with the step's Jacobian and forward passes (``correction``),
and the checks an accepted step must pass.

The line a step aims at is anchored on the start line while the path keeps to it
(``StartLines``, which is also the ``Fallback`` of the Fisher steps: a step whose attempts on
the anchored line all fail is retried on the line through the current point). The box, if any,
is the ``Projection`` the corrector is given: it holds the coordinates a correction drives onto
a bound, and a step it touched must land within its tolerance and make progress.
Shapes: m paths (``idx`` (m,)), C classes, V classes of the view, *S the input shape, D =
prod(S); simplex quantities are float64.
"""

from __future__ import annotations

import torch

from ..geometry import fr_distance
from .correction import LOOSE, Correction
from .events import event_gap
from .linalg import log_probs, pair_gap
from .options import ResolvedOptions
from .simplex_line import SimplexLine, anchored_line
from .state import Network
from .step_control import THETA_LARGE
from .step_types import Attempt, Projection, Start

#: an accepted step lands within this share of its own FR length of its target, measured
#: (or within LOOSE x its tolerance, or its drift): the corrector judges its residual in the
#: metric of the step's start, which hardly sees a class that was negligible there, so a long
#: step on which such a class jumps from p ~ 1e-8 to ~0.4 looks converged (ResNet-20 on the
#: official images, targets at p ~ 1e-11: 20 of 6,696 paths were shielded by such a jump,
#: at FR lengths up to 2.3 where the flow's is pi/2). A step the box touched (held or newly
#: bound coordinates) gets no share of its length: the corrector judges its residual by the
#: correction it asks for, and with held coordinates a residual the free ones cannot reach asks
#: for almost none (measured on CNN-A: "converged" steps that moved p the wrong way by 1 FR,
#: paths of length 10 ending far beyond the lower bound)
LANDING = 0.5
#: a step the box touched must move p by at least this fraction of its aim (FR): a correction
#: cut by the box may "converge" within ``atol`` without moving (zero-length steps)
MIN_PROGRESS = 0.05
#: the last step's absolute tolerance is this share of ``atol``: the length ends where the
#: last segment meets the boundary, so its landing miss is an error of the margin itself, and
#: margins are as small as 0.003 FR between two near-tied classes (cnn-a-adv4: relative errors
#: of 7-20% on such paths at the full atol, p90 0.017 over 72 paths; 0.0044 at 0.1 atol, for
#: 5% more Jacobians)
FINAL_ATOL = 0.1


class StartLines:
    """Which line each path's steps aim at, and the fallback round of the Fisher steps.

    Where a step's p-velocity is the flow's direction, its line is anchored on the line through
    the path's start point (``anchored_line``); a path whose step needed the fallback round
    aims off it from then on (``loose``)."""

    def __init__(self, net: Network) -> None:
        self.net = net
        st = net.state
        #: (n, V) probabilities of the view at the start points: the flow's line is anchored there
        self.anchor = net.probs(st.z, torch.arange(len(st), device=st.z.device))
        #: (n,) paths no longer anchored on the start line: a step of theirs needed the fallback round
        self.loose = torch.zeros(len(st), dtype=torch.bool, device=st.z.device)
        #: (n,) paths whose last attempt aimed at the start line (``anchored_line``)
        self.anchored = torch.zeros(len(st), dtype=torch.bool, device=st.z.device)

    def line(self, s: Start, top: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor) -> SimplexLine:
        """The line of the paths ``s``, anchored on the start line where ``allowed`` (m,)."""
        line, on = anchored_line(s.p, s.pdot, self.anchor[s.idx], top, k, allowed & ~self.loose[s.idx])
        self.anchored[s.idx] = on
        return line

    def second_round(self, idx: torch.Tensor) -> torch.Tensor:
        """Only paths whose first round aimed at the start line from off it get the fallback
        round: for the others (paths no longer anchored, and a path's first step, which starts
        on its line) it would retry the same line from the same sizes, without the extra
        Jacobian (cnn-a-adv4: 6 attempts of 8 forward passes each that repeated the first
        round's misses exactly). The first step is told by the count of accepted steps, not by
        a zero drift: the start's probabilities from the chunk's first forward pass and from
        its Jacobian evaluation may differ in the last bit, by batch."""
        return self.anchored[idx] & (self.net.state.steps[idx] > 0)

    def fell_back(self, idx: torch.Tensor) -> None:
        """A path whose step needed the fallback round stops aiming at the start line: there
        the network cannot pull back the path's drift (measured on CNN-A: a drift of 0.003-0.09
        FR whose pull-back moves p 10-100x further than asked, at every step size tried), so
        each later step would spend its first round failing (``max_attempts`` tries and the
        step's extra Jacobian) and its logit step would ratchet down (cnn-a-adv2: 191 of one
        path's 200 steps were taken in the fallback round, and the path ended at the budget)."""
        self.loose[idx] = True


def never_held(net: Network, s: Start) -> torch.Tensor:
    """(m,) paths whose box never held a coordinate (all of them without a box): there the
    flow is the unconstrained one, and so is the step control."""
    held = net.state.box_changes[s.idx] > 0
    if s.direction.active is not None:
        held |= s.direction.active.any(-1)
    return ~held


class PredictorCorrector:
    """The Fisher step attempt: predictor on the simplex line, corrector with the step's
    Jacobian (forward passes), at most one extra Jacobian per step."""

    def __init__(self, net: Network, opts: ResolvedOptions, projection: Projection, lines: StartLines) -> None:
        self.net = net
        self.opts = opts
        self.projection = projection
        self.lines = lines
        #: (n,) paths that evaluated an extra Jacobian in their current step
        self.refreshed = torch.zeros(len(net.state), dtype=torch.bool, device=net.state.z.device)

    def begin(self, idx: torch.Tensor) -> None:
        self.refreshed[idx] = False

    def aim(
        self, s: Start, h: torch.Tensor, hz: torch.Tensor, retry: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Target log-probabilities (m, V), tolerance (m,), the final mask (m,) of a step and
        the FR distance (m,) of its start from its line (the drift the step pulls back).

        The target lies on the line p + t pdot (anchored on the start line where pdot is the
        flow's direction and the step is in its first round, ``StartLines``), at FR distance h
        or log-probability change hz, whichever comes first, or just past the class boundary
        when the line crosses it sooner.
        """
        o, st = self.opts, self.net.state
        top, k = self.net.view.classes(s.idx, st.top[s.idx], st.target[s.idx])
        chase = st.chasing[s.idx]
        # where the box ever held a coordinate the projected flow turns: no fixed line to anchor on
        allowed = ~chase & never_held(self.net, s)
        if retry:
            allowed = torch.zeros_like(allowed)
        line = self.lines.line(s, top, k, allowed)
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

    def __call__(self, s: Start, h: torch.Tensor, hz: torch.Tensor, retry: bool) -> Attempt:
        """Aim the step (``aim``), correct toward the target (``correction.Correction``), and
        judge where it landed (``accept``). theta is the relative miss of the first linear
        prediction of the logit gap."""
        target, tol, final, drift = self.aim(s, h, hz, retry)
        c = Correction(self.net, self.opts, self.projection, s, target, tol)
        # at most one extra Jacobian per step, and none where the box ever held a coordinate
        may_refresh = ~self.refreshed[s.idx] & never_held(self.net, s)
        for it in range(self.opts.max_corrector + 1):
            c.measure(it)
            if it > 0:
                refreshed = c.check(it, may_refresh)
                may_refresh &= ~refreshed
                self.refreshed[s.idx[refreshed]] = True
            if not c.live.any():
                break
            c.correct()
        return self.accept(s, c, target.exp(), tol, final, drift)

    def accept(
        self,
        s: Start,
        c: Correction,
        p_target: torch.Tensor,
        tol: torch.Tensor,
        final: torch.Tensor,
        drift: torch.Tensor,
    ) -> Attempt:
        """The attempt's outcome from its corrections ``c``: a failed corrector keeps its best
        point when within LOOSE x its tolerance or its drift (not on a final step, only before
        the class change, only forward); every accepted step moves, and lands near its target
        p_target (m, V) (``LANDING``); a step the box touched makes progress (``MIN_PROGRESS``)."""
        st, view, gidx = self.net.state, self.net.view, s.idx
        keep = c.failed & ~final & ~c.nonfinite & (c.best <= torch.maximum(LOOSE * tol, drift))
        # ... and only before the class change: a path ends at its step's tie, nothing pulls it back
        keep &= event_gap(st, gidx, torch.nan_to_num(c.z_best)) > 0
        # ... and only forward: at least half the planned fall of log p_top - log p_target
        gap_best = pair_gap(log_probs(view.reduce(torch.nan_to_num(c.z_best), gidx)), c.top, c.k)
        gap_start = pair_gap(log_probs(view.reduce(s.z, gidx)), c.top, c.k)
        keep &= gap_start - gap_best >= 0.5 * (-c.r0_gap).clamp_min(0)
        x_new, z_new = c.x_new, c.z_new
        x_new[keep], z_new[keep] = c.x_best[keep], c.z_best[keep]
        good = c.good | keep
        p_new = self.net.probs(torch.nan_to_num(z_new), gidx)
        # no accepted step has zero length (a path would spin in place)
        moved = fr_distance(s.p, p_new)
        good &= moved > 0
        # ... and every accepted step lands near its target, measured (LANDING)
        touched = c.clamped if s.direction.active is None else s.direction.active.any(-1) | c.clamped
        share = torch.full((gidx.numel(),), LANDING, dtype=torch.float64, device=s.p.device)
        share = torch.where(touched, torch.zeros_like(share), share)
        aim = fr_distance(s.p, p_target)
        near = torch.maximum(torch.maximum(LOOSE * tol, drift), share * aim)
        good &= fr_distance(p_new, p_target) <= near
        good &= ~c.nonfinite
        theta = c.theta
        if touched.any():
            # no step of a box path has zero length; one the box touched moves a share of its aim
            good &= ~(~(moved > 0) | (touched & ~(moved >= MIN_PROGRESS * aim)))
            # the linear miss of a step the box touched measures the box's cut of the prediction
            # (held or newly bound coordinates), not the network's nonlinearity at this step
            # size: there the logit step follows the corrector's effort alone (``logit_step_scale``)
            theta = torch.where(touched, theta.clamp(max=THETA_LARGE), theta)
        return Attempt(x_new, z_new, good, c.nonfinite, theta, final, c.corrections, touched)
