"""Descent directions: the function a path descends, the damped natural-gradient (or plain
gradient) direction solved from Jacobian rows, and the two direction sources of the converged
stepper: ``RowDirection`` (the Jacobian rows, solved through a ``Projection``; ``FreeSpace``
is the projection without a box) and ``GradientDirection`` (the Euclidean vjp/jvp route).

Shapes: m paths (``idx`` (m,) indices into the chunk), C classes, V classes of the view, *S
the input shape, D = prod(S). Everything on the simplex is float64.
"""

from __future__ import annotations

import torch
from torch.func import jvp, vjp

from ..solve import fisher_factor, fisher_lsq, fisher_weights, largest_eigenvalue_factored, resolve_damping
from .linalg import bmv, centred, frozen, rows_combination
from .options import ResolvedOptions
from .state import Network
from .step_types import Direction, Found, Projection


def descent_gradient(net: Network, idx: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Logit gradient a (m, V) float64 of the function each path descends, p (m, V).

    Until the first change: log p_top - log p_k, a = e_top - e_k. Chasing the target:
    log(1 - p_k) - log p_k, a_j = p_j / (1 - p_k) (j != k), a_k = -1, which raises p_k and
    shrinks the others in proportion, so the classes passed never swap back.
    """
    st = net.state
    top, k = net.view.classes(idx, st.top[idx], st.target[idx])
    a = torch.zeros(top.shape[0], net.view.size, dtype=torch.float64, device=top.device)
    a.scatter_(1, top[:, None], 1.0)
    a.scatter_(1, k[:, None], -1.0)
    chase = st.chasing[idx]
    if chase.any():
        pc = p[chase]
        kc = k[chase]
        rest = 1.0 - pc.gather(1, kc[:, None])
        ac = pc / rest.clamp_min(1e-300)
        ac.scatter_(1, kc[:, None], -1.0)
        a[chase] = ac
    return a


def damping(
    opts: ResolvedOptions, factor: torch.Tensor, gram: torch.Tensor, floor: torch.Tensor | None = None
) -> torch.Tensor:
    """Absolute lam (m,) from the option: relative to the largest eigenvalue of L^T K L; with
    ``floor`` (m,), at least floor times that eigenvalue on the rows where floor > 0 (the box's
    floor on a reduced free set, the damped retries and continuation)."""
    floored = floor is not None and bool((floor > 0).any())
    if opts.damping_mode == "relative" or floored:
        lam_max = largest_eigenvalue_factored(factor, gram)
    else:  # an absolute damping reads only the shape
        lam_max = torch.zeros(factor.shape[0], dtype=torch.float64, device=factor.device)
    lam = resolve_damping(opts.damping, opts.damping_mode, lam_max)
    if floored:
        assert floor is not None
        lam = torch.where(floor > 0, torch.maximum(lam, floor * lam_max), lam)
    return lam


def row_direction(
    opts: ResolvedOptions, J: torch.Tensor, p: torch.Tensor, a: torch.Tensor, floor: torch.Tensor | None = None
) -> Direction:
    """Descent direction from Jacobian rows J (m, V, D), p (m, V), a (m, V), without a box.

    Fisher metric: v = -J^T w with (M K + lam I) w = a (the damped natural gradient; ``floor``
    (m,) as in ``damping``); Euclidean: w = a. In a box: ``box.projected_row_direction``.
    """
    M = fisher_weights(p)
    Lt = fisher_factor(p)
    J64 = J.to(torch.float64)
    K = J64 @ J64.transpose(-1, -2)
    lam = damping(opts, Lt, K, floor)
    # (M K + lam I) w = a, with a = M (a / p) since a sums to zero
    w = fisher_lsq(Lt, K, a / p.clamp_min(1e-300), lam) if opts.metric == "fisher" else a
    v = -rows_combination(w, J64)
    zdot = centred(-bmv(K, w), p)
    return Direction(v=v, zdot=zdot, weights=M, factor=Lt, gram=K, damping=lam, jacobian=J64)


class FreeSpace:
    """The ``Projection`` of paths without a box: the unconstrained direction, no stationary
    point, no rescue of a stalled path, nothing held during a correction."""

    def __init__(self, net: Network, opts: ResolvedOptions) -> None:
        self.net = net
        self.opts = opts

    def direction(
        self, idx: torch.Tensor, x: torch.Tensor, J: torch.Tensor, p: torch.Tensor
    ) -> tuple[Direction, torch.Tensor | None]:
        return row_direction(self.opts, J, p, descent_gradient(self.net, idx, p)), None

    def rescue(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.zeros(idx.numel(), dtype=torch.bool, device=idx.device)

    def bind(self, x_new: torch.Tensor, J: torch.Tensor, K: torch.Tensor, rows: torch.Tensor) -> torch.Tensor | None:
        return None


class RowDirection:
    """The direction from the Jacobian rows at the step's start (one Jacobian evaluation per
    distinct point), solved by the projection."""

    def __init__(self, net: Network, projection: Projection) -> None:
        self.net = net
        self.projection = projection

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> Found:
        z, J = self.net.jacobian(idx, x)
        ok = torch.isfinite(J).flatten(1).all(-1) & torch.isfinite(z).all(-1)
        kept = idx
        if not ok.all():
            kept, x, z, J = idx[ok], x[ok], z[ok], J[ok]
        p = self.net.probs(z, kept)
        d, stopped = self.projection.direction(kept, x, J, p)
        if stopped is not None and stopped.any():
            ok = ok.clone()
            ok[ok.nonzero()[:, 0][stopped]] = False
            keep = ~stopped
            z, p, d = z[keep], p[keep], d.take(keep)
        return ok, z, p, d


class GradientDirection:
    """The plain gradient direction of the Euclidean metric, from one vjp and one jvp."""

    def __init__(self, net: Network, opts: ResolvedOptions) -> None:
        self.net = net
        self.opts = opts

    def __call__(self, idx: torch.Tensor, x: torch.Tensor) -> Found:
        """v = -J^T a (m, D) and its logit velocity J v (m, V): V times fewer backward passes
        than the Jacobian rows. With a box, coordinates at a bound that v would push outward
        are frozen."""
        net, view = self.net, self.net.view
        model = net.model_of(idx)

        def both(xx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            zz = model(xx)
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
            _, zdot = jvp(lambda xx: view.reduce(model(xx), idx), (x.detach(),), tangent)  # type: ignore[misc]
        net.state.matvecs[idx] += 1
        zdot = centred(zdot.detach().to(torch.float64), p)
        ok = torch.isfinite(z).all(-1) & torch.isfinite(v).all(-1) & torch.isfinite(zdot).all(-1)
        if not ok.all():
            z, p, v, zdot = z[ok], p[ok], v[ok], zdot[ok]
        return ok, z, p, Direction(v=v, zdot=zdot, weights=fisher_weights(p))
