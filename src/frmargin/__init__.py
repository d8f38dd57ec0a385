"""frmargin: Fisher-Rao margins, natural-gradient paths and class shielding.

Core objects are imported eagerly; the heavier layers (models, data, baselines, experiment)
load on first use.
"""

from __future__ import annotations

from importlib import import_module

from .errors import AssetError, FrmarginError
from .fisher import DataFisher
from .geometry import fisher_rao_distance, margin_lower_bound, predicted_path
from .paths import PathResult, trace_paths

__version__ = "0.1.0"

_LAZY = {
    "load_model": ".models",
    "load_dataset": ".data",
    "min_l2_distance": ".baselines",
    "min_l2_attack": ".baselines",
    "RunConfig": ".experiment",
    "run_experiment": ".experiment",
    "build_report": ".report",
}

__all__ = [
    "AssetError",
    "DataFisher",
    "FrmarginError",
    "PathResult",
    "fisher_rao_distance",
    "margin_lower_bound",
    "predicted_path",
    "trace_paths",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'frmargin' has no attribute {name!r}")
