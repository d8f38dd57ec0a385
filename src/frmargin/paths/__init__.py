"""Natural-gradient paths from inputs toward target classes.

``trace_paths`` and ``PathResult`` (``api``), traced with one ``frmargin.options.TraceOptions``;
its resolved view per chunk and the path statuses (``options``); the per-chunk loop (``tracer``)
over a state (``state``), the steppers (``steppers``: the registry), class-change events
(``events``), the class view (``classes``), straight lines on the simplex (``simplex_line``) and
the in-box margin estimate (``box_margin``).
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
from .options import STATUSES, TracerOptions, resolve_options

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
    "TraceOptions",
    "TracerOptions",
    "resolve_options",
    "trace_paths",
]
