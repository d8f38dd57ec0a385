"""Damped solves (frmargin.solve) against dense float64 linear algebra on random J and p."""

from __future__ import annotations

import pytest
import torch

import reference as ref
from conftest import assert_close
from frmargin.errors import FrmarginError
from frmargin.solve import (
    cg_solve,
    coefficient_solve,
    exact_solve,
    fisher_weights,
    krylov_largest_eigenvalue,
    largest_eigenvalue,
    resolve_damping,
)

F64 = 1e-10  # low-rank algebra vs dense solve, well-conditioned, float64
CG = 1e-7  # CG to rtol 1e-12 vs dense solve
KRYLOV = 1e-8  # Rayleigh-Ritz on C vectors vs eigvalsh

# (B, C, D, lam): D >> C, D ~ C, D < C (rank-deficient J)
CASES = [(4, 5, 32, 1e-3), (3, 10, 12, 1e-2), (3, 6, 3, 1e-1), (2, 3, 8, 1e-6)]
IDS = [f"C{c}-D{d}-lam{lam:g}" for _, c, d, lam in CASES]


def problem(B: int, C: int, D: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    J = torch.randn(B, C, D, generator=gen, dtype=torch.float64)
    p = torch.softmax(2 * torch.randn(B, C, generator=gen, dtype=torch.float64), -1)
    g = torch.randn(B, D, generator=gen, dtype=torch.float64)  # not in the row space of J
    M = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    G = J.transpose(-1, -2) @ M @ J
    return J, p, g, G


def test_fisher_weights():
    p = torch.softmax(torch.randn(5, 4, dtype=torch.float64), -1)
    expected = torch.stack([torch.diag(q) - torch.outer(q, q) for q in p])
    assert_close(fisher_weights(p), expected, 0.0, 1e-15, "M = diag p - p p^T")


@pytest.mark.parametrize("B, C, D, lam", CASES, ids=IDS)
def test_largest_eigenvalue_vs_dense(B, C, D, lam):
    J, p, g, G = problem(B, C, D, 1)
    K = J @ J.transpose(-1, -2)
    expected = ref.largest_eigenvalue(G)
    assert_close(largest_eigenvalue(fisher_weights(p), K), expected, F64, 0.0, "lambda_max(M K) vs eig(G)")
    mv = lambda v: (G @ v[:, :, None])[:, :, 0]  # noqa: E731
    assert_close(krylov_largest_eigenvalue(mv, g, C), expected, KRYLOV, 0.0, "Krylov lambda_max vs eig(G)")


@pytest.mark.parametrize("B, C, D, lam", CASES, ids=IDS)
def test_exact_solve_vs_dense(B, C, D, lam):
    J, p, g, G = problem(B, C, D, 2)
    lam_t = torch.full((B,), lam, dtype=torch.float64)
    expected = ref.damped_solve(G, g, lam_t)
    scale = expected.abs().amax()
    assert_close(exact_solve(J, p, g, lam_t), expected, F64, F64 * scale, "exact_solve vs dense, random g")
    # g = J^T a in the row space: the C x C coefficient system alone
    a = torch.randn(B, C, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    a = a - a.mean(-1, keepdim=True)
    K = J @ J.transpose(-1, -2)
    w = coefficient_solve(fisher_weights(p), K, a, lam_t)
    gr = (J.transpose(-1, -2) @ a[:, :, None])[:, :, 0]
    expected = ref.damped_solve(G, gr, lam_t)
    assert_close(
        (J.transpose(-1, -2) @ w[:, :, None])[:, :, 0],
        expected,
        F64,
        F64 * expected.abs().amax(),
        "J^T (M K + lam I)^-1 a vs dense (G + lam I)^-1 J^T a",
    )


@pytest.mark.parametrize("B, C, D, lam", CASES[:3], ids=IDS[:3])
def test_cg_solve_vs_dense(B, C, D, lam):
    _J, _p, g, G = problem(B, C, D, 3)
    lam_t = torch.full((B,), lam, dtype=torch.float64)
    mv = lambda v: (G @ v[:, :, None])[:, :, 0]  # noqa: E731
    v, used = cg_solve(mv, g, lam_t, rtol=1e-12, maxiter=4 * C)
    expected = ref.damped_solve(G, g, lam_t)
    assert_close(v, expected, CG, CG * expected.abs().amax(), "CG vs dense")
    assert (used <= 2 * C).all(), f"CG used {used.tolist()} products, expected about C = {C} (at most 2 C)"


def test_resolve_damping():
    lam_max = torch.tensor([2.0, 0.0, 5.0], dtype=torch.float64)
    assert_close(
        resolve_damping(1e-3, "absolute", lam_max), torch.full((3,), 1e-3, dtype=torch.float64), 0, 0, "absolute"
    )
    rel = resolve_damping(1e-3, "relative", lam_max)
    assert_close(rel[[0, 2]], torch.tensor([2e-3, 5e-3], dtype=torch.float64), 1e-15, 0, "relative")
    assert rel[1] > 0, "relative damping must stay > 0 where G = 0"
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(FrmarginError, match="damping"):
            resolve_damping(bad, "absolute", lam_max)
    with pytest.raises(FrmarginError, match="damping_mode"):
        resolve_damping(1e-3, "scaled", lam_max)
