"""The step-size control of the converged stepper, shared by the predictor-corrector (Fisher
metric) and the plain gradient steps (Euclidean metric).

A step starts from the direction at the current point, chooses an FR step h from the turn of
the p-direction since the last step and a logit step hz from the last step's nonlinearity, and
tries up to ``max_attempts`` times, halving h (and dividing hz by 2, by 3 for the Euclidean
steps) after each refusal. A step whose attempts all failed may get a fallback round
(``Fallback``), and a stalled path may be retried from its point (``Projection.rescue``).
Shapes: m paths (``idx`` (m,)), C classes, V classes of the view, *S the input shape, D =
prod(S); simplex quantities are float64.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .linalg import bmv
from .options import ResolvedOptions
from .state import Network
from .step_types import Attempt, DirectionSource, Fallback, Projection, Start, Step, StepAttempt, Stepper

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
#: a linear miss above this (the prediction more wrong than right) shrinks the logit step by
#: THETA_TARGET / theta even when the corrector coped
THETA_LARGE = 1.0


class StepControl(Stepper):
    """The converged stepper: step-size control over a direction and a step attempt.

    ``direction`` gives the direction at a step's start, ``attempt`` tries the step at given
    sizes; ``fallback`` (None: no fallback round) picks the stalled steps retried from their
    first sizes on another line, ``projection`` (None: none) the stalled paths retried from
    their point.
    """

    def __init__(
        self,
        net: Network,
        opts: ResolvedOptions,
        direction: DirectionSource,
        attempt: StepAttempt,
        fallback: Fallback | None = None,
        projection: Projection | None = None,
    ) -> None:
        super().__init__(net, opts)
        self.direction = direction
        self.attempt = attempt
        self.fallback = fallback
        self.projection = projection

    def start(self, idx: torch.Tensor) -> Start | None:
        """Where paths idx (m,) start their step; paths without a finite direction end
        ``nonfinite``, paths that do not move ``stalled`` (None: no path left)."""
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

    def fr_step(self, s: Start) -> torch.Tensor:
        """FR step h (m,): the turn of the p-space direction since the last step estimates the
        local error of a straight predictor; zero on the exact flow of a submersion.

        Where the box's active set changed since the last step (``Direction.turned``) the
        projected flow has a kink, which is not a local error of the straight predictor: there
        the FR step is kept (a step that then fails is halved as usual)."""
        st, o = self.net.state, self.opts
        unit = s.pdot / s.pdot.norm(dim=-1, keepdim=True)
        h_prev = st.fr_step[s.idx].clone()
        h = h_prev.clone()
        prev = st.has_prev[s.idx]
        err = 0.5 * h * (unit - st.prev_dir[s.idx]).norm(dim=-1)
        factor = (0.9 * (o.rtol * h / err.clamp_min(1e-300)).sqrt()).clamp(0.2, 2.0)
        h = torch.where(prev, (h * factor).clamp(max=o.eta), h)
        st.prev_dir[s.idx] = unit
        st.has_prev[s.idx] = True
        if s.direction.turned is None:
            return h
        return torch.where(s.direction.turned & prev, torch.maximum(h, h_prev), h)

    def stalled(self, idx: torch.Tensor, hz0: torch.Tensor) -> None:
        """No attempt of paths idx (k,) made progress; their step began at logit step hz0 (k,):
        those the projection rescues are retried from their point, their logit step back at
        their step's start; the others end ``stalled``."""
        if self.projection is None:
            self.net.state.finish(idx, "stalled")
            return
        again = self.projection.rescue(idx)
        self.net.state.finish(idx[~again], "stalled")
        self.net.state.logit_step[idx[again]] = hz0[again]

    def propose(self, idx: torch.Tensor) -> Iterator[Step]:
        st, o = self.net.state, self.opts
        self.attempt.begin(idx)
        s = self.start(idx)
        if s is None:
            return
        idx = s.idx
        h0 = self.fr_step(s)
        hz0 = st.logit_step[idx].clone()
        pending = torch.arange(idx.numel(), device=idx.device)
        h, hz = h0.clone(), hz0.clone()
        # (m,) the paths the box touched in their last attempt
        touched = torch.zeros(idx.numel(), dtype=torch.bool, device=idx.device)
        for retry in (False, True):
            if retry:
                if self.fallback is None:
                    break
                # the fallback round retries a stalled step from its first size, aimed
                # differently; paths the box touched go on halving (``retry_sizes``)
                again = self.fallback.second_round(idx[pending]) | touched[pending]
                self.stalled(idx[pending[~again]], hz0[pending[~again]])
                pending = pending[again]
                h, hz = retry_sizes(touched, h0, hz0, h, hz)
            st.logit_step[idx[pending]] = hz[pending]
            for _ in range(o.max_attempts):
                if pending.numel() == 0:
                    break
                a = self.attempt(s.take(pending), h[pending], hz[pending], retry)
                if a.touched is not None:
                    touched[pending] = a.touched
                yield from self._accepted(a, s, pending, h, hz, retry)
                pending = pending[~a.good & ~a.nonfinite]
                h[pending] = h[pending] / 2
                hz[pending] = hz[pending] / (3 if a.corrections is None else 2)
                st.logit_step[idx[pending]] = hz[pending]
        self.stalled(idx[pending], hz0[pending])

    def _accepted(
        self, a: Attempt, s: Start, pending: torch.Tensor, h: torch.Tensor, hz: torch.Tensor, retry: bool
    ) -> Iterator[Step]:
        """The step of the rows ``pending`` (k,) of ``s`` that attempt ``a`` accepted (finishing
        its nonfinite rows), with its logit step scaled for the next step."""
        st, o, idx = self.net.state, self.opts, s.idx
        st.finish(idx[pending[a.nonfinite]], "nonfinite")
        acc = pending[a.good]
        if acc.numel() == 0:
            return
        corr = None if a.corrections is None else a.corrections[a.good]
        scale = logit_step_scale(a.theta[a.good], corr)
        st.logit_step[idx[acc]] = (hz[acc] * scale).clamp(max=MAX_LOGIT_SCALE * o.logit_step)
        planned = None if a.planned is None else a.planned[a.good]
        if retry:
            assert self.fallback is not None
            self.fallback.fell_back(idx[acc])
        yield Step(idx[acc], s.x[acc], s.z[acc], a.x_new[a.good], a.z_new[a.good], h[acc], planned)


def retry_sizes(
    touched: torch.Tensor, h0: torch.Tensor, hz0: torch.Tensor, h: torch.Tensor, hz: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """FR and logit steps (m,) the fallback round starts from, given the first sizes h0, hz0
    and those the first round ended at, h, hz: the first sizes (the round changes the line, not
    the size), except for paths the box touched in their last attempt (``touched`` (m,): held or
    cut coordinates): on them the fallback line is the first round's line (never anchored), so
    repeating its sizes repeats its failures; they go on halving instead. Measured on CNN-A: a
    natural-gradient direction needing an L-inf move of ~10 per unit FR length, whose steps
    down to h0 / 32 all leave the region where the network is near-linear."""
    return torch.where(touched, h, h0.clone()), torch.where(touched, hz, hz0.clone())


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
