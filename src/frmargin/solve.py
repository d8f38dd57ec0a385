"""Damped solves with the data-space Fisher G = J^T M J (docs/method.md, the data-space Fisher).

Shapes: B batch, C classes, D input dimensions. Small C x C algebra runs in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import bad_argument

__all__ = [
    "DAMPING_MODES",
    "cg_solve",
    "coefficient_solve",
    "exact_solve",
    "fisher_factor",
    "fisher_lsq",
    "fisher_weights",
    "krylov_largest_eigenvalue",
    "largest_eigenvalue",
    "largest_eigenvalue_factored",
    "resolve_damping",
]

DAMPING_MODES = ("absolute", "relative")


def fisher_weights(p: torch.Tensor) -> torch.Tensor:
    """M = diag(p) - p p^T, (B, C) -> (B, C, C) in float64."""
    p = p.to(torch.float64)
    return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]


def largest_eigenvalue(M: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue of M K (= of G), (B,), via the symmetric M^1/2 K M^1/2."""
    evals, evecs = torch.linalg.eigh(M)
    root = evecs @ torch.diag_embed(evals.clamp_min(0).sqrt()) @ evecs.transpose(-1, -2)
    sym = root @ K @ root
    return torch.linalg.eigvalsh(0.5 * (sym + sym.transpose(-1, -2)))[:, -1].clamp_min(0)


