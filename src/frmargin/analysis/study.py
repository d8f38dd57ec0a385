"""Cross-model statistics of a study: DataFrames in, DataFrames out.

Every model of a study was run on the same stratified images, so intervals resample *images*
(within their label) jointly for all models: one image resample gives a replicate of every
model's statistic, and differences between models get intervals that respect the pairing.

Inputs: ``values`` has one row per (run, image) with ``run``, ``image_index``, ``label``, ``num``
and ``den``; a run's statistic is sum(num) / sum(den) over its images (a mean per-image margin:
num = margin, den = 1; a shielded %: num = 100 x shielded paths, den = successful paths).

Example:
    >>> point, reps = paired_ratios(values, n_boot=1000, seed=0)
    >>> contrast(point, reps, {"a": 1.0, "b": -1.0})
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from frmargin.analysis.bootstrap import DEFAULT_N_BOOT, ClusterBootstrap, check_n_boot, scalar_interval
from frmargin.analysis.inputs import prepare_paths, require_columns

__all__ = [
    "STUDY_VERDICT_COLUMNS",
    "contrast",
    "image_shielding",
    "paired_ratios",
    "predicted_shielded",
    "ratio_interval",
    "study_verdicts",
]

STUDY_VERDICT_COLUMNS = (
    "question",
    "model",
    "quantity",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "n_runs",
    "verdict",
    "caveat",
)


def predicted_shielded(paths: pd.DataFrame) -> np.ndarray:
    """(P,) closed-form prediction of the exact flow (docs/method.md): the exact NG flow toward the target is intercepted
    (``predicted_first_hit`` is another class), from the softmax output at the start."""
    p = prepare_paths(paths)
    hit = p["predicted_first_hit"].to_numpy()
    return (hit >= 0) & (hit != p["target"].to_numpy())


def image_shielding(paths: pd.DataFrame, predicted: bool = False) -> pd.DataFrame:
    """Per image: ``num`` = 100 x shielded successful paths, ``den`` = successful paths
    (``predicted``: the closed-form prediction over the same paths)."""
    p = prepare_paths(paths)
    ok = p["success"].to_numpy(bool)
    flag = predicted_shielded(p) if predicted else p["shielded"].to_numpy(bool)
    frame = pd.DataFrame({"image_index": p["image_index"], "num": 100.0 * (flag & ok), "den": ok.astype(float)})
    return frame.groupby("image_index", as_index=False)[["num", "den"]].sum()


def paired_ratios(values: pd.DataFrame, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> tuple[pd.Series, pd.DataFrame]:
    """Point ratio sum(num) / sum(den) per run, and (n_boot, runs) replicates from one joint
    resample of the images (within their label) shared by every run."""
    require_columns(values, "values", ("run", "image_index", "label", "num", "den"))
    labels = values.groupby("image_index")["label"].first()
    pos = pd.Index(labels.index)
    draw = ClusterBootstrap.draw(labels.to_numpy(), check_n_boot(n_boot), seed)
    points, reps = {}, {}
    for run, sub in values.groupby("run", sort=False):
        where = pos.get_indexer(sub["image_index"])
        point, boot = draw.ratio(sub["num"].to_numpy(float), sub["den"].to_numpy(float), where)
        points[run], reps[run] = point, boot
    return pd.Series(points, dtype=float), pd.DataFrame(reps)


def contrast(point: pd.Series, reps: pd.DataFrame, weights: Mapping[str, float]) -> tuple[float, float, float]:
    """sum_r w_r stat_r with its 95% interval from the paired replicates."""
    keys = list(weights)
    w = np.array([weights[k] for k in keys])
    value = float(point[keys].to_numpy() @ w)
    boot = reps[keys].to_numpy() @ w
    lo, hi = scalar_interval(boot)
    return value, lo, hi


def _group_weights(groups: Mapping[str, list[str]]) -> dict[str, dict[str, float]]:
    """Per group, weights averaging the group's runs."""
    return {g: {r: 1.0 / len(runs) for r in runs} for g, runs in groups.items() if runs}


def _verdict(value: float, lo: float, hi: float, changes: str, same: str) -> str:
    if not np.isfinite(value) or not (np.isfinite(lo) and np.isfinite(hi)):
        return "undetermined"
    if lo == hi and value != 0:  # no resampling variability (e.g. one image per class)
        return "undetermined"
    return changes if (lo > 0 or hi < 0) else same


def _difference(point: pd.Series, reps: pd.DataFrame, a: list[str], b: list[str]) -> tuple[float, float, float]:
    """mean over runs a minus mean over runs b, with its paired interval."""
    w: dict[str, float] = {}
    for run in a:
        w[run] = w.get(run, 0.0) + 1.0 / len(a)
    for run in b:
        w[run] = w.get(run, 0.0) - 1.0 / len(b)
    return contrast(point, reps, w)


