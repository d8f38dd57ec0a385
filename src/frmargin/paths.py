"""Natural-gradient paths from inputs toward target classes: ``trace_paths`` and ``PathResult``.

Shapes: P paths, C classes, D = prod(input_shape).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import pandas as pd
import torch

from .errors import bad_argument
from .solve import DAMPING_MODES
from .tracer import ChunkTracer, TracerOptions
from .validation import check_box, check_classes, check_images, check_logits, check_model

__all__ = ["ACCURACY_DEFAULTS", "METHODS", "METRICS", "SOLVERS", "UNTIL", "PathResult", "trace_paths"]

METHODS = ("converged", "paper")
METRICS = ("fisher", "euclidean")
UNTIL = ("first_flip", "target")
SOLVERS = ("exact", "cg")
STATUSES = ("ok", "budget", "stalled", "nonfinite", "misclassified")

#: Accuracy options of the converged mode and their defaults.
ACCURACY_DEFAULTS = {
    "eta": 0.6,  # largest Fisher-Rao length of one step
    "logit_step": 4.0,  # first cap on a step's largest log-probability change (then adaptive)
    "rtol": 0.02,  # corrector and step-turn tolerance, relative to the step
    "atol": 1e-3,  # absolute FR tolerance of a corrected point (steps that barely move p)
    "max_corrector": 8,  # corrections per step (forward passes) before the step is shrunk
    "contraction": 0.7,  # a correction must shrink at least this much, else the step shrinks
    "root_tol": 2e-3,  # bracket width locating an unplanned class change, relative to the last step
    "overshoot": 0.01,  # the last step aims this fraction past the boundary
    "max_attempts": 6,  # step shrinks (by 4) before a path is declared stalled
    "cg_rtol": 1e-10,  # CG residual tolerance (paper mode, solver="cg")
    "cg_maxiter": None,  # CG iteration cap (default 4 C)
}
DEFAULT_DAMPING = {"converged": 1e-14, "paper": 1e-3}
DEFAULT_MAX_STEPS = {"converged": 200, "paper": 2000}


@dataclass(frozen=True)
class PathResult:
    """Per-path measurements; every input path comes back, whatever happened to it.

    Attributes:
        fr_length: (P,) float64 Fisher-Rao length (sum of closed-form chord distances) up to the
            first class change; up to the last point where there was none.
        l2, linf: (P,) norms of x_end - x0 (at the first class change when there was one).
        steps: (P,) accepted steps (in paper mode the paper's D_FR is this count).
        jacobian_evals, forward_evals, matvecs: (P,) cost counters (a Jacobian evaluation is the
            C logit-gradient rows at one point; matvecs counts CG Fisher products).
        first_hit: (P,) class that took over first, -1 where no class change.
        success: (P,) bool, the predicted class changed.
        x_end: (P, *S) first point past the class change (last point where none).
        status: "ok", "budget", "stalled", "nonfinite" or "misclassified" (argmax at x0 was not
            the source).
        fr_length_target: (P,) FR length until the target became the argmax (until="target";
            NaN otherwise or where not reached).
        visited: classes that became the argmax along the path, in order.
        trajectory: per path, the accepted points (n_i, *S), when record=True.
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

    def __len__(self) -> int:
        return len(self.status)

    def to_frame(self) -> pd.DataFrame:
        """One row per path with every scalar field (``visited`` as "3>5>1")."""
        data = {}
        for f in fields(self):
            val = getattr(self, f.name)
            if f.name in ("x_end", "trajectory"):
                continue
            if f.name == "visited":
                data[f.name] = [">".join(map(str, v)) for v in val]
            elif isinstance(val, torch.Tensor):
                data[f.name] = val.cpu().numpy()
            else:
                data[f.name] = list(val)
        return pd.DataFrame(data)


def _options(
    method, metric, until, solver, damping, damping_mode, max_steps, box, record, top_classes, acc
) -> TracerOptions:
    for name, value, allowed in (
        ("method", method, METHODS),
        ("metric", metric, METRICS),
        ("until", until, UNTIL),
        ("solver", solver, SOLVERS),
        ("damping_mode", damping_mode, DAMPING_MODES),
    ):
        if value not in allowed:
            raise bad_argument(name, value, f"one of {allowed}")
    unknown = set(acc) - set(ACCURACY_DEFAULTS)
    if unknown:
        raise bad_argument("accuracy option", sorted(unknown), f"names among {sorted(ACCURACY_DEFAULTS)}")
    opts = {**ACCURACY_DEFAULTS, **acc}
    for name in ("eta", "logit_step", "rtol", "atol", "root_tol", "overshoot", "cg_rtol", "contraction"):
        if not (isinstance(opts[name], (int, float)) and 0 < opts[name] < float("inf")):
            raise bad_argument(name, opts[name], "a finite number > 0")
    for name in ("max_corrector", "max_attempts"):
        if not (isinstance(opts[name], int) and opts[name] >= 1):
            raise bad_argument(name, opts[name], "an integer >= 1")
    if solver == "cg" and method != "paper":
        raise bad_argument("solver", solver, "'exact' for method='converged' (CG serves paper mode)")
    damping = DEFAULT_DAMPING[method] if damping is None else damping
    max_steps = DEFAULT_MAX_STEPS[method] if max_steps is None else max_steps
    if not (isinstance(max_steps, int) and max_steps >= 1):
        raise bad_argument("max_steps", max_steps, "an integer >= 1")
    if not (isinstance(damping, (int, float)) and 0 < damping < float("inf")):
        raise bad_argument("damping", damping, "a finite number > 0")
    if top_classes is not None:
        if not (isinstance(top_classes, int) and top_classes >= 2):
            raise bad_argument("top_classes", top_classes, "an integer >= 2 (the source and the target) or None")
        if until != "first_flip":
            raise bad_argument("top_classes", top_classes, "None with until='target' (the classes passed must be kept)")
        if solver != "exact":
            raise bad_argument("top_classes", top_classes, "None with solver='cg' (CG uses every class)")
    return TracerOptions(
        method=method,
        metric=metric,
        until=until,
        solver=solver,
        damping=float(damping),
        damping_mode=damping_mode,
        max_steps=max_steps,
        box=box,
        record=bool(record),
        top_classes=top_classes,
        **opts,
    )


def trace_paths(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    method: str = "converged",
    metric: str = "fisher",
    damping: float | None = None,
    damping_mode: str = "relative",
    solver: str = "exact",
    max_steps: int | None = None,
    until: str = "first_flip",
    box: tuple[float, float] | None = None,
    batch_size: int = 128,
    record: bool = False,
    top_classes: int | None = None,
    progress: Callable[[int], None] | None = None,
    **accuracy_options,
) -> PathResult:
    """Trace paths from each x toward its target class until the predicted class changes.

    Methods:
        ``converged`` (default): the natural-gradient flow of L = log p_top - log p_target,
        integrated by a predictor on the simplex (the flow's straight line in p, exact where
        the Jacobian is a submersion) and a corrector that pulls the network onto it with
        forward passes only (the step's Jacobian, refined by Broyden secant updates), steps of
        at most ``eta`` in Fisher-Rao length. Length = sum of closed-form FR distances along
        the straight p-segments between accepted points; the last step is aimed just past the
        boundary on the line and the length ends where its segment meets the boundary (a change
        the line did not plan is located on the input-space chord by regula falsi to
        ``root_tol``).
        ``paper``: the paper's algorithm with its sign fixed: unit damped steps
        x <- x - v / sqrt(g^T v), (G + lam I) v = g, solved exactly or by CG; ``steps`` is the
        paper's D_FR, ``fr_length`` the true length of the same path.
    Metrics: ``fisher`` (natural gradient) or ``euclidean`` (plain gradient of the logit gap,
    same step control, FR length still recorded).
    ``until="target"`` continues past the first change, descending log p_top - log p_target,
    until the target is the argmax. ``box=(lo, hi)`` keeps x in the box by freezing the
    coordinates a step would push out (projected flow); the paths then follow the Fisher
    geometry of the box-restricted model and the closed forms no longer apply exactly.

    Args:
        model: (B, *S) -> logits (B, C), in eval mode.
        x: (P, *S) start points, float32 or float64.
        source, target: (P,) class indices, source = the argmax at x, target != source.
        damping: lam; default 1e-14 (converged) or 1e-3 (paper), relative to the largest
            eigenvalue of G unless ``damping_mode="absolute"``.
        max_steps: budget of accepted steps per path (default 200 converged, 2000 paper).
        batch_size: paths advanced together (bounds memory).
        record: keep every accepted point in ``trajectory``.
        top_classes: m: for models with many classes, the geometry of each path uses only the
            m classes most probable at its start (source and target always among them) and
            one class lumping the rest: m + 1 Jacobian rows per step instead of C. The lumped
            model's Fisher information is at most the full one's, and ``fr_length`` is measured
            on it; class changes are read from all C logits (a lumped class can be the first
            hit). Needs ``until="first_flip"`` and ``solver="exact"``. None (default): every
            class.
        progress: called with the number of paths finished after each batch.
        **accuracy_options: see ``ACCURACY_DEFAULTS``.

    Returns:
        PathResult with one entry per path.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).eval()
        >>> x = torch.randn(4, 8)
        >>> y = model(x).argmax(-1)
        >>> res = trace_paths(model, x, y, (y + 1) % 3)
        >>> res.fr_length.shape
        torch.Size([4])
    """
    check_model(model)
    x = check_images(x, "x")
    P = x.shape[0]
    source = check_classes(source, P, None, "source").to(x.device)
    target = check_classes(target, P, None, "target").to(x.device)
    box = check_box(box, x)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise bad_argument("batch_size", batch_size, "an integer >= 1")
    opts = _options(
        method, metric, until, solver, damping, damping_mode, max_steps, box, record, top_classes, accuracy_options
    )
    with torch.no_grad():
        z0 = check_logits(model(x[:1]), 1)
    C = z0.shape[-1]
    check_classes(source, P, C, "source")
    check_classes(target, P, C, "target")
    same = (source == target).nonzero()[:, 0]
    if same.numel():
        raise bad_argument("target", f"target == source at path(s) {same.tolist()[:5]}", "target != source")

    parts: list[ChunkTracer] = []
    for start in range(0, P, batch_size):
        sl = slice(start, start + batch_size)
        tracer = ChunkTracer(model, x[sl], source[sl], target[sl], opts)
        tracer.run()
        parts.append(tracer)
        if progress is not None:
            progress(min(start + batch_size, P))
    return _collect(parts)


def _collect(parts: list[ChunkTracer]) -> PathResult:
    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(t, name) for t in parts])

    x0 = cat("x0")
    success = cat("success")
    x_end = torch.where(success.view(-1, *[1] * (x0.ndim - 1)), cat("x_first"), cat("x"))
    diff = (x_end - x0).reshape(x0.shape[0], -1).to(torch.float64)
    L_first = cat("L_first")
    fr_length = torch.where(success, L_first, cat("L"))
    traj = None
    if parts[0].traj is not None:
        traj = [torch.stack(points) for t in parts for points in t.traj]
    return PathResult(
        fr_length=fr_length,
        l2=diff.norm(dim=-1),
        linf=diff.abs().amax(dim=-1),
        steps=cat("steps"),
        jacobian_evals=cat("jac"),
        forward_evals=cat("fwd"),
        matvecs=cat("mv"),
        first_hit=cat("first_hit"),
        success=success,
        x_end=x_end,
        status=[s for t in parts for s in t.status],
        fr_length_target=cat("L_target"),
        visited=[v for t in parts for v in t.visited],
        trajectory=traj,
    )
