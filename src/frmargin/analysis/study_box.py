"""The study's box question, per image: the in-box margin estimate over the softmax bound LB.

Per image of a box run (``box_images``): LB (the unconstrained margin, from the softmax output),
the least traced in-box length over its ``ok`` paths, the least in-box margin estimate (the
run's ``box_margin`` column where a path has one, its traced length elsewhere: an estimate never
exceeds it) and their ratios to LB. ``box_summary`` gives a model's median and largest ratio and
how many images the box moves by more than 1%; ``candidate_check`` measures, on a run estimated
on every path, whether the study's candidate rule (``runs.box_estimate``) finds the same
per-image minimum.

Example:
    >>> images = box_images(paths)  # doctest: +SKIP
    >>> box_summary(images)["ratio_max"]  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from frmargin.analysis.bootstrap import ClusterBootstrap, scalar_interval
from frmargin.analysis.inputs import require_columns
from frmargin.analysis.matrices import LB_ATOL, LB_RTOL

__all__ = [
    "BOX_RAISE",
    "BOX_SHARE",
    "box_images",
    "box_summary",
    "candidate_check",
    "free_flow_explains",
    "median_interval",
]

#: an image whose in-box margin estimate exceeds LB by more than this is moved by the box
BOX_RAISE = 0.01
#: a model with more than this share of such images is shown and explained
BOX_SHARE = 0.05


def box_images(paths: pd.DataFrame, free: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per image with an ``ok`` path: ``source``, ``lower_bound``, ``ok_paths``,
    ``estimated_paths`` (paths with an estimate), ``binds`` (paths whose flow held a coordinate),
    ``traced``, ``estimate``, ``traced_over_lb``, ``estimate_over_lb``.

    With ``free``, the same images' unconstrained natural-gradient paths: ``free_over_lb`` (their
    least successful length over LB) and ``free_runner_up`` (the status of the free path toward
    the most probable other class, ``target_rank`` 1), which say whether the flow reaches LB
    without the box.
    """
    require_columns(paths, "paths", ("image_index", "source", "status", "fr_length", "lower_bound"))
    df = paths.copy()
    if "box_margin" not in df:
        df["box_margin"] = np.nan
    if "box_changes" not in df:
        df["box_changes"] = 0
    ok = df[df["status"] == "ok"].copy()
    ok["estimate"] = ok["box_margin"].where(ok["box_margin"].notna(), ok["fr_length"])
    images = ok.groupby("image_index").agg(
        source=("source", "first"),
        lower_bound=("lower_bound", "first"),
        ok_paths=("fr_length", "size"),
        estimated_paths=("box_margin", "count"),
        binds=("box_changes", lambda s: int((s > 0).sum())),
        traced=("fr_length", "min"),
        estimate=("estimate", "min"),
    )
    images["traced_over_lb"] = images["traced"] / images["lower_bound"]
    images["estimate_over_lb"] = images["estimate"] / images["lower_bound"]
    if free is not None:
        ok = free[free["status"] == "ok"].groupby("image_index")["fr_length"].min()
        images["free_over_lb"] = ok.reindex(images.index) / images["lower_bound"]
        if "target_rank" in free:
            runner_up = free[free["target_rank"] == 1].drop_duplicates("image_index").set_index("image_index")
            images["free_runner_up"] = runner_up["status"].reindex(images.index)
    return images.reset_index()


def free_flow_explains(images: pd.DataFrame) -> pd.Series:
    """(images,) bool: the unconstrained flow does not reach LB either (its least length exceeds LB
    by more than ``BOX_RAISE``, or its path toward the runner-up class did not end ``ok``), so an
    excess over LB there is not the box's."""
    free = images.get("free_over_lb", pd.Series(np.nan, index=images.index))
    runner = images.get("free_runner_up", pd.Series("ok", index=images.index))
    return (free > 1 + BOX_RAISE) | (runner.notna() & (runner != "ok"))


def median_interval(values: np.ndarray, strata: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the median of ``values`` (finite ones), resampling them within ``strata``
    (the images' classes), as the study's other intervals do.

    Example:
        >>> lo, hi = median_interval(np.arange(40.0), np.arange(40) % 4, n_boot=200)
        >>> bool(lo < 19.5 < hi)
        True
    """
    values, strata = np.asarray(values, float), np.asarray(strata)
    keep = np.isfinite(values)
    if keep.sum() < 2:
        return np.nan, np.nan
    draw = ClusterBootstrap.draw(strata[keep], n_boot, seed)
    return scalar_interval(np.median(values[keep][draw.indices], axis=1))


def box_summary(images: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per model: images, the least, median and largest estimate / LB, the images above
    1 + ``BOX_RAISE`` (count, share and its 95% Wilson interval), and the images below LB beyond the
    tolerance of a traced length (there should be none)."""
    ratio = images["estimate_over_lb"].to_numpy(float)
    ratio = ratio[np.isfinite(ratio)]
    n, above = len(ratio), int((ratio > 1 + BOX_RAISE).sum())
    low, high = (np.nan, np.nan) if n == 0 else stats.binomtest(above, n).proportion_ci(method="wilson")
    lb = images["lower_bound"].to_numpy(float)
    below = images["estimate"].to_numpy(float) < lb * (1 - LB_RTOL) - LB_ATOL
    return {
        "box_images": n,
        "box_ratio_min": float(ratio.min()) if n else np.nan,
        "box_ratio_median": float(np.median(ratio)) if n else np.nan,
        **dict(
            zip(
                ("box_ratio_median_lo", "box_ratio_median_hi"),
                median_interval(images["estimate_over_lb"].to_numpy(), images["source"].to_numpy(), n_boot, seed),
            )
        ),
        "box_ratio_max": float(ratio.max()) if n else np.nan,
        "box_images_above": above,
        "box_share_above": above / n if n else np.nan,
        "box_share_above_lo": float(low),
        "box_share_above_hi": float(high),
        "box_images_below_lb": int(below.sum()),
        "box_estimated_images": int((images["estimated_paths"] > 0).sum()),
        "box_above_free_too": int((free_flow_explains(images) & (images["estimate_over_lb"] > 1 + BOX_RAISE)).sum()),
    }


def candidate_check(paths: pd.DataFrame, rule: str) -> pd.DataFrame:
    """On a box run estimated on every ``ok`` path: per image the least estimate over all paths
    and over the candidates of ``rule`` (the traced length standing in elsewhere), and their
    relative difference ``rel_diff`` (0 where the rule finds the image's minimum)."""
    from frmargin.runs.box_estimate import candidate_paths

    require_columns(paths, "paths", ("image_index", "status", "fr_length", "lower_bound", "box_margin"))
    ok = (paths["status"] == "ok").to_numpy()
    pick = candidate_paths(rule, paths["image_index"].to_numpy(), ok, paths["fr_length"].to_numpy(),
                           paths["lower_bound"].to_numpy())  # fmt: skip
    every = paths.assign(box_margin=paths["box_margin"].where(ok))
    chosen = paths.assign(box_margin=paths["box_margin"].where(pick))
    a, b = box_images(every).set_index("image_index"), box_images(chosen).set_index("image_index")
    out = pd.DataFrame(
        {
            "lower_bound": a["lower_bound"],
            "all_paths": a["estimate"],
            "candidates": b["estimate"],
            "candidate_paths": b["estimated_paths"],
            "ok_paths": a["ok_paths"],
        }
    )
    out["rel_diff"] = out["candidates"] / out["all_paths"] - 1.0
    return out.reset_index()
