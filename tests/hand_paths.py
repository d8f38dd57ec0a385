"""Hand-built path tables with known answers, shared by the analysis and paper tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def path_row(image: int, source: int, target: int, first_hit: int = -1, fr: float = np.nan, **extra: object) -> dict:
    success = first_hit >= 0
    return {
        "image_index": image,
        "source": source,
        "target": target,
        "success": success,
        "first_hit": first_hit,
        "fr_length": fr if success else np.nan,
        "l2": 0.5 * fr if success else np.nan,
        "status": "ok" if success else "budget",
        "lower_bound": 0.1,
        **extra,
    }


def hand_paths() -> pd.DataFrame:
    """3 images x 9 paths. Image 0 (class 0) reaches 3 targets, image 1 (class 1) 3, image 2
    (class 8) all 9. Paths eligible for class 8's shielding: 0->1, 0->2, 1->0, 1->3, 1->9; of
    those 0->1 and 1->0 first hit 8, so class 8's shielding % is exactly 2/5."""
    outcomes = {
        (0, 0): {1: (8, 2.0), 2: (2, 3.0), 8: (8, 1.0)},
        (1, 1): {0: (8, 1.5), 3: (3, 0.5), 9: (9, 1.0)},
        (2, 8): {t: (t, 0.5) for t in range(10) if t != 8},
    }
    rows = []
    for (image, source), reached in outcomes.items():
        for target in range(10):
            if target != source:
                hit, fr = reached.get(target, (-1, np.nan))
                rows.append(path_row(image, source, target, hit, fr))
    return pd.DataFrame(rows)
