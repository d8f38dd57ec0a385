"""The paper's numbers: its per-class table, its class groups and the literature's ranking.

Example:
    >>> compare_with_paper(table)[["name", "mean_fr_margin_ours", "mean_fr_margin_paper"]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from frmargin.analysis import require_columns
from frmargin.data.classes import CIFAR10_CLASSES

# The paper's groups: "animal classes (bird, cat, dog, frog) are fragile, vehicles and ship robust";
# its shields are "vehicle-style classes (truck, ship, airplane)". Automobile is a vehicle too.
PAPER_ROBUST = ("airplane", "automobile", "ship", "truck")
PAPER_FRAGILE = ("bird", "cat", "dog", "frog")
VEHICLE_CLASSES = PAPER_ROBUST

# Class-wise adversarial robustness on CIFAR-10 as commonly reported for standard and adversarially
# trained ResNets (e.g. Tian et al. 2021, "Analysis and applications of class-wise robustness in
# adversarial training"; Xu et al. 2021, "To be robust or to be fair"): cat is the most vulnerable
# class, then bird, deer and dog; automobile, truck and ship are the most robust. The order *within*
# a tier is not established, so ranks are tier mid-ranks (1 = most robust).
LITERATURE_TIERS: tuple[tuple[str, ...], ...] = (
    ("automobile", "truck", "ship"),
    ("airplane", "horse", "frog"),
    ("bird", "deer", "dog"),
    ("cat",),
)
LITERATURE_ORDER: tuple[str, ...] = tuple(c for tier in LITERATURE_TIERS for c in tier)

# The paper's table (ResNet, 800 CIFAR-10 test images, 3,659 successful paths). Its Shielding %
# column sums to 316% and its rank does not follow its mean FR margin (docs/method.md, the paper's errata).
PAPER_TABLE = pd.DataFrame(
    {
        "name": list(CIFAR10_CLASSES),
        "shielding_pct": [58.2, 40.5, 12.1, 9.8, 18.4, 14.2, 21.0, 27.5, 62.7, 51.7],
        "mean_fr_margin": [3.21, 2.76, 1.05, 0.98, 1.48, 1.12, 1.78, 2.05, 3.45, 2.98],
        "mean_l2": [0.98, 0.84, 0.32, 0.28, 0.52, 0.35, 0.60, 0.70, 1.12, 0.95],
        "vuln_rank": [1, 3, 9, 10, 7, 8, 6, 5, 2, 4],
    },
    index=pd.RangeIndex(10, name="class"),
)
PAPER_COLUMNS = ("shielding_pct", "mean_fr_margin", "mean_l2", "vuln_rank")


def literature_rank(name: str) -> float:
    """Mid-rank (1 = most robust) of a CIFAR-10 class in ``LITERATURE_TIERS``; NaN if unknown."""
    start = 1
    for tier in LITERATURE_TIERS:
        if name in tier:
            return start + (len(tier) - 1) / 2
        start += len(tier)
    return np.nan


def with_reference_ranks(rankings: pd.DataFrame) -> pd.DataFrame:
    """``rankings`` (see ``analysis.class_rankings``) with the paper's and the literature's ranks.

    Adds ``rank_paper`` (the paper's Vuln rank) and ``rank_literature`` (``LITERATURE_TIERS``
    mid-ranks), NaN where a class is not a CIFAR-10 class.

    Example:
        >>> with_reference_ranks(class_rankings(table))[["name", "rank_fr", "rank_paper"]]
    """
    out = rankings.copy()
    paper = PAPER_TABLE.set_index("name")["vuln_rank"]
    out["rank_paper"] = out["name"].map(paper).astype(float)
    out["rank_literature"] = out["name"].map(literature_rank).astype(float)
    return out


def compare_with_paper(table: pd.DataFrame) -> pd.DataFrame:
    """Our class table beside the paper's, matched by class name, with ours - paper differences.

    Columns: ``name``, then for X in ``PAPER_COLUMNS``: ``X_ours``, ``X_paper``, ``X_diff``. Only
    classes present in both (empty for a dataset without CIFAR-10 class names).

    Example:
        >>> compare_with_paper(table)[["name", "mean_fr_margin_ours", "mean_fr_margin_paper"]]
    """
    require_columns(table, "table", ("name", *PAPER_COLUMNS))
    ours = table.set_index("name")
    paper = PAPER_TABLE.set_index("name")
    common = [n for n in paper.index if n in ours.index]
    out = pd.DataFrame({"name": common})
    for column in PAPER_COLUMNS:
        mine = ours.loc[common, column].to_numpy(float)
        theirs = paper.loc[common, column].to_numpy(float)
        out[f"{column}_ours"], out[f"{column}_paper"] = mine, theirs
        out[f"{column}_diff"] = mine - theirs
    return out
