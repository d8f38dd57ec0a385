"""The exact natural-gradient flow of piecewise-linear networks: a reference for the tracer.

``exact_flow`` (``flow``) walks each path region by region (``regions``) through the activation
regions of a network read call by call (``linearize``, its ``switches``), finding each region's
end exactly (``roots``). Slow and float64: the tracer's paths, their L2 distance at the class
change and the stiff paths are measured against it.
"""

from __future__ import annotations

from .flow import EXACT_STATUSES, ExactPaths, exact_flow
from .linearize import TREATED, NotPiecewiseLinear, PiecewiseLinear

__all__ = ["EXACT_STATUSES", "TREATED", "ExactPaths", "NotPiecewiseLinear", "PiecewiseLinear", "exact_flow"]
