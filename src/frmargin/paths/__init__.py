"""Natural-gradient paths from inputs toward target classes.

``trace_paths`` and ``PathResult`` (``api``), traced with one ``frmargin.options.TraceOptions``;
its resolved view per chunk and the path statuses (``options``); the per-chunk loop (``tracer``)
over a state (``state``); the steppers (the registry ``steppers``, keyed by method: ``converged``,
composed of the step-size control ``step_control``, the ``directions``, the step attempts
``predictor_corrector`` (with its ``correction``) and ``euclidean``, and the projection ``box``;
and ``paper``); class-change events (``events``), the class view (``classes``), straight lines on
the simplex (``simplex_line``) and the in-box margin estimate (``box_margin``).
"""

from __future__ import annotations

from ..options import (
    ACCURACY_DEFAULTS,
    DEFAULT_DAMPING,
    DEFAULT_MAX_STEPS,
    METHODS,
    METRICS,
    SOLVERS,
    UNTIL,
    TraceOptions,
)
from .api import PathResult, trace_paths
from .options import STATUSES, ResolvedOptions, resolve_options

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
    "ResolvedOptions",
    "TraceOptions",
    "resolve_options",
    "trace_paths",
]
