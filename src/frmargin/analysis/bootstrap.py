"""Cluster bootstrap over images within their class: resampling weights, ratios and intervals.

Every interval is a 95% percentile interval of a *cluster* bootstrap that resamples images, not
paths (the C - 1 paths of an image share its softmax output and are correlated). Images are
resampled within their stratum (their source class), so every class keeps its image count in every
replicate. Ratios of sums are computed for all replicates at once as ``(W @ numerators) /
(W @ denominators)`` with W the (n_boot, B) matrix of resampling counts.

Example:
    >>> boot = ClusterBootstrap.draw(strata=np.array([0, 0, 1, 1]), n_boot=100, seed=0)
    >>> boot.weights.shape
    (100, 4)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from frmargin.errors import bad_argument

CI_LEVEL = 0.95
DEFAULT_N_BOOT = 1000


def check_n_boot(n_boot: int) -> int:
    """``n_boot`` as an int; raise unless it is an integer >= 0."""
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise bad_argument("n_boot", n_boot, "an integer >= 0")
    return int(n_boot)


def bootstrap_indices(strata: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, B) image indices resampled with replacement within each stratum."""
    n = len(strata)
    idx = np.empty((n_boot, n), dtype=np.int64)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        idx[:, members] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    return idx


def resampling_weights(idx: np.ndarray, n: int) -> np.ndarray:
    """(n_boot, B) resampling counts from (n_boot, B) indices."""
    n_boot = idx.shape[0]
    flat = (idx + np.arange(n_boot)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den <= 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def percentile_interval(boot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, NaN where every replicate is NaN."""
    tail = 100 * (1 - CI_LEVEL) / 2
    if boot.shape[0] == 0:
        nan = np.full(boot.shape[1:], np.nan)
        return nan, nan.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    return lo, hi


def scalar_interval(boot: np.ndarray) -> tuple[float, float]:
    """Percentile interval of the replicates of one scalar statistic."""
    lo, hi = percentile_interval(np.asarray(boot, float).reshape(-1, 1))
    return float(lo[0]), float(hi[0])


@dataclass(frozen=True)
class ClusterBootstrap:
    """One draw of image resamples within strata.

    Attributes:
        strata: (B,) stratum (source class) of each image.
        seed: seed of the draw.
        indices: (n_boot, B) resampled image positions.
        weights: (n_boot, B) resampling counts.
    """

    strata: np.ndarray
    seed: int
    indices: np.ndarray
    weights: np.ndarray

    @classmethod
    def draw(cls, strata: np.ndarray, n_boot: int, seed: int) -> ClusterBootstrap:
        """Resample images within ``strata`` ``n_boot`` times from ``np.random.default_rng(seed)``."""
        strata = np.asarray(strata)
        idx = bootstrap_indices(strata, check_n_boot(n_boot), np.random.default_rng(seed))
        return cls(strata=strata, seed=seed, indices=idx, weights=resampling_weights(idx, len(strata)))

    def independent(self, offset: int = 1) -> ClusterBootstrap:
        """A fresh draw over the same strata with seed ``seed + offset`` (independent replicates)."""
        return ClusterBootstrap.draw(self.strata, self.n_boot, self.seed + offset)

    @property
    def n_boot(self) -> int:
        """Number of replicates."""
        return int(self.weights.shape[0])

    def ratio(self, num: np.ndarray, den: np.ndarray, pos: np.ndarray) -> tuple[float, np.ndarray]:
        """Point ratio sum(num) / sum(den) over P rows and its (n_boot,) replicates.

        Args:
            num: (P,) numerators, one per path.
            den: (P,) denominators.
            pos: (P,) position in ``strata`` of each path's image.
        """
        n_img = len(self.strata)
        num_img = np.bincount(pos, weights=num, minlength=n_img)
        den_img = np.bincount(pos, weights=den, minlength=n_img)
        point = float(safe_ratio(num_img.sum(), den_img.sum()))
        return point, safe_ratio(self.weights @ num_img, self.weights @ den_img)
