"""Runs with a perturbation model, summarized: DataFrames in, DataFrames out.

Per run (``perturbation_summary``), with 95% cluster-bootstrap intervals over images:

- ``reachable``: the share of paths that changed the class (the flow reached the boundary);
- ``stationary``, ``runaway``, ``creeping``, ``budget``, ``stalled``: the shares of the other
  outcomes (a flow that cannot reach a class change, and the undetermined ones);
- ``shielded``: among paths that changed the class, the share whose first class hit is not the
  target; ``shielded_closed_form``: the share the softmax-only closed form predicts for the same
  paths; ``first_hit_agreement``: the share whose first hit is the closed form's;
- ``margin_ratio``: the median over images of the subspace margin / LB (natural-gradient runs),
  ``above_lb``: the share of images whose ratio exceeds 1.01;
- ``out_of_range``, ``range_violation``: medians over the paths that changed the class of the
  share of input coordinates out of range and of the largest violation at the change.

``shield_matrix`` counts (target, first hit) of the shielded paths: which classes stand in
whose way (the paper's shielding landscape).

Example:
    >>> row = perturbation_summary(paths, images)  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .bootstrap import ClusterBootstrap, scalar_interval

__all__ = ["ABOVE_LB", "OUTCOMES", "margin_points", "perturbation_summary", "shield_matrix"]

#: statuses reported as shares (the other statuses count among none of them)
OUTCOMES = {
    "stationary": "subspace_stationary",
    "runaway": "subspace_runaway",
    "creeping": "subspace_creeping",
    "budget": "budget",
    "stalled": "stalled",
}
#: an image's subspace margin above this multiple of LB counts as above the bound
ABOVE_LB = 1.01


def _ratio(boot: ClusterBootstrap, num: np.ndarray, den: np.ndarray, pos: np.ndarray) -> tuple[float, float, float]:
    point, reps = boot.ratio(num.astype(float), den.astype(float), pos)
    lo, hi = scalar_interval(reps)
    return point, lo, hi


def _median(boot: ClusterBootstrap, values: np.ndarray) -> tuple[float, float, float]:
    """Median over images of ``values`` (B,) (NaN ignored) and its bootstrap interval."""
    if not np.isfinite(values).any():
        return np.nan, np.nan, np.nan
    reps = np.array([np.nanmedian(values[i]) if np.isfinite(values[i]).any() else np.nan for i in boot.indices])
    lo, hi = scalar_interval(reps)
    return float(np.nanmedian(values)), lo, hi


def perturbation_summary(paths: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """One row of statistics (module docstring) of a run's path table; an empty dict when it
    has no path. Each statistic X comes with X_lo and X_hi where it has an interval."""
    if paths.empty:
        return {}
    images = np.unique(paths["image_index"].to_numpy())
    pos = np.searchsorted(images, paths["image_index"].to_numpy())
    strata = paths.groupby("image_index")["source"].first().reindex(images).to_numpy()
    boot = ClusterBootstrap.draw(strata, n_boot, seed)
    ones = np.ones(len(paths))
    success = paths["success"].to_numpy(bool)
    status = paths["status"].astype(str).to_numpy()
    out: dict[str, float] = {"images": float(len(images)), "paths": float(len(paths))}
    stats = {"reachable": (success, ones)}
    for name, value in OUTCOMES.items():
        stats[name] = (status == value, ones)
    hit, predicted, target = (paths[c].to_numpy() for c in ("first_hit", "predicted_first_hit", "target"))
    stats["shielded"] = (success & (hit != target), success)
    stats["shielded_closed_form"] = (success & (predicted != target), success)
    stats["first_hit_agreement"] = (success & (hit == predicted), success)
    for name, (num, den) in stats.items():
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = _ratio(boot, num, den, pos)
    if "subspace_margin" in paths and paths["subspace_margin"].notna().any():
        per_image = paths.groupby("image_index")[["subspace_margin", "lower_bound"]].first().reindex(images)
        ratio = (per_image["subspace_margin"] / per_image["lower_bound"]).to_numpy(float)
        out["margin_ratio"], out["margin_ratio_lo"], out["margin_ratio_hi"] = _median(boot, ratio)
        out["above_lb"] = float(np.mean(ratio[np.isfinite(ratio)] > ABOVE_LB)) if np.isfinite(ratio).any() else np.nan
    for name in ("out_of_range", "range_violation", "u_norm", "l2"):
        if name in paths:
            vals = paths.loc[success, name].to_numpy(float)
            out[name] = float(np.nanmedian(vals)) if np.isfinite(vals).any() else np.nan
    out["jacobians_per_path"] = float(paths["jacobian_evals"].mean())
    return out


def shield_matrix(paths: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    """(C, C) counts of shielded paths by target (rows) and first class hit (columns)."""
    shielded = paths[paths["success"].astype(bool) & (paths["first_hit"] != paths["target"])]
    counts = np.zeros((n_classes, n_classes), dtype=int)
    np.add.at(counts, (shielded["target"].to_numpy(int), shielded["first_hit"].to_numpy(int)), 1)
    return pd.DataFrame(counts, index=pd.RangeIndex(n_classes, name="target"), columns=pd.RangeIndex(n_classes))


def margin_points(paths: pd.DataFrame) -> pd.DataFrame:
    """Per image: ``lower_bound`` and ``subspace_margin`` (NaN where none was found or the run
    measured none)."""
    if "subspace_margin" not in paths:
        return pd.DataFrame(columns=["image_index", "lower_bound", "subspace_margin"])
    per = paths.groupby("image_index", sort=True)[["lower_bound", "subspace_margin"]].first()
    return per.reset_index()
