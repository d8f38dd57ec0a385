"""The tensors and counters of one chunk of paths, and the network calls that charge them.

Shapes: n paths in the chunk, m of them in a call (``gidx`` (m,) int64 indices into the
chunk), C classes, V classes of the geometry's view, *S the input shape, D = prod(S).
Lengths and probabilities are float64; points and logits keep the input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..fisher import logits_and_jacobian
from .classes import FullView, LumpedView, class_view

RUNNING = "running"

#: whether the tracer's Jacobian rows are those of the logits minus the last one (V - 1
#: backward passes instead of V; a zero last row). The tracer's every use of J is invariant
#: under adding one row to all rows: the Fisher weights diag p - p p^T and the factor L^T
#: annihilate constant logit shifts, directions are J^T w with sum(w) = 0, logit velocities
#: are centred, and Broyden's update commutes with the shift (docs/method.md: the Fisher depends
#: on the centred rows only).
REFERENCE_ROW = True


class PathState:
    """Every per-path quantity of a chunk; paths are finished (given a status) exactly once.

    Attributes:
        x0, x, x_first: (n, *S) start, last accepted point, first point past the first change.
        z: (n, C) logits at ``x``.
        source, top, target: (n,) int64: the class at x0, the class a path is leaving (the
            source, then while chasing the last class passed), the target.
        length: (n,) FR length so far; length_first: up to the first change (NaN before);
            length_target: up to the target becoming the argmax (until="target"; NaN before).
        first_hit: (n,) int64, -1 before the first change; success: (n,) bool.
        steps, forward_evals, matvecs: (n,) int64; box_changes: (n,) int64 coordinates
            added to or released from the box's active set, summed over the steps; jacobian_evals: (n,) float64 (shared points
            are charged their share).
        fr_step, logit_step: (n,) float64 step caps of the converged steppers (FR length,
            largest log-probability change); prev_dir: (n, V) last unit p-direction, has_prev.
        active, chasing: (n,) bool: still running; past the first change, chasing the target.
        damped: (n,) bool: a direction of the path was damped by the continuation
            (``paths.damped``); such a path that changes class ends ``damped``, not ``ok``.
        status: one str per path; visited: the classes passed (until="target");
        trajectory: the accepted points of each path (record=True) or None.
    """

    def __init__(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor, record: bool) -> None:
        n = x.shape[0]
        dev = x.device
        self.x0 = x.detach().clone()
        self.x = self.x0.clone()
        self.x_first = self.x0.clone()
        self.z = torch.empty(0)
        self.source = source
        self.top = source.clone()
        self.target = target.clone()
        self.length = torch.zeros(n, dtype=torch.float64, device=dev)
        self.length_first = torch.full((n,), float("nan"), dtype=torch.float64, device=dev)
        self.length_target = torch.full((n,), float("nan"), dtype=torch.float64, device=dev)
        self.first_hit = torch.full((n,), -1, dtype=torch.int64, device=dev)
        self.success = torch.zeros(n, dtype=torch.bool, device=dev)
        self.steps = torch.zeros(n, dtype=torch.int64, device=dev)
        self.jacobian_evals = torch.zeros(n, dtype=torch.float64, device=dev)
        self.forward_evals = torch.zeros(n, dtype=torch.int64, device=dev)
        self.matvecs = torch.zeros(n, dtype=torch.int64, device=dev)
        self.box_changes = torch.zeros(n, dtype=torch.int64, device=dev)
        self.damped = torch.zeros(n, dtype=torch.bool, device=dev)
        self.fr_step = torch.zeros(n, dtype=torch.float64, device=dev)
        self.logit_step = torch.zeros(n, dtype=torch.float64, device=dev)
        self.prev_dir = torch.zeros(n, 0, dtype=torch.float64, device=dev)
        self.has_prev = torch.zeros(n, dtype=torch.bool, device=dev)
        self.active = torch.ones(n, dtype=torch.bool, device=dev)
        self.chasing = torch.zeros(n, dtype=torch.bool, device=dev)
        self.status = [RUNNING] * n
        self.visited: list[list[int]] = [[] for _ in range(n)]
        self.trajectory: list[list[torch.Tensor]] | None = [[xi.clone()] for xi in self.x0] if record else None

    def __len__(self) -> int:
        return len(self.status)

    def finish(self, which: torch.Tensor, status: str) -> None:
        """Give paths ``which`` (a (n,) bool mask or int64 indices) ``status`` and stop them;
        a path already finished keeps its first status."""
        idx = which.nonzero()[:, 0] if which.dtype == torch.bool else which
        for i in idx.tolist():
            if self.active[i]:
                self.status[i] = status
        self.active[idx] = False

    def move(self, gidx: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> None:
        """Paths ``gidx`` (m,) are now at x (m, *S) with logits z (m, C); record the points."""
        self.x[gidx] = x
        self.z[gidx] = z
        self.record(gidx)

    def record(self, gidx: torch.Tensor) -> None:
        """Append the current point of paths ``gidx`` to their trajectories (record=True)."""
        if self.trajectory is not None:
            for i in gidx.tolist():
                self.trajectory[i].append(self.x[i].clone())

    def visit(self, gidx: torch.Tensor, classes: torch.Tensor) -> None:
        """Append classes (m,) to ``visited`` of paths ``gidx`` where they differ from the last."""
        for i, c in zip(gidx.tolist(), classes.tolist()):
            if not self.visited[i] or self.visited[i][-1] != c:
                self.visited[i].append(c)

    def reset_steps(self, gidx: torch.Tensor, fr_step: float, logit_step: float) -> None:
        """Start the step control of paths ``gidx`` afresh (a new leg of a chasing path)."""
        self.has_prev[gidx] = False
        self.fr_step[gidx] = fr_step
        self.logit_step[gidx] = logit_step


class Network:
    """The model, called through here so that every evaluation is charged to its paths."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], state: PathState) -> None:
        self.model = model
        self.state = state
        self.view: FullView | LumpedView = FullView(0)

    def start(self, top_classes: int | None) -> torch.Tensor:
        """Logits (n, C) at the start points; sets the state's logits and the class view."""
        st = self.state
        st.z = self.forward(torch.arange(len(st), device=st.x.device), st.x)
        self.view = class_view(st.z, st.source, st.target, top_classes)
        return st.z

    def model_of(self, gidx: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The map from the points of paths ``gidx`` (m,) to logits: the model itself here; a
        ``subspace.SubspaceNetwork`` maps u to x0 + B u first."""
        return self.model

    def forward(self, gidx: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """Logits (m, C) at xs (m, *S), one forward pass charged to paths ``gidx``."""
        with torch.inference_mode():
            z = self.model_of(gidx)(xs)
        self.state.forward_evals[gidx] += 1
        return z.clone()

    def jacobian(self, gidx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (m, C) and Jacobian rows (m, V, D) of the view at x (m, *S), evaluated once per
        distinct point (the paths of one image to its C - 1 targets start together); each path
        is charged its share."""
        counter = self.state.jacobian_evals
        flat = x.reshape(x.shape[0], -1)
        view = self.view
        # with lumped classes the rows are those of each path's kept classes: paths share a
        # point's rows when they also keep the same classes (the paths of one image to its top
        # targets start together and keep the same m most probable classes)
        key = self.point_key(gidx, flat)
        uniq, inverse, counts = torch.unique(key, dim=0, return_inverse=True, return_counts=True)
        # the rows of the view's logits minus its last one (``REFERENCE_ROW``): one backward
        # pass fewer, and the tracer uses only what the softmax determines
        ref = view.size - 1 if REFERENCE_ROW else None

        if uniq.shape[0] == x.shape[0]:
            counter[gidx] += 1
            return self.jacobian_rows(gidx, x, ref)
        n = x.shape[0]
        first = torch.full((uniq.shape[0],), n, dtype=torch.long, device=x.device)
        first = first.scatter_reduce(0, inverse, torch.arange(n, device=x.device), reduce="amin")
        z, J = self.jacobian_rows(gidx[first], x[first], ref)
        counter[gidx] += 1.0 / counts[inverse].to(counter.dtype)
        return z[inverse], J[inverse]

    def point_key(self, gidx: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """What makes the points flat (m, D) of paths ``gidx`` one point for the Jacobian: the
        point, and with lumped classes the classes each path keeps."""
        view = self.view
        return torch.cat([flat, view.keep[gidx].to(flat.dtype)], 1) if isinstance(view, LumpedView) else flat

    def jacobian_rows(
        self, owners: torch.Tensor, xs: torch.Tensor, reference: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (k, C) and rows (k, V, D) of the view at distinct points xs (k, *S) of paths
        ``owners`` (k,), with the ``reference`` row subtracted (``fisher.logits_and_jacobian``)."""
        view = self.view
        reduce = (lambda z: view.reduce(z, owners)) if isinstance(view, LumpedView) else None
        return logits_and_jacobian(self.model, xs, reduce=reduce, reference=reference)

    def probs(self, z: torch.Tensor, gidx: torch.Tensor) -> torch.Tensor:
        """Probabilities (m, V) float64 of the view."""
        return self.view.probs(z, gidx)
