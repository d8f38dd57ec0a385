"""The batched path tracer: one chunk of paths advanced together, each with its own mask.

``trace_paths`` validates the input, splits paths into chunks and runs a ``ChunkTracer`` on
each. The tracer owns the loop only: the step budget, booking the steps its stepper proposes,
chaining the FR length through them, and handling class changes. Shapes: n paths in the
chunk, m in a call (``gidx`` (m,) indices into the chunk), C classes, V classes of the view,
*S the input shape. Everything on the simplex runs in float64; the network runs in the input's
dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import events
from .options import ResolvedOptions
from .state import Network, PathState
from .step_types import Step, Stepper
from .steppers import make_stepper


class ChunkTracer:
    """n paths; ``run()`` advances them until each has a final status in ``state``."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        source: torch.Tensor,
        target: torch.Tensor,
        opts: ResolvedOptions,
        network: Callable[[Callable[[torch.Tensor], torch.Tensor], PathState], Network] = Network,
    ) -> None:
        """``network`` makes the chunk's ``Network`` from the model and the state (a
        ``subspace.SubspaceNetwork`` traces in the coordinates of a perturbation model)."""
        self.opts = opts
        self.state = st = PathState(x, source, target, opts.record)
        self.net = network(model, st)
        z = self.net.start(opts.top_classes)
        st.fr_step.fill_(opts.eta)
        st.logit_step.fill_(opts.logit_step)
        st.prev_dir = torch.zeros(len(st), self.net.view.size, dtype=torch.float64, device=x.device)
        self.stepper: Stepper = make_stepper(self.net, opts)
        bad = ~torch.isfinite(z).all(-1)
        st.finish(bad, "nonfinite")
        st.finish((z.argmax(-1) != source) & ~bad, "misclassified")

    def run(self) -> PathState:
        """Advance every path to a final status; returns the state."""
        st = self.state
        while st.active.any():
            idx = st.active.nonzero()[:, 0]
            over = st.steps[idx] >= self.opts.max_steps
            st.finish(idx[over], "budget")
            idx = idx[~over]
            if idx.numel():
                self.advance(idx)
        return st

    def advance(self, idx: torch.Tensor) -> None:
        """One iteration for the running paths ``idx`` (m,): book every step proposed."""
        for step in self.stepper.propose(idx):
            self.accept(step)

    def accept(self, step: Step) -> None:
        """Book an accepted step; locate and handle a class change inside it.

        ``step.planned`` (m,) marks steps aimed just past the boundary on the flow's line: their
        end point is on the line, so the change is placed where the straight p-segment of the
        step meets the boundary (the image of the flow between the two points, as for every
        other step's length), and the end point itself becomes ``x_end``. A change nobody
        planned (a class that left the line, a Euclidean or paper step) is located on the
        input-space chord by regula falsi.

        The length chains through the logits stored at the last accepted point (``state.z``),
        not those of this step's Jacobian evaluation: the same point evaluated in another batch
        differs by ~1e-5 in float32 logits, and near p = (1/2, 1/2) such gaps would break the
        triangle inequality that keeps every length above the lower bound.
        """
        st, net, gidx = self.state, self.net, step.idx
        p_old = net.probs(st.z[gidx], gidx)
        length_prev = st.length[gidx].clone()
        st.length[gidx] = length_prev + self.stepper.length(p_old, net.probs(step.z_new, gidx))
        st.steps[gidx] += 1
        if step.fr_step is not None:
            st.fr_step[gidx] = step.fr_step
        flipped = events.event_gap(st, gidx, step.z_new) < 0
        keep = ~flipped
        st.move(gidx[keep], step.x_new[keep], step.z_new[keep])
        chase_kept = gidx[keep & st.chasing[gidx]]
        st.visit(chase_kept, st.z[chase_kept].argmax(-1))
        if not flipped.any():
            return
        f = flipped.nonzero()[:, 0]
        if not self.stepper.locates:
            self.flipped(gidx[f], step.x_new[f], step.z_new[f])
            return
        self._crossing(step, f, p_old[f], length_prev[f])

    def _crossing(self, step: Step, f: torch.Tensor, p_old: torch.Tensor, length_prev: torch.Tensor) -> None:
        """Rows ``f`` (k,) of ``step`` changed class: end their length at the event, on the
        p-segment of the step (planned) or of the regula falsi bracket, p_old (k, V)."""
        st, net = self.state, self.net
        gf = step.idx[f]
        plan = torch.zeros_like(f, dtype=torch.bool) if step.planned is None else step.planned[f]
        za, xe, ze = st.z[gf].clone(), step.x_new[f].clone(), step.z_new[f].clone()
        t_tie = torch.zeros(f.numel(), dtype=torch.float64, device=f.device)
        if plan.any():
            pa = torch.softmax(za[plan].to(torch.float64), -1)
            t_tie[plan] = events.tie(st, gf[plan], pa, torch.softmax(ze[plan].to(torch.float64), -1))
        if (~plan).any():
            u = (~plan).nonzero()[:, 0]
            x_old, z_old = step.x_old[f][u], step.z_old[f][u]
            za[u], xe[u], ze[u], t_tie[u] = events.locate(
                net, gf[u], x_old, z_old, step.x_new[f][u], step.z_new[f][u], self.opts.root_tol
            )
        pa, pe = net.probs(za, gf), net.probs(ze, gf)
        p_tie = pa + t_tie[:, None] * (pe - pa)
        st.length[gf] = length_prev + self.stepper.length(p_old, p_tie)
        self.flipped(gf, xe, ze)
        # a path chasing on resumes from the located point, just past the tie
        on = st.active[gf]
        if on.any():
            st.length[gf[on]] += self.stepper.length(p_tie[on], pe[on])

    def flipped(self, gidx: torch.Tensor, xe: torch.Tensor, ze: torch.Tensor) -> None:
        """Paths ``gidx`` (m,) are past a class change at xe (m, *S), logits ze (m, C)."""
        st, o = self.state, self.opts
        hit = ze.argmax(-1)
        st.move(gidx, xe, ze)
        first = ~st.chasing[gidx]
        fi = gidx[first]
        st.first_hit[fi] = hit[first]
        st.length_first[fi] = st.length[fi]
        st.success[fi] = True
        st.x_first[fi] = xe[first]
        if not o.until_target:
            self.reached(gidx)
            return
        st.visit(gidx, hit)
        done = hit == st.target[gidx]
        st.length_target[gidx[done]] = st.length[gidx[done]]
        self.reached(gidx[done])
        cont = gidx[~done]
        st.chasing[cont] = True
        st.top[cont] = hit[~done]
        st.reset_steps(cont, o.eta, o.logit_step)

    def reached(self, gidx: torch.Tensor) -> None:
        """Paths ``gidx`` (m,) are done: ``ok``, or ``damped`` where the continuation damped a
        direction of theirs (their path is not the flow's, ``paths.damped``)."""
        st = self.state
        damped = st.damped[gidx]
        st.finish(gidx[~damped], "ok")
        st.finish(gidx[damped], "damped")
