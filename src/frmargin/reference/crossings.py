"""What happens to a path of the exact flow at the end of an activation region: a unit crosses
(its Jacobian follows by a rank-one update), is held (the flow slides along its boundary), is
released, or several units at zero are decided together (``sliding``).

A mixin of ``regions.RegionWalk``, whose state it reads and changes: per path i its patterns,
its held slacks, the slacks decided at its last event, its Jacobian caches. Shapes: C classes,
D input dimensions, S_out the switches' outputs per path; float64.
"""

from __future__ import annotations

import torch

from .linearize import PiecewiseLinear
from .local import Local, min_norm
from .sliding import MAX_CONDITION, MAX_CORNER, Release, earliest_release, resolve

__all__ = ["SIMULTANEOUS", "Crossings"]

#: roots within this relative distance of a region's first one are crossed together
SIMULTANEOUS = 1e-10


class Crossings:
    """The events of ``regions.RegionWalk`` (a mixin: the attributes below are the walk's)."""

    net: PiecewiseLinear
    patterns: list[torch.Tensor]
    held: list[list[int]]
    last: list[list[int]]
    settled: list[bool]
    status: list[str]
    U: torch.Tensor
    J: torch.Tensor
    J_out: torch.Tensor
    stale: torch.Tensor
    held_grads: list[dict[int, tuple[torch.Tensor, torch.Tensor]]]
    regions: torch.Tensor
    slides: torch.Tensor
    x: torch.Tensor
    s: torch.Tensor
    y: torch.Tensor
    k: torch.Tensor
    py0: torch.Tensor
    pk0: torch.Tensor

    def _releases(
        self,
        idx: torch.Tensor,
        held: dict[int, tuple[torch.Tensor, torch.Tensor]],
        py: torch.Tensor,
        pk: torch.Tensor,
        T: torch.Tensor,
    ) -> list[Release | None]:
        """The earliest release within [0, T] (m,) of each path's held units (None: none);
        ``held``: row -> gradients (h, D) of its held slacks and their (h, h) derivatives by the
        outputs of the held units."""
        out: list[Release | None] = []
        for r, i in enumerate(idx.tolist()):
            if r not in held:
                out.append(None)
                continue
            rows, out_held = held[r]
            cols = [self._column(j) for j in self.held[i]]
            rhs = torch.stack([self.U[self.y[i]], self.U[self.k[i]]], -1)
            kappa = [self.net.switches[self.net.locate(j)[0]].kappa for j in self.held[i]]
            where = (float(py[r]), float(pk[r]), float(T[r]))
            out_z = self.U.T @ self.J_out[i][:, cols]
            D = self.U.T @ self.J[i]
            out.append(earliest_release(D, rhs, rows, out_z, out_held, kappa, where, self.settled[i]))
        return out

    def _column(self, j: int) -> int:
        """Where the output slack j switches sits in the concatenated switch outputs."""
        w, local = self.net.locate(j)
        start = sum(s.n_outputs for s in self.net.switches[:w])
        return start + self.net.switches[w].output_index(local)

    def _release(self, i: int, release: Release) -> None:
        """Path i leaves the boundary of its held unit ``release.position``, to the side it names."""
        j = self.held[i].pop(release.position)
        self.held_grads[i].pop(j, None)
        if release.flip:
            j = self._flip(i, j)
            self.stale[i] = True
        self.last[i] = [j]

    def _flip(self, i: int, j: int) -> int:
        """Cross slack j of path i; returns the slack that would cross back."""
        w, local = self.net.locate(j)
        switch = self.net.switches[w]
        back = self.net.offsets[w] + switch.back(self.patterns[w], i, local)
        switch.flip(self.patterns[w], i, local)
        self.regions[i] += 1
        return back

    def _cross(self, i: int, r: int, roots: torch.Tensor, tau: float, loc: Local) -> None:
        """Path i (row r of ``loc``) is at an event: the units whose slacks reach zero there cross
        (one alone: its Jacobian follows by a rank-one update); the unit just crossed is held when
        it would cross straight back; other units at zero at once are decided together."""
        limit = tau * (1 + SIMULTANEOUS) + 1e-300
        crossing = (roots <= limit).nonzero()[:, 0].tolist()
        immediate = [j for j in crossing if float(roots[j]) == 0.0]
        if not immediate:
            if len(crossing) == 1:
                self._update(i, r, crossing[0], loc)
            else:
                self.stale[i] = True
            self.last[i] = [self._flip(i, j) for j in crossing]
            return
        if len(immediate) == 1 and immediate == crossing and immediate[0] in self.last[i]:
            self.held[i].append(immediate[0])
            self.slides[i] += 1
            self.settled[i] = True
            return
        self._corner(i, crossing)

    def _update(self, i: int, r: int, j: int, loc: Local) -> None:
        """Path i's Jacobians once slack j (row r of ``loc``) crosses: the unit's output gradient
        changes by -kappa times the slack's gradient, so J -= kappa (dz/d out_j) (grad slack_j)^T,
        and likewise the derivatives by the other outputs (one backward pass)."""
        a, d = loc.slack_grad(r, j)
        col = self._column(j)
        g = self.J_out[i][:, col].clone()
        w, local = self.net.locate(j)
        kappa = self.net.switches[w].kappa
        self.J[i] -= kappa * torch.outer(g, a)
        self.J_out[i] -= kappa * torch.outer(g, d)
        # the held slacks' gradients likewise; those of the crossing unit's own slacks change
        # meaning (a hinge's sign, a window's winner) and are evaluated afresh
        unit = (w, self.net.switches[w].unit(local))
        cache = self.held_grads[i]
        for h in list(cache):
            wh, lh = self.net.locate(h)
            if (wh, self.net.switches[wh].unit(lh)) == unit:
                del cache[h]
                continue
            gx, go = cache[h]
            c = float(go[col])
            if c != 0.0:
                cache[h] = (gx - kappa * c * a, go - kappa * c * d)

    def _side(
        self, i: int, x: torch.Tensor, patterns: list[torch.Tensor], held: list[int], queries: list[int]
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``sliding.Side`` of path i: its free velocities (D, 2) at x (1, *S) under ``patterns``
        with ``held`` kept at zero (None where the solve lost rank), and the gradients (q, D) of
        the slacks ``queries``."""
        loc = Local(self.net, x, patterns, True)
        assert loc.J is not None
        g = loc.held(0, held + queries)[0] if held + queries else loc.J.new_zeros(0, loc.J.shape[-1])
        rows = torch.cat([torch.einsum("cq,mcd->mqd", self.U, loc.J), g[None, : len(held)]], 1)
        rhs = torch.stack([self.U[self.y[i]], self.U[self.k[i]]], -1)[None]
        v, cond = min_norm(rows, torch.cat([rhs, rhs.new_zeros(1, len(held), 2)], 1))
        ok = bool(torch.isfinite(cond[0]) and cond[0] <= MAX_CONDITION)
        return (v[0] if ok else None), g[len(held) :]

    def _corner(self, i: int, crossing: list[int]) -> None:
        """Path i is at a corner: the units crossing, those decided at this point and (if need
        be) the held ones are decided together (``sliding.resolve``); ``corner`` if no choice is
        consistent."""
        p = (float(self.py0[i] - self.s[i]), float(self.pk0[i] + self.s[i]))
        one = [q[i : i + 1] for q in self.patterns]

        def side(
            x: torch.Tensor, pats: list[torch.Tensor], h: list[int], q: list[int]
        ) -> tuple[torch.Tensor | None, torch.Tensor]:
            return self._side(i, x, pats, h, q)

        found = None
        near = list(dict.fromkeys(crossing + self.last[i]))
        for zone in (near, list(dict.fromkeys(near + self.held[i]))):
            if len(zone) <= MAX_CORNER:
                found = resolve(self.net, side, self.x[i : i + 1], one, self.held[i], zone, p)
            if found is not None:
                break
        if found is None:
            self.status[i] = "corner"
            return
        pats, held, decided = found
        for w, q in enumerate(pats):
            self.patterns[w][i] = q[0]
        self.slides[i] += len([j for j in held if j not in self.held[i]])
        self.held[i], self.last[i] = held, decided
        self.settled[i] = True
        self.stale[i] = True
        self.regions[i] += 1
