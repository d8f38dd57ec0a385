"""Fisher (natural-gradient) versus Euclidean paths of the same images and targets.

Example:
    >>> cmp = fisher_vs_euclidean(run_fisher.paths, run_euclid.paths, n_classes=10)
    >>> cmp.verdict
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from frmargin.analysis.bootstrap import DEFAULT_N_BOOT, ClusterBootstrap, check_n_boot, scalar_interval
from frmargin.analysis.inputs import NO_FLIP, PATH_COLUMNS, prepare_paths
from frmargin.analysis.matrices import path_matrix
from frmargin.errors import bad_argument

#: a difference of shielding rates (points of %) below this reads as "alike" when its interval
#: also contains 0
SHIELDING_ALIKE = 5.0


@dataclass(frozen=True)
class MetricComparison:
    """Fisher versus Euclidean paths of the same images and targets.

    Attributes:
        summary: rows (quantity, fisher, euclidean, joint, note): success %, shielded % of
            successful paths per run; first-hit agreement % (``joint``) over pairs in both runs.
        per_class: per source class: n_pairs, shielded_pct_fisher, shielded_pct_euclidean,
            agreement_pct (first hit equal, a failed path counting as first hit -1).
        pairs: per (image_index, target): source, first_hit_fisher, first_hit_euclidean, agree.
        matrix_diff: path matrix (source x first hit, "none" column) of Euclidean minus Fisher,
            over the common pairs.
        statistics: rows (statistic, value, ci_low, ci_high, note) with 95% cluster-bootstrap
            intervals (images resampled within their source class): shielded % under each
            metric, their difference, first-hit agreement, and among pairs shielded under both
            metrics the share with the same shield.
        verdict: one sentence answering whether shielding is a property of the classifier's
            decision regions (both metrics shield alike) or of the metric.
    """

    summary: pd.DataFrame
    per_class: pd.DataFrame
    pairs: pd.DataFrame
    matrix_diff: pd.DataFrame
    statistics: pd.DataFrame | None = None
    verdict: str = ""


def fisher_vs_euclidean(
    paths_fisher: pd.DataFrame,
    paths_euclid: pd.DataFrame,
    n_classes: int | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
) -> MetricComparison:
    """Compare first hits and shielding of Fisher (natural-gradient) and Euclidean paths.

    Paths are matched on (image_index, target); unmatched rows are ignored. Intervals resample
    images within their source class (``n_boot`` replicates, ``seed``).

    Example:
        >>> cmp = fisher_vs_euclidean(run_fisher.paths, run_euclid.paths)
        >>> cmp.summary
    """
    pf, pe = prepare_paths(paths_fisher), prepare_paths(paths_euclid)
    if n_classes is None:
        n_classes = int(max(pf[["source", "target"]].max().max(), pe[["source", "target"]].max().max())) + 1
    pairs = _matched_pairs(pf, pe)
    out_pairs = pairs[["image_index", "source", "target", "first_hit_fisher", "first_hit_euclidean", "agree"]]
    statistics, verdict = _metric_statistics(pairs, check_n_boot(n_boot), seed)
    return MetricComparison(
        summary=_summary(pairs),
        per_class=_per_class(pairs, n_classes),
        pairs=out_pairs,
        matrix_diff=_pair_matrix(pairs, "euclidean", n_classes) - _pair_matrix(pairs, "fisher", n_classes),
        statistics=statistics,
        verdict=verdict,
    )


def _matched_pairs(pf: pd.DataFrame, pe: pd.DataFrame) -> pd.DataFrame:
    """Paths of both runs matched on (image_index, target); a failed path's first hit is NO_FLIP."""
    key = ["image_index", "target"]
    cols = [*key, "source", "success", "first_hit", "shielded"]
    pairs = (
        pf[cols]
        .drop_duplicates(key)
        .merge(pe[cols].drop_duplicates(key), on=key, suffixes=("_fisher", "_euclidean"), how="inner")
    )
    if pairs.empty:
        raise bad_argument(
            "paths_euclid", "no (image_index, target) pair shared with paths_fisher", "runs traced on the same images"
        )
    for metric in ("fisher", "euclidean"):
        pairs[f"first_hit_{metric}"] = np.where(pairs[f"success_{metric}"], pairs[f"first_hit_{metric}"], NO_FLIP)
    pairs["source"] = pairs["source_fisher"]
    pairs["agree"] = pairs["first_hit_fisher"] == pairs["first_hit_euclidean"]
    return pairs


def _shielded_pct(frame: pd.DataFrame, metric: str) -> float:
    succ = frame[f"success_{metric}"]
    return float(100 * frame.loc[succ, f"shielded_{metric}"].mean()) if succ.any() else np.nan


