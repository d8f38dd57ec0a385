"""Run-folder loading for the report: ``Run``, ``load_run`` and ``split_modes``.

The only module of the report that reads files of a run folder (``paths.parquet``, a file or a
folder of parquet chunks, ``images.parquet``, optionally ``baselines.parquet``, and
``run.json``); meant to be replaced by ``frmargin.runs`` as the run folder's single owner.

Example:
    >>> runs = split_modes(load_run(Path("runs/resnet20")))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from frmargin.analysis import PATH_COLUMNS
from frmargin.errors import FrmarginError
from frmargin.paper import CIFAR10_CLASSES


@dataclass(frozen=True)
class Run:
    """One run folder's tables (for one method and metric)."""

    label: str
    directory: Path
    info: dict
    paths: pd.DataFrame
    images: pd.DataFrame | None
    baselines: pd.DataFrame | None
    notes: tuple[str, ...] = ()

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])


def _read_parquet(path: Path, what: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for unreadable files
        raise FrmarginError(
            f"argument 'run_dirs': {what} {str(path)!r} is unreadable ({type(error).__name__}: "
            f"{error}), expected a parquet file or a folder of parquet chunks"
        ) from error


def load_run(directory: Path) -> Run:
    """Read a run folder; raise ``FrmarginError`` naming the folder when it is not a run.

    Example:
        >>> run = load_run(Path("runs/resnet20"))
        >>> run.paths.shape
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FrmarginError(
            f"argument 'run_dirs': got {str(directory)!r}, expected an existing run folder (holding paths.parquet)"
        )
    paths_file = directory / "paths.parquet"
    if not paths_file.exists():
        raise FrmarginError(
            f"argument 'run_dirs': folder {str(directory)!r} has no paths.parquet, "
            "expected a run folder written by the experiment runner"
        )
    notes: list[str] = []
    paths = _read_parquet(paths_file, "paths file")
    if paths.empty:
        raise FrmarginError(f"argument 'run_dirs': {str(paths_file)!r} has no rows, expected at least one traced path")
    missing = [c for c in PATH_COLUMNS if c not in paths.columns]
    if missing:
        raise FrmarginError(
            f"argument 'run_dirs': {str(paths_file)!r} lacks the columns {missing}, expected {list(PATH_COLUMNS)}"
        )
    images = baselines = None
    if (directory / "images.parquet").exists():
        images = _read_parquet(directory / "images.parquet", "images file")
    else:
        notes.append("images.parquet is missing: image counts and lower bounds come from the paths.")
    if (directory / "baselines.parquet").exists():
        baselines = _read_parquet(directory / "baselines.parquet", "baselines file")
    info: dict = {}
    info_file = directory / "run.json"
    if info_file.exists():
        try:
            info = json.loads(info_file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise FrmarginError(
                f"argument 'run_dirs': {str(info_file)!r} is not valid JSON ({error}), "
                "expected the run description written by the runner"
            ) from error
        if not isinstance(info, dict):
            raise FrmarginError(
                f"argument 'run_dirs': {str(info_file)!r} holds a {type(info).__name__}, expected a JSON object"
            )
    else:
        notes.append("run.json is missing: the run header is incomplete.")
    n_classes = int(max(paths["source"].max(), paths["target"].max(), paths["first_hit"].max())) + 1
    names = info.get("class_names")
    if not names:
        names = list(CIFAR10_CLASSES) if n_classes == 10 else [f"class {c}" for c in range(n_classes)]
        notes.append(
            "run.json has no class_names: using " + ("CIFAR-10 names." if n_classes == 10 else "class numbers.")
        )
    elif len(names) < n_classes:
        raise FrmarginError(
            f"argument 'run_dirs': {str(info_file)!r} lists {len(names)} class_names, "
            f"expected at least {n_classes} (the largest class index in paths + 1)"
        )
    info = {**info, "class_names": [str(n) for n in names]}
    return Run(
        label=directory.name or str(directory),
        directory=directory,
        info=info,
        paths=paths,
        images=images,
        baselines=baselines,
        notes=tuple(notes),
    )


def split_modes(run: Run) -> list[Run]:
    """One ``Run`` per (method, metric) found in ``run.paths`` (the run itself when only one)."""
    keys = [k for k in ("method", "metric") if k in run.paths.columns]
    if not keys:
        return [run]
    groups = list(run.paths.groupby(keys, sort=True, dropna=False))
    if len(groups) <= 1:
        if groups:
            values = groups[0][0] if isinstance(groups[0][0], tuple) else (groups[0][0],)
            return [replace(run, info={**run.info, **dict(zip(keys, values))})]
        return [run]
    out = []
    for values, sub in groups:
        values = values if isinstance(values, tuple) else (values,)
        tag = "/".join(str(v) for v in values)
        out.append(
            replace(
                run,
                label=f"{run.label} [{tag}]",
                paths=sub.reset_index(drop=True),
                info={**run.info, **dict(zip(keys, values))},
            )
        )
    return out
