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

from importlib import import_module
from typing import Any

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
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later look-ups skip this hook
        return value
    raise AttributeError(f"module 'frmargin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*(n for n in globals() if n.startswith("__")), *__all__})
