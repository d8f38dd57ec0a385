"""Validated inputs of the analysis: the path table's columns and shared argument checks.

Letters: P = paths, B = images, C = classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from frmargin.errors import bad_argument
from frmargin.runs.schema import REQUIRED_PATH_COLUMNS, shielded

NO_FLIP = -1
PATH_COLUMNS = REQUIRED_PATH_COLUMNS
OPTIONAL_PATH_COLUMNS = {
    "predicted_length": np.nan,
    "predicted_first_hit": NO_FLIP,
    "lower_bound": np.nan,
    "confidence": np.nan,
    "steps": np.nan,
    "status": "unknown",
    "method": "unknown",
    "metric": "unknown",
}


def require_columns(df: object, name: str, columns: Sequence[str]) -> pd.DataFrame:
    """Return ``df`` if it is a DataFrame holding ``columns``; else raise naming ``name``."""
    if not isinstance(df, pd.DataFrame):
        raise bad_argument(name, type(df).__name__, "a pandas DataFrame")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise bad_argument(name, f"columns {list(df.columns)}", f"also the columns {missing}")
    return df


def check_class_names(class_names: Sequence[str]) -> list[str]:
    """At least two distinct class names, as strings."""
    names = [str(c) for c in class_names]
    if len(names) < 2 or len(set(names)) != len(names):
        raise bad_argument("class_names", list(class_names), "at least 2 distinct class names")
    return names


def prepare_paths(paths: pd.DataFrame, n_classes: int | None = None) -> pd.DataFrame:
    """Validated copy with default optional columns, typed columns, ``shielded`` and a RangeIndex.

    Example:
        >>> p = prepare_paths(paths, 10)
        >>> p["shielded"].mean()
    """
    require_columns(paths, "paths", PATH_COLUMNS)
    p = paths.reset_index(drop=True).copy()
    for column, default in OPTIONAL_PATH_COLUMNS.items():
        if column not in p.columns:
            p[column] = default
    for column in ("image_index", "source", "target", "first_hit", "predicted_first_hit"):
        p[column] = p[column].fillna(NO_FLIP).astype(np.int64)
    for column in ("fr_length", "l2", "predicted_length", "lower_bound", "confidence", "steps"):
        p[column] = pd.to_numeric(p[column], errors="coerce").astype(float)
    p["success"] = p["success"].fillna(False).astype(bool)
    p["shielded"] = shielded(p["success"].to_numpy(), p["first_hit"].to_numpy(), p["target"].to_numpy())
    if n_classes is not None and len(p):
        _check_class_indices(p, n_classes)
    return p


def _check_class_indices(p: pd.DataFrame, n_classes: int) -> None:
    for column, low in (("source", 0), ("target", 0), ("first_hit", NO_FLIP)):
        values = p[column].to_numpy()
        bad = values[(values < low) | (values >= n_classes)]
        if bad.size:
            raise bad_argument(
                f"paths.{column}",
                sorted(set(bad.tolist()))[:10],
                f"class indices in [{low}, {n_classes - 1}] for {n_classes} class names",
            )
    if (p["source"] == p["target"]).any():
        raise bad_argument("paths", "rows with target == source", "target != source")


def successful_paths(paths: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``paths`` that changed the class and have a finite ``fr_length``."""
    return paths[paths["success"].astype(bool) & np.isfinite(paths["fr_length"])]


def flow_paths(paths: pd.DataFrame) -> pd.DataFrame:
    """``successful_paths`` of the flow the closed forms describe: status ``damped`` left out
    (such a path is a real path to the change, not the flow's; ``paths.damped``)."""
    ok = successful_paths(paths)
    return ok[ok["status"] != "damped"] if "status" in ok.columns else ok
