"""The run folder's only owner: its files (``folder``), the path table (``schema``), the
configuration (``config``) and the sweep that writes them (``experiment``).

Names load on first use: ``frmargin.runs.load_run`` and ``RunConfig`` import neither torch nor
the report; ``run_experiment`` imports torch.

Example:
    >>> from frmargin.runs import load_run
    >>> run = load_run(Path("runs/resnet20"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from .._lazy import lazy_attribute, lazy_dir

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
    return lazy_attribute(__name__, _LAZY, name, cache=False)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