def largest_eigenvalue_factored(Lt: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """As ``largest_eigenvalue``, from the factor L^T of M = L L^T (``fisher_factor``): the
    largest eigenvalue (B,) of L^T K L, without an eigendecomposition of M."""
    A = Lt @ K @ Lt.transpose(-1, -2)
    return torch.linalg.eigvalsh(0.5 * (A + A.transpose(-1, -2)))[:, -1].clamp_min(0)


def resolve_damping(damping: float, damping_mode: str, lam_max: torch.Tensor) -> torch.Tensor:
    """Turn a damping option into a per-row absolute lam, (B,) float64.

    ``relative`` scales by the largest eigenvalue of G (floored so lam > 0 even where G = 0).
    """
    if damping_mode not in DAMPING_MODES:
        raise bad_argument("damping_mode", damping_mode, f"one of {DAMPING_MODES}")
    if not (damping > 0) or damping != damping or damping == float("inf"):
        raise bad_argument("damping", damping, "a finite number > 0")
    lam_max = lam_max.to(torch.float64)
    if damping_mode == "absolute":
        return torch.full_like(lam_max, float(damping))
    tiny = torch.finfo(torch.float64).tiny ** 0.5
    return damping * lam_max.clamp_min(tiny)


def coefficient_solve(M: torch.Tensor, K: torch.Tensor, a: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Solve (M K + lam I) w = a, (B, C) float64.

    Then (G + lam I)^{-1} J^T a = J^T w.
    """
    C = K.shape[-1]
    eye = torch.eye(C, dtype=torch.float64, device=K.device)
    A = M @ K + lam[:, None, None] * eye
    return torch.linalg.solve(A, a.to(torch.float64))


def fisher_factor(p: torch.Tensor) -> torch.Tensor:
    """L^T with M = L L^T: L^T = (I - s s^T) diag(s), s = sqrt(p), (B, C, C) float64.

    (L^T J) are the centred logit-gradient rows scaled by sqrt(p_c): the Fisher least-squares
    problems below stay well scaled when some p_c are tiny (a confident prediction).
    """
    s = p.to(torch.float64).clamp_min(0).sqrt()
    C = s.shape[-1]
    eye = torch.eye(C, dtype=torch.float64, device=s.device)
    return (eye - s[:, :, None] * s[:, None, :]) * s[:, None, :]


def fisher_lsq(Lt: torch.Tensor, K: torch.Tensor, r: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """w = (M K + lam I)^{-1} M r through the symmetric system (L^T K L + lam I) y = L^T r.

    Then dx = J^T w minimizes (J dx - r)^T M (J dx - r) + lam |dx|^2: the damped Fisher step
    towards a logit change r (unchanged by adding a constant to r). (B, C) float64.
    """
    C = K.shape[-1]
    eye = torch.eye(C, dtype=torch.float64, device=K.device)
    A = Lt @ K @ Lt.transpose(-1, -2)
    A = 0.5 * (A + A.transpose(-1, -2)) + lam[:, None, None] * eye
    rhs = Lt @ r.to(torch.float64)[:, :, None]
    try:
        y = torch.linalg.solve(A, rhs)
    except torch.linalg.LinAlgError:
        # a rank-1 or zero K (a perturbation model with K = 1 directions, a flat spot) under a
        # relative damping of 1e-14 leaves LU a zero pivot: solve through the eigenvalues of the
        # symmetric A, none below lam (what the damping asks for)
        e, V = torch.linalg.eigh(A)
        e = torch.maximum(e, lam[:, None])
        y = V @ ((V.transpose(-1, -2) @ rhs) / e[:, :, None])
    return (Lt.transpose(-1, -2) @ y)[:, :, 0]


def exact_solve(J: torch.Tensor, p: torch.Tensor, g: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(G + lam I)^{-1} g for any g, exactly, with the C rows of J.

    g splits into J^T a (a = K^+ J g) plus r orthogonal to the rows of J, which G ignores:
    (G + lam I)^{-1} g = J^T (M K + lam I)^{-1} a + r / lam.

    Args:
        J: (B, C, D) Jacobian rows; p: (B, C); g: (B, D); lam: (B,).

    Returns:
        (B, D) in float64.
    """
    J64 = J.to(torch.float64)
    g64 = g.to(torch.float64)
    K = J64 @ J64.transpose(-1, -2)
    Jg = (J64 @ g64[:, :, None])[:, :, 0]
    a = torch.linalg.lstsq(K, Jg[:, :, None], driver="gelsd" if K.device.type == "cpu" else None)
    a = a.solution[:, :, 0]
    r = g64 - (J64.transpose(-1, -2) @ a[:, :, None])[:, :, 0]
    w = coefficient_solve(fisher_weights(p), K, a, lam)
    return (J64.transpose(-1, -2) @ w[:, :, None])[:, :, 0] + r / lam[:, None]


def cg_solve(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    lam: torch.Tensor,
    *,
    rtol: float = 1e-10,
    maxiter: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched conjugate gradients on (G + lam I) v = b, each row stopping on its own.

    Args:
        matvec: v (B, D) -> G v (B, D).
        b: (B, D) right-hand sides; lam: (B,) damping.
        rtol: stop a row when |residual| <= rtol |b|.

    Returns:
        v (B, D) in b's dtype, and the number of matvecs each row used (B,) int64.
    """
    lam = lam.to(b.dtype)[:, None]
    x = torch.zeros_like(b)
    r = b.clone()
    d = r.clone()
    rs = (r * r).sum(-1)
    stop = rs.sqrt() <= rtol * b.norm(dim=-1)
    used = torch.zeros(b.shape[0], dtype=torch.int64, device=b.device)
    for _ in range(maxiter):
        if stop.all():
            break
        Ad = matvec(d) + lam * d
        used += (~stop).long()
        dAd = (d * Ad).sum(-1)
        alpha = torch.where(stop | (dAd <= 0), torch.zeros_like(rs), rs / dAd.where(dAd > 0, torch.ones_like(dAd)))
        x = x + alpha[:, None] * d
        r = r - alpha[:, None] * Ad
        rs_new = (r * r).sum(-1)
        stop = stop | (rs_new.sqrt() <= rtol * b.norm(dim=-1)) | (dAd <= 0)
        beta = torch.where(stop, torch.zeros_like(rs), rs_new / rs.where(rs > 0, torch.ones_like(rs)))
        d = r + beta[:, None] * d
        rs = rs_new
    return x, used


def krylov_largest_eigenvalue(
    matvec: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor, k: int, seed: int = 0
) -> torch.Tensor:
    """Largest eigenvalue of G by Rayleigh-Ritz on a k-dimensional Krylov space, (B,).

    G has at most C - 1 distinct nonzero eigenvalues, so k = C matvecs are exact in exact
    arithmetic. Used by CG, which has no Jacobian rows, for relative damping.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(like.shape, generator=gen, dtype=torch.float64).to(like.device)
    basis: list[torch.Tensor] = []
    images: list[torch.Tensor] = []
    for _ in range(k):
        before = v.norm(dim=-1, keepdim=True)
        for q in basis:
            v = v - (v * q).sum(-1, keepdim=True) * q
        norm = v.norm(dim=-1, keepdim=True)
        # an exhausted Krylov space (rank of G reached) adds a zero column, harmless below
        alive = norm > 1e-10 * before.clamp_min(torch.finfo(torch.float64).tiny)
        v = torch.where(alive, v / norm.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(v))
        basis.append(v)
        Gv = matvec(v.to(like.dtype)).to(torch.float64)
        images.append(Gv)
        v = Gv
    Q = torch.stack(basis, -1)
    T = Q.transpose(-1, -2) @ torch.stack(images, -1)
    T = 0.5 * (T + T.transpose(-1, -2))
    return torch.linalg.eigvalsh(T)[:, -1].clamp_min(0)
