"""The exact natural-gradient flow of a batch of paths, one activation region at a time.

Inside a region the logits are affine in x, z = J x + c, so the flow that moves p along its
simplex line p(s) = p0 + s (e_k - e_y) (the source falls, the target rises, the rest stay) with
the minimum-norm input velocity is, from the region's start x_r at s_r,

    x(s) = x_r + v_A A(s) + v_B B(s),    A = log(p_y(s) / p_y(s_r)),  B = log(p_k(s) / p_k(s_r)),

where v_A, v_B are the minimum-norm solutions of D v = U^T e_y and D v = U^T e_k, D = U^T J the
centred Jacobian (U an orthonormal basis of the vectors summing to zero: the softmax ignores a
constant shift of the logits, so the shift is free and the minimum-norm move chooses it), with
one more row per held slack (``sliding``). Every slack of the activation pattern is affine in x,
hence g + a A + b B along the path, and its first sign change (``roots``) ends the region
exactly; so may the release of a held unit. Then the unit crossing switches side, or, where the
flow on its new side points straight back, is held (the flow slides along its boundary); where
several units are at zero at once they are decided together (``sliding.resolve``).

Shapes: m paths in the batch, C classes, D input dimensions, S slacks per path; float64 throughout.
"""

from __future__ import annotations

import math

import torch
from torch.func import jvp

from ..geometry import fr_distance
from .crossings import Crossings
from .linearize import PiecewiseLinear
from .local import Local, centred_basis, min_norm
from .roots import RootFind, flow_coordinates
from .sliding import MAX_CONDITION, Release

__all__ = ["RegionWalk", "line_length"]

#: rounding of a slack, relative to the largest slack of its path (a slack this close to zero is at zero)
ROUNDING = 1e-13
#: the Jacobians are evaluated afresh at least every this many steps (between, rank-one updates)
REFRESH = 100
#: a path that holds and releases units this many times in a row without entering a new region
#: ends ``zeno`` (a chattering the event-by-event walk does not resolve)
ZENO = 500


def line_length(s: torch.Tensor, py: torch.Tensor, pk: torch.Tensor) -> torch.Tensor:
    """Fisher-Rao length of the simplex line from p to p + s (e_k - e_y): an arc of radius
    sqrt(p_y + p_k) on the sphere of sqrt(p) (docs/method.md, the exact flow)."""
    r = (py + pk).sqrt()
    theta0 = torch.atan2(py.sqrt(), pk.sqrt())
    theta = torch.atan2((py - s).clamp_min(0).sqrt(), (pk + s).sqrt())
    return 2 * r * (theta0 - theta)


