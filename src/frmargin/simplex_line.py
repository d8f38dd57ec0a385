"""Straight lines on the probability simplex: the predictor of the converged tracer.

Where the Jacobian is a submersion, the natural-gradient flow of log p_y - log p_k moves p
along a straight line (p_y falls, p_k rises, the rest stay; METHOD.md 4b), so the tracer
predicts its next point on the line p + t d through the current p along the current p-space
velocity d, at a chosen Fisher-Rao distance, and lets a corrector pull the network onto it.
Shapes: (m, C) float64 rows.
"""

from __future__ import annotations

import torch

from .geometry import fisher_rao_distance

BISECTION_ITERS = 60
#: components whose share of the line's Fisher speed is below this are numerical noise of the
#: solve (classes with p ~ 1e-12 next to a confident prediction): they may not end the line
NEGLIGIBLE_SPEED = 1e-10
#: the least Fisher-Rao length a last step aims past the class boundary
MIN_BEYOND = 1e-4
#: such components are kept above this fraction of their start value
NEGLIGIBLE_FLOOR = 0.5


class SimplexLine:
    """The line p + t d through p (m, C) along a p-space velocity d (m, C), sum(d) = 0."""

    def __init__(self, p: torch.Tensor, d: torch.Tensor) -> None:
        self.p = p
        self.d = d
        share = d.square() / p.clamp_min(1e-300)
        self.noise = share <= NEGLIGIBLE_SPEED * share.sum(-1, keepdim=True)
        ratio = torch.where((d < 0) & ~self.noise, p / (-d).clamp_min(1e-300), torch.full_like(p, float("inf")))
        self.t_max = ratio.min(-1).values * (1 - 1e-9)

    def at(self, t: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Points at t (m,), clipped to the simplex."""
        p, d, noise = (self.p, self.d, self.noise) if rows is None else (self.p[rows], self.d[rows], self.noise[rows])
        q = p + t[:, None] * d
        q = torch.where(noise, torch.maximum(q, NEGLIGIBLE_FLOOR * p), q).clamp_min(0.0)
        return q / q.sum(-1, keepdim=True)

    def distance(self, t: torch.Tensor) -> torch.Tensor:
        """Fisher-Rao distance from p to the point at t, (m,)."""
        return fisher_rao_distance(self.p, self.at(t))

    def logit_change(self, t: torch.Tensor) -> torch.Tensor:
        """Largest |change of a log-probability| from p to the point at t, (m,)."""
        q = self.at(t)
        return (q.clamp_min(1e-300).log() - self.p.clamp_min(1e-300).log()).abs().amax(-1)

    def step(self, fr: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
        """Largest t <= t_max with distance(t) <= fr and logit_change(t) <= logit."""
        lo = torch.zeros_like(fr)
        hi = self.t_max.clone()
        hi = torch.where(torch.isfinite(hi), hi, torch.ones_like(hi))
        # grow hi until it reaches past a limit when the line is unbounded
        for _ in range(200):
            grow = ~torch.isfinite(self.t_max) & (self.distance(hi) <= fr) & (self.logit_change(hi) <= logit)
            if not grow.any():
                break
            hi = torch.where(grow, 2 * hi, hi)
        inside = (self.distance(hi) <= fr) & (self.logit_change(hi) <= logit)
        for _ in range(BISECTION_ITERS):
            mid = 0.5 * (lo + hi)
            far = (self.distance(mid) > fr) | (self.logit_change(mid) > logit)
            hi = torch.where(far, mid, hi)
            lo = torch.where(far, lo, mid)
        return torch.where(inside, hi, lo)

    def crossing(self, top: torch.Tensor) -> torch.Tensor:
        """First t > 0 where some class c != top ties with ``top`` (inf where none does), (m,)."""
        p, d = self.p, self.d
        pt = p.gather(1, top[:, None])
        dt = d.gather(1, top[:, None])
        closing = d - dt
        t = torch.where(closing > 0, (pt - p) / closing.clamp_min(1e-300), torch.full_like(p, float("inf")))
        return t.scatter(1, top[:, None], float("inf")).clamp_min(0.0).min(-1).values

    def overtake(self, k: torch.Tensor) -> torch.Tensor:
        """Smallest t at which class k is at least every other class (inf if never), (m,)."""
        p, d = self.p, self.d
        pk = p.gather(1, k[:, None])
        dk = d.gather(1, k[:, None])
        ahead = p > pk
        closing = dk - d
        t = torch.where(ahead, torch.where(closing > 0, (p - pk) / closing.clamp_min(1e-300), torch.full_like(p, float("inf"))), torch.zeros_like(p))
        return t.scatter(1, k[:, None], 0.0).max(-1).values

    def beyond(self, t_star: torch.Tensor, fraction: float) -> torch.Tensor:
        """t at FR distance (1 + fraction) * distance(t_star), and at least MIN_BEYOND past the
        boundary (a path sitting on a tie must still cross it), within t_max."""
        d_star = self.distance(t_star)
        target = torch.maximum(d_star * (1 + fraction), d_star + MIN_BEYOND)
        huge = torch.full_like(target, float("inf"))
        return torch.minimum(self.step(target, huge), self.t_max)


SEGMENT_PIECES = 32


def segment_length(pa: torch.Tensor, pb: torch.Tensor, pieces: int = SEGMENT_PIECES) -> torch.Tensor:
    """Fisher-Rao length of the straight segment pa -> pb in p-space, (m,).

    The sum of closed-form chord distances over ``pieces`` equal sub-segments; it converges
    from below (error O(pieces^-2)) and is never below the chord d_FR(pa, pb).
    """
    t = torch.linspace(0.0, 1.0, pieces + 1, dtype=torch.float64, device=pa.device)
    pts = pa[:, None, :] + t[None, :, None] * (pb - pa)[:, None, :]
    pts = pts.clamp_min(0.0)
    pts = pts / pts.sum(-1, keepdim=True)
    return fisher_rao_distance(pts[:, :-1], pts[:, 1:]).sum(-1)
