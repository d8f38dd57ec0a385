"""Natural-gradient paths from inputs toward target classes.

``trace_paths`` and ``PathResult`` (``api``); option names, defaults and their one validator
``resolve_options`` (``options``); the per-chunk loop (``tracer``) over a state (``state``),
steppers (the registry ``steppers``, keyed by method: ``converged``, composed of the step-size
control ``step_control``, the ``directions``, the step attempts ``predictor_corrector`` (with its
``correction``) and ``euclidean``, and the projection ``box``; and ``paper``), class-change events
(``events``), the class view (``classes``) and straight lines on the simplex (``simplex_line``).
"""

from __future__ import annotations

from .api import PathResult, trace_paths
from .options import (
    ACCURACY_DEFAULTS,
    DEFAULT_DAMPING,
    DEFAULT_MAX_STEPS,
    METHODS,
    METRICS,
    SOLVERS,
    STATUSES,
    UNTIL,
    TracerOptions,
    resolve_box,
    resolve_options,
)

__all__ = [
    "ACCURACY_DEFAULTS",
    "DEFAULT_DAMPING",
    "DEFAULT_MAX_STEPS",
    "METHODS",
    "METRICS",
    "SOLVERS",
    "STATUSES",
    "UNTIL",
    "PathResult",
    "TracerOptions",
    "resolve_box",
    "resolve_options",
    "trace_paths",
]
