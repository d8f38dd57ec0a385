"""Straight lines on the probability simplex: the predictor of the converged tracer.

Where the Jacobian is a submersion, the natural-gradient flow of log p_y - log p_k moves p
along a straight line (p_y falls, p_k rises, the rest stay; docs/method.md, the exact flow), so the tracer
predicts its next point on the line p + t d through the current p along the current p-space
velocity d, at a chosen Fisher-Rao distance, and lets a corrector pull the network onto it.
Shapes: (m, C) float64 rows.
"""

from __future__ import annotations

import torch

from ..geometry import fr_distance

#: the step search brackets log t in [log t_max - LOG_SPAN, log t_max] (t from ~1e-100 t_max)
LOG_SPAN = 230.0
#: ... on a grid of GRID intervals, refined GRID_ROUNDS times: a relative precision of
#: LOG_SPAN / GRID^GRID_ROUNDS ~ 1e-5 in t (the step's caps are not that sharp)
GRID = 64
GRID_ROUNDS = 4
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

    def at(self, t: torch.Tensor) -> torch.Tensor:
        """Points at t (m,) -> (m, C), or at a grid t (m, G) -> (m, G, C), clipped to the simplex."""
        p, d, noise = (
            (self.p, self.d, self.noise) if t.ndim == 1 else (self.p[:, None], self.d[:, None], self.noise[:, None])
        )
        q = p + t[..., None] * d
        q = torch.where(noise, torch.maximum(q, NEGLIGIBLE_FLOOR * p), q).clamp_min(0.0)
        return q / q.sum(-1, keepdim=True)

    def distance(self, t: torch.Tensor) -> torch.Tensor:
        """Fisher-Rao distance from p to the point at t, (m,)."""
        return fr_distance(self.p, self.at(t))

    def _within(self, t: torch.Tensor, fr: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
        """distance(t) <= fr and logit_change(t) <= logit on a grid t (m, G) -> (m, G) bool."""
        q = self.at(t)
        p = self.p[:, None]
        change = (q.clamp_min(1e-300).log() - p.clamp_min(1e-300).log()).abs().amax(-1)
        return (fr_distance(p, q) <= fr[:, None]) & (change <= logit[:, None])

    def step(self, fr: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
        """Largest t <= t_max with distance(t) <= fr and logit_change(t) <= logit, (m,).

        Both grow with t (the Bhattacharyya coefficient is concave along the line), so the
        answer is bracketed on a grid of log t, refined GRID_ROUNDS times: a relative
        precision of LOG_SPAN / GRID^GRID_ROUNDS in t; 0 where even t = e^-LOG_SPAN t_max is
        too far. The log scale matters: the answer may lie many decades below t_max (a target
        class at p ~ 1e-19 next to a confident top class, whose fall bounds the line at t ~ 1).
        """
        hi = self.t_max.clone()
        hi = torch.where(torch.isfinite(hi), hi, torch.ones_like(hi))
        # grow hi until it reaches past a limit when the line is unbounded
        unbounded = ~torch.isfinite(self.t_max)
        for _ in range(200):
            if not unbounded.any():
                break
            grow = unbounded & self._within(hi[:, None], fr, logit)[:, 0]
            if not grow.any():
                break
            hi = torch.where(grow, 2 * hi, hi)
        inside = self._within(hi[:, None], fr, logit)[:, 0]
        log_hi = hi.log()
        log_lo = log_hi - LOG_SPAN
        frac = torch.linspace(0.0, 1.0, GRID + 1, dtype=torch.float64, device=hi.device)
        ok_lo = None
        for _ in range(GRID_ROUNDS):
            grid = log_lo[:, None] + frac * (log_hi - log_lo)[:, None]
            ok = self._within(grid.exp(), fr, logit)
            if ok_lo is None:
                ok_lo = ok[:, 0]
            # the last grid point within (monotone); its right neighbour is beyond
            j = (ok.long().cumprod(-1).sum(-1) - 1).clamp(0, GRID - 1)
            log_lo, log_hi = grid.gather(1, j[:, None])[:, 0], grid.gather(1, j[:, None] + 1)[:, 0]
        assert ok_lo is not None
        return torch.where(inside, hi, torch.where(ok_lo, log_lo.exp(), torch.zeros_like(hi)))

    def crossing(self, top: torch.Tensor, skip_last: bool = False) -> torch.Tensor:
        """First t > 0 where some class c != top ties with ``top`` (inf where none does), (m,).

        ``skip_last``: the last column is no class (the lumped rest of a ``LumpedView``, which
        can hold more probability than ``top``: a tie with it is no class change)."""
        p, d = self.p, self.d
        pt = p.gather(1, top[:, None])
        dt = d.gather(1, top[:, None])
        closing = d - dt
        t = torch.where(closing > 0, (pt - p) / closing.clamp_min(1e-300), torch.full_like(p, float("inf")))
        t = t.scatter(1, top[:, None], float("inf"))
        if skip_last:
            t[:, -1] = float("inf")
        return t.clamp_min(0.0).min(-1).values

    def overtake(self, k: torch.Tensor) -> torch.Tensor:
        """Smallest t at which class k is at least every other class (inf if never), (m,)."""
        p, d = self.p, self.d
        pk = p.gather(1, k[:, None])
        dk = d.gather(1, k[:, None])
        ahead = p > pk
        closing = dk - d
        t = torch.where(
            ahead,
            torch.where(closing > 0, (p - pk) / closing.clamp_min(1e-300), torch.full_like(p, float("inf"))),
            torch.zeros_like(p),
        )
        return t.scatter(1, k[:, None], 0.0).max(-1).values

    def beyond(self, t_star: torch.Tensor, fraction: float) -> torch.Tensor:
        """t at FR distance (1 + fraction) * distance(t_star), and at least MIN_BEYOND past the
        boundary (a path sitting on a tie must still cross it), within t_max."""
        d_star = self.distance(t_star)
        target = torch.maximum(d_star * (1 + fraction), d_star + MIN_BEYOND)
        huge = torch.full_like(target, float("inf"))
        return torch.minimum(self.step(target, huge), self.t_max)


#: the p-velocity is taken as the flow's line direction e_k - e_top when its cosine with it
#: (in the Fisher metric at p) is at least 1 - ALIGNED
ALIGNED = 1e-6


def anchored_line(
    p: torch.Tensor,
    pdot: torch.Tensor,
    p0: torch.Tensor,
    top: torch.Tensor,
    k: torch.Tensor,
    allowed: torch.Tensor | None = None,
) -> tuple[SimplexLine, torch.Tensor]:
    """The predictor's line for points p (m, V) moving at pdot (m, V), and a mask (m,) of the
    rows anchored on the start line (only where ``allowed`` (m,), default everywhere).

    Where pdot is the exact flow's direction (full-rank Jacobian: p_top falls, p_k rises, the
    rest stay), the flow never leaves the line through the start point p0 (m, V) along
    e_k - e_top (docs/method.md, the exact flow): the line is then anchored there, at the projection of p onto it,
    so the corrector pulls back what earlier steps drifted off (across activation-pattern
    changes the corrector's residuals are random; on a line through the current p they would
    add up along the path). Elsewhere (rank-deficient Jacobian, box) it is the line through p
    along pdot.

    Example:
        >>> p0 = torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64)
        >>> p = torch.tensor([[0.5, 0.39, 0.11]], dtype=torch.float64)
        >>> line, on = anchored_line(p, torch.tensor([[-1.0, 1.0, 0.0]], dtype=torch.float64), p0,
        ...                          torch.tensor([0]), torch.tensor([1]))
        >>> line.p, on
        (tensor([[0.5450, 0.3550, 0.1000]], dtype=torch.float64), tensor([True]))
    """
    u = torch.zeros_like(p)
    u.scatter_(1, top[:, None], -1.0)
    u.scatter_(1, k[:, None], 1.0)
    w = 1.0 / p.clamp_min(1e-300)
    dot = (pdot * u * w).sum(-1)
    cos = dot / ((pdot.square() * w).sum(-1) * (u.square() * w).sum(-1)).sqrt().clamp_min(1e-300)
    on = cos >= 1 - ALIGNED
    shift = 0.5 * (pair_value(p - p0, k) - pair_value(p - p0, top))
    base = p0 + shift[:, None] * u
    rate = 0.5 * (pair_value(pdot, k) - pair_value(pdot, top))
    ok = on & (base > 0).all(-1) & (rate > 0)
    if allowed is not None:
        ok &= allowed
    base = torch.where(ok[:, None], base, p)
    d = torch.where(ok[:, None], rate[:, None] * u, pdot)
    return SimplexLine(base, d), ok


def pair_value(v: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """v[i, c[i]] (m,) for v (m, V), c (m,)."""
    return v.gather(1, c[:, None])[:, 0]


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
    return fr_distance(pts[:, :-1], pts[:, 1:]).sum(-1)