def _summary(pairs: pd.DataFrame) -> pd.DataFrame:
    both = pairs["success_fisher"] & pairs["success_euclidean"]
    agree_both = 100 * pairs.loc[both, "agree"].mean() if both.any() else np.nan
    rows = [
        (
            "success_pct",
            100 * pairs["success_fisher"].mean(),
            100 * pairs["success_euclidean"].mean(),
            np.nan,
            f"% of the {len(pairs)} common (image, target) pairs that changed the class",
        ),
        (
            "shielded_pct",
            _shielded_pct(pairs, "fisher"),
            _shielded_pct(pairs, "euclidean"),
            np.nan,
            "% of successful paths whose first hit is not the target",
        ),
        (
            "first_hit_agreement_pct",
            np.nan,
            np.nan,
            100 * pairs["agree"].mean(),
            "% of pairs with the same first hit in both runs (no flip counts as -1)",
        ),
        (
            "first_hit_agreement_both_success_pct",
            np.nan,
            np.nan,
            agree_both,
            f"the same over the {int(both.sum())} pairs successful in both runs",
        ),
    ]
    return pd.DataFrame(rows, columns=["quantity", "fisher", "euclidean", "joint", "note"])


def _per_class(pairs: pd.DataFrame, n_classes: int) -> pd.DataFrame:
    g = pairs.groupby("source")
    per_class = pd.DataFrame(
        {
            "n_pairs": g.size(),
            "shielded_pct_fisher": g.apply(lambda f: _shielded_pct(f, "fisher"), include_groups=False),
            "shielded_pct_euclidean": g.apply(lambda f: _shielded_pct(f, "euclidean"), include_groups=False),
            "agreement_pct": 100 * g["agree"].mean(),
        }
    ).reindex(pd.RangeIndex(n_classes, name="source"))
    per_class["n_pairs"] = per_class["n_pairs"].fillna(0).astype(np.int64)
    return per_class.reset_index()


def _pair_matrix(pairs: pd.DataFrame, metric: str, n_classes: int) -> pd.DataFrame:
    frame = pairs.rename(columns={f"success_{metric}": "success", f"first_hit_{metric}": "first_hit"})
    frame = frame.assign(fr_length=np.nan, l2=np.nan)
    return path_matrix(frame[list(PATH_COLUMNS)], n_classes)


def _metric_statistics(pairs: pd.DataFrame, n_boot: int, seed: int) -> tuple[pd.DataFrame, str]:
    """Ratios of pair counts, with replicates from images resampled within their source class."""
    succ_f, succ_e = pairs["success_fisher"].to_numpy(bool), pairs["success_euclidean"].to_numpy(bool)
    sh_f = pairs["shielded_fisher"].to_numpy(bool) & succ_f
    sh_e = pairs["shielded_euclidean"].to_numpy(bool) & succ_e
    both = sh_f & sh_e
    same = both & (pairs["first_hit_fisher"] == pairs["first_hit_euclidean"]).to_numpy()
    sources = pairs.groupby("image_index")["source"].first()
    pos = pd.Index(sources.index).get_indexer(pairs["image_index"])
    draw = ClusterBootstrap.draw(sources.to_numpy(), n_boot, seed)

    def pct(num: np.ndarray, den: np.ndarray) -> tuple[float, np.ndarray]:
        value, boot = draw.ratio(num.astype(float), den.astype(float), pos)
        return 100 * value, 100 * boot

    (f, bf), (e, be) = pct(sh_f, succ_f), pct(sh_e, succ_e)
    estimates = [
        (f, bf),
        (e, be),
        (e - f, be - bf),
        pct(pairs["agree"].to_numpy(bool), np.ones(len(pairs), bool)),
        pct(same, both),
    ]
    names = [
        ("shielded_pct_fisher", "% of successful Fisher paths whose first hit is not the target"),
        ("shielded_pct_euclidean", "the same for Euclidean paths"),
        ("shielded_pct_difference", "Euclidean minus Fisher, in points of %"),
        ("first_hit_agreement_pct", "% of common pairs with the same first hit (no flip = -1)"),
        ("same_shield_pct", f"among the {int(both.sum())} pairs shielded under both metrics, % by the same class"),
    ]
    rows = []
    for (name, note), (value, b) in zip(names, estimates):
        lo, hi = scalar_interval(b)
        rows.append({"statistic": name, "value": float(value), "ci_low": lo, "ci_high": hi, "note": note})
    table = pd.DataFrame(rows)
    diff = table.set_index("statistic").loc["shielded_pct_difference"]
    sf, se = table["value"].iloc[0], table["value"].iloc[1]
    if not np.isfinite(diff["value"]):
        verdict = "Undetermined: too few successful paths under one of the metrics."
    elif diff["ci_low"] <= 0 <= diff["ci_high"] and abs(diff["value"]) < SHIELDING_ALIKE:
        verdict = (
            f"Both metrics shield alike ({sf:.1f}% vs {se:.1f}%): shielding follows the classifier's "
            "decision regions more than the metric."
        )
    else:
        more = "Euclidean" if diff["value"] > 0 else "Fisher"
        verdict = (
            f"Shielding depends on the metric: {sf:.1f}% of Fisher paths and {se:.1f}% of Euclidean paths "
            f"are shielded (difference {diff['value']:+.1f} points, 95% CI [{diff['ci_low']:+.1f}, "
            f"{diff['ci_high']:+.1f}]); {more} paths meet intervening classes more often, so the "
            "shielding a path sees is not a fixed property of the decision regions."
        )
    return table, verdict
