"""The options one chunk of paths is traced with: ``ResolvedOptions``, the steppers' resolved view of
the user's ``frmargin.options.TraceOptions`` (method defaults filled in, the box checked against
the inputs), and the path statuses.

Example:
    >>> resolve_options(method="paper").max_steps
    2000
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import bad_argument
from ..options import TraceOptions

__all__ = ["STATUSES", "ResolvedOptions", "check_box", "resolve_options"]

STATUSES = (
    "ok",
    "budget",
    "stalled",
    "box_stationary",
    "nonfinite",
    "misclassified",
    # with a perturbation model (``reachability``): the flow in u cannot reach a class change
    # (a stationary point of the descended function in u; p converging while u runs away)
    "subspace_stationary",
    "subspace_runaway",
    # ... or creeps: at its pace the change lies far beyond the steps left (undetermined)
    "subspace_creeping",
)


@dataclass(frozen=True)
class ResolvedOptions:
    """The resolved options of one ``trace_paths`` call: every field of ``TraceOptions`` with the
    method's defaults filled in (``damping``, ``max_steps``), plus ``record``."""

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
    perturbation: str = "pixels"

    @classmethod
    def of(cls, options: TraceOptions, record: bool = False) -> ResolvedOptions:
        """The resolved view of ``options``."""
        return cls(
            method=options.method,
            metric=options.metric,
            until=options.until,
            solver=options.solver,
            damping=options.resolved_damping,
            damping_mode=options.damping_mode,
            max_steps=options.resolved_max_steps,
            box=options.box,
            record=bool(record),
            top_classes=options.top_classes,
            perturbation=options.perturbation,
            **options.all_accuracy(),
        )

    @property
    def until_target(self) -> bool:
        """Paths go on past the first class change until the target is the argmax."""
        return self.until == "target"


def check_box(box: tuple[float, float] | None, x: torch.Tensor) -> None:
    """Refuse inputs x (P, *S) outside the box (lo, hi)."""
    if box is not None and ((x < box[0]).any() or (x > box[1]).any()):
        raise bad_argument(
            "x", f"values in [{x.min().item():.4g}, {x.max().item():.4g}]", f"inputs inside box [{box[0]}, {box[1]}]"
        )


def resolve_options(
    *, record: bool = False, accuracy: Mapping[str, Any] | None = None, **options: Any
) -> ResolvedOptions:
    """The resolved view of ``TraceOptions(**options, **accuracy)`` (for tests and tools that
    drive a ``ChunkTracer`` directly).

    Example:
        >>> resolve_options(max_steps=7, accuracy={"eta": 0.1}).eta
        0.1
    """
    return ResolvedOptions.of(TraceOptions.build(None, **options, **dict(accuracy or {})), record)