class RegionWalk(Crossings):
    """m paths from x (m, *S) toward ``target`` (m,), walked region by region.

    ``run()`` advances every path to the class change (or a status); the attributes then hold
    the results (see ``flow.ExactPaths`` for their meaning). What happens at a region's end is
    ``crossings.Crossings``'s.
    """

    def __init__(
        self,
        net: PiecewiseLinear,
        x: torch.Tensor,
        source: torch.Tensor,
        target: torch.Tensor,
        valid: tuple[float, float] | None,
        max_regions: int,
        record: bool,
    ) -> None:
        self.net, self.valid, self.max_regions = net, valid, max_regions
        m = x.shape[0]
        self.x0 = x.detach().to(torch.float64).clone()
        self.x = self.x0.clone()
        z, self.patterns = net.record(self.x)
        p = torch.softmax(z, -1)
        self.U = centred_basis(p.shape[1]).to(x.device)
        self.y, self.k = source.clone(), target.clone()
        dev = self.dev = x.device
        rows = torch.arange(m, device=dev)
        self.p0 = p
        self.py0, self.pk0 = p[rows, self.y], p[rows, self.k]
        # the tie ending the line: class k at (p_y - p_k) / 2, any other class c at p_y - p_c
        ties = self.py0[:, None] - p
        ties[rows, self.k] = 0.5 * (self.py0 - self.pk0)
        ties[rows, self.y] = float("inf")
        self.s_end, self.hit = ties.min(-1)
        self.s = torch.zeros(m, dtype=torch.float64, device=dev)
        self.status = ["running" if ok else "misclassified" for ok in (p.argmax(-1) == self.y).tolist()]
        self.regions = torch.ones(m, dtype=torch.int64, device=dev)
        #: per path: events in a row without a new region (``ZENO``)
        self.quiet = torch.zeros(m, dtype=torch.int64, device=dev)
        self.slides = torch.zeros(m, dtype=torch.int64, device=dev)
        self.left_range = torch.full((m,), float("nan"), dtype=torch.float64, device=dev)
        self.max_speed = torch.zeros(m, dtype=torch.float64, device=dev)
        self.max_condition = torch.zeros(m, dtype=torch.float64, device=dev)
        self.line_error = torch.zeros(m, dtype=torch.float64, device=dev)
        #: per path: the slacks held at zero and the slacks decided at its last event (indices
        #: into the concatenated slacks, in the current patterns)
        self.held: list[list[int]] = [[] for _ in range(m)]
        self.last: list[list[int]] = [[] for _ in range(m)]
        #: per path: its units at zero were decided together at its current point (``resolve``)
        self.settled = [False] * m
        #: the logit Jacobians (m, C, D) and derivatives by the switches' outputs (m, C, S_out) of
        #: the current regions, kept up to date by rank-one updates at each crossing; ``stale``:
        #: the paths whose next region needs them evaluated afresh
        self.J = torch.empty(0, dtype=torch.float64, device=dev)
        self.J_out = torch.empty(0, dtype=torch.float64, device=dev)
        self.stale = torch.ones(m, dtype=torch.bool, device=dev)
        self.since_fresh = 0
        #: per path: held slack -> its gradients by x (D,) and by the switches' outputs (S_out,),
        #: kept up to date by the same rank-one updates as J (one backward pass per slack held,
        #: not one per slack and region); emptied whenever the Jacobians are evaluated afresh
        self.held_grads: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = [{} for _ in range(m)]
        self.profile: list[list[tuple[float, float]]] | None = [[(0.0, 0.0)] for _ in range(m)] if record else None

    def run(self) -> RegionWalk:
        """Walk every path to its end."""
        while True:
            idx = torch.tensor(
                [i for i, s in enumerate(self.status) if s == "running"], dtype=torch.long, device=self.dev
            )
            if idx.numel() == 0:
                return self
            over = self.regions[idx] > self.max_regions
            for i in idx[over].tolist():
                self.status[i] = "max_regions"
            stuck = ~over & (self.quiet[idx] > ZENO)
            for i in idx[stuck].tolist():
                self.status[i] = "zeno"
            over |= stuck
            if (~over).any():
                self.step(idx[~over])

    def step(self, idx: torch.Tensor) -> None:
        """Walk paths idx (m,) through their current region to its end (an event or the class change)."""
        pats = [p[idx] for p in self.patterns]
        loc = self._local(idx, pats)
        held = {r: self._held(i, r, loc) for r, i in enumerate(idx.tolist()) if self.held[i]}
        v, cond = self._velocities(idx, held)
        rank_ok = torch.isfinite(cond) & (cond <= MAX_CONDITION)
        for i in idx[~rank_ok].tolist():
            self.status[i] = "rank_deficient"
        x = self.x[idx]
        vA, vB = v[..., 0].reshape(x.shape), v[..., 1].reshape(x.shape)
        # the slacks' rates along v_A and v_B: one forward-mode pass over the batch twice over
        both = [torch.cat([p, p]) for p in pats]
        rates = jvp(lambda u: self.net.evaluate(u, both)[1], (torch.cat([x, x]),), (torch.cat([vA, vB]),))[1]
        a, b = rates[: x.shape[0]], rates[x.shape[0] :]
        s = self.s[idx]
        py, pk, T = self.py0[idx] - s, self.pk0[idx] + s, self.s_end[idx] - s
        self._diagnose(idx, loc.z, v, cond, py, pk)
        g = loc.slack.clone()
        for r, i in enumerate(idx.tolist()):
            g[r, self.held[i]] = float("inf")
        sizes = torch.where(torch.isfinite(g), g.abs(), torch.zeros_like(g))
        zero = torch.zeros(g.shape[0], 1, dtype=g.dtype, device=g.device)
        scale = ROUNDING * torch.cat([sizes, zero], 1).amax(-1, keepdim=True)
        t_cross, roots = RootFind(g, a, b, py, pk, T, scale.expand_as(g)).first()
        releases = self._releases(idx, held, py, pk, torch.minimum(t_cross, T))
        t_release = torch.tensor([math.inf if r is None else r.tau for r in releases], dtype=g.dtype, device=g.device)
        tau = torch.where(rank_ok, torch.minimum(torch.minimum(t_cross, t_release), T), torch.zeros_like(T))
        self._range(idx, x, vA, vB, py, pk, tau)
        A, B = flow_coordinates(tau, py, pk)
        shape = (-1,) + (1,) * (x.ndim - 1)
        self.x[idx] = x + vA * A.view(shape) + vB * B.view(shape)
        self.s[idx] = s + tau
        before = self.regions[idx].clone()
        for r, i in enumerate(idx.tolist()):
            if rank_ok[r]:
                self._end_region(i, r, float(tau[r]), float(T[r]), float(t_cross[r]), releases[r], roots[r], loc)
        self.quiet[idx] = torch.where(self.regions[idx] > before, 0, self.quiet[idx] + 1)

    def _end_region(
        self,
        i: int,
        r: int,
        tau: float,
        T: float,
        t_cross: float,
        release: Release | None,
        roots: torch.Tensor,
        loc: Local,
    ) -> None:
        """Path i (row r of ``loc``) reached its region's end at tau: the class change, a release
        or a crossing."""
        if tau > 0:
            self.settled[i], self.last[i] = False, []
        if t_cross >= T and (release is None or release.tau >= T):
            self.status[i] = "ok"
            self.s[i] = self.s_end[i]
        elif release is not None and release.tau <= t_cross:
            self._release(i, release)
        else:
            self._cross(i, r, roots, tau, loc)
        if self.profile is not None:
            self.profile[i].append((self.length(i), float((self.x[i] - self.x0[i]).norm())))

    def _local(self, idx: torch.Tensor, pats: list[torch.Tensor]) -> Local:
        """The network at the paths' points; their Jacobians evaluated afresh (C backward passes)
        when one of them is stale or every REFRESH steps, else kept from the rank-one updates."""
        fresh = bool(self.stale[idx].any()) or self.since_fresh >= REFRESH
        loc = Local(self.net, self.x[idx], pats, fresh)
        if fresh:
            assert loc.J is not None and loc.J_out is not None
            if self.J.numel() == 0:
                m = len(self.status)
                self.J = loc.J.new_zeros(m, *loc.J.shape[1:])
                self.J_out = loc.J.new_zeros(m, *loc.J_out.shape[1:])
            self.J[idx], self.J_out[idx] = loc.J, loc.J_out
            self.stale[idx] = False
            self.since_fresh = 0
            for i in idx.tolist():
                self.held_grads[i].clear()
        self.since_fresh += 1
        return loc

    def _held(self, i: int, r: int, loc: Local) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients (h, D) of path i's held slacks (row r of ``loc``) and their (h, h)
        derivatives by the outputs the held units switch, from ``held_grads`` (filled here)."""
        cache = self.held_grads[i]
        for j in self.held[i]:
            if j not in cache:
                gx, go = loc.slack_grad(r, j)
                cache[j] = (gx.clone(), go.clone())
        cols = [loc.column(j) for j in self.held[i]]
        gx = torch.stack([cache[j][0] for j in self.held[i]])
        return gx, torch.stack([cache[j][1][cols] for j in self.held[i]])

    def _velocities(
        self, idx: torch.Tensor, held: dict[int, tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """v (m, D, 2): the minimum-norm moves v_A, v_B (with the held rows); their condition (m,)."""
        D = torch.einsum("cq,mcd->mqd", self.U, self.J[idx])
        rhs = torch.stack([self.U[self.y[idx]], self.U[self.k[idx]]], -1)
        v, cond = min_norm(D, rhs)
        for r, (extra, _) in held.items():
            pad = torch.zeros(1, extra.shape[0], 2, dtype=rhs.dtype, device=rhs.device)
            vr, cr = min_norm(torch.cat([D[r], extra])[None], torch.cat([rhs[r : r + 1], pad], 1))
            v[r], cond[r] = vr[0], cr[0]
        return v, cond

    def _diagnose(
        self,
        idx: torch.Tensor,
        z: torch.Tensor,
        v: torch.Tensor,
        cond: torch.Tensor,
        py: torch.Tensor,
        pk: torch.Tensor,
    ) -> None:
        """Self-check and extremes at the regions' starts: the network's p against the line,
        the L2 speed per unit FR length, the condition of the solve."""
        p_line = self.p0[idx].clone()
        rows = torch.arange(idx.numel(), device=idx.device)
        p_line[rows, self.y[idx]], p_line[rows, self.k[idx]] = py, pk
        err = fr_distance(torch.softmax(z, -1), p_line)
        self.line_error[idx] = torch.maximum(self.line_error[idx], err)
        velocity = v[..., 1] / pk[:, None] - v[..., 0] / py[:, None]
        speed = velocity.norm(dim=-1) / (1.0 / py + 1.0 / pk).sqrt()
        self.max_speed[idx] = torch.maximum(self.max_speed[idx], speed)
        self.max_condition[idx] = torch.maximum(self.max_condition[idx], cond)

    def _range(
        self,
        idx: torch.Tensor,
        x: torch.Tensor,
        vA: torch.Tensor,
        vB: torch.Tensor,
        py: torch.Tensor,
        pk: torch.Tensor,
        tau: torch.Tensor,
    ) -> None:
        """Record where paths still inside the valid range first leave it within this region."""
        if self.valid is None:
            return
        inside = torch.isnan(self.left_range[idx])
        if not inside.any():
            return
        lo, hi = self.valid
        xf, af, bf = x[inside].flatten(1), vA[inside].flatten(1), vB[inside].flatten(1)
        g = torch.cat([xf - lo, hi - xf], 1)
        first, _ = RootFind(
            g,
            torch.cat([af, -af], 1),
            torch.cat([bf, -bf], 1),
            py[inside],
            pk[inside],
            tau[inside],
            torch.zeros_like(g),
        ).first()
        rows = idx[inside]
        left = torch.isfinite(first)
        s_left = self.s[rows[left]] + first[left]
        self.left_range[rows[left]] = line_length(s_left, self.py0[rows[left]], self.pk0[rows[left]])

    def length(self, i: int) -> float:
        """FR length of path i so far (its arc along the line)."""
        s = self.s[i : i + 1]
        return float(line_length(s, self.py0[i : i + 1], self.pk0[i : i + 1])[0])
