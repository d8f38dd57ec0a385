"""The Fisher spectrum against attacks and margins: success rate against the L2 budget per attack,
the top eigenvalue lambda_1 of G_x as an attack-free score (rank correlations with the FR margin and
with minimal L2), detection of adversarial points by lambda_1 (AUROC), and where a line attack
found a smaller distance than FMN (DataFrames in, DataFrames out).

``baselines`` has one row per (image, attack): ``l2`` (inf when the attack failed), ``status`` and,
from runs with a spectral attack, ``lambda_1`` (at the image) and ``lambda_1_adv`` (at the attack's
point, NaN unless it succeeded). Intervals are 95% cluster-bootstrap intervals (images resampled
within their class, ``analysis.bootstrap``).

Example:
    >>> budget_curves(baselines).query("attack == 'ossa'")
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from frmargin.analysis.bootstrap import DEFAULT_N_BOOT, ClusterBootstrap, check_n_boot, scalar_interval
from frmargin.analysis.correlation import correlations
from frmargin.analysis.inputs import require_columns

__all__ = [
    "CURVE_ATTACKS",
    "FMN_TOLERANCE",
    "attack_summary",
    "below_fmn",
    "budget_curves",
    "detection_auroc",
    "score_correlations",
    "spectral_images",
]

#: the attacks whose success rate against the L2 budget is drawn, in this order when present
CURVE_ATTACKS = ("ossa", "tssa", "deepfool", "random", "fmn")
#: foolbox FMN's last relative update of its epsilon (its gamma anneals to 0.001): a distance
#: below FMN's by less than this share is within FMN's own precision
FMN_TOLERANCE = 1e-3
BUDGET_POINTS = 80
SCORES = {"lambda_1": "top eigenvalue lambda_1", "lb_over_sqrt_lambda_1": "LB / sqrt(lambda_1)"}


def _attacked(baselines: pd.DataFrame) -> pd.DataFrame:
    require_columns(baselines, "baselines", ("image_index", "attack", "l2", "status"))
    b = baselines[baselines["status"].astype(str) != "misclassified"]
    return b.assign(l2=pd.to_numeric(b["l2"], errors="coerce").astype(float))


def attack_summary(baselines: pd.DataFrame) -> pd.DataFrame:
    """Per attack: images attacked (``n``), % fooled, median minimal L2 over the fooled, and the mean
    model evaluations per image (``forward_passes``, ``backward_passes``; NaN where not recorded).

    Example:
        >>> attack_summary(pd.DataFrame({"image_index": [1, 2], "attack": "fmn", "l2": [0.1, np.inf],
        ...     "status": ["ok", "failed"]})).fooled_pct.tolist()
        [50.0]
    """
    b = _attacked(baselines)
    rows = []
    for attack, g in b.groupby("attack", sort=False):
        fooled = np.isfinite(g["l2"])
        passes = [float(g[c].mean()) if c in g else np.nan for c in ("forward_passes", "backward_passes")]
        median = float(g.loc[fooled, "l2"].median()) if fooled.any() else np.nan
        rows.append((str(attack), len(g), float(100 * fooled.mean()), median, *passes))
    columns = ["attack", "n", "fooled_pct", "median_l2", "forward_passes", "backward_passes"]
    return pd.DataFrame(rows, columns=columns)


def budget_curves(baselines: pd.DataFrame, budgets: np.ndarray | None = None) -> pd.DataFrame:
    """Per attack of ``CURVE_ATTACKS`` present: the % of attacked images fooled within each budget.

    ``budgets`` default: ``BUDGET_POINTS`` log-spaced from half the smallest to twice the largest
    finite distance. Columns: ``attack``, ``budget``, ``success_pct``, ``n`` (images attacked).

    Example:
        >>> budget_curves(pd.DataFrame({"image_index": [1, 2], "attack": "fmn", "l2": [0.1, np.inf],
        ...     "status": ["ok", "failed"]}), np.array([0.05, 0.2])).success_pct.tolist()
        [0.0, 50.0]
    """
    b = _attacked(baselines)
    b = b[b["attack"].isin(CURVE_ATTACKS)]
    finite = b["l2"][np.isfinite(b["l2"]) & (b["l2"] > 0)]
    if budgets is None:
        if finite.empty:
            return pd.DataFrame(columns=["attack", "budget", "success_pct", "n"])
        budgets = np.geomspace(finite.min() / 2, finite.max() * 2, BUDGET_POINTS)
    rows = []
    for attack in [a for a in CURVE_ATTACKS if a in set(b["attack"])]:
        l2 = b.loc[b["attack"] == attack, "l2"].to_numpy(float)
        for budget in budgets:
            rows.append((attack, float(budget), float(100 * np.mean(l2 <= budget)), len(l2)))
    return pd.DataFrame(rows, columns=["attack", "budget", "success_pct", "n"])


def spectral_images(margins: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    """Per image with a top eigenvalue: ``source``, ``fr_margin``, ``lower_bound``, ``lambda_1``,
    ``lb_over_sqrt_lambda_1`` (LB / sqrt(lambda_1): the L2 step that would cover the margin's lower
    bound at the image's steepest rate), and per attack ``l2_<attack>`` and ``lambda_1_adv_<attack>``.

    Example:
        >>> spectral_images(image_margins(paths, images), baselines)[["lambda_1", "fr_margin"]]
    """
    require_columns(margins, "margins", ("image_index", "source", "fr_margin", "lower_bound"))
    b = _attacked(baselines)
    require_columns(b, "baselines", ("lambda_1",))
    out = margins.drop_duplicates("image_index").set_index("image_index")[["source", "fr_margin", "lower_bound"]]
    out = out.join(b[b["lambda_1"].notna()].groupby("image_index")["lambda_1"].first(), how="inner")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["lb_over_sqrt_lambda_1"] = out["lower_bound"] / np.sqrt(out["lambda_1"])
    wide = b.pivot_table(index="image_index", columns="attack", values="l2", aggfunc="min")
    out = out.join(wide.add_prefix("l2_"))
    if "lambda_1_adv" in b:
        adv = b.pivot_table(index="image_index", columns="attack", values="lambda_1_adv", aggfunc="first")
        out = out.join(adv.add_prefix("lambda_1_adv_"))
    return out.reset_index()


def score_correlations(images: pd.DataFrame, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Spearman and Kendall between each attack-free score (``SCORES``) and the FR margin and each
    attack's minimal L2, over images where both are finite, with cluster-bootstrap intervals.

    Columns: ``score``, ``versus``, ``n``, ``n_excluded`` and ``correlation.CORRELATION_COLUMNS``.
    """
    n_boot = check_n_boot(n_boot)
    targets = ["fr_margin", *[c for c in images.columns if c.startswith("l2_")]]
    rows = []
    for score in SCORES:
        for target in targets:
            use = images[["source", score, target]].astype(float)
            finite = np.isfinite(use[score]) & np.isfinite(use[target])
            x, y = use.loc[finite, score].to_numpy(), use.loc[finite, target].to_numpy()
            draw = ClusterBootstrap.draw(use.loc[finite, "source"].to_numpy(), n_boot, seed)
            rows.append(
                {
                    "score": score,
                    "versus": target.removeprefix("l2_") if target != "fr_margin" else target,
                    "n": len(x),
                    "n_excluded": int((~finite).sum()),
                    **correlations(x, y, x[draw.indices], y[draw.indices]),
                }
            )
    return pd.DataFrame(rows)


def _auroc(positive: np.ndarray, negative: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """P(positive > negative) + P(tie) / 2 of each weighted resample, (n_boot,) from (n_boot, n)
    counts applied to both samples of an image (the images are the clusters)."""
    above = (positive[:, None] > negative[None, :]) + 0.5 * (positive[:, None] == negative[None, :])
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("bi,ij,bj->b", weights, above, weights) / total**2


def detection_auroc(images: pd.DataFrame, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> pd.DataFrame:
    """AUROC of lambda_1 separating the attack's adversarial points from the clean images, per attack
    with a point on every image (images where the attack succeeded), with a bootstrap interval.

    Columns: ``attack``, ``n``, ``auroc``, ``auroc_lo``, ``auroc_hi``, ``median_ratio`` (median over
    images of lambda_1 at the point over lambda_1 at the image).
    """
    n_boot = check_n_boot(n_boot)
    rows = []
    for column in [c for c in images.columns if c.startswith("lambda_1_adv_")]:
        use = images[["source", "lambda_1", column]].dropna()
        clean, adv = use["lambda_1"].to_numpy(float), use[column].to_numpy(float)
        if len(use) < 2:
            continue
        point = float(_auroc(adv, clean, np.ones((1, len(use))))[0])
        draw = ClusterBootstrap.draw(use["source"].to_numpy(), n_boot, seed)
        lo, hi = scalar_interval(_auroc(adv, clean, draw.weights))
        ratio = float(np.median(adv / np.where(clean > 0, clean, np.nan)))
        rows.append((column.removeprefix("lambda_1_adv_"), len(use), point, lo, hi, ratio))
    return pd.DataFrame(rows, columns=["attack", "n", "auroc", "auroc_lo", "auroc_hi", "median_ratio"])


def below_fmn(images: pd.DataFrame, tolerance: float = FMN_TOLERANCE) -> pd.DataFrame:
    """Per attack: on images both it and FMN fooled, how often its distance is below FMN's by more
    than ``tolerance`` (relative), and the smallest ratio of the two.

    Columns: ``attack``, ``n``, ``n_below``, ``min_ratio``, ``images_below`` (their indices).
    """
    if "l2_fmn" not in images:
        return pd.DataFrame(columns=["attack", "n", "n_below", "min_ratio", "images_below"])
    rows = []
    for column in [c for c in images.columns if c.startswith("l2_") and c != "l2_fmn"]:
        both = images[np.isfinite(images[column]) & np.isfinite(images["l2_fmn"]) & (images["l2_fmn"] > 0)]
        ratio = both[column] / both["l2_fmn"]
        below = both.loc[ratio < 1 - tolerance, "image_index"].astype(int).tolist()
        rows.append(
            (column.removeprefix("l2_"), len(both), len(below), float(ratio.min()) if len(both) else np.nan, below)
        )
    return pd.DataFrame(rows, columns=["attack", "n", "n_below", "min_ratio", "images_below"])
