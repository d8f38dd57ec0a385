"""The run folder's only owner: its files (``folder``), the path table (``schema``), the
configuration (``config``) and the sweep that writes them (``experiment``).

Names load on first use: ``frmargin.runs.load_run`` and ``RunConfig`` import neither torch nor
the report; ``run_experiment`` imports torch.

Example:
    >>> from frmargin.runs import load_run
    >>> run = load_run(Path("runs/resnet20"))  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "IDENTITY_FIELDS": ".config",
    "RunConfig": ".config",
    "BASELINES_DIR": ".folder",
    "IMAGES_FILE": ".folder",
    "MISCLASSIFIED_FILE": ".folder",
    "PATHS_DIR": ".folder",
    "RUN_FILE": ".folder",
    "Run": ".folder",
    "check_run_folder": ".folder",
    "load_run": ".folder",
    "read_run_info": ".folder",
    "split_modes": ".folder",
    "path_table": ".schema",
    "shielded": ".schema",
    "resolve_data": ".preflight",
    "run_experiment": ".experiment",
    "select_images": ".targets",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'frmargin.runs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*(n for n in globals() if n.startswith("__")), *__all__})
