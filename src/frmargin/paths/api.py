"""Natural-gradient paths from inputs toward target classes: ``trace_paths`` and ``PathResult``.

Methods (``TraceOptions.method``):

- ``converged`` (default): the natural-gradient flow of L = log p_top - log p_target, integrated
  by a predictor on the simplex (the flow's straight line in p, exact where the Jacobian is a
  submersion) and a corrector that pulls the network onto it with forward passes only (the
  step's Jacobian, refined by Broyden secant updates), steps of at most ``eta`` in Fisher-Rao
  length. Length = sum of closed-form FR distances along the straight p-segments between
  accepted points; the last step is aimed just past the boundary on the line and the length
  ends where its segment meets the boundary (a change the line did not plan is located on the
  input-space chord by regula falsi to ``root_tol``).
- ``paper``: the paper's algorithm with its sign fixed: unit damped steps x <- x - v / sqrt(g^T v),
  (G + lam I) v = g, solved exactly or by CG; ``steps`` is the paper's D_FR, ``fr_length`` the
  true length of the same path.

Metrics: ``fisher`` (natural gradient) or ``euclidean`` (plain gradient of the logit gap, same
step control, FR length still recorded). ``until="target"`` continues past the first change,
descending log p_top - log p_target, until the target is the argmax. ``box=(lo, hi)`` keeps x in
the box by the projected natural-gradient flow of ``paths.box`` (an active set of coordinates held
at a bound, the solve restricted to the free ones); a path at a KKT point of the box ends
``box_stationary``; ``paths.box_margin`` estimates the true in-box margin of a traced path.
``top_classes=m``: for models with many classes the geometry of each path uses only the m classes
most probable at its start (source and target always among them) and one class lumping the rest
(m + 1 Jacobian rows per step instead of C); the lumped model's Fisher information is at most the
full one's and ``fr_length`` is measured on it, while class changes are read from all C logits.
``memory_budget`` bounds the bytes one batch holds (V Jacobian rows of D values in the input's
dtype plus a float64 copy, and the model's activations); batches shrink below ``batch_size`` to
fit, and results do not depend on the split.

Shapes: P paths, C classes, D = prod(input_shape).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import pandas as pd
import torch

from ..errors import FrmarginError, bad_argument
from ..options import TraceOptions, parse_memory_budget
from ..validation import call_model, check_classes, check_images, check_logits, check_model
from .box import bound_share
from .options import ResolvedOptions, check_box
from .state import PathState
from .tracer import ChunkTracer

__all__ = ["PathResult", "default_memory_budget", "paths_per_batch", "trace_paths"]

#: share of the free memory (available RAM, or free GPU memory) a batch may hold by default
MEMORY_SHARE = {"cpu": 0.25, "cuda": 0.5}


@dataclass(frozen=True)
class PathResult:
    """Per-path measurements; every input path comes back, whatever happened to it.

    Attributes:
        fr_length: (P,) float64 Fisher-Rao length (sum of closed-form chord distances) up to the
            first class change; up to the last point where there was none.
        l2, linf: (P,) norms of x_end - x0 (at the first class change when there was one;
            x_end lies 1%, and at least 1e-4 in FR length, past it). The default step sizes
            give an L2 a few percent longer than the exact flow's (the method page and the
            ``reference`` benchmark measure it; ``frmargin.reference.exact_flow``); the ``l2``
            preset brings it within about a percent and estimates its error (``l2_error``).
        steps: (P,) accepted steps (in paper mode the paper's D_FR is this count).
        jacobian_evals, forward_evals, matvecs: (P,) cost counters (a Jacobian evaluation is the
            C logit-gradient rows at one point; matvecs counts CG Fisher products).
        first_hit: (P,) class that took over first, -1 where no class change.
        success: (P,) bool, the predicted class changed.
        x_end: (P, *S) first point past the class change (last point where none).
        status: "ok" (the flow changed the class), "damped" (the class changed on the damped
            continuation of a flow that stalled or crept, ``paths.damped``: not the flow's path),
            "budget", "stalled", "box_stationary" (in a box: the projected direction
            vanished, x is a KKT point of the box, before any class change), "nonfinite" or
            "misclassified" (argmax at x0 was not the source).
        fr_length_target: (P,) FR length until the target became the argmax (until="target";
            NaN otherwise or where not reached).
        visited: classes that became the argmax along the path, in order.
        trajectory: per path, the accepted points (n_i, *S), when record=True.
        bound_share: (P,) share of the coordinates of x_end at a bound of the box (NaN
            without a box); box_changes: (P,) coordinates added to or released from the
            active set of the projected flow, summed over the steps (0 without a box).
        u_norm, u_end: with a perturbation model (``perturbation`` other than pixels), the
            Euclidean norm (P,) and the coordinates (P, K) of u at x_end (None otherwise); the
            trajectory is then recorded in u. Statuses ``subspace_stationary`` and
            ``subspace_runaway``: the flow in u cannot reach a class change; status
            ``subspace_creeping``: at its pace it would not within the step budget
            (undetermined; ``paths.reachability``).
        l2_error: (P,) under the ``l2`` preset, the estimated relative error of ``l2``: its
            relative difference from the L2 of the same path traced at twice the step sizes
            (NaN where either trace did not end ``ok`` or their first hits differ; the cost
            counters then include both traces); None under the default preset.
    """

    fr_length: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    steps: torch.Tensor
    jacobian_evals: torch.Tensor
    forward_evals: torch.Tensor
    matvecs: torch.Tensor
    first_hit: torch.Tensor
    success: torch.Tensor
    x_end: torch.Tensor
    status: list[str]
    fr_length_target: torch.Tensor
    visited: list[list[int]]
    trajectory: list[torch.Tensor] | None = None
    bound_share: torch.Tensor | None = None
    box_changes: torch.Tensor | None = None
    source: torch.Tensor | None = None
    target: torch.Tensor | None = None
    u_norm: torch.Tensor | None = None
    u_end: torch.Tensor | None = None
    l2_error: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.status)

    def to_frame(self) -> pd.DataFrame:
        """One row per path: ``source``, ``target``, then every scalar field (``visited`` as "3>5>1")."""
        data: dict[str, object] = {}
        for name in ("source", "target"):
            val = getattr(self, name)
            if val is not None:
                data[name] = val.cpu().numpy()
        for f in fields(self):
            val = getattr(self, f.name)
            if f.name in ("x_end", "u_end", "trajectory", "source", "target"):
                continue
            if f.name == "visited":
                data[f.name] = [">".join(map(str, v)) for v in val]
            elif val is None:
                continue
            elif isinstance(val, torch.Tensor):
                data[f.name] = val.cpu().numpy()
            else:
                data[f.name] = list(val)
        return pd.DataFrame(data)


def trace_paths(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    options: TraceOptions | None = None,
    *,
    record: bool = False,
    progress: Callable[[int], None] | None = None,
    **overrides: Any,
) -> PathResult:
    """Trace paths from each x toward its target class until the predicted class changes.

    How they are traced is ``options`` (a ``TraceOptions``; default: its defaults) with
    ``overrides`` by field name (``trace_paths(model, x, s, t, max_steps=50)``): the method
    (``converged``, the accurate default, or the paper's ``paper``), the metric (``fisher`` or
    ``euclidean``), ``until``, a ``box``, ``top_classes``, the damping, the step budget, the
    accuracy options, ``batch_size`` and ``memory_budget`` (see the module docstring and
    ``TraceOptions``). Every option is checked before any work.

    Args:
        model: (B, *S) -> logits (B, C), in eval mode.
        x: (P, *S) start points, float32 or float64 (inside ``box`` when one is given).
        source, target: (P,) class indices, source = the argmax at x, target != source.
        options: the tracing options; None: the defaults.
        record: keep every accepted point in ``PathResult.trajectory``.
        progress: called with the number of paths finished after each batch.
        **overrides: fields of ``TraceOptions`` replacing those of ``options``.

    Returns:
        PathResult with one entry per path.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
        >>> x = torch.randn(4, 8)
        >>> y = model(x).argmax(-1)
        >>> res = trace_paths(model, x, y, (y + 1) % 3, eta=0.3)
        >>> res.fr_length.shape
        torch.Size([4])
    """
    opts = TraceOptions.build(options, **overrides)
    check_model(model)
    x = check_images(x, "x")
    subspace = None
    if opts.perturbation != "pixels":  # its directions checked against the inputs, before the model runs
        from ..perturbation.bases import build_subspace

        subspace = build_subspace(opts.perturbation, x)
    P = x.shape[0]
    source = check_classes(source, P, None, "source").to(x.device)
    target = check_classes(target, P, None, "target").to(x.device)
    check_box(opts.box, x)
    z0 = check_logits(call_model(model, x[:1]), 1)
    C = z0.shape[-1]
    check_classes(source, P, C, "source")
    check_classes(target, P, C, "target")
    same = (source == target).nonzero()[:, 0]
    if same.numel():
        raise bad_argument("target", f"target == source at path(s) {same.tolist()[:5]}", "target != source")

    batch_size = paths_per_batch(model, x, opts.top_classes, C, opts.batch_size, opts.memory_budget)
    resolved = ResolvedOptions.of(opts, record)

    def trace(
        resolved: ResolvedOptions, rows: torch.Tensor | None = None, progress: Callable[[int], None] | None = None
    ) -> PathResult:
        """The paths ``rows`` (all: None) traced with ``resolved``."""
        xs, ss, ts = (x, source, target) if rows is None else (x[rows], source[rows], target[rows])
        if subspace is not None:
            from .subspace import in_input_space, trace_subspace

            sub = subspace if rows is None else subspace.take(rows)
            states = trace_subspace(model, sub, ss, ts, resolved, batch_size, progress)
            return in_input_space(_collect(states, ss, ts), sub)  # type: ignore[return-value]
        parts: list[PathState] = []
        for start in range(0, len(ss), batch_size):
            sl = slice(start, start + batch_size)
            parts.append(ChunkTracer(model, xs[sl], ss[sl], ts[sl], resolved).run())
            if progress is not None:
                progress(min(start + batch_size, len(ss)))
        return _collect(parts, ss, ts, opts.box)

    if resolved.preset != "l2":
        return trace(resolved, None, progress)
    from .l2_preset import trace_l2

    return trace_l2(trace, resolved, P, progress)


def default_memory_budget(device: torch.device) -> int:
    """``MEMORY_SHARE`` of the free GPU memory (cuda) or of the available RAM (otherwise)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * MEMORY_SHARE["cuda"])
    available = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:  # not Linux: the physical memory
        import os

        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(available * MEMORY_SHARE["cpu"])


def _activation_bytes(model: Callable[[torch.Tensor], torch.Tensor], x1: torch.Tensor) -> int:
    """Bytes of every leaf module's output for one input (what a backward pass keeps); the
    output alone for a model that is not an ``nn.Module``."""
    total = [0]

    def hook(_module: object, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    modules = [m for m in model.modules() if not list(m.children())] if isinstance(model, torch.nn.Module) else []
    try:
        handles = [m.register_forward_hook(hook) for m in modules]
    except RuntimeError:  # TorchScript modules take no hooks: count the output alone
        handles = []
    try:
        with torch.no_grad():
            z = model(x1)
    finally:
        for h in handles:
            h.remove()
    return total[0] or z.numel() * z.element_size()


def paths_per_batch(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    top_classes: int | None,
    n_classes: int,
    batch_size: int,
    memory_budget: int | str | None,
) -> int:
    """The largest batch <= ``batch_size`` whose Jacobian rows and activations fit the budget.

    One path needs V rows of D values in x's dtype plus their float64 copy, V = top_classes + 1
    (or C), and the model's activations for one input. Raises FrmarginError naming
    ``--memory-budget``, the need and the budget when not even one path fits.
    """
    budget = default_memory_budget(x.device) if memory_budget is None else parse_memory_budget(memory_budget)
    V = top_classes + 1 if top_classes is not None and top_classes < n_classes - 1 else n_classes
    D = x[0].numel()
    rows = V * D * (x.element_size() + 8)
    need = rows + _activation_bytes(model, x[:1])
    if need > budget:
        raise FrmarginError(
            f"option '--memory-budget' (memory_budget): one path needs {_size(need)} ({V} Jacobian rows of "
            f"{D} values, {_size(rows)}, and the model's activations), the budget is {_size(budget)}; "
            "raise --memory-budget or lower --top-classes"
        )
    return max(1, min(batch_size, budget // need))


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _collect(
    parts: list[PathState], source: torch.Tensor, target: torch.Tensor, box: tuple[float, float] | None = None
) -> PathResult:
    """One ``PathResult`` from the final states of the chunks, in path order."""

    def cat(get: Callable[[PathState], torch.Tensor]) -> torch.Tensor:
        return torch.cat([get(st) for st in parts])

    x0 = cat(lambda st: st.x0)
    success = cat(lambda st: st.success)
    x_end = torch.where(success.view(-1, *[1] * (x0.ndim - 1)), cat(lambda st: st.x_first), cat(lambda st: st.x))
    diff = (x_end - x0).reshape(x0.shape[0], -1).to(torch.float64)
    fr_length = torch.where(success, cat(lambda st: st.length_first), cat(lambda st: st.length))
    traj = None
    if parts[0].trajectory is not None:
        traj = [torch.stack(points) for st in parts for points in st.trajectory or []]
    return PathResult(
        fr_length=fr_length,
        l2=diff.norm(dim=-1),
        linf=diff.abs().amax(dim=-1),
        steps=cat(lambda st: st.steps),
        jacobian_evals=cat(lambda st: st.jacobian_evals),
        forward_evals=cat(lambda st: st.forward_evals),
        matvecs=cat(lambda st: st.matvecs),
        first_hit=cat(lambda st: st.first_hit),
        success=success,
        x_end=x_end,
        status=[s for st in parts for s in st.status],
        fr_length_target=cat(lambda st: st.length_target),
        visited=[v for st in parts for v in st.visited],
        trajectory=traj,
        bound_share=bound_share(x_end, box),
        box_changes=cat(lambda st: st.box_changes),
        source=source,
        target=target,
    )
