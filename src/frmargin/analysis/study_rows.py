"""One row per model of a study, and the per-image values its paired statistics resample
(DataFrames in, DataFrames out).

Example:
    >>> row = model_summary(fisher_paths, images, baselines, info)  # doctest: +SKIP
    >>> row["median_l2"]  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from frmargin.analysis.distances import best_l2, fr_vs_l2
from frmargin.analysis.matrices import closed_form_agreement
from frmargin.analysis.study_box import median_interval
from frmargin.analysis.study_closed import two_class_margin
from frmargin.analysis.tables import image_margins

__all__ = ["STUDY_ROW_COLUMNS", "beyond_values", "margin_values", "model_summary", "shielding_values"]

#: (column, definition) of the study table (one row per model; ``c_lo`` / ``c_hi``: a 95% interval)
STUDY_ROW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("model", "the model (frmargin assets)"),
    ("training", "standard, adversarial (PGD, L-inf radius) or mixed"),
    ("runs_done", "finished runs of the model, of its runs in the study"),
    ("test_accuracy", "top-1 accuracy on all images of the closed-form pass (the official test split)"),
    ("accuracy", "top-1 accuracy on the study's selected images"),
    (
        "median_confidence",
        "median p of the predicted class on the selected images, at T = 1 (test_median_confidence: on all)",
    ),
    ("temperature", "the fitted T (NLL-optimal on held-out test images)"),
    ("fr_margin", "mean per-image FR margin at T = 1 (min over targets of the natural-gradient path length)"),
    ("fr_margin_fitted", "the same at the fitted T"),
    ("fr_margin_beyond", "mean of per-image FR margin minus the two-class margin at its top-two log-odds, T = 1"),
    ("test_margin_median", "median closed-form FR margin of all test images, T = 1"),
    ("spearman_margin_log_odds", "Spearman of closed-form FR margin and top-two log-odds over all test images"),
    ("box_ratio_median", "median over images of the in-box margin estimate / LB"),
    ("box_ratio_max", "largest in-box margin estimate / LB"),
    ("box_share_above", "% of images with in-box margin estimate / LB > 1.01 (Wilson interval)"),
    ("ng_shielded_pct", "% of successful natural-gradient paths shielded (first hit != target), T = 1"),
    ("ng_predicted_shielded_pct", "the closed form's prediction of the same rate, from the softmax outputs"),
    ("euclid_shielded_pct", "% of successful Euclidean paths shielded"),
    ("median_l2", "median minimal L2 distance (FMN; finite values), in [0, 1] pixel units"),
    ("spearman_fr_l2", "Spearman correlation of per-image FR margin and minimal L2"),
    ("rel_error_median", "median relative error of traced versus closed-form natural-gradient path length"),
    ("first_hit_agreement", "share of natural-gradient paths whose first hit is the closed form's"),
    ("seconds_per_path", "tracing seconds per natural-gradient path at T = 1 (run.json timing)"),
    ("box_seconds_per_path", "seconds per path of the box run, the in-box estimate included"),
)


def margin_values(paths: pd.DataFrame, images: pd.DataFrame | None) -> pd.DataFrame:
    """Per image with a finite margin: ``image_index``, ``num`` = FR margin, ``den`` = 1."""
    m = image_margins(paths, images)
    m = m[np.isfinite(m["fr_margin"])]
    return pd.DataFrame({"image_index": m["image_index"], "num": m["fr_margin"].astype(float), "den": 1.0})


def beyond_values(paths: pd.DataFrame, images: pd.DataFrame | None, log_odds: pd.Series) -> pd.DataFrame:
    """Per image: ``num`` = FR margin minus the two-class margin at the image's top-two log-odds
    (``log_odds``, indexed by image), ``den`` = 1: the margin beyond what the log-odds say."""
    m = margin_values(paths, images)
    r = log_odds.reindex(m["image_index"]).to_numpy(float)
    keep = np.isfinite(r)
    return m[keep].assign(num=m["num"].to_numpy()[keep] - two_class_margin(r[keep]))


def shielding_values(paths: pd.DataFrame, predicted: bool = False) -> pd.DataFrame:
    """Per image: ``num`` = 100 x shielded successful paths, ``den`` = successful paths."""
    from frmargin.analysis.study import image_shielding

    return image_shielding(paths, predicted=predicted)


def _l2_stats(margins: pd.DataFrame, baselines: pd.DataFrame | None, n_boot: int, seed: int) -> dict:
    out = dict.fromkeys(("median_l2", "median_l2_lo", "median_l2_hi", "spearman_fr_l2", "spearman_fr_l2_lo",
                         "spearman_fr_l2_hi"), np.nan)  # fmt: skip
    if baselines is None or not len(baselines):
        return out
    wide = best_l2(baselines)
    column = "best" if "best" in wide.columns else wide.columns[0]
    l2 = wide[column].to_numpy(float)
    finite = l2[np.isfinite(l2)]
    out["median_l2"] = float(np.median(finite)) if finite.size else np.nan
    source = margins.drop_duplicates("image_index").set_index("image_index")["source"].reindex(wide.index)
    out["median_l2_lo"], out["median_l2_hi"] = median_interval(l2, source.to_numpy(), n_boot, seed)
    fr = fr_vs_l2(margins, baselines, n_boot=n_boot, seed=seed)
    row = fr[(fr["attack"] == column) & (fr["level"] == "image")]
    if len(row):
        out.update(
            spearman_fr_l2=float(row["spearman"].iloc[0]),
            spearman_fr_l2_lo=float(row["spearman_lo"].iloc[0]),
            spearman_fr_l2_hi=float(row["spearman_hi"].iloc[0]),
        )
    return out


def model_summary(
    paths: pd.DataFrame | None,
    images: pd.DataFrame,
    baselines: pd.DataFrame | None,
    info: dict,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The point values of a model's row that need no cross-model bootstrap, from its
    natural-gradient run at T = 1: ``paths`` (None when it has none), ``images``, ``baselines``
    and its run.json ``info``."""
    out: dict = {
        "accuracy": float(images["correct"].astype(bool).mean()),
        "median_confidence": float(images["confidence"].median()),
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
        seconds_per_path=float(timing.get("per_path", np.nan)),
    )
    out.update(_l2_stats(image_margins(paths, images), baselines, n_boot, seed))
    return out
