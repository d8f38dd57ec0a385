"""One row per model of a study: accuracy, confidence, temperature, margins, shielding, L2,
closed-form agreement and cost, from the tables of its run folders (DataFrames in, out).

Example:
    >>> summary = run_summary(fisher_paths, images, baselines, info, euclid_paths)  # doctest: +SKIP
    >>> summary["ng_shielded_pct"]  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from frmargin.analysis.distances import best_l2, fr_vs_l2
from frmargin.analysis.matrices import closed_form_agreement
from frmargin.analysis.tables import image_margins

__all__ = ["STUDY_ROW_COLUMNS", "margin_values", "run_summary", "shielding_values"]

#: (column, definition) of the study table
STUDY_ROW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run", "model, with -T<temperature> when T != 1"),
    ("accuracy", "top-1 accuracy on the selected images (at T the argmax is unchanged)"),
    ("median_confidence", "median over selected images of p of the predicted class, at the run's temperature"),
    ("temperature", "T dividing the logits (fitted on held-out test images for auto)"),
    ("fr_margin", "mean per-image FR margin (min over targets of natural-gradient path length)"),
    ("ng_shielded_pct", "% of successful natural-gradient paths whose first hit is not the target"),
    ("ng_predicted_shielded_pct", "closed-form prediction of the same rate from the softmax outputs (exact flow)"),
    ("euclid_shielded_pct", "% of successful Euclidean (plain-gradient) paths that are shielded"),
    ("median_l2", "median minimal L2 distance (best attack; finite values) in [0, 1] pixel units"),
    ("spearman_fr_l2", "Spearman correlation of per-image FR margin and minimal L2"),
    ("rel_error_median", "median relative error of traced versus closed-form NG path length"),
    ("first_hit_agreement", "share of NG paths whose first hit equals the closed-form prediction"),
    ("jacobians_per_path", "mean Jacobian evaluations per NG path"),
    ("seconds_per_path", "tracing seconds per path of the NG run (run.json timing)"),
)


def margin_values(paths: pd.DataFrame, images: pd.DataFrame | None) -> pd.DataFrame:
    """Per image with a finite margin: ``image_index``, ``num`` = FR margin, ``den`` = 1."""
    m = image_margins(paths, images)
    m = m[np.isfinite(m["fr_margin"])]
    return pd.DataFrame({"image_index": m["image_index"], "num": m["fr_margin"].astype(float), "den": 1.0})


def shielding_values(paths: pd.DataFrame, predicted: bool = False) -> pd.DataFrame:
    """Per image: ``num`` = 100 x shielded successful paths, ``den`` = successful paths."""
    from frmargin.analysis.study import image_shielding

    return image_shielding(paths, predicted=predicted)


def _l2_stats(margins: pd.DataFrame, baselines: pd.DataFrame | None, n_boot: int, seed: int) -> dict:
    out = {"median_l2": np.nan, "spearman_fr_l2": np.nan, "spearman_fr_l2_lo": np.nan, "spearman_fr_l2_hi": np.nan}
    if baselines is None or not len(baselines):
        return out
    wide = best_l2(baselines)
    column = "best" if "best" in wide.columns else wide.columns[0]
    l2 = wide[column].to_numpy(float)
    finite = l2[np.isfinite(l2)]
    out["median_l2"] = float(np.median(finite)) if finite.size else np.nan
    fr = fr_vs_l2(margins, baselines, n_boot=n_boot, seed=seed)
    row = fr[(fr["attack"] == column) & (fr["level"] == "image")]
    if len(row):
        out.update(
            spearman_fr_l2=float(row["spearman"].iloc[0]),
            spearman_fr_l2_lo=float(row["spearman_lo"].iloc[0]),
            spearman_fr_l2_hi=float(row["spearman_hi"].iloc[0]),
        )
    return out


def run_summary(
    paths: pd.DataFrame | None,
    images: pd.DataFrame,
    baselines: pd.DataFrame | None,
    info: dict,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The point values of a model's row that need no cross-model bootstrap.

    ``paths``: the natural-gradient (Fisher) paths, or None when the study has no Fisher run;
    ``images``, ``baselines``, ``info``: its images table, baselines table and run.json.
    """
    out: dict = {
        "accuracy": float(images["correct"].astype(bool).mean()),
        "median_confidence": float(images["confidence"].median()),
        "temperature": float(info.get("temperature", 1.0)),
        "n_images": len(images),
    }
    if paths is None:
        return out
    agreement = closed_form_agreement(paths).set_index("quantity")["value"]
    timing = info.get("timing") or {}
    out.update(
        n_paths=len(paths),
        rel_error_median=float(agreement["rel_error_median"]),
        first_hit_agreement=float(agreement["first_hit_agreement"]),
        jacobians_per_path=float(paths["jacobian_evals"].mean()) if "jacobian_evals" in paths else np.nan,
        seconds_per_path=float(timing.get("per_path", np.nan)),
    )
    out.update(_l2_stats(image_margins(paths, images), baselines, n_boot, seed))
    return out
