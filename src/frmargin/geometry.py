"""Closed forms on the probability simplex with the Fisher-Rao metric (docs/method.md, closed forms).

All functions take probabilities ``p`` of shape (B, C) (rows on the simplex) and are
vectorized over the leading batch axis. Computations run in float64 and the results come
back in float64.
"""

from __future__ import annotations

import math

import torch

from .errors import bad_argument

__all__ = [
    "fisher_rao_distance",
    "margin_lower_bound",
    "predicted_path",
]


#: how far a probability vector may be off (negative entries, sum - 1) by rounding alone
PROB_TOL = 1e-4


def _check_simplex(p: torch.Tensor, name: str) -> torch.Tensor:
    """``p`` (float64, C on the last axis) checked to be probability vectors within ``PROB_TOL``;
    only the rounding is clamped."""
    if not torch.isfinite(p).all():
        raise bad_argument(name, "non-finite entries", "probability vectors (entries >= 0 summing to 1)")
    if (p < -PROB_TOL).any():
        raise bad_argument(name, f"an entry {p.min().item():.4g}", "probabilities >= 0 (softmax outputs, not logits)")
    sums = p.sum(-1)
    worst = (sums - 1).abs().max().item() if sums.numel() else 0.0
    if worst > PROB_TOL:
        raise bad_argument(
            name,
            f"rows summing to {sums.reshape(-1)[(sums - 1).abs().reshape(-1).argmax()].item():.6g}",
            f"probability vectors summing to 1 (within {PROB_TOL}): apply softmax to logits",
        )
    return p.clamp_min(0)


def _as_probs(p: torch.Tensor, name: str = "p") -> torch.Tensor:
    if not isinstance(p, torch.Tensor):
        p = torch.as_tensor(p)
    if p.ndim != 2 or p.shape[-1] < 2:
        raise bad_argument(name, tuple(p.shape), "shape (B, C) with C >= 2")
    return _check_simplex(p.to(torch.float64), name)


def _as_classes(c: torch.Tensor | None, B: int, C: int, name: str) -> torch.Tensor:
    c = torch.as_tensor(c)
    if c.is_floating_point() or c.dtype == torch.bool:
        raise bad_argument(name, f"dtype {c.dtype}", "integer class indices (a float such as 0.7 is not a class)")
    c = c.reshape(-1).long()
    if c.numel() != B:
        raise bad_argument(name, f"{c.numel()} entries", f"{B} (one per row of p)")
    if ((c < 0) | (c >= C)).any():
        raise bad_argument(name, c.tolist()[:10], f"class indices in [0, {C})")
    return c


def fisher_rao_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Fisher-Rao distance between categorical distributions.

    d(p, q) = 2 arccos(sum_i sqrt(p_i q_i)), computed as 4 asin(|sqrt p - sqrt q| / 2),
    which stays accurate for nearby points.

    Args:
        p, q: (B, C) probabilities (or broadcastable).

    Returns:
        (B,) float64 distances in [0, pi].

    Example:
        >>> fisher_rao_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
        tensor([3.1416], dtype=torch.float64)
    """
    p = _check_simplex(torch.as_tensor(p).to(torch.float64), "p")
    q = _check_simplex(torch.as_tensor(q).to(torch.float64), "q")
    if p.shape[-1] != q.shape[-1]:
        raise bad_argument("q", f"shape {tuple(q.shape)}", f"the classes of p: rows of length {p.shape[-1]}")
    try:
        torch.broadcast_shapes(p.shape[:-1], q.shape[:-1])
    except RuntimeError:
        raise bad_argument(
            "q", f"shape {tuple(q.shape)}", f"a batch shape broadcastable with p's {tuple(p.shape)}"
        ) from None
    return fr_distance(p, q)


def fr_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``fisher_rao_distance`` of float64 probabilities the caller made (softmax outputs,
    points on a simplex line), unchecked: the tracer's inner loops call it thousands of times,
    and the checks' host synchronisations cost more than the distance. Only rounding below 0
    is clamped, as the checked version does; a NaN stays NaN.

    Example:
        >>> fr_distance(torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0]], dtype=torch.float64))
        tensor([3.1416], dtype=torch.float64)
    """
    chord = torch.linalg.vector_norm(p.clamp_min(0).sqrt() - q.clamp_min(0).sqrt(), dim=-1)
    return 4.0 * torch.asin((chord / 2.0).clamp(max=1.0))


