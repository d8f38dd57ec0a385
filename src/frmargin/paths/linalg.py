"""Small batched tensor helpers of the steppers. Shapes: m rows, V classes, D input dimensions."""

from __future__ import annotations

import torch


def log_probs(z: torch.Tensor) -> torch.Tensor:
    """log softmax (m, V) in float64."""
    return torch.log_softmax(z.to(torch.float64), -1)


def gap(z: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """z_top - max_{c != top} z_c in float64, (m,) for z (m, C), top (m,).

    Example:
        >>> gap(torch.tensor([[2.0, 0.5, 1.0]]), torch.tensor([0]))
        tensor([1.], dtype=torch.float64)
    """
    z = z.to(torch.float64)
    zt = z.gather(1, top[:, None])[:, 0]
    return zt - z.scatter(1, top[:, None], -float("inf")).max(-1).values


def pair_gap(v: torch.Tensor, top: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """v_top - v_k, (m,) for v (m, V)."""
    return (v.gather(1, top[:, None]) - v.gather(1, k[:, None]))[:, 0]


def bmv(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A v for A (m, R, Q), v (m, Q): (m, R)."""
    return (A @ v[:, :, None])[:, :, 0]


def rows_combination(w: torch.Tensor, J: torch.Tensor) -> torch.Tensor:
    """J^T w for J (m, V, D), w (m, V): (m, D), reading J in its contiguous layout."""
    return (w[:, None, :] @ J)[:, 0, :]


def centred(dz: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """dz (m, V) minus its value at the most probable class of p (m, V): M dz is unchanged
    (M 1 = 0), and the large common shift that logit velocities carry near a confident
    prediction no longer cancels catastrophically in M dz."""
    return dz - dz.gather(1, p.argmax(-1, keepdim=True))


def into_box(x: torch.Tensor, box: tuple[float, float] | None) -> torch.Tensor:
    """x clamped to the box (lo, hi), or x itself without a box."""
    return x if box is None else x.clamp(*box)


def frozen(x: torch.Tensor, v: torch.Tensor, box: tuple[float, float]) -> torch.Tensor:
    """Coordinates (m, D) of x (m, *S) at a bound of the box that the direction v (m, D)
    pushes outward."""
    lo, hi = box
    xf = x.reshape(x.shape[0], -1)
    return ((xf <= lo) & (v < 0)) | ((xf >= hi) & (v > 0))


def broyden_update(J: torch.Tensor, K: torch.Tensor, rows: torch.Tensor, dx: torch.Tensor, dz: torch.Tensor) -> None:
    """Broyden's secant update of the corrector's Jacobian, in place, on the rows where ``rows``
    (m,) is True: J += (dz - J dx) dx^T / |dx|^2, with K = J J^T (m, V, V) kept in step by
    the matching rank-2 update. J (m, V, D) float64; dx (m, *S) the corrector's last move, dz
    (m, V) the logit change the network made (other rows are ignored). The updated J maps dx
    onto dz, so the next correction sees the curvature met on the way; it is unchanged on the
    complement of dx, so columns frozen by a box (zero in J, never moved) stay zero."""
    s = dx.reshape(dx.shape[0], -1).to(torch.float64)
    ss = (s * s).sum(-1)
    upd = rows & (ss > 0) & torch.isfinite(dz).all(-1)
    if not upd.any():
        return
    s = torch.where(upd[:, None], s, torch.zeros_like(s))
    Js = bmv(J, s)
    u = torch.where(upd[:, None], (dz.to(torch.float64) - Js) / ss.clamp_min(1e-300)[:, None], torch.zeros_like(Js))
    J.baddbmm_(u[:, :, None], s[:, None, :])
    uJs = u[:, :, None] * Js[:, None, :]
    K += uJs + uJs.transpose(-1, -2) + ss[:, None, None] * u[:, :, None] * u[:, None, :]
