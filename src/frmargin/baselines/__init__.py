"""Euclidean (L2) minimal adversarial distances, the baseline for Fisher-Rao margins.

``min_l2_attack`` (``api``) is the one entry, with a registry of attacks keyed by the names users
write (``ATTACKS``): the foolbox attacks of ``foolbox_attacks`` (DeepFool, FMN, the better of the
two). ``common`` holds what every attack shares (overshoot removal, verification).
"""

from __future__ import annotations

from .api import ATTACKS, DEFAULTS, STATUSES, MinL2Result, min_l2_attack, min_l2_distance
from .foolbox_attacks import require_foolbox

__all__ = ["ATTACKS", "DEFAULTS", "STATUSES", "MinL2Result", "min_l2_attack", "min_l2_distance", "require_foolbox"]
