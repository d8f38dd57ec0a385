"""The study's per-model checks, each with a paired interval over the same images and paths:

- is natural-gradient shielding the closed form's (traced minus predicted shielded %, the same
  paths)?
- how much more often are Euclidean paths shielded (Euclidean minus natural-gradient shielded %,
  the same images and targets)?
- does the box change a model's per-image margin by more than 1% (images whose in-box margin
  estimate exceeds LB by more than 1%, with a Wilson interval)?

Inputs are the per-image ``num``/``den`` frames of ``analysis.study`` (``run``, ``image_index``,
``label``, ``num``, ``den``), keyed here by model; rows come out in the layout of
``STUDY_VERDICT_COLUMNS``.

Example:
    >>> rows = shielding_differences(traced, predicted, "closed", n_boot=200)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from frmargin.analysis.study import STUDY_VERDICT_COLUMNS, contrast, paired_ratios
from frmargin.analysis.study_box import BOX_RAISE, BOX_SHARE

__all__ = ["BOX_QUESTION", "CLOSED_FORM_QUESTION", "EUCLIDEAN_QUESTION", "box_rows", "shielding_differences"]

CLOSED_FORM_QUESTION = "Is natural-gradient shielding the closed form's on every model?"
EUCLIDEAN_QUESTION = "How much more often are Euclidean paths shielded?"
BOX_QUESTION = "Does the box change any model's per-image margin by more than 1%?"


def _paired(a: pd.DataFrame, b: pd.DataFrame, n_boot: int, seed: int) -> tuple[pd.Series, pd.DataFrame, list[str]]:
    """Paired ratios of every model's ``a`` and ``b`` values (one image resample for all)."""
    models = [m for m in dict.fromkeys(a["run"]) if m in set(b["run"])]
    both = pd.concat(
        [a[a["run"].isin(models)].assign(run=lambda f: f["run"] + "\0a"),
         b[b["run"].isin(models)].assign(run=lambda f: f["run"] + "\0b")],
        ignore_index=True,
    )  # fmt: skip
    if not models:
        return pd.Series(dtype=float), pd.DataFrame(), []
    point, reps = paired_ratios(both, n_boot=n_boot, seed=seed)
    return point, reps, models


def shielding_differences(a: pd.DataFrame, b: pd.DataFrame, which: str, n_boot: int, seed: int = 0) -> pd.DataFrame:
    """Per model, shielded % of ``a`` minus that of ``b`` with its paired 95% interval, and the
    mean over models. ``which``: ``"closed"`` (a = traced, b = the closed form's prediction on
    the same paths) or ``"euclidean"`` (a = Euclidean, b = natural gradient)."""
    point, reps, models = _paired(a, b, n_boot, seed)
    rows = []
    question = CLOSED_FORM_QUESTION if which == "closed" else EUCLIDEAN_QUESTION
    statistic = (
        "traced minus predicted shielded % (the same paths)"
        if which == "closed"
        else "Euclidean minus natural-gradient shielded % (the same images and targets)"
    )
    for model in models:
        v, lo, hi = contrast(point, reps, {f"{model}\0a": 1.0, f"{model}\0b": -1.0})
        rows.append((question, model, "shielded %", statistic, v, lo, hi, 1, _verdict(which, v, lo, hi), ""))
    if len(models) > 1:
        weights = {f"{m}\0{s}": (1.0 if s == "a" else -1.0) / len(models) for m in models for s in "ab"}
        v, lo, hi = contrast(point, reps, weights)
        verdicts = {r[8] for r in rows}
        summary = "on every model" if which == "closed" and verdicts == {"agrees"} else _verdict(which, v, lo, hi)
        rows.append((question, "all", "shielded %", f"mean over models of: {statistic}", v, lo, hi, len(models),
                     summary, "" if which == "closed" else "the mean over models weighs every model alike"))  # fmt: skip
    return pd.DataFrame(rows, columns=list(STUDY_VERDICT_COLUMNS))


def _verdict(which: str, value: float, lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undetermined"
    if which == "closed":
        return "agrees" if lo <= 0 <= hi else "differs"
    return "more often" if lo > 0 else ("less often" if hi < 0 else "no detectable difference")


def box_rows(summaries: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per model (``analysis.study_box.box_summary`` values): the share of images whose in-box
    margin estimate exceeds LB by more than 1%, with its Wilson interval; and which models exceed
    it on more than 5% of their images."""
    rows = []
    for model, s in summaries.items():
        n, k = int(s["box_images"]), int(s["box_images_above"])
        verdict = "not tested" if n == 0 else (f"yes: {k} of {n} images" if k else "no")
        caveat = (
            f"more than {BOX_SHARE:.0%} of the images: see the box section"
            if n and s["box_share_above"] > BOX_SHARE
            else ""
        )
        rows.append((BOX_QUESTION, model, f"images with estimate / LB > {1 + BOX_RAISE:g}", "share of images, %",
                     100 * s["box_share_above"], 100 * s["box_share_above_lo"], 100 * s["box_share_above_hi"], 1,
                     verdict, caveat))  # fmt: skip
    moved = [m for m, s in summaries.items() if s["box_images"] and s["box_share_above"] > BOX_SHARE]
    if summaries:
        verdict = f"yes, on more than {BOX_SHARE:.0%} of the images of: {', '.join(moved)}" if moved else "no"
        rows.append((BOX_QUESTION, "all", "models", f"models with more than {BOX_SHARE:.0%} of images moved",
                     float(len(moved)), np.nan, np.nan, len(summaries), verdict,
                     "the estimate is an upper estimate of the in-box margin: a ratio above 1 + 1% says the "
                     "estimator found no shorter in-box path, not that none exists"))  # fmt: skip
    return pd.DataFrame(rows, columns=list(STUDY_VERDICT_COLUMNS))
