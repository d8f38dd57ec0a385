"""The paper under test: its table, class groups, the literature's ranking and its four claims.

Everything here is computed from ``frmargin.analysis`` results; nothing here reads a run.

Example:
    >>> claims(class_statistics(paths, images, names), correlations)[["claim", "verdict"]]
"""

from frmargin.paper.claims import (
    CLAIM_COLUMNS,
    CLAIM_TEXTS,
    DIRECTION_RATIO,
    DOMINANCE_MAJORITY,
    RANK_AGREEMENT_MIXED,
    RANK_AGREEMENT_SUPPORTED,
    SEPARATION_MIXED,
    SEPARATION_SUPPORTED,
    claims,
)
from frmargin.paper.table import (
    CIFAR10_CLASSES,
    LITERATURE_ORDER,
    LITERATURE_TIERS,
    PAPER_COLUMNS,
    PAPER_FRAGILE,
    PAPER_ROBUST,
    PAPER_TABLE,
    VEHICLE_CLASSES,
    compare_with_paper,
    literature_rank,
    with_reference_ranks,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CLAIM_COLUMNS",
    "CLAIM_TEXTS",
    "DIRECTION_RATIO",
    "DOMINANCE_MAJORITY",
    "LITERATURE_ORDER",
    "LITERATURE_TIERS",
    "PAPER_COLUMNS",
    "PAPER_FRAGILE",
    "PAPER_ROBUST",
    "PAPER_TABLE",
    "RANK_AGREEMENT_MIXED",
    "RANK_AGREEMENT_SUPPORTED",
    "SEPARATION_MIXED",
    "SEPARATION_SUPPORTED",
    "VEHICLE_CLASSES",
    "claims",
    "compare_with_paper",
    "literature_rank",
    "with_reference_ranks",
]
