"""Euclidean (L2) minimal adversarial distances, the baseline for Fisher-Rao margins.

``min_l2_attack`` (``api``) is the one entry, with a registry of attacks keyed by the names users
write (``ATTACKS``): the foolbox attacks of ``foolbox_attacks`` (DeepFool, FMN, the better of the
two) and the line attacks of ``spectral`` (along the top eigenvector of the data-space Fisher:
OSSA, TSSA; along a random direction). ``common`` holds what every attack shares (overshoot
removal, verification, counting model evaluations).
"""

from __future__ import annotations

from .api import ATTACKS, DEFAULTS, MINIMIZING, STATUSES, MinL2Result, min_l2_attack, min_l2_distance
from .foolbox_attacks import require_foolbox
from .spectral import SPECTRAL_ATTACKS, spectral_scores, top_eigenvalue

__all__ = [
    "ATTACKS",
    "DEFAULTS",
    "MINIMIZING",
    "SPECTRAL_ATTACKS",
    "STATUSES",
    "MinL2Result",
    "min_l2_attack",
    "min_l2_distance",
    "require_foolbox",
    "spectral_scores",
    "top_eigenvalue",
]
