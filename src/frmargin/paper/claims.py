"""The paper's four qualitative claims, tested on the statistics of a run, each with a verdict.

Claims are computed from ``analysis.ClassStatistics`` (the class table with its bootstrap
replicates, which claim 1 reuses) and from ``analysis.fr_vs_l2`` (claim 4).

Example:
    >>> stats = class_statistics(paths, images, names)
    >>> claims(stats, fr_vs_l2(stats.margins, baselines))[["claim", "value", "verdict"]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from frmargin.analysis import ClassStatistics, ClusterBootstrap, scalar_interval
from frmargin.paper.table import PAPER_FRAGILE, PAPER_ROBUST, VEHICLE_CLASSES

# Verdict thresholds of ``claims`` (named so the report can quote them).
SEPARATION_SUPPORTED = 0.9  # claim 1: share of (robust, fragile) class pairs ordered as claimed
SEPARATION_MIXED = 0.6
DOMINANCE_MAJORITY = 0.5  # claim 2: "dominate" = a majority of all shield events
DIRECTION_RATIO = 0.5  # claim 3: "rarely" = at most half the rate of the opposite direction
RANK_AGREEMENT_SUPPORTED = 0.7  # claim 4: Spearman rho of the class rankings
RANK_AGREEMENT_MIXED = 0.3
#: claims 2 and 3 resample images in a draw independent of the class table's (seed + this)
SHIELD_DRAW_OFFSET = 1

CLAIM_TEXTS = (
    "Animal classes (bird, cat, dog, frog) are fragile; vehicles and ship are robust",
    "Vehicle classes dominate as shields",
    "Fragile classes rarely shield robust ones (directionality)",
    "FR and L2 vulnerability rankings agree up to an offset",
)
CLAIM_COLUMNS = ["claim", "statistic", "value", "ci_low", "ci_high", "reference", "verdict", "explanation"]


def claims(statistics: ClassStatistics, correlations: pd.DataFrame | None = None) -> pd.DataFrame:
    """Test the paper's four qualitative claims; one row each, with a verdict.

    Verdicts are "supported", "mixed", "not supported" or "not tested" (data or class names
    missing). Intervals are 95% cluster-bootstrap intervals (images resampled within class).

    1. Separation: share of the 16 (robust, fragile) class pairs, robust in ``PAPER_ROBUST`` and
       fragile in ``PAPER_FRAGILE``, in which the robust class has the larger mean FR margin.
       Supported if >= SEPARATION_SUPPORTED, mixed if >= SEPARATION_MIXED. Its interval comes
       from the class table's own replicates of mean_fr_margin.
    2. Vehicle shield share: among shielded paths, the share whose shield is in
       ``VEHICLE_CLASSES``; reference = the share expected if each path's shield were drawn
       uniformly from its C - 2 eligible classes. Supported if above DOMINANCE_MAJORITY and the
       interval lies above the reference; mixed if only one of the two holds.
    3. Directionality: R = top half of our vulnerability ranking, F = the rest. Value = share of
       successful paths from F toward R intercepted by a class in F; reference = share of
       successful paths from R toward F intercepted by a class in R (the two panels of the paper's
       landscape). Supported if value <= DIRECTION_RATIO * reference and the interval of
       reference - value lies above 0; not supported if value >= reference; else mixed.
    4. Rank agreement: Spearman rho between the class means of the per-image FR margin (min over
       targets) and of the minimal L2 of the best baseline attack, read from ``correlations``
       (``analysis.fr_vs_l2`` of ``statistics.margins``). Supported if rho >=
       RANK_AGREEMENT_SUPPORTED with interval above 0, mixed if rho >= RANK_AGREEMENT_MIXED; not
       tested without correlations (no baselines).

    Example:
        >>> claims(class_statistics(paths, images, names), correlations)["verdict"]
    """
    shield_draw = statistics.bootstrap.independent(SHIELD_DRAW_OFFSET)
    rows = [
        _claim_separation(statistics),
        _claim_vehicle_shields(statistics, shield_draw),
        _claim_directionality(statistics, shield_draw),
        _claim_rank_agreement(correlations),
    ]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _row(
    number: int,
    statistic: str,
    value: float = np.nan,
    ci: tuple[float, float] = (np.nan, np.nan),
    reference: float = np.nan,
    verdict: str = "not tested",
    explanation: str = "",
) -> dict:
    return {
        "claim": CLAIM_TEXTS[number - 1],
        "statistic": statistic,
        "value": float(value),
        "ci_low": float(ci[0]),
        "ci_high": float(ci[1]),
        "reference": float(reference),
        "verdict": verdict,
        "explanation": explanation,
    }


def _claim_separation(statistics: ClassStatistics) -> dict:
    statistic = (
        "share of (robust, fragile) class pairs, robust in {airplane, automobile, ship, "
        "truck} and fragile in {bird, cat, dog, frog}, with robust mean FR margin larger"
    )
    names = statistics.class_names
    robust = [names.index(c) for c in PAPER_ROBUST if c in names]
    fragile = [names.index(c) for c in PAPER_FRAGILE if c in names]
    margin = statistics.table["mean_fr_margin"].to_numpy(float)
    if len(robust) < len(PAPER_ROBUST) or len(fragile) < len(PAPER_FRAGILE):
        return _row(1, statistic, explanation="needs the CIFAR-10 class names")
    if not np.all(np.isfinite(margin[robust + fragile])):
        return _row(1, statistic, explanation="some of these classes have no successful path")

    def separation(m: np.ndarray) -> np.ndarray:
        return (m[..., robust][..., :, None] > m[..., fragile][..., None, :]).mean(axis=(-1, -2))

    value = float(separation(margin))
    ci = scalar_interval(separation(statistics.replicates["mean_fr_margin"]))
    verdict = (
        "supported" if value >= SEPARATION_SUPPORTED else "mixed" if value >= SEPARATION_MIXED else "not supported"
    )
    worst = sorted(names[i] for i in fragile if margin[i] >= margin[robust].min())
    explanation = (
        f"{round(value * 16)} of 16 pairs ordered as claimed (supported >= "
        f"{SEPARATION_SUPPORTED:g}, mixed >= {SEPARATION_MIXED:g})"
    )
    if worst:
        explanation += f"; fragile classes above the weakest robust one: {', '.join(worst)}"
    return _row(1, statistic, value, ci, np.nan, verdict, explanation)


def _claim_vehicle_shields(statistics: ClassStatistics, draw: ClusterBootstrap) -> dict:
    statistic = (
        "share of shielded paths whose shield is airplane, automobile, ship or truck "
        "(reference: share expected under uniform shields)"
    )
    names, p = statistics.class_names, statistics.paths
    vehicles = [names.index(c) for c in VEHICLE_CLASSES if c in names]
    if len(vehicles) < len(VEHICLE_CLASSES):
        return _row(2, statistic, explanation="needs the CIFAR-10 class names")
    shielded = p["shielded"].to_numpy(bool)
    if not shielded.any():
        return _row(2, statistic, explanation="no shielded path in this run")
    is_vehicle = np.isin(p["first_hit"].to_numpy(), vehicles)
    value, boot = draw.ratio((shielded & is_vehicle).astype(float), shielded.astype(float), statistics.path_image)
    eligible = len(vehicles) - np.isin(p["source"], vehicles) - np.isin(p["target"], vehicles)
    chance = float(np.mean(eligible[shielded] / (len(names) - 2)))
    ci = scalar_interval(boot)
    majority, above = value > DOMINANCE_MAJORITY, ci[0] > chance
    verdict = "supported" if majority and above else "mixed" if majority or above else "not supported"
    return _row(
        2,
        statistic,
        value,
        ci,
        chance,
        verdict,
        f"{int(shielded.sum())} shielded paths; vehicles would take {chance:.2f} of them "
        f"by chance; 'dominate' = a majority (> {DOMINANCE_MAJORITY:g}) and above chance",
    )


def _claim_directionality(statistics: ClassStatistics, draw: ClusterBootstrap) -> dict:
    statistic = (
        "share of successful fragile-to-robust paths shielded by a fragile class "
        "(reference: robust-to-fragile paths shielded by a robust class); robust = top "
        "half of our vulnerability ranking"
    )
    table, p, pos = statistics.table, statistics.paths, statistics.path_image
    ranks = table["vuln_rank"].to_numpy(float)
    ranked = np.flatnonzero(np.isfinite(ranks))
    if ranked.size < 4:
        return _row(3, statistic, explanation="fewer than 4 classes have successful paths")
    order = ranked[np.argsort(ranks[ranked], kind="stable")]
    robust, fragile = order[: order.size // 2], order[order.size // 2 :]
    src, tgt, hit = (p[c].to_numpy() for c in ("source", "target", "first_hit"))
    ok, shielded = p["success"].to_numpy(bool), p["shielded"].to_numpy(bool)
    f_to_r = ok & np.isin(src, fragile) & np.isin(tgt, robust)
    r_to_f = ok & np.isin(src, robust) & np.isin(tgt, fragile)
    if not f_to_r.any() or not r_to_f.any():
        return _row(3, statistic, explanation="no successful path between the two halves")
    if not shielded[f_to_r | r_to_f].any():
        return _row(3, statistic, explanation="no shielded path between the two halves: nothing to compare")
    value, boot_v = draw.ratio((f_to_r & shielded & np.isin(hit, fragile)).astype(float), f_to_r.astype(float), pos)
    ref, boot_r = draw.ratio((r_to_f & shielded & np.isin(hit, robust)).astype(float), r_to_f.astype(float), pos)
    ci = scalar_interval(boot_v)
    diff_lo, diff_hi = scalar_interval(boot_r - boot_v)
    if value >= ref:
        verdict = "not supported"
    elif value <= DIRECTION_RATIO * ref and diff_lo > 0:
        verdict = "supported"
    else:
        verdict = "mixed"
    names = table["name"].tolist()
    return _row(
        3,
        statistic,
        value,
        ci,
        ref,
        verdict,
        f"robust half: {', '.join(names[i] for i in robust)}; reference - value = "
        f"{ref - value:.3f} [{diff_lo:.3f}, {diff_hi:.3f}]; 'rarely' = at most "
        f"{DIRECTION_RATIO:g} x the reference with the difference's interval above 0",
    )


def _claim_rank_agreement(correlations: pd.DataFrame | None) -> dict:
    statistic = (
        "Spearman rho between the class means of the per-image FR margin (min over targets) "
        "and of the minimal L2 of the best baseline attack"
    )
    if correlations is None or len(correlations) == 0:
        return _row(4, statistic, explanation="no baselines.parquet: no minimal-L2 attack to compare")
    corr = correlations
    attacks = corr["attack"].unique().tolist()
    attack = "best" if "best" in attacks else attacks[0]
    row = corr[(corr["attack"] == attack) & (corr["level"] == "class")].iloc[0]
    value, ci = row["spearman"], (row["spearman_lo"], row["spearman_hi"])
    if not np.isfinite(value):
        return _row(4, statistic, explanation="too few classes with finite margins and L2")
    if value >= RANK_AGREEMENT_SUPPORTED and ci[0] > 0:
        verdict = "supported"
    elif value >= RANK_AGREEMENT_MIXED:
        verdict = "mixed"
    else:
        verdict = "not supported"
    image = corr[(corr["attack"] == attack) & (corr["level"] == "image")].iloc[0]
    return _row(
        4,
        statistic,
        value,
        ci,
        np.nan,
        verdict,
        f"attack {attack!r} over {int(row['n'])} classes; per-image Spearman "
        f"{image['spearman']:.2f} [{image['spearman_lo']:.2f}, {image['spearman_hi']:.2f}]; "
        f"supported >= {RANK_AGREEMENT_SUPPORTED:g}, mixed >= {RANK_AGREEMENT_MIXED:g}",
    )
