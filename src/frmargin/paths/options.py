"""The options one chunk of paths is traced with: ``ResolvedOptions``, the steppers' resolved view of
the user's ``frmargin.options.TraceOptions`` (method defaults filled in, the box checked against
the inputs), and the path statuses.

Example:
    >>> resolve_options(method="paper").max_steps
    2000
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import bad_argument
from ..options import L2_PRESET_SCALE, TraceOptions

__all__ = ["STATUSES", "ResolvedOptions", "check_box", "resolve_options"]

STATUSES = (
    "ok",
    # a free path that reached the change along the damped continuation (``paths.damped``)
    "damped",
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
    preset: str = "default"
    #: "damped" where the damped continuation applies (``TraceOptions.damped_continuation``), else "none"
    continuation: str = "none"

    @classmethod
    def of(cls, options: TraceOptions, record: bool = False) -> ResolvedOptions:
        """The resolved view of ``options``: under the ``l2`` preset, the step caps ``eta`` and
        ``logit_step`` and the ``overshoot`` are ``L2_PRESET_SCALE`` of the options' (and the
        default step budget its inverse times the default)."""
        resolved = cls(
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
            continuation="damped" if options.damped_continuation else "none",
            **options.all_accuracy(),
        )
        if resolved.preset == "l2":
            scale = L2_PRESET_SCALE
            # the overshoot too: the end point lies its fraction of the last step's distance past
            # the tie, so at the default 1% it moves L2 by up to a percent between step sizes
            # (measured: 0.8% on a linear model, whose path is exact at every step size)
            resolved = replace(
                resolved,
                eta=resolved.eta * scale,
                logit_step=resolved.logit_step * scale,
                overshoot=resolved.overshoot * scale,
            )
        return resolved

    def coarser(self) -> ResolvedOptions:
        """The same tracing at twice the step caps and half the step budget: the ``l2`` preset's
        second trace, whose L2 estimates the first's error (``paths.l2_preset``)."""
        return replace(
            self,
            eta=2 * self.eta,
            logit_step=2 * self.logit_step,
            max_steps=max(1, math.ceil(self.max_steps / 2)),
            record=False,
            preset="default",
        )

    def finer(self) -> ResolvedOptions:
        """The same tracing at half the step caps and twice the step budget (the ``l2`` preset's
        refinement, ``paths.l2_preset``)."""
        return replace(self, eta=self.eta / 2, logit_step=self.logit_step / 2, max_steps=2 * self.max_steps)

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
