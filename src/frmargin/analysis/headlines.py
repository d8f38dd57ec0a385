"""Run-level statistics with 95% cluster-bootstrap intervals: the headline numbers of a report.

They reuse the class table's image resamples (``ClassStatistics.bootstrap``), so a headline and
the class table's columns come from the same replicates. Letters: P = paths, B = images.

Example:
    >>> run_headlines(class_statistics(paths, images, names))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from frmargin.analysis.bootstrap import scalar_interval
from frmargin.analysis.tables import ClassStatistics

#: (statistic, definition) of the rows of ``run_headlines``
HEADLINE_STATISTICS: tuple[tuple[str, str], ...] = (
    ("image_margin", "mean over images of the per-image FR margin (min over targets of fr_length)"),
    ("success_pct", "% of traced paths that changed the predicted class"),
    ("shielded_pct", "% of successful paths whose first class hit is not their target"),
)
HEADLINE_COLUMNS = ["statistic", "value", "ci_low", "ci_high", "numerator", "denominator", "definition"]


def run_headlines(statistics: ClassStatistics) -> pd.DataFrame:
    """One row per ``HEADLINE_STATISTICS`` entry: value, 95% interval and the counts behind it.

    ``numerator`` / ``denominator`` are the counts of the ratio (images with a margin / images for
    ``image_margin``), so a reader sees how much data a number rests on.

    Example:
        >>> run_headlines(stats).set_index("statistic").loc["shielded_pct", "value"]
    """
    p, pos, draw = statistics.paths, statistics.path_image, statistics.bootstrap
    ok = p["success"].to_numpy(bool)
    shielded = p["shielded"].to_numpy(bool) & ok
    margin = statistics.margins["fr_margin"].to_numpy(float)
    has_margin = np.isfinite(margin)
    image_pos = np.arange(len(margin))
    terms = {
        "image_margin": (np.where(has_margin, margin, 0.0), has_margin.astype(float), image_pos, 1.0),
        "success_pct": (ok.astype(float), np.ones(len(p)), pos, 100.0),
        "shielded_pct": (shielded.astype(float), ok.astype(float), pos, 100.0),
    }
    counts = {
        "image_margin": (int(has_margin.sum()), len(margin)),
        "success_pct": (int(ok.sum()), len(p)),
        "shielded_pct": (int(shielded.sum()), int(ok.sum())),
    }
    rows = []
    for name, definition in HEADLINE_STATISTICS:
        num, den, where, scale = terms[name]
        value, boot = draw.ratio(num, den, where)
        lo, hi = scalar_interval(boot) if boot.size else (np.nan, np.nan)
        rows.append([name, scale * value, scale * lo, scale * hi, *counts[name], definition])
    return pd.DataFrame(rows, columns=HEADLINE_COLUMNS)
