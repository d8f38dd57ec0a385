"""Rank statistics of bootstrap replicates: row-wise Spearman and Kendall, and weighted Kendall.

Example:
    >>> correlations(x, y, x[idx], y[idx])["spearman_lo"]
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from frmargin.analysis.bootstrap import percentile_interval, safe_ratio

KENDALL_TENSOR_MAX = 64  # up to this many points per replicate, Kendall uses an (n_boot, n, n) tensor
KENDALL_MATRIX_MAX = 3000  # up to this many images, bootstrap Kendall uses an (n, n) sign matrix
CORRELATION_COLUMNS = (
    "spearman",
    "spearman_lo",
    "spearman_hi",
    "spearman_p",
    "kendall",
    "kendall_lo",
    "kendall_hi",
    "kendall_p",
)


def rank_descending(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, 1 = largest, ties share the smallest rank, NaN stays NaN."""
    return stats.rankdata(-values, axis=-1, method="min", nan_policy="omit")


def rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (n_boot, n) arrays."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return safe_ratio((a * b).sum(-1), den)


def rowwise_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rho of each row pair of (n_boot, n) arrays."""
    return rowwise_pearson(stats.rankdata(a, axis=-1), stats.rankdata(b, axis=-1))


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall tau-b of two vectors (scipy), NaN without warnings when undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.kendalltau(a, b).statistic)


def rowwise_kendall(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each row pair of (n_boot, n) arrays; for small n (an (n_boot, n, n) tensor)."""
    sx = np.sign(a[:, :, None] - a[:, None, :])
    sy = np.sign(b[:, :, None] - b[:, None, :])
    n = a.shape[1]
    pairs = n * (n - 1) / 2
    score = (sx * sy).sum(axis=(1, 2)) / 2
    ties_x = ((sx == 0).sum(axis=(1, 2)) - n) / 2
    ties_y = ((sy == 0).sum(axis=(1, 2)) - n) / 2
    out = safe_ratio(score, np.sqrt(np.maximum((pairs - ties_x) * (pairs - ties_y), 0.0)))
    return np.where(np.isfinite(a).all(1) & np.isfinite(b).all(1), out, np.nan)


def weighted_kendall(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Kendall tau-b of the resamples given by (n_boot, n) counts ``weights`` of the points (x, y).

    A resample holds w_i copies of point i. Over its N = sum w unordered pairs: concordant minus
    discordant = w^T S w / 2 with S_ij = sign(x_i - x_j) sign(y_i - y_j); pairs tied in x =
    (w^T T w - N) / 2 with T_ij = [x_i == x_j] (copies of one point are tied pairs), same in y.
    """
    if len(x) > KENDALL_MATRIX_MAX:
        idx = [np.repeat(np.arange(len(x)), w.astype(np.int64)) for w in weights]
        return np.array([kendall(x[i], y[i]) for i in idx])
    dx, dy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    total = weights.sum(1)
    pairs = total * (total - 1) / 2
    score = np.einsum("bi,bi->b", weights @ (dx * dy), weights) / 2

    def tied_pairs(d: np.ndarray, values: np.ndarray) -> np.ndarray:
        if np.unique(values).size == values.size:  # T = identity: only copies of a point tie
            return ((weights * weights).sum(1) - total) / 2
        return (np.einsum("bi,bi->b", weights @ (d == 0).astype(float), weights) - total) / 2

    ties_x, ties_y = tied_pairs(dx, x), tied_pairs(dy, y)
    return safe_ratio(score, np.sqrt(np.maximum((pairs - ties_x) * (pairs - ties_y), 0.0)))


def correlations(
    x: np.ndarray, y: np.ndarray, bx: np.ndarray, by: np.ndarray, boot_tau: np.ndarray | None = None
) -> dict[str, float]:
    """Spearman and Kendall of (x, y) with percentile intervals over replicate rows (bx, by).

    Args:
        x, y: (n,) values.
        bx, by: (n_boot, n) replicates of x and y.
        boot_tau: (n_boot,) precomputed Kendall replicates; else Kendall is computed row by row.

    Returns:
        The ``CORRELATION_COLUMNS`` (NaN when n < 3).
    """
    if len(x) < 3:
        return dict.fromkeys(CORRELATION_COLUMNS, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(x, y)
        tau = stats.kendalltau(x, y)
    out = {
        "spearman": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
        "kendall": float(tau.statistic),
        "kendall_p": float(tau.pvalue),
    }
    boot_rho = rowwise_spearman(bx, by)
    if boot_tau is None and bx.shape[1] <= KENDALL_TENSOR_MAX:
        boot_tau = rowwise_kendall(bx, by)
    elif boot_tau is None:
        boot_tau = np.array([kendall(a, b) for a, b in zip(bx, by)])
    (out["spearman_lo"],), (out["spearman_hi"],) = percentile_interval(boot_rho.reshape(-1, 1))
    (out["kendall_lo"],), (out["kendall_hi"],) = percentile_interval(np.asarray(boot_tau).reshape(-1, 1))
    return {k: float(v) for k, v in out.items()}
