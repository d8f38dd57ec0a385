"""The paper's stepper: unit damped natural-gradient steps (docs/method.md, errata fixed).

Shapes: m paths, C classes, *S the input shape, D = prod(S).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.func import vjp

from ..fisher import DataFisher
from ..geometry import fr_distance
from ..solve import cg_solve, krylov_largest_eigenvalue, resolve_damping
from .box import projected_row_direction
from .directions import descent_gradient, row_direction
from .linalg import into_box
from .step_types import Step, Stepper


class PaperStepper(Stepper):
    """The paper's algorithm with its sign fixed: x <- x - v / sqrt(g^T v), (G + lam I) v = g,
    solved exactly from the Jacobian rows or by CG on Fisher products."""

    locates = False

    def length(self, pa: torch.Tensor, pb: torch.Tensor) -> torch.Tensor:
        """The plain chord (the paper's path jumps), (m,)."""
        return fr_distance(pa, pb)

    def _exact(self, idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """z, v = (G + lam I)^{-1} g, g^T v and the finite mask, from the Jacobian rows (the
        projected direction in a box)."""
        z, J = self.net.jacobian(idx, x)
        ok = torch.isfinite(J).flatten(1).all(-1) & torch.isfinite(z).all(-1)
        p = self.net.probs(z, idx)
        a = descent_gradient(self.net, idx, p)
        d = (
            row_direction(self.opts, J, p, a)
            if self.opts.box is None
            else projected_row_direction(self.opts, x, J, p, a)
        )
        v = -d.v  # (G + lam I)^{-1} g with g = J^T a
        gv = (a * -d.zdot).sum(-1)
        return z, v, gv, ok

    def _cg(self, idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """As ``_exact``, by CG on Fisher products (no Jacobian rows)."""
        o, net = self.opts, self.net
        z, pullback = vjp(net.model_of(idx), x)  # type: ignore[misc]
        a = descent_gradient(net, idx, torch.softmax(z.detach().to(torch.float64), -1))
        (g,) = pullback(a.to(z.dtype))
        F = DataFisher(net.model_of(idx), x, check=False)  # type: ignore[arg-type]
        flat_g = g.reshape(x.shape[0], -1)

        def mv(u: torch.Tensor) -> torch.Tensor:
            return F.matvec(u.reshape(x.shape)).reshape(u.shape)

        C = net.view.size
        if o.damping_mode == "relative":
            lam_max = krylov_largest_eigenvalue(mv, flat_g, C)
            net.state.matvecs[idx] += C
        else:
            lam_max = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        lam = resolve_damping(o.damping, o.damping_mode, lam_max)
        v, used = cg_solve(mv, flat_g, lam, rtol=o.cg_rtol, maxiter=o.cg_maxiter or 4 * C)
        net.state.matvecs[idx] += used + 1
        v = v.to(torch.float64)
        gv = (flat_g.to(torch.float64) * v).sum(-1)
        ok = torch.isfinite(v).all(-1) & torch.isfinite(gv)
        return z, v, gv, ok

    def propose(self, idx: torch.Tensor) -> Iterator[Step]:
        st = self.net.state
        x = st.x[idx]
        z, v, gv, ok = (self._exact if self.opts.solver == "exact" else self._cg)(idx, x)
        ok = ok & (gv > 0)
        st.finish(idx[~ok], "nonfinite")
        if not ok.any():
            return
        idx, v, gv, x, z = idx[ok], v[ok], gv[ok], x[ok], z[ok]
        delta = (v / gv.sqrt()[:, None]).to(x.dtype).reshape(x.shape)
        x_new = into_box(x - delta, self.opts.box)
        z_new = self.net.forward(idx, x_new)
        good = torch.isfinite(z_new).all(-1)
        st.finish(idx[~good], "nonfinite")
        yield Step(idx[good], x[good], z[good].detach(), x_new[good], z_new[good])
