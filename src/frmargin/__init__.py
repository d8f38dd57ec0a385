"""frmargin: Fisher-Rao margins, natural-gradient paths and class shielding.

Every public name loads on first use, so ``import frmargin`` (and ``frmargin.errors``) imports
neither torch nor pandas; ``frmargin.trace_paths`` imports the tracer, ``frmargin.build_report``
the report.

Example:
    >>> import frmargin
    >>> frmargin.RunConfig(images=20).images
    20
"""

from __future__ import annotations

from typing import Any

from ._lazy import lazy_attribute, lazy_dir
from .errors import AssetError, FrmarginError

__version__ = "0.2.0"

_LAZY = {
    "DataFisher": ".fisher",
    "fisher_spectrum": ".spectrum",
    "fisher_rao_distance": ".geometry",
    "margin_lower_bound": ".geometry",
    "predicted_path": ".geometry",
    "PathResult": ".paths",
    "TraceOptions": ".options",
    "trace_paths": ".paths",
    "load_model": ".models",
    "list_models": ".models",
    "logits_of": ".models",
    "load_dataset": ".data",
    "min_l2_distance": ".baselines",
    "min_l2_attack": ".baselines",
    "RunConfig": ".runs.config",
    "run_experiment": ".runs.experiment",
    "build_report": ".report",
    "fit_temperature": ".temperature",
}

__all__ = ["AssetError", "FrmarginError", *_LAZY]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
