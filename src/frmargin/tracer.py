"""The batched path tracer: one chunk of paths advanced together, each with its own mask.

``paths.trace_paths`` validates input, splits paths into chunks and calls ``ChunkTracer``.
Shapes: n paths in the chunk, m active ones in a step, C classes, D input dimensions.
Everything on the simplex runs in float64; the network runs in the input's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import jvp, vjp

from .fisher import DataFisher, logits_and_jacobian
from .geometry import fisher_rao_distance
from .simplex_line import SimplexLine, segment_length
from .solve import (
    cg_solve,
    fisher_factor,
    fisher_lsq,
    fisher_weights,
    krylov_largest_eigenvalue,
    resolve_damping,
)

RUNNING = "running"
#: wanted relative miss of the linear prediction of the logit gap (sets the logit step)
THETA_TARGET = 0.5
#: the logit step never grows past this multiple of the ``logit_step`` option
MAX_LOGIT_SCALE = 8.0


@dataclass(frozen=True)
class TracerOptions:
    """Resolved options of one ``trace_paths`` call (see its docstring)."""

    method: str
    metric: str
    until: str
    solver: str
    damping: float
    damping_mode: str
    max_steps: int
    box: tuple[float, float] | None
    eta: float
    logit_step: float
    rtol: float
    atol: float
    max_corrector: int
    contraction: float
    root_tol: float
    overshoot: float
    max_attempts: int
    cg_rtol: float
    cg_maxiter: int | None
    record: bool
    top_classes: int | None = None


def _log_probs(z: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(z.to(torch.float64), -1)


def _gap(z: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """z_top - max_{c != top} z_c in float64, (m,)."""
    z = z.to(torch.float64)
    zt = z.gather(1, top[:, None])[:, 0]
    return zt - z.scatter(1, top[:, None], -float("inf")).max(-1).values


def _bmv(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (A @ v[:, :, None])[:, :, 0]


def _rows_combination(w: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
    """J^T w for J (m, C, D), w (m, C): (m, D), reading J in its contiguous layout."""
    return (w[:, None, :] @ J)[:, 0, :]


def _centred(dz: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """dz minus its value at the most probable class: M dz is unchanged (M 1 = 0), and the
    large common shift that logit velocities carry near a confident prediction no longer
    cancels catastrophically in M dz."""
    return dz - dz.gather(1, p.argmax(-1, keepdim=True))


def _broyden_update(J: torch.Tensor, K: torch.Tensor, rows: torch.Tensor, dx: torch.Tensor, dz: torch.Tensor) -> None:
    """Broyden's secant update of the corrector's Jacobian, in place, on the rows where ``rows``
    (m,) is True: J += (dz - J dx) dx^T / |dx|^2, with K = J J^T (m, C, C) kept in step by
    the matching rank-2 update. J (m, C, D) float64; dx (m, *S) the corrector's last move, dz
    (m, C) the logit change the network made (other rows are ignored). The updated J maps dx
    onto dz, so the next correction sees the curvature met on the way; it is unchanged on the
    complement of dx, so columns frozen by a box (zero in J, never moved) stay zero."""
    s = dx.reshape(dx.shape[0], -1).to(torch.float64)
    ss = (s * s).sum(-1)
    upd = rows & (ss > 0) & torch.isfinite(dz).all(-1)
    if not upd.any():
        return
    s = torch.where(upd[:, None], s, torch.zeros_like(s))
    Js = _bmv(J, s)
    u = torch.where(upd[:, None], (dz.to(torch.float64) - Js) / ss.clamp_min(1e-300)[:, None], torch.zeros_like(Js))
    J.baddbmm_(u[:, :, None], s[:, None, :])
    uJs = u[:, :, None] * Js[:, None, :]
    K += uJs + uJs.transpose(-1, -2) + ss[:, None, None] * u[:, :, None] * u[:, None, :]


class ChunkTracer:
    """State of n paths; ``run()`` advances them until each has a final status."""

    def __init__(self, model, x, source, target, opts: TracerOptions) -> None:
        self.model = model
        self.o = opts
        n = x.shape[0]
        self.shape = x.shape[1:]
        dev = x.device
        self.x0 = x.detach().clone()
        self.x = self.x0.clone()
        self.x_first = self.x0.clone()
        self.source = source
        self.top = source.clone()
        self.k = target.clone()
        f64 = dict(dtype=torch.float64, device=dev)
        i64 = dict(dtype=torch.int64, device=dev)
        self.L = torch.zeros(n, **f64)
        self.L_first = torch.full((n,), float("nan"), **f64)
        self.L_target = torch.full((n,), float("nan"), **f64)
        self.first_hit = torch.full((n,), -1, **i64)
        self.success = torch.zeros(n, dtype=torch.bool, device=dev)
        self.steps = torch.zeros(n, **i64)
        self.jac = torch.zeros(n, **f64)
        self.fwd = torch.zeros(n, **i64)
        self.mv = torch.zeros(n, **i64)
        self.h = torch.full((n,), opts.eta, **f64)
        self.hz = torch.full((n,), opts.logit_step, **f64)
        self.prev_dir: torch.Tensor | None = None
        self.has_prev = torch.zeros(n, dtype=torch.bool, device=dev)
        self.active = torch.ones(n, dtype=torch.bool, device=dev)
        # until="target": past the first change, the path chases the target class
        self.chasing = torch.zeros(n, dtype=torch.bool, device=dev)
        self.status = [RUNNING] * n
        self.visited: list[list[int]] = [[] for _ in range(n)]
        self.traj: list[list[torch.Tensor]] | None = [[xi.clone()] for xi in self.x0] if opts.record else None
        self.z = self._forward(torch.arange(n, device=dev), self.x)
        self._lumping(opts.top_classes)
        self.prev_dir = torch.zeros(n, self.C, **f64)
        bad = ~torch.isfinite(self.z).all(-1)
        self._finish(bad, "nonfinite")
        wrong = (self.z.argmax(-1) != source) & ~bad
        self._finish(wrong, "misclassified")

    # ---------------------------------------------------------------- classes
    def _lumping(self, m: int | None) -> None:
        """Set up the class view of the geometry: all C classes, or (``top_classes=m``) per path
        the m classes most probable at the start (the source and the target always among them)
        and one class lumping the rest, with logit logsumexp(z_rest). The coarse distribution's
        Fisher information is at most the full one's and needs m + 1 Jacobian rows instead of
        C. Lengths are those of the coarse distribution; class changes are read from all C
        logits, so a lumped class can be the first hit."""
        z = self.z
        n, C = z.shape
        self.keep = None
        if m is None or m >= C - 1:
            self.C = C
            return
        order = torch.softmax(z.to(torch.float64), -1).argsort(dim=-1, descending=True, stable=True)
        keep = order[:, :m].clone()
        # the target (and the source, should the start be misclassified) take the last slots
        for cls, slot in ((self.source, m - 2), (self.k, m - 1)):
            missing = ~(keep == cls[:, None]).any(-1)
            keep[missing, slot] = cls[missing]
        rest = torch.ones(n, C, dtype=torch.bool, device=z.device)
        rest.scatter_(1, keep, False)
        self.keep, self.rest = keep, rest
        self.top_r = (keep == self.source[:, None]).long().argmax(-1)
        self.k_r = (keep == self.k[:, None]).long().argmax(-1)
        self.C = m + 1

    def _red(self, z: torch.Tensor, gidx: torch.Tensor) -> torch.Tensor:
        """Logits (m, C) of paths ``gidx`` in the geometry's class view (m, self.C)."""
        if self.keep is None:
            return z
        lumped = torch.logsumexp(z.masked_fill(~self.rest[gidx], -float("inf")), -1, keepdim=True)
        return torch.cat([z.gather(1, self.keep[gidx]), lumped], -1)

    def _classes(self, gidx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The top and target classes of paths ``gidx`` as indices of the class view."""
        if self.keep is None:
            return self.top[gidx], self.k[gidx]
        return self.top_r[gidx], self.k_r[gidx]

    def _p(self, z: torch.Tensor, gidx: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self._red(z, gidx).to(torch.float64), -1)

    # ---------------------------------------------------------------- bookkeeping
    def _forward(self, gidx: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            z = self.model(xs)
        self.fwd[gidx] += 1
        return z.clone()

    def _jacobian(self, gidx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and Jacobian rows at x (m, *S), evaluated once per distinct point (the paths
        of one image to its C - 1 targets start together); each path is charged its share."""
        if self.keep is not None:  # the rows differ per path: nothing to share
            self.jac[gidx] += 1
            return logits_and_jacobian(self.model, x, reduce=lambda z: self._red(z, gidx))
        flat = x.reshape(x.shape[0], -1)
        uniq, inverse, counts = torch.unique(flat, dim=0, return_inverse=True, return_counts=True)
        if uniq.shape[0] == x.shape[0]:
            self.jac[gidx] += 1
            return logits_and_jacobian(self.model, x)
        z, J = logits_and_jacobian(self.model, uniq.reshape(-1, *x.shape[1:]))
        self.jac[gidx] += 1.0 / counts[inverse].to(self.jac.dtype)
        return z[inverse], J[inverse]

    def _finish(self, mask_or_idx: torch.Tensor, status: str) -> None:
        idx = mask_or_idx.nonzero()[:, 0] if mask_or_idx.dtype == torch.bool else mask_or_idx
        for i in idx.tolist():
            if self.active[i]:
                self.status[i] = status
        self.active[idx] = False

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.o.box is None else x.clamp(*self.o.box)

    def _record(self, gidx: torch.Tensor) -> None:
        if self.traj is not None:
            for i in gidx.tolist():
                self.traj[i].append(self.x[i].clone())

    def _logit_gradient(self, gidx: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Logit gradient a of the function each path descends, (m, C) float64.

        Until the first change: L = log p_top - log p_k, a = e_top - e_k. Chasing the target:
        L = log(1 - p_k) - log p_k, a_j = p_j / (1 - p_k) (j != k), a_k = -1, which raises p_k
        and shrinks the others in proportion, so the classes passed never swap back.
        """
        top, k = self._classes(gidx)
        a = torch.zeros(top.shape[0], self.C, dtype=torch.float64, device=top.device)
        a.scatter_(1, top[:, None], 1.0)
        a.scatter_(1, k[:, None], -1.0)
        chase = self.chasing[gidx]
        if chase.any():
            pc = p[chase]
            kc = k[chase]
            rest = 1.0 - pc.gather(1, kc[:, None])
            ac = pc / rest.clamp_min(1e-300)
            ac.scatter_(1, kc[:, None], -1.0)
            a[chase] = ac
        return a

    def _event_gap(self, z: torch.Tensor, gidx: torch.Tensor) -> torch.Tensor:
        """> 0 before the event a path waits for, <= 0 once it happened: the argmax leaving
        ``top`` (first change) or the target becoming the argmax (chasing)."""
        g = _gap(z, self.top[gidx])
        chase = self.chasing[gidx]
        if chase.any():
            g = torch.where(chase, -_gap(z, self.k[gidx]), g)
        return g

    def run(self) -> None:
        while self.active.any():
            idx = self.active.nonzero()[:, 0]
            over = self.steps[idx] >= self.o.max_steps
            self._finish(idx[over], "budget")
            idx = idx[~over]
            if idx.numel() == 0:
                continue
            if self.o.method == "paper":
                self._paper_step(idx)
            else:
                self._converged_step(idx)

    # ---------------------------------------------------------------- shared pieces
    def _lam(self, Lt: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        if self.o.damping_mode == "relative":
            A = Lt @ K @ Lt.transpose(-1, -2)
            lam_max = torch.linalg.eigvalsh(0.5 * (A + A.transpose(-1, -2)))[:, -1].clamp_min(0)
        else:
            lam_max = torch.zeros(Lt.shape[0], dtype=torch.float64, device=Lt.device)
        return resolve_damping(self.o.damping, self.o.damping_mode, lam_max)

    def _direction(self, x, J, p, a):
        """Direction in x (m, D), logit velocity (m, C), K, lam and the Jacobian used.

        With a box, coordinates at a bound that the step would push outward are frozen (their
        Jacobian columns zeroed): the projected natural gradient.
        """
        M = fisher_weights(p)
        Lt = fisher_factor(p)
        J64 = J.to(torch.float64)
        for _ in range(1 if self.o.box is None else 2):
            K = J64 @ J64.transpose(-1, -2)
            lam = self._lam(Lt, K)
            # (M K + lam I) w = a, with a = M (a / p) since a sums to zero
            w = fisher_lsq(Lt, K, a / p.clamp_min(1e-300), lam) if self.o.metric == "fisher" else a
            v = -_rows_combination(w, J64)
            if self.o.box is None:
                break
            frozen = self._frozen(x, v)
            if not frozen.any():
                break
            J64 = J64 * (~frozen)[:, None, :]
        zdot = _centred(-_bmv(K, w), p)
        return v, zdot, M, K, lam, J64, Lt

    def _frozen(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Coordinates (m, D) at a bound of the box that the direction v (m, D) pushes outward."""
        lo, hi = self.o.box
        xf = x.reshape(x.shape[0], -1)
        return ((xf <= lo) & (v < 0)) | ((xf >= hi) & (v > 0))

    def _accept(self, gidx, x_old, z_old, x_new, z_new, h_used, planned=None) -> None:
        """Book an accepted step; locate and handle a class change inside it.

        ``planned`` (m,) marks steps aimed just past the boundary on the flow's line: their end
        point is on the line, so the change is placed where the straight p-segment of the step
        meets the boundary (the image of the flow between the two points, as for every other
        step's length), and the end point itself becomes ``x_end``. A change nobody planned (a
        class that left the line, a Euclidean or paper step) is located on the input-space
        chord by regula falsi.

        The length chains through the logits stored at the last accepted point (``self.z``), not
        those of this step's Jacobian evaluation: the same point evaluated in another batch
        differs by ~1e-5 in float32 logits, and near p = (1/2, 1/2) such gaps would break the
        triangle inequality that keeps every length above the lower bound.
        """
        p_old = self._p(self.z[gidx], gidx)
        L_prev = self.L[gidx].clone()
        self.L[gidx] = L_prev + self._length(p_old, self._p(z_new, gidx))
        self.steps[gidx] += 1
        if h_used is not None:
            self.h[gidx] = h_used
        flipped = self._event_gap(z_new, gidx) < 0
        keep = ~flipped
        self.x[gidx[keep]] = x_new[keep]
        self.z[gidx[keep]] = z_new[keep]
        self._record(gidx[keep])
        chase_kept = gidx[keep & self.chasing[gidx]]
        for i, c in zip(chase_kept.tolist(), self.z[chase_kept].argmax(-1).tolist()):
            if self.visited[i][-1] != c:
                self.visited[i].append(c)
        if not flipped.any():
            return
        f = flipped.nonzero()[:, 0]
        if self.o.method == "paper":
            self._flipped(gidx[f], x_new[f], z_new[f])
            return
        gf = gidx[f]
        if planned is None:
            planned = torch.zeros_like(flipped)
        plan = planned[f]
        za, xe, ze = self.z[gf].clone(), x_new[f].clone(), z_new[f].clone()
        t_tie = torch.zeros(f.numel(), dtype=torch.float64, device=f.device)
        if plan.any():
            pf = gf[plan]
            t_tie[plan] = self._tie(
                pf, torch.softmax(za[plan].to(torch.float64), -1), torch.softmax(ze[plan].to(torch.float64), -1)
            )
        if (~plan).any():
            u = (~plan).nonzero()[:, 0]
            za[u], xe[u], ze[u], t_tie[u] = self._locate(gf[u], x_old[f][u], z_old[f][u], x_new[f][u], z_new[f][u])
        pa, pe = self._p(za, gf), self._p(ze, gf)
        p_tie = pa + t_tie[:, None] * (pe - pa)
        self.L[gf] = L_prev[f] + self._length(p_old[f], p_tie)
        self._flipped(gf, xe, ze)
        # a path chasing on resumes from the located point, just past the tie
        on = self.active[gf]
        if on.any():
            self.L[gf[on]] += self._length(p_tie[on], pe[on])

    def _length(self, pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
        """FR length of one step: the plain chord in paper mode (the paper's path jumps), the
        straight p-space segment between the accepted points otherwise (the flow's exact
        image where the Jacobian is a submersion, a second-order estimate elsewhere)."""
        if self.o.method == "paper":
            return fisher_rao_distance(pa, pb)
        return segment_length(pa, pb)

    def _locate(self, gidx, xa, za, xb, zb):
        """Illinois regula falsi on the segment xa -> xb for the class change (forward passes).

        Returns the logits at the unchanged side of the final bracket, the first point found on
        the changed side within ``root_tol`` (FR, relative to the step) of the boundary and its
        logits, and where on the straight p-segment between the two sides the awaited event
        happens (m,) in [0, 1]: the boundary to second order in the bracket width, where the
        path's length ends.
        """
        ga, gb = self._event_gap(za, gidx), self._event_gap(zb, gidx)
        sa = torch.zeros_like(ga)
        sb = torch.ones_like(ga)
        pa = torch.softmax(za.to(torch.float64), -1)
        pb = torch.softmax(zb.to(torch.float64), -1)
        side = torch.zeros_like(ga)
        xb, zb, za = xb.clone(), zb.clone(), za.clone()
        dx = xb - xa
        width_tol = self.o.root_tol * fisher_rao_distance(pa, pb).clamp_min(1e-12)
        for _ in range(60):
            live = fisher_rao_distance(pa, pb) > width_tol
            if not live.any():
                break
            li = live.nonzero()[:, 0]
            s = sa[li] + ga[li] / (ga[li] - gb[li]) * (sb[li] - sa[li])
            width = sb[li] - sa[li]
            s = torch.minimum(torch.maximum(s, sa[li] + 1e-3 * width), sb[li] - 1e-3 * width)
            xs = xa[li] + s.view(-1, *[1] * (xa.ndim - 1)).to(xa.dtype) * dx[li]
            zs = self._forward(gidx[li], xs)
            gs = self._event_gap(zs, gidx[li])
            ps = torch.softmax(zs.to(torch.float64), -1)
            pos = gs >= 0  # a tie is not yet a change
            lo_i, hi_i = li[pos], li[~pos]
            sa[lo_i], ga[lo_i], pa[lo_i], za[lo_i] = s[pos], gs[pos], ps[pos], zs[pos]
            sb[hi_i], gb[hi_i], pb[hi_i] = s[~pos], gs[~pos], ps[~pos]
            xb[hi_i], zb[hi_i] = xs[~pos], zs[~pos]
            # Illinois: halve the stale end's value when the same side moves twice
            gb[lo_i] = torch.where(side[lo_i] > 0, gb[lo_i] / 2, gb[lo_i])
            ga[hi_i] = torch.where(side[hi_i] < 0, ga[hi_i] / 2, ga[hi_i])
            side[lo_i], side[hi_i] = 1.0, -1.0
        return za, xb, zb, self._tie(gidx, pa, pb)

    def _tie(self, gidx: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
        """Where on the segment pa -> pb (full probabilities) the awaited event happens, (m,)
        in [0, 1]: the first class to tie with ``top`` (first change) or the target overtaking
        every class (chasing)."""
        seg = SimplexLine(pa, pb - pa)
        t = seg.crossing(self.top[gidx])
        chase = self.chasing[gidx]
        if chase.any():
            t = torch.where(chase, seg.overtake(self.k[gidx]), t)
        return torch.nan_to_num(t, nan=1.0, posinf=1.0).clamp(0.0, 1.0)

    def _flipped(self, gidx, xe, ze) -> None:
        hit = ze.argmax(-1)
        self.x[gidx] = xe
        self.z[gidx] = ze
        self._record(gidx)
        first = ~self.chasing[gidx]
        fi = gidx[first]
        self.first_hit[fi] = hit[first]
        self.L_first[fi] = self.L[fi]
        self.success[fi] = True
        self.x_first[fi] = xe[first]
        if self.o.until == "first_flip":
            self._finish(gidx, "ok")
            return
        for j, i in enumerate(gidx.tolist()):
            if not self.visited[i] or self.visited[i][-1] != int(hit[j]):
                self.visited[i].append(int(hit[j]))
        done = hit == self.k[gidx]
        self.L_target[gidx[done]] = self.L[gidx[done]]
        self._finish(gidx[done], "ok")
        cont = gidx[~done]
        self.chasing[cont] = True
        self.top[cont] = hit[~done]
        self.has_prev[cont] = False
        self.h[cont] = self.o.eta
        self.hz[cont] = self.o.logit_step

    # ---------------------------------------------------------------- paper mode
    def _paper_step(self, idx: torch.Tensor) -> None:
        o = self.o
        x = self.x[idx]
        if o.solver == "exact":
            z, J = self._jacobian(idx, x)
            ok = torch.isfinite(J).flatten(1).all(-1) & torch.isfinite(z).all(-1)
            p = self._p(z, idx)
            a = self._logit_gradient(idx, p)
            v, zdot, M, K, lam, J64, Lt = self._direction(x, J, p, a)
            v = -v  # (G + lam I)^{-1} g with g = J^T a
            gv = (a * -zdot).sum(-1)
        else:
            z, pullback = vjp(self.model, x)
            a = self._logit_gradient(idx, torch.softmax(z.detach().to(torch.float64), -1))
            (g,) = pullback(a.to(z.dtype))
            F = DataFisher(self.model, x)
            flat_g = g.reshape(x.shape[0], -1)

            def mv(u):
                return F.matvec(u.reshape(x.shape)).reshape(u.shape)

            if o.damping_mode == "relative":
                lam_max = krylov_largest_eigenvalue(mv, flat_g, self.C)
                self.mv[idx] += self.C
            else:
                lam_max = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
            lam = resolve_damping(o.damping, o.damping_mode, lam_max)
            v, used = cg_solve(mv, flat_g, lam, rtol=o.cg_rtol, maxiter=o.cg_maxiter or 4 * self.C)
            self.mv[idx] += used + 1
            v = v.to(torch.float64)
            gv = (flat_g.to(torch.float64) * v).sum(-1)
            ok = torch.isfinite(v).all(-1) & torch.isfinite(gv)
        ok = ok & (gv > 0)
        self._finish(idx[~ok], "nonfinite")
        if not ok.any():
            return
        idx, v, gv, x, z = idx[ok], v[ok], gv[ok], x[ok], z[ok]
        delta = (v / gv.sqrt()[:, None]).to(x.dtype).reshape(x.shape)
        x_new = self._clamp(x - delta)
        z_new = self._forward(idx, x_new)
        good = torch.isfinite(z_new).all(-1)
        self._finish(idx[~good], "nonfinite")
        self._accept(idx[good], x[good], z[good].detach(), x_new[good], z_new[good], None)

    # ---------------------------------------------------------------- converged mode
    def _gradient(self, gidx: torch.Tensor, x: torch.Tensor):
        """Euclidean metric: logits z (m, C full), the plain gradient direction v = -J^T a (m, D)
        of the descended function and its logit velocity J v (m, self.C), from one vjp and one
        jvp: C times fewer backward passes than the Jacobian rows. With a box, coordinates at
        a bound that v would push outward are frozen (as ``_direction`` does)."""

        def both(xx):
            zz = self.model(xx)
            return self._red(zz, gidx), zz

        with torch.enable_grad():
            zr, pullback, z = vjp(both, x.detach(), has_aux=True)
        z = z.detach()
        p = torch.softmax(zr.detach().to(torch.float64), -1)
        a = self._logit_gradient(gidx, p)
        (g,) = pullback(a.to(zr.dtype))
        v = -g.detach().reshape(x.shape[0], -1).to(torch.float64)
        if self.o.box is not None:
            v = torch.where(self._frozen(x, v), torch.zeros_like(v), v)
        with torch.enable_grad():
            _, zdot = jvp(lambda xx: self._red(self.model(xx), gidx), (x.detach(),), (v.to(x.dtype).reshape(x.shape),))
        self.mv[gidx] += 1
        return z, p, v, _centred(zdot.detach().to(torch.float64), p)

    def _converged_step(self, idx: torch.Tensor) -> None:
        o = self.o
        x = self.x[idx]
        given = idx
        if o.metric == "fisher":
            z, J = self._jacobian(idx, x)
            ok = torch.isfinite(J).flatten(1).all(-1) & torch.isfinite(z).all(-1)
            if not ok.all():
                idx, x, z, J = idx[ok], x[ok], z[ok], J[ok]
            p = self._p(z, idx)
            v, zdot, M, K, lam, J64, Lt = self._direction(x, J, p, self._logit_gradient(idx, p))
            # per-path tensors the corrector needs, in its argument order after (x, z, p, pdot)
            extra = {"M": M, "Lt": Lt, "K": K, "lam": lam, "J64": J64}
        else:
            z, p, v, zdot = self._gradient(idx, x)
            ok = torch.isfinite(z).all(-1) & torch.isfinite(v).all(-1) & torch.isfinite(zdot).all(-1)
            if not ok.all():
                idx, x, z, p, v, zdot = idx[ok], x[ok], z[ok], p[ok], v[ok], zdot[ok]
            M = fisher_weights(p)
            extra = {"v": v, "zdot": zdot}
        self._finish(given[~ok], "nonfinite")
        if idx.numel() == 0:
            return
        pdot = _bmv(M, zdot)
        speed = (zdot * pdot).sum(-1).clamp_min(0).sqrt()
        moving = torch.isfinite(speed) & (speed > 0) & torch.isfinite(pdot).all(-1)
        self._finish(idx[~moving], "stalled")
        if not moving.all():
            idx, x, z, p, pdot, speed = (t[moving] for t in (idx, x, z, p, pdot, speed))
            extra = {k: t[moving] for k, t in extra.items()}
            if idx.numel() == 0:
                return
        # step control: the turn of the p-space direction since the last step estimates the
        # local error of a straight predictor; zero on the exact flow of a submersion
        unit = pdot / pdot.norm(dim=-1, keepdim=True)
        h = self.h[idx].clone()
        prev = self.has_prev[idx]
        err = 0.5 * h * (unit - self.prev_dir[idx]).norm(dim=-1)
        factor = (0.9 * (o.rtol * h / err.clamp_min(1e-300)).sqrt()).clamp(0.2, 2.0)
        h = torch.where(prev, (h * factor).clamp(max=o.eta), h)
        self.prev_dir[idx] = unit
        self.has_prev[idx] = True

        hz = self.hz[idx].clone()
        pending = torch.arange(idx.numel(), device=x.device)
        for _ in range(o.max_attempts):
            if pending.numel() == 0:
                break
            sub = [t[pending] for t in extra.values()]
            if o.metric == "fisher":
                x_new, z_new, good, nonfinite, theta, planned = self._corrected(
                    idx[pending],
                    x[pending],
                    z[pending],
                    p[pending],
                    pdot[pending],
                    *sub,
                    h[pending],
                    hz[pending],
                )
            else:
                x_new, z_new, good, nonfinite, theta = self._euler(
                    idx[pending],
                    x[pending],
                    z[pending],
                    p[pending],
                    *sub,
                    speed[pending],
                    h[pending],
                    hz[pending],
                )
                planned = None
            self._finish(idx[pending[nonfinite]], "nonfinite")
            acc = pending[good]
            if acc.numel():
                # the relative miss of the linear prediction grows with the step: aim at THETA_TARGET
                scale = (THETA_TARGET / theta[good].clamp_min(1e-12)).clamp(0.3, 2.0)
                self.hz[idx[acc]] = (hz[acc] * scale).clamp(max=MAX_LOGIT_SCALE * o.logit_step)
                self._accept(
                    idx[acc],
                    x[acc],
                    z[acc],
                    x_new[good],
                    z_new[good],
                    h[acc],
                    None if planned is None else planned[good],
                )
            pending = pending[~good & ~nonfinite]
            h[pending] = h[pending] / 2
            hz[pending] = hz[pending] / 3
            self.hz[idx[pending]] = hz[pending]
        self._finish(idx[pending], "stalled")

    def _corrected(self, gidx, x, z, p, pdot, M, Lt, K, lam, J64, h, hz):
        """Predictor on the simplex line, corrector with the step's Jacobian (forward passes).

        The target lies on the line p + t pdot, at FR distance h or log-probability change hz,
        whichever comes first, or just past the class boundary when the line crosses it
        sooner. Corrections solve the damped Fisher least-squares problem for the remaining
        log-probability residual r: dx = J^T (M K + lam I)^{-1} M r, which with full-rank J
        reproduces r exactly (mod 1); after each correction a Broyden secant update makes J map
        the move just made onto the logit change the network made (no extra passes). Returns
        the new points, logits, accepted and nonfinite masks, the relative miss of the first
        linear prediction of the logit gap (a measure of nonlinearity), and which steps were
        aimed just past the boundary.
        """
        o = self.o
        top, k = self._classes(gidx)
        line = SimplexLine(p, pdot)
        t = line.step(h, hz)
        chase = self.chasing[gidx]
        t_star = line.crossing(top)
        if chase.any():
            t_star = torch.where(chase, line.overtake(k), t_star)
        final = t_star <= t
        if final.any():
            rows = final.nonzero()[:, 0]
            sub = SimplexLine(p[rows], pdot[rows])
            t[rows] = sub.beyond(t_star[rows], o.overshoot)
        p_target = line.at(t)
        target = torch.log(p_target.clamp_min(1e-300))
        # the last step lands tighter than its overshoot: its end point is past the boundary and
        # on the line, where the length to the tie is measured
        rel = torch.where(final, torch.full_like(h, min(o.rtol, o.overshoot / 4)), torch.full_like(h, o.rtol))
        tol = torch.maximum(rel * fisher_rao_distance(p, p_target), torch.full_like(h, o.atol))
        r = target - _log_probs(self._red(z, gidx))

        def gap_of(v: torch.Tensor) -> torch.Tensor:
            return (v.gather(1, top[:, None]) - v.gather(1, k[:, None]))[:, 0]

        r0_gap = gap_of(r)
        m = x.shape[0]
        delta = torch.zeros(m, J64.shape[-1], dtype=torch.float64, device=x.device)
        x_new, z_new = x.clone(), z.clone()
        live = torch.ones(m, dtype=torch.bool, device=x.device)
        good = torch.zeros_like(live)
        nonfinite = torch.zeros_like(live)
        size_prev = torch.full((m,), float("inf"), dtype=torch.float64, device=x.device)
        theta = torch.zeros(m, dtype=torch.float64, device=x.device)
        for it in range(o.max_corrector + 1):
            w = fisher_lsq(Lt, K, r, lam)
            dz = _centred(_bmv(K, w), p)
            size = (dz * _bmv(M, dz)).sum(-1).clamp_min(0).sqrt()
            if it == 0:
                predicted = gap_of(dz)
            if it == 1:
                # nonlinearity along the path: how far the change of the logit gap
                # log p_top - log p_target after the first step is from its linear prediction
                miss = ((r0_gap - gap_of(r)) - predicted).abs()
                theta = torch.where(live, miss / predicted.abs().clamp_min(1e-300), theta)
            if it > 0:
                conv = live & (size <= tol)
                # every correction but the first must contract: the first only measures the
                # step's nonlinearity, and its residual may exceed the step itself (a tiny
                # p_target next to a moderately probable third class)
                diverging = (size > o.contraction * size_prev) & (it > 1)
                fail = live & ~conv & (diverging | ~torch.isfinite(size) | (it == o.max_corrector))
                good |= conv
                live &= ~conv & ~fail
            if not live.any():
                break
            li = live.nonzero()[:, 0]
            x_prev, z_prev = x_new.clone(), self._red(z_new, gidx).clone()
            # J^T w for every row (cheaper than gathering the live rows of J)
            delta[li] += _rows_combination(w, J64)[li]
            x_new[li] = self._clamp(x[li] + delta[li].to(x.dtype).reshape(x[li].shape))
            z_new[li] = self._forward(gidx[li], x_new[li])
            bad = ~torch.isfinite(z_new[li]).all(-1)
            nonfinite[li[bad]] = True
            live[li[bad]] = False
            zr_new = self._red(torch.nan_to_num(z_new), gidx)
            _broyden_update(J64, K, live, x_new - x_prev, zr_new - z_prev)
            r = target - _log_probs(zr_new)
            size_prev = size
        return x_new, z_new, good & ~nonfinite, nonfinite, theta, final

    def _euler(self, gidx, x, z, p, v, zdot, speed, h, hz):
        """Plain step along the Euclidean gradient direction: FR length h by its linear speed,
        or a linearly predicted change hz of the logit gap, whichever is shorter. A step whose
        realized FR length exceeds 2 h is refused (the linear speed can be tiny near p_y = 1)."""
        top, k = self._classes(gidx)

        def gap_of(v_: torch.Tensor) -> torch.Tensor:
            return (v_.gather(1, top[:, None]) - v_.gather(1, k[:, None]))[:, 0]

        rate = gap_of(zdot).abs().clamp_min(1e-300)
        tau = torch.minimum(h / speed, hz / rate)
        x_new = self._clamp(x + (tau[:, None] * v).to(x.dtype).reshape(x.shape))
        z_new = self._forward(gidx, x_new)
        nonfinite = ~torch.isfinite(z_new).all(-1)
        z_safe = self._red(torch.nan_to_num(z_new), gidx).to(torch.float64)
        moved = fisher_rao_distance(p, torch.softmax(z_safe, -1))
        good = ~nonfinite & (moved <= 2 * h) & (moved > 0)
        predicted = tau * gap_of(zdot)
        theta = (gap_of(z_safe - self._red(z, gidx).to(torch.float64)) - predicted).abs() / predicted.abs().clamp_min(
            1e-300
        )
        return x_new, z_new, good, nonfinite, theta
