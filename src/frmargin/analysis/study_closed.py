"""Closed-form margins of every test image from a model's logits (a study's closed-form pass).

Where the logit Jacobian has rank C-1 (every traced run checks it on its images), an image's
Fisher-Rao margin is the closed form LB(p) = 2 arcsin((sqrt(p_1) - sqrt(p_2)) / sqrt(2)) of its
two largest probabilities p_1 >= p_2. So it is fixed by the top-two log-odds r = log(p_1 / p_2)
and the probability s = 1 - p_1 - p_2 of the other classes:

    LB = 2 arcsin(sqrt((1 - s) / 2) (sqrt(q) - sqrt(1 - q))),  q = e^r / (1 + e^r),

which is at most the two-class margin ``two_class_margin(r)`` (s = 0) at the same log-odds. The
difference ``beyond`` = margin - two_class_margin(r) <= 0 is what the margin says beyond the
top-two log-odds: it comes only from the mass on the other classes.

Example:
    >>> table = image_table(logits, labels, temperature=1.0)  # doctest: +SKIP
    >>> closed_form_summary(table)["spearman_margin_log_odds"]  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats

__all__ = ["CLOSED_FORM_COLUMNS", "closed_form_summary", "image_table", "logits_of", "two_class_margin"]

#: (column, definition) of the per-model closed-form summary
CLOSED_FORM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("test_images", "images of the closed-form pass (the whole official test split)"),
    ("test_accuracy", "top-1 accuracy on them"),
    ("test_median_confidence", "median probability of the predicted class on them, at T = 1"),
    ("test_margin_median", "median closed-form FR margin LB (predicted class) on them, at T = 1"),
    ("test_margin_p10", "10th percentile of the same"),
    ("test_margin_p90", "90th percentile of the same"),
    ("spearman_margin_log_odds", "Spearman correlation of LB with the top-two log-odds log(p_1 / p_2), all images"),
    ("test_beyond_mean", "mean of LB minus the two-class margin at the same top-two log-odds (<= 0)"),
)


def logits_of(table: pd.DataFrame) -> np.ndarray:
    """(N, C) logits of a closed-form table (columns ``z0`` .. ``z{C-1}``)."""
    columns = sorted((c for c in table.columns if c[:1] == "z" and c[1:].isdigit()), key=lambda c: int(c[1:]))
    return table[columns].to_numpy(np.float64)


def two_class_margin(log_odds: np.ndarray) -> np.ndarray:
    """The FR margin of a two-class distribution with log-odds ``log_odds`` (>= 0).

    Example:
        >>> float(two_class_margin(np.array([0.0])))
        0.0
    """
    q = special.expit(np.asarray(log_odds, float))
    return 2.0 * np.arcsin(np.clip((np.sqrt(q) - np.sqrt(1.0 - q)) / np.sqrt(2.0), 0.0, 1.0))


def image_table(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> pd.DataFrame:
    """Per image at temperature T: ``prediction``, ``correct``, ``confidence`` (p_1), ``log_odds``
    (log p_1 - log p_2), ``rest`` (s), ``margin`` (LB, the closed-form FR margin of the
    predicted class), ``two_class_margin`` and ``beyond`` (their difference).

    Example:
        >>> t = image_table(np.array([[2.0, 0.0, 0.0]]), np.array([0]))
        >>> round(float(t["margin"].iloc[0]), 4), bool(t["beyond"].iloc[0] < 0)
        (0.8155, True)
    """
    z = np.asarray(logits, np.float64) / float(temperature)
    logp = z - special.logsumexp(z, axis=1, keepdims=True)
    top2 = np.sort(logp, axis=1)[:, -2:]
    p1, p2 = np.exp(top2[:, 1]), np.exp(top2[:, 0])
    log_odds = top2[:, 1] - top2[:, 0]
    margin = 2.0 * np.arcsin(np.clip((np.sqrt(p1) - np.sqrt(p2)) / np.sqrt(2.0), 0.0, 1.0))
    reference = two_class_margin(log_odds)
    prediction = z.argmax(1)
    return pd.DataFrame(
        {
            "label": np.asarray(labels),
            "prediction": prediction,
            "correct": prediction == np.asarray(labels),
            "confidence": p1,
            "log_odds": log_odds,
            "rest": np.clip(1.0 - p1 - p2, 0.0, 1.0),
            "margin": margin,
            "two_class_margin": reference,
            "beyond": margin - reference,
        }
    )


def closed_form_summary(table: pd.DataFrame) -> dict:
    """The ``CLOSED_FORM_COLUMNS`` of one model from its ``image_table`` (all images)."""
    margin = table["margin"].to_numpy(float)
    rho = stats.spearmanr(margin, table["log_odds"].to_numpy(float)).statistic if len(table) > 2 else np.nan
    return {
        "test_images": len(table),
        "test_accuracy": float(table["correct"].mean()),
        "test_median_confidence": float(table["confidence"].median()),
        "test_margin_median": float(np.median(margin)),
        "test_margin_p10": float(np.quantile(margin, 0.1)),
        "test_margin_p90": float(np.quantile(margin, 0.9)),
        "spearman_margin_log_odds": float(rho),
        "test_beyond_mean": float(table["beyond"].mean()),
    }
