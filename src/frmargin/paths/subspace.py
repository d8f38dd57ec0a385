"""Paths traced in the coordinates u of a perturbation model, x = x0 + B(x0) u
(``TraceOptions.perturbation``; ``frmargin.perturbation`` builds B).

The tracer runs unchanged on points u (n, K): a ``SubspaceNetwork`` maps the points of each path
to its input x0 + B u before the model, so every formula of the tracer holds with the Jacobian
J replaced by the C x K matrix J B and the pulled-back Fisher B^T G_x B (rank <= min(K, C - 1)).
Its rows come from K forward-mode products (jvps along the directions) when K is below
``FORWARD_BELOW`` x the rows evaluated, and from the reverse rows through the map otherwise
(``ROUTES``; the benchmark ``bench_subspace`` measured the crossing). Paths of one image share
a Jacobian where they share u, as in x. The statuses of a flow that cannot reach a class change
in the subspace are ``reachability``'s.

``PathResult`` from ``trace_subspace``: ``x_end``, ``l2`` and ``linf`` in input space, ``u_end``
(P, K) and ``u_norm`` (P,) in u, ``trajectory`` (with record=True) the accepted points in u.

Shapes: n paths of a chunk, m in a call (``gidx``), C classes, V classes of the view, K
directions, *S the input shape, D = prod(S).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch.func import jvp

from ..fisher import logits_and_jacobian
from ..perturbation.bases import Subspace
from .classes import LumpedView
from .options import ResolvedOptions
from .state import Network, PathState

__all__ = ["FORWARD_BELOW", "ROUTES", "SubspaceNetwork", "subspace_rows", "trace_subspace"]

#: how the rows of J B are computed: ``forward`` (K jvps), ``reverse`` (the V - 1 rows through
#: u -> x0 + B u), ``auto`` (forward when K < FORWARD_BELOW x (V - 1))
ROUTES = ("auto", "forward", "reverse")
#: the crossing of the two routes, in rows: K jvps cost about as much as FORWARD_BELOW^-1 x K
#: backward rows (measured with ``bench_subspace``)
FORWARD_BELOW = 0.35


def subspace_rows(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    directions: torch.Tensor,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    reference: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (m, C) at x (m, *S) and the rows (m, V, K) of J B by K forward-mode products,
    one per direction of ``directions`` (m, K, D); ``reduce`` and ``reference`` as in
    ``fisher.logits_and_jacobian`` (the reference row is subtracted and left zero).

    Example:
        >>> lin = torch.nn.Linear(4, 3).double()
        >>> x, B = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 2, 4, dtype=torch.float64)
        >>> z, JB = subspace_rows(lin, x, B)
        >>> torch.allclose(JB, lin.weight @ B.transpose(1, 2))
        True
    """

    def f(xx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zz = model(xx)
        return (zz if reduce is None else reduce(zz)), zz

    m, K = directions.shape[0], directions.shape[1]
    cols = []
    z = None
    with torch.enable_grad():
        for k in range(K):
            tangent = directions[:, k].reshape(x.shape).to(x.dtype)
            _, dout, z = jvp(f, (x.detach(),), (tangent,), has_aux=True)  # type: ignore[misc]
            cols.append(dout.detach())
    assert z is not None
    J = torch.stack(cols, -1)  # (m, V, K)
    if reference is not None:
        J = J - J[:, reference : reference + 1]
    return z.detach(), J.reshape(m, J.shape[1], K)


class SubspaceNetwork(Network):
    """The network seen from u: paths' points are u (n, K), the model is called at x0 + B u.

    ``route`` picks how J B is computed (``ROUTES``)."""

    def __init__(
        self, model: Callable[[torch.Tensor], torch.Tensor], state: PathState, subspace: Subspace, route: str = "auto"
    ) -> None:
        super().__init__(model, state)
        self.subspace = subspace
        self.route = route
        # paths of the same image share their points' Jacobians (as in x): one id per start point
        flat = subspace.x0.reshape(subspace.x0.shape[0], -1)
        self.image = torch.unique(flat, dim=0, return_inverse=True)[1]

    def model_of(self, gidx: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        sub, model = self.subspace, self.model
        return lambda u: model(sub.embed(gidx, u))

    def point_key(self, gidx: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.image[gidx, None].to(flat.dtype), super().point_key(gidx, flat)], 1)

    def forward_route(self) -> bool:
        """Whether J B comes from K jvps (``route``; ``auto``: K < FORWARD_BELOW x (V - 1))."""
        if self.route != "auto":
            return self.route == "forward"
        return self.subspace.k < FORWARD_BELOW * (self.view.size - 1)

    def jacobian_rows(
        self, owners: torch.Tensor, xs: torch.Tensor, reference: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        view = self.view
        reduce = (lambda z: view.reduce(z, owners)) if isinstance(view, LumpedView) else None
        if not self.forward_route():
            return logits_and_jacobian(self.model_of(owners), xs, reduce=reduce, reference=reference)
        x = self.subspace.embed(owners, xs)
        return subspace_rows(self.model, x, self.subspace.directions(owners), reduce, reference)


def trace_subspace(
    model: Callable[[torch.Tensor], torch.Tensor],
    subspace: Subspace,
    source: torch.Tensor,
    target: torch.Tensor,
    resolved: ResolvedOptions,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
    route: str = "auto",
) -> list[PathState]:
    """The final states of the chunks of paths from ``subspace.x0`` (P, *S), traced in u from
    u = 0, ``batch_size`` paths a chunk."""
    from .tracer import ChunkTracer

    x = subspace.x0
    u0 = torch.zeros(x.shape[0], subspace.k, dtype=x.dtype, device=x.device)
    parts: list[PathState] = []
    for start in range(0, x.shape[0], batch_size):
        rows = torch.arange(start, min(start + batch_size, x.shape[0]), device=x.device)
        chunk = Subspace(subspace.spec, x[rows], subspace.basis if subspace.shared else subspace.basis[rows])

        def network(m: Callable[[torch.Tensor], torch.Tensor], st: PathState, sub: Subspace = chunk) -> Network:
            return SubspaceNetwork(m, st, sub, route)

        tracer = ChunkTracer(model, u0[rows], source[rows], target[rows], resolved, network=network)
        parts.append(tracer.run())
        if progress is not None:
            progress(int(rows[-1]) + 1)
    return parts


def in_input_space(result: object, subspace: Subspace) -> object:
    """A ``PathResult`` traced in u with ``x_end``, ``l2`` and ``linf`` in input space and
    ``u_end``, ``u_norm`` added."""
    u_end = result.x_end  # type: ignore[attr-defined]
    rows = torch.arange(u_end.shape[0], device=u_end.device)
    x_end = subspace.embed(rows, u_end)
    diff = subspace.displacement(rows, u_end).reshape(u_end.shape[0], -1).to(torch.float64)
    return replace(
        result,  # type: ignore[type-var]
        x_end=x_end,
        l2=diff.norm(dim=-1),
        linf=diff.abs().amax(dim=-1),
        u_end=u_end,
        u_norm=u_end.to(torch.float64).norm(dim=-1),
    )
