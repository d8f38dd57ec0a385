"""Closed forms on the simplex (frmargin.geometry) against arccos formulas, quadrature and sampling."""

from __future__ import annotations

import math

import pytest
import torch

import reference as ref
from conftest import assert_close
from frmargin.errors import FrmarginError
from frmargin.geometry import fisher_rao_distance, fr_distance, margin_lower_bound, predicted_path

EXACT = 1e-12  # closed form vs closed form in float64
ARCCOS = 1e-9  # vs the arccos formula on well-separated points (arccos loses digits near 1)
QUAD = 1e-9  # vs adaptive quadrature of the simplex flow
METRIC = 1e-6  # d(p, p + dp) vs the midpoint Fisher norm for |dp| ~ 1e-6


def dirichlet(n: int, C: int, seed: int, alpha: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    g = -torch.log(torch.rand(n, C, generator=gen, dtype=torch.float64))  # Gamma(1)
    if alpha != 1.0:
        g = g ** (1 / alpha)
    return g / g.sum(-1, keepdim=True)


# --------------------------------------------------------------------------- distance


@pytest.mark.parametrize("C", [2, 3, 10])
def test_distance_matches_arccos_formula(C):
    p, q = dirichlet(200, C, 1), dirichlet(200, C, 2)
    assert_close(fisher_rao_distance(p, q), ref.fr_distance(p, q), ARCCOS, ARCCOS, f"d_FR vs 2 arccos, C={C}")


def test_distance_small_steps_match_fisher_metric():
    p = dirichlet(50, 6, 3, alpha=2.0)
    gen = torch.Generator().manual_seed(4)
    dp = 1e-6 * torch.randn(50, 6, generator=gen, dtype=torch.float64)
    dp = dp - dp.mean(-1, keepdim=True)
    infinitesimal = (dp.square() / (p + dp / 2)).sum(-1).sqrt()  # Fisher norm at the midpoint
    assert_close(fisher_rao_distance(p, p + dp), infinitesimal, METRIC, 0.0, "d_FR(p, p + dp) vs sqrt(dp^T I dp)")


def test_distance_axioms():
    p, q, r = dirichlet(300, 5, 5), dirichlet(300, 5, 6, alpha=0.3), dirichlet(300, 5, 7)
    assert_close(fisher_rao_distance(p, q), fisher_rao_distance(q, p), EXACT, EXACT, "symmetry")
    assert_close(fisher_rao_distance(p, p), torch.zeros(300), 0.0, 1e-7, "d(p, p) = 0")
    slack = fisher_rao_distance(p, q) + fisher_rao_distance(q, r) - fisher_rao_distance(p, r)
    assert slack.min() >= -1e-12, f"triangle inequality violated by {-slack.min().item():.3g}"
    eye = torch.eye(4, dtype=torch.float64)
    i, j = torch.triu_indices(4, 4, 1)
    assert_close(
        fisher_rao_distance(eye[i], eye[j]),
        torch.full((6,), math.pi, dtype=torch.float64),
        EXACT,
        EXACT,
        "d(e_i, e_j) = pi",
    )


def test_unchecked_distance_is_the_checked_one_and_keeps_nans():
    """The tracer's unchecked ``fr_distance`` gives the checked distance bit for bit, clamps
    rounding below 0 as the check does, and lets a NaN through instead of raising."""
    p, q = dirichlet(100, 10, 8, alpha=0.2), dirichlet(100, 10, 9)
    assert torch.equal(fr_distance(p, q), fisher_rao_distance(p, q))
    nudged = p.clone()
    nudged[:, 1] += nudged[:, 0]
    nudged[:, 0] = -1e-17  # an entry rounding to just below 0
    assert torch.equal(fr_distance(nudged, q), fisher_rao_distance(nudged, q))
    assert torch.isfinite(fr_distance(nudged, q)).all()
    bad = p.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(FrmarginError):
        fisher_rao_distance(bad, q)
    d = fr_distance(bad, q)
    assert torch.isnan(d[3]) and torch.isfinite(d[torch.arange(100) != 3]).all()


# --------------------------------------------------------------------------- lower bound


@pytest.mark.parametrize(
    "p, q",
    [
        (torch.tensor([[0.5, 0.5]]), torch.tensor([[0.2, 0.3, 0.5]])),  # rows of different lengths
        (torch.full((3, 2), 0.5), torch.full((2, 2), 0.5)),  # batches that do not broadcast
    ],
    ids=["classes", "batch"],
)
def test_distance_of_mismatched_shapes_is_an_argument_error(p, q):
    with pytest.raises(FrmarginError, match=r"argument 'q'.*shape"):
        fisher_rao_distance(p, q)


def test_lower_bound_binary_closed_form():
    py = torch.linspace(0.5, 0.999, 50, dtype=torch.float64)
    p = torch.stack([1 - py, py], -1)
    expected = 2 * torch.asin(py.sqrt()) - math.pi / 2
    assert_close(margin_lower_bound(p), expected, EXACT, EXACT, "binary LB = 2 asin(sqrt p_y) - pi/2")
    assert_close(
        margin_lower_bound(p, torch.ones(50, dtype=torch.long)), expected, EXACT, EXACT, "binary LB, explicit source"
    )


def test_lower_bound_is_zero_off_the_argmax():
    p = dirichlet(100, 5, 8)
    second = p.argsort(-1)[:, -2]
    assert_close(margin_lower_bound(p, second), torch.zeros(100), 0.0, 0.0, "LB with source = runner-up")


LB_CASES = [
    ([0.6, 0.3, 0.1], 0),
    ([0.4, 0.35, 0.15, 0.1], 0),
    ([0.1, 0.2, 0.7], 2),
    ([0.45, 0.05, 0.05, 0.45 - 1e-3, 1e-3], 0),
]


@pytest.mark.parametrize("p, y", LB_CASES, ids=[str(i) for i in range(len(LB_CASES))])
def test_lower_bound_is_the_distance_to_the_boundary(p, y):
    """LB is the exact FR distance to {q: y no longer the strict argmax}: sampled boundary
    points are never closer, and the best of them comes close."""
    lb = float(margin_lower_bound(torch.tensor([p], dtype=torch.float64), torch.tensor([y]))[0])
    sampled = ref.brute_lower_bound(p, y)
    assert sampled >= lb - 1e-12, f"boundary point at {sampled} closer than LB {lb}"
    assert sampled <= lb + 0.02, f"LB {lb} far below the sampled boundary distance {sampled}"


def test_lower_bound_below_every_predicted_path_and_tight_for_runner_up():
    p = dirichlet(100, 6, 9, alpha=0.5)
    y = p.argmax(-1)
    lb = margin_lower_bound(p, y)
    for k in range(6):
        keep = y != k
        length, _ = predicted_path(p[keep], y[keep], torch.full((int(keep.sum()),), k))
        assert (length - lb[keep]).min() >= -1e-12, f"predicted path to {k} shorter than LB"
    # two-class support: the runner-up path is the geodesic to the boundary
    q = dirichlet(50, 2, 10)
    q = torch.cat([q * (1 - 1e-12), torch.full((50, 3), 1e-12 / 3, dtype=torch.float64)], -1)
    y, k = q.argmax(-1), q.argsort(-1)[:, -2]
    length, hit = predicted_path(q, y, k)
    assert_close(length, margin_lower_bound(q, y), 1e-6, 1e-9, "runner-up path length vs LB when p_y + p_2 = 1")
    assert torch.equal(hit, k)


# --------------------------------------------------------------------------- predicted path


RULE_CASES = [  # p, source, target, first hit
    ([0.5, 0.3, 0.2], 0, 2, 2),  # p_1 = 0.3 < (0.5 + 0.2) / 2: direct
    ([0.5, 0.1, 0.4], 0, 1, 2),  # p_2 = 0.4 > 0.3: shielded by 2
    ([0.4, 0.05, 0.3, 0.25], 0, 1, 2),  # two shields, the larger wins
    ([0.4, 0.3, 0.3], 0, 1, 1),  # runner-up target is never shielded
    ([0.1, 0.6, 0.2, 0.1], 1, 3, 3),  # p_2 = 0.2 < 0.35: direct
    ([0.1, 0.6, 0.29, 0.01], 1, 3, 3),  # 0.29 < 0.305: direct
    ([0.08, 0.6, 0.31, 0.01], 1, 3, 2),  # 0.31 > 0.305: shielded (sums to 1)
]


@pytest.mark.parametrize("p, y, k, hit", RULE_CASES, ids=[str(i) for i in range(len(RULE_CASES))])
def test_predicted_path_decision_rule_and_quadrature(p, y, k, hit):
    length, first = predicted_path(torch.tensor([p], dtype=torch.float64), torch.tensor([y]), torch.tensor([k]))
    assert int(first[0]) == hit, f"first hit {int(first[0])}, expected {hit} for p={p}"
    ref_len, ref_hit = ref.simplex_flow(p, y, k)
    assert ref_hit == hit
    assert_close(length, torch.tensor([ref_len], dtype=torch.float64), QUAD, QUAD, f"length vs quadrature, p={p}")


def test_predicted_path_random_vs_quadrature():
    p = dirichlet(40, 5, 11, alpha=0.7)
    y = p.argmax(-1)
    gen = torch.Generator().manual_seed(12)
    k = (y + torch.randint(1, 5, (40,), generator=gen)) % 5
    length, hit = predicted_path(p, y, k)
    refs = [ref.simplex_flow(p[i].tolist(), int(y[i]), int(k[i])) for i in range(40)]
    assert_close(
        length, torch.tensor([r[0] for r in refs], dtype=torch.float64), QUAD, QUAD, "predicted length vs quadrature"
    )
    assert hit.tolist() == [r[1] for r in refs], "first hit vs the simplex flow"


def test_predicted_path_off_argmax_and_vectorization():
    p = dirichlet(30, 4, 13)
    y = p.argsort(-1)[:, -2]  # not the argmax
    k = (y + 1) % 4
    length, hit = predicted_path(p, y, k)
    assert_close(length, torch.zeros(30), 0.0, 0.0, "length when source is not the argmax")
    assert torch.equal(hit, p.argmax(-1))
    # vectorized = row by row
    y = p.argmax(-1)
    k = (y + 2) % 4
    length, hit = predicted_path(p, y, k)
    rows = [predicted_path(p[i : i + 1], y[i : i + 1], k[i : i + 1]) for i in range(30)]
    assert_close(length, torch.cat([r[0] for r in rows]), 0.0, 0.0, "vectorized vs row-by-row length")
    assert torch.equal(hit, torch.cat([r[1] for r in rows]))


def test_predicted_path_rejects_target_equal_source():
    with pytest.raises(FrmarginError, match="target"):
        predicted_path(torch.tensor([[0.6, 0.4]]), torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(FrmarginError, match="source"):
        predicted_path(torch.tensor([[0.6, 0.4]]), torch.tensor([2]), torch.tensor([0]))