def _spread(point: pd.Series, reps: pd.DataFrame, groups: dict[str, list[str]]) -> tuple[float, float, float, str]:
    """Largest minus smallest group mean (groups fixed by the point estimates), with its interval."""
    weights = _group_weights(groups)
    means = {g: float(point[list(w)].to_numpy() @ np.array(list(w.values()))) for g, w in weights.items()}
    hi_g, lo_g = max(means, key=means.__getitem__), min(means, key=means.__getitem__)
    value, lo, hi = _difference(point, reps, groups[hi_g], groups[lo_g])
    return value, lo, hi, f"{hi_g} minus {lo_g}"


def study_verdicts(rows: pd.DataFrame, stats: Mapping[str, tuple[pd.Series, pd.DataFrame]]) -> pd.DataFrame:
    """The study's three questions, for each quantity in ``stats`` (name -> paired ratios).

    ``rows``: one row per run key (index) with ``model``, ``temperature`` ("1" or "auto" or a
    number), ``training`` and ``family``. Standard = ``training == "standard"``; every other
    training (adversarial, mixed) counts as robust. Adversarial training and architecture are
    compared at T = 1 (else the first temperature); calibration pairs each model's T = 1 and
    T = auto runs.
    """
    out = []
    temps = list(dict.fromkeys(rows["temperature"]))
    base_t = "1" if "1" in temps else temps[0]
    at_base = rows[rows["temperature"] == base_t]
    standard = at_base.index[at_base["training"] == "standard"].tolist()
    robust = at_base.index[at_base["training"] != "standard"].tolist()
    for quantity, (point, reps) in stats.items():
        have = set(point.index[np.isfinite(point.to_numpy())])
        std, rob = [r for r in standard if r in have], [r for r in robust if r in have]
        q1 = "Does adversarial training change it?"
        if std and rob:
            v, lo, hi = _difference(point, reps, rob, std)
            verdict = _verdict(v, lo, hi, "changes", "no detectable change")
            out.append((q1, quantity, "mean over robust models minus mean over standard models", v, lo, hi,
                        len(std) + len(rob), verdict, "model families are confounded with training"))  # fmt: skip
        else:
            out.append((q1, quantity, "needs standard and robust models", np.nan, np.nan, np.nan, 0, "not tested", ""))
        out.append(_calibration(rows, point, reps, have, quantity))
        out.append(_architecture(at_base.loc[[r for r in standard if r in have]], point, reps, quantity))
    frame = pd.DataFrame(out, columns=[c for c in STUDY_VERDICT_COLUMNS if c != "model"])
    frame.insert(1, "model", "all")
    return frame


def _calibration(rows: pd.DataFrame, point: pd.Series, reps: pd.DataFrame, have: set, quantity: str) -> tuple:
    q = "Does calibration (T = auto versus T = 1) change it?"
    pairs = []
    for _, sub in rows.groupby("model", sort=False):
        one, auto = sub.index[sub["temperature"] == "1"], sub.index[sub["temperature"] == "auto"]
        if len(one) and len(auto) and one[0] in have and auto[0] in have:
            pairs.append((auto[0], one[0]))
    if not pairs:
        return (q, quantity, "needs --temperature 1,auto", np.nan, np.nan, np.nan, 0, "not tested", "")
    v, lo, hi = _difference(point, reps, [a for a, _ in pairs], [b for _, b in pairs])
    verdict = _verdict(v, lo, hi, "changes", "no detectable change")
    return (q, quantity, "mean over models of (T = auto minus T = 1)", v, lo, hi, 2 * len(pairs), verdict,
            "the same model and images; only the logit scale differs")  # fmt: skip


def _architecture(standard: pd.DataFrame, point: pd.Series, reps: pd.DataFrame, quantity: str) -> tuple:
    q = "Does the architecture (family, among standard models) change it?"
    groups = {str(f): sub.index.tolist() for f, sub in standard.groupby("family", sort=False)}
    if len(groups) < 2:
        return (q, quantity, "needs standard models of two families", np.nan, np.nan, np.nan, 0, "not tested", "")
    v, lo, hi, which = _spread(point, reps, groups)
    verdict = _verdict(v, lo, hi, "changes", "no detectable change")
    return (q, quantity, f"largest minus smallest family mean ({which})", v, lo, hi, len(standard), verdict,
            "families fixed by the point estimates, so the interval is optimistic")  # fmt: skip


def ratio_interval(point: pd.Series, reps: pd.DataFrame) -> pd.DataFrame:
    """Per run: value, ci_low, ci_high of the paired ratios."""
    rows = {}
    for run in point.index:
        lo, hi = scalar_interval(reps[run].to_numpy())
        rows[run] = {"value": float(point[run]), "ci_low": lo, "ci_high": hi}
    return pd.DataFrame.from_dict(rows, orient="index")
