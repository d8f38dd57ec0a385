"""Tests of frmargin.analysis.bootstrap and .correlation against brute-force resampling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from frmargin.analysis.bootstrap import ClusterBootstrap, percentile_interval, safe_ratio, scalar_interval
from frmargin.analysis.correlation import rowwise_kendall, rowwise_spearman, weighted_kendall
from frmargin.errors import FrmarginError

EXACT = 1e-12


def test_vectorized_kendall_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(size=40)
    x[5:9], y[:3] = x[5], y[0]  # ties
    draw = ClusterBootstrap.draw(rng.integers(0, 3, 40), 30, seed=1)
    fast = weighted_kendall(x, y, draw.weights)
    slow = [stats.kendalltau(x[i], y[i]).statistic for i in draw.indices]
    np.testing.assert_allclose(fast, slow, atol=EXACT)
    a, b = rng.normal(size=(30, 10)), rng.normal(size=(30, 10))
    a[:, 2] = a[:, 3]
    np.testing.assert_allclose(
        rowwise_kendall(a, b), [stats.kendalltau(u, v).statistic for u, v in zip(a, b)], atol=EXACT
    )


def test_rowwise_spearman_matches_scipy():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20, 12)), rng.normal(size=(20, 12))
    np.testing.assert_allclose(
        rowwise_spearman(a, b), [stats.spearmanr(u, v).statistic for u, v in zip(a, b)], atol=EXACT
    )


def test_draw_resamples_within_strata():
    strata = np.array([0, 0, 0, 1, 1, 2])
    draw = ClusterBootstrap.draw(strata, 50, seed=0)
    assert draw.weights.shape == (50, 6) and draw.n_boot == 50
    for value in np.unique(strata):
        members = strata == value
        assert (draw.weights[:, members].sum(1) == members.sum()).all()
        assert np.isin(draw.indices[:, members], np.flatnonzero(members)).all()
    assert (draw.weights[:, 5] == 1).all()  # a stratum of one image never changes


def test_ratio_matches_explicit_resamples():
    rng = np.random.default_rng(3)
    strata = np.repeat([0, 1], 5)
    pos = rng.integers(0, 10, 40)  # 40 paths over 10 images
    num, den = rng.random(40), np.ones(40)
    draw = ClusterBootstrap.draw(strata, 25, seed=4)
    point, boot = draw.ratio(num, den, pos)
    assert point == pytest.approx(num.sum() / den.sum(), abs=EXACT)
    for b, images in enumerate(draw.indices):
        rows = np.concatenate([np.flatnonzero(pos == i) for i in images])
        assert boot[b] == pytest.approx(num[rows].sum() / den[rows].sum(), abs=EXACT)


def test_draws_are_deterministic_and_independent_draws_differ():
    strata = np.repeat(np.arange(4), 10)
    a, b = ClusterBootstrap.draw(strata, 30, seed=7), ClusterBootstrap.draw(strata, 30, seed=7)
    assert np.array_equal(a.weights, b.weights)
    other = a.independent(1)
    assert other.seed == 8 and not np.array_equal(other.weights, a.weights)
    assert np.array_equal(other.weights, ClusterBootstrap.draw(strata, 30, seed=8).weights)


def test_intervals_and_ratios_at_the_edges():
    lo, hi = percentile_interval(np.empty((0, 3)))
    assert np.isnan(lo).all() and np.isnan(hi).all()
    assert scalar_interval(np.arange(101.0)) == pytest.approx((2.5, 97.5))
    assert np.isnan(safe_ratio(np.array([1.0]), np.array([0.0]))).all()
    with pytest.raises(FrmarginError, match="n_boot"):
        ClusterBootstrap.draw(np.zeros(3), -1, seed=0)
