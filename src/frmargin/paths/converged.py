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
from ..solve import fisher_weights
from .base import Direction, Step, Stepper, descent_gradient
from .linalg import bmv, centred, frozen, pair_gap
from .options import TracerOptions
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
#: a linear miss above this (the prediction more wrong than right) shrinks the logit step by
#: THETA_TARGET / theta even when the corrector coped
THETA_LARGE = 1.0


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
