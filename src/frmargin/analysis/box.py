"""Where the box binds, per class: box statistics of the path table and how much the box raises
margins above the softmax-only lower bound (DataFrames in, DataFrames out).

Columns read: ``source``, ``image_index``, ``status``, ``success``, ``fr_length``,
``lower_bound``, ``shielded``, ``predicted_first_hit``, ``target``, ``bound_share``,
``box_changes`` and, where the run estimated it, ``box_margin`` (the in-box margin estimate of
``paths.box_margin``; the traced length stands in where it is missing).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["BOX_TABLE_COLUMNS", "box_table"]

BOX_TABLE_COLUMNS = [
    ("n_paths", "paths from class s"),
    ("ok_pct", "% of them that reached the boundary inside the box (status ok)"),
    ("stationary_pct", "% that stopped at a KKT point of the box (status box_stationary)"),
    ("binds_pct", "% whose projected flow held a coordinate at a bound (box_changes > 0)"),
    ("bound_share", "mean share of coordinates at a bound at x_end"),
    ("box_changes", "mean active-set changes per path (coordinates held or released)"),
    ("image_lb", "mean over images of s of LB, the unconstrained (softmax-only) margin"),
    ("image_traced", "mean over images of the traced in-box margin (min over targets of fr_length)"),
    ("image_estimate", "mean over images of the in-box margin estimate (min over targets of box_margin)"),
    ("raise_pct", "box raises margin above LB by: mean over images of estimate / LB - 1, in %"),
    ("shielded_pct", "% of successful box paths from s shielded (first hit != target)"),
    ("free_shielded_pct", "% predicted shielded by the unconstrained flow (closed form, same paths)"),
]


def box_table(paths: pd.DataFrame, class_names: list[str] | None = None) -> pd.DataFrame:
    """One row per source class (index: name), the columns of ``BOX_TABLE_COLUMNS``.

    Example:
        >>> df = pd.DataFrame({"source": [0, 0], "image_index": [3, 3], "status": ["ok", "ok"],
        ...     "success": [True, True], "fr_length": [1.2, 1.0], "lower_bound": [0.8, 0.8],
        ...     "shielded": [False, True], "predicted_first_hit": [1, 2], "target": [1, 2],
        ...     "bound_share": [0.5, 0.4], "box_changes": [3, 0], "box_margin": [1.1, 0.9]})
        >>> float(box_table(df).loc[0, "raise_pct"])
        12.5
    """
    df = paths.copy()
    if "box_margin" not in df:
        df["box_margin"] = np.nan
    ok = df["status"] == "ok"
    df["estimate"] = df["box_margin"].where(df["box_margin"].notna(), df["fr_length"]).where(ok)
    df["traced"] = df["fr_length"].where(ok)
    images = df.groupby(["source", "image_index"]).agg(
        lb=("lower_bound", "first"), traced=("traced", "min"), estimate=("estimate", "min")
    )
    images["raise"] = images["estimate"] / images["lb"] - 1
    per_image = images.groupby(level="source").mean()
    g = df.groupby("source")
    success = df[df["success"].astype(bool)]
    free_shield = success["predicted_first_hit"] != success["target"]
    table = pd.DataFrame(
        {
            "n_paths": g.size(),
            "ok_pct": 100 * g["status"].apply(lambda s: (s == "ok").mean()),
            "stationary_pct": 100 * g["status"].apply(lambda s: (s == "box_stationary").mean()),
            "binds_pct": 100 * g["box_changes"].apply(lambda s: (s > 0).mean()),
            "bound_share": g["bound_share"].mean(),
            "box_changes": g["box_changes"].mean(),
            "image_lb": per_image["lb"],
            "image_traced": per_image["traced"],
            "image_estimate": per_image["estimate"],
            "raise_pct": 100 * per_image["raise"],
            "shielded_pct": 100 * success.groupby("source")["shielded"].mean(),
            "free_shielded_pct": 100 * free_shield.groupby(success["source"]).mean(),
        }
    )
    if class_names is not None:
        table.index = [class_names[int(c)] for c in table.index]
    return table
