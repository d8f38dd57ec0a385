"""The spectrum of the data-space Fisher G_x = J^T M J: its top eigenpairs, exact, from C x C algebra.

G_x (D x D) has rank at most C - 1. With M = diag(p) - p p^T = L L^T (``solve.fisher_factor``
gives L^T), A = L^T J is C x D, G_x = A^T A, and S = A A^T = L^T J J^T L (C x C) has the same
nonzero eigenvalues; an eigenvector u of S with eigenvalue lam > 0 gives the unit eigenvector
v = A^T u / sqrt(lam) of G_x (the documentation's method page, "The Fisher spectrum"; M^{1/2}
stands for any such factor).
One Jacobian per input, and no D x D matrix: an ImageNet input's G_x would hold 2.3e10 entries.

Shapes: B inputs, S the shape of one input, D = prod(S), C classes (V of the lumped view,
``top_classes + 1``), K eigenpairs, N the columns of the rows handed to ``spectrum_from_jacobian``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .errors import bad_argument
from .fisher import JACOBIAN_ROUTES, logits_and_jacobian
from .paths.classes import FullView, class_view
from .solve import fisher_factor
from .validation import call_model, check_images, check_logits, check_model

__all__ = ["Spectrum", "compute_spectrum", "fisher_spectrum", "spectrum_from_jacobian"]

#: an eigenvalue at most this many float64 epsilons (times V) of the largest counts as zero
RANK_EPS = 8.0
#: |v . grad log p_top| below this share of |grad log p_top| leaves the sign to the fallback rule
ORIENT_EPS = 1e-10


class Spectrum(NamedTuple):
    """The top eigenpairs of G_x per input (unpacks as ``values, vectors``).

    Attributes:
        values: (B, K) float64 eigenvalues, largest first; exact zeros past the rank of G_x.
        vectors: (B, K, *S) float64 orthonormal eigenvectors, each oriented so that a step along
            it lowers the log-probability of the predicted class (see ``spectrum_from_jacobian``).
    """

    values: torch.Tensor
    vectors: torch.Tensor


def fisher_spectrum(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    k: int = 1,
    *,
    top_classes: int | None = None,
    route: str = "auto",
) -> Spectrum:
    """The top-``k`` eigenvalues and unit eigenvectors of G_x = J^T (diag p - p p^T) J, exact.

    The argument checks are those of ``DataFisher`` (a model in eval mode that takes ``x`` and
    returns logits, a finite floating ``x``), all made before any Jacobian is computed.

    Args:
        model: maps (B, *S) to logits (B, C), in eval mode.
        x: (B, *S) inputs.
        k: eigenpairs per input, 1 <= k <= C - 1 (top_classes with ``top_classes``) and <= D.
        top_classes: the lumped view of the tracer (``paths.classes``): per input the M classes
            most probable at x and one class lumping the rest; G_x is the Fisher information of
            that coarse distribution (V = M + 1 Jacobian rows instead of C, eigenvalues at most
            the full ones). None (or M >= C - 1): every class.
        route: how the Jacobian rows are computed (``fisher.JACOBIAN_ROUTES``).

    Returns:
        :class:`Spectrum`: values (B, K) and vectors (B, K, *S), both float64.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
        >>> values, vectors = fisher_spectrum(model.eval(), torch.randn(2, 6, dtype=torch.float64), k=2)
        >>> values.shape, vectors.shape
        (torch.Size([2, 2]), torch.Size([2, 2, 6]))
    """
    check_model(model)
    x = check_images(x, "x")
    C = check_logits(call_model(model, x[:1]), 1).shape[-1]
    if route not in JACOBIAN_ROUTES:
        raise bad_argument("route", route, f"one of {JACOBIAN_ROUTES}")
    if top_classes is not None and (isinstance(top_classes, bool) or not isinstance(top_classes, int)):
        raise bad_argument("top_classes", top_classes, "an integer >= 2 or None")
    if top_classes is not None and top_classes < 2:
        raise bad_argument("top_classes", top_classes, "an integer >= 2 (the predicted class and one more) or None")
    lumped = top_classes is not None and top_classes < C - 1
    most = min(top_classes if lumped and top_classes is not None else C - 1, x[0].numel())
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= most:
        view = f"top_classes={top_classes}" if lumped else f"{C} classes"
        raise bad_argument("k", k, f"an integer in [1, {most}]: G_x has rank at most {most} ({view}, D={x[0].numel()})")
    return compute_spectrum(model, x, k, top_classes, route)


def compute_spectrum(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    k: int,
    top_classes: int | None = None,
    route: str = "auto",
) -> Spectrum:
    """``fisher_spectrum`` without the argument checks (for callers that made them)."""
    with torch.no_grad():
        z0 = model(x.detach())
    top = z0.argmax(-1)
    view = class_view(z0, top, top, top_classes)
    reduce = _reducer(view, x.shape[0]) if view.lumped else None
    z, J = logits_and_jacobian(model, x, reduce=reduce, route=route)
    p = view.probs(z, torch.arange(x.shape[0], device=z.device))
    values, vectors = spectrum_from_jacobian(J, p, k)
    return Spectrum(values, vectors.reshape(x.shape[0], k, *x.shape[1:]))


def _reducer(view: FullView, B: int) -> Callable[[torch.Tensor], torch.Tensor]:
    rows = torch.arange(B)

    def reduce(z: torch.Tensor) -> torch.Tensor:
        return view.reduce(z, rows.to(z.device))

    return reduce


def spectrum_from_jacobian(J: torch.Tensor, p: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-``k`` eigenpairs of J^T (diag p - p p^T) J from its rows, in float64.

    Any rows work: the logit Jacobian (the spectrum of G_x), those of a lumped view, or J B for
    the spectrum of B^T G_x B in the coordinates of a basis B of allowed perturbations.

    Conventions: eigenvalues in descending order; eigenvalues at most ``RANK_EPS * V * eps *
    lam_1`` are set to exactly 0 and their eigenvectors are completed by right singular
    vectors of L^T J (orthonormal, in the null space). Within a repeated eigenvalue the vectors
    are an orthonormal basis of its eigenspace (compare eigenspaces, not vectors). Each vector is
    oriented so that v . grad log p_top <= 0, p_top the largest probability of ``p`` (a step
    along v lowers it to first order); where |v . grad log p_top| is at rounding level, its
    entry of largest magnitude is positive instead.

    Args:
        J: (B, V, N) rows; p: (B, V) probabilities; k: 1 <= k <= min(V - 1, N).

    Returns:
        values (B, K) and vectors (B, K, N), float64.

    Example:
        >>> J = torch.randn(2, 3, 5, dtype=torch.float64)
        >>> values, vectors = spectrum_from_jacobian(J, torch.softmax(torch.randn(2, 3), -1), 2)
        >>> torch.allclose(vectors @ vectors.transpose(1, 2), torch.eye(2, dtype=torch.float64).expand(2, 2, 2))
        True
    """
    B, V, N = J.shape
    if not 1 <= k <= min(V - 1, N):
        raise bad_argument("k", k, f"an integer in [1, {min(V - 1, N)}] for {V} rows of {N} columns")
    A = fisher_factor(p) @ J.to(torch.float64)  # (B, V, N), G = A^T A
    S = A @ A.transpose(-1, -2)
    lam, U = torch.linalg.eigh(0.5 * (S + S.transpose(-1, -2)))
    lam, U = lam.flip(-1)[:, :k], U.flip(-1)[:, :, :k]  # (B, K), (B, V, K)
    zero = lam <= RANK_EPS * V * torch.finfo(torch.float64).eps * lam[:, :1].clamp_min(0)
    lam = torch.where(zero, torch.zeros_like(lam), lam)
    vectors = (A.transpose(-1, -2) @ U) / lam.clamp_min(torch.finfo(torch.float64).tiny).sqrt()[:, None, :]
    vectors = vectors.transpose(-1, -2)  # (B, K, N)
    if zero.any():
        vectors = _complete_null(A, vectors, zero)
    # v_i . grad log p_top = sqrt(lam_i) / p_top * u_i . (L^T e_top), since grad log p_top = J^T M e_top / p_top
    w = fisher_factor(p).gather(-1, p.argmax(-1)[:, None, None].expand(B, V, 1))  # (B, V, 1) = L^T e_top
    slope = (U * w).sum(-2)  # (B, K)
    clear = (slope.abs() > ORIENT_EPS * w[:, :, 0].norm(dim=-1, keepdim=True)) & ~zero
    largest = vectors.gather(-1, vectors.abs().argmax(-1, keepdim=True))[..., 0]
    sign = torch.where(clear, -slope.sign(), torch.where(largest < 0, -1.0, 1.0).to(slope))
    return lam, vectors * sign[..., None]


def _complete_null(A: torch.Tensor, vectors: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Replace the rows of ``vectors`` at zero eigenvalues by orthonormal null vectors of A."""
    out = vectors.clone()
    for b in zero.any(-1).nonzero()[:, 0].tolist():
        r = int((~zero[b]).sum())
        Vh = torch.linalg.svd(A[b], full_matrices=False).Vh  # (min(V, N), N), rows past the rank span null(A)
        extra = Vh[r : zero.shape[1]]
        kept = out[b, :r]
        extra = extra - (extra @ kept.T) @ kept  # orthogonal to the nonzero eigenvectors, to rounding
        out[b, r:] = torch.linalg.qr(extra.T).Q.T
    return out