def margin_lower_bound(p: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
    """Simplex lower bound on the FR margin (docs/method.md, the lower bound).

    LB(p) = 2 arcsin((sqrt(p_y) - sqrt(p_(2))) / sqrt(2)), p_(2) the largest probability of
    the other classes; 0 where ``source`` is not the argmax.

    Args:
        p: (B, C) probabilities.
        source: (B,) class indices; the argmax of ``p`` if None.

    Returns:
        (B,) float64.

    Example:
        >>> margin_lower_bound(torch.tensor([[0.9, 0.1]]))  # equals 2 asin(sqrt .9) - pi/2
        tensor([0.9273], dtype=torch.float64)
    """
    p = _as_probs(p)
    B, C = p.shape
    y = p.argmax(-1) if source is None else _as_classes(source, B, C, "source")
    py = p.gather(1, y[:, None])[:, 0]
    others = p.scatter(1, y[:, None], -1.0)
    p2 = others.max(-1).values
    gap = (py.sqrt() - p2.clamp_min(0).sqrt()) / math.sqrt(2.0)
    return 2.0 * torch.asin(gap.clamp(0.0, 1.0))


def predicted_path(p: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Length and first class hit of the exact natural-gradient flow on the simplex (4b).

    Along the flow of L = log p_y - log p_k, p_y falls and p_k rises at the same rate and
    every other p_c stays fixed. The path is intercepted by the largest c with
    p_c > (p_y + p_k) / 2 (a shield); otherwise it reaches k. With r = sqrt(p_y + p_k) and
    theta0 = atan2(sqrt p_y, sqrt p_k) the FR length is 2 r (theta0 - pi/4) when direct and
    2 r (theta0 - theta1), theta1 = atan2(sqrt p_c, sqrt(p_y + p_k - p_c)), when shielded.
    Where ``source`` is not the argmax of ``p`` the length is 0 and the hit is the argmax.

    Args:
        p: (P, C) probabilities at the start of each path.
        source, target: (P,) class indices, source != target.

    Returns:
        length: (P,) float64; first_hit: (P,) int64.

    Example:
        >>> length, hit = predicted_path(torch.tensor([[0.7, 0.2, 0.1]]), torch.tensor([0]),
        ...                              torch.tensor([2]))
        >>> hit  # p_1 = 0.2 > (0.7 + 0.1) / 2 is false, so the path reaches class 2
        tensor([2])
    """
    p = _as_probs(p)
    P, C = p.shape
    y = _as_classes(source, P, C, "source")
    k = _as_classes(target, P, C, "target")
    if (y == k).any():
        raise bad_argument("target", "target == source", "a class different from source")
    py = p.gather(1, y[:, None])[:, 0]
    pk = p.gather(1, k[:, None])[:, 0]
    others = p.clone()
    others.scatter_(1, y[:, None], -1.0)
    others.scatter_(1, k[:, None], -1.0)
    pc, c = others.max(-1)
    s = py + pk
    r = s.sqrt()
    theta0 = torch.atan2(py.sqrt(), pk.sqrt())
    shielded = pc > s / 2
    theta1 = torch.where(
        shielded,
        torch.atan2(pc.clamp_min(0).sqrt(), (s - pc).clamp_min(0).sqrt()),
        torch.full_like(theta0, math.pi / 4),
    )
    length = (2.0 * r * (theta0 - theta1)).clamp_min(0.0)
    hit = torch.where(shielded, c, k)
    top = p.argmax(-1)
    not_top = top != y
    length = torch.where(not_top, torch.zeros_like(length), length)
    hit = torch.where(not_top, top, hit)
    return length, hit
