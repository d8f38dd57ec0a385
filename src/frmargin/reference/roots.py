"""Where an affine function of x first changes sign along the exact flow inside one region.

Inside an activation region the exact flow moves x(tau) = x_r + v_A A(tau) + v_B B(tau) with
A(tau) = log(1 - tau / p_y) and B(tau) = log(1 + tau / p_k) (the falling source and rising target
probabilities of the simplex line, from the region's start), so an affine function of x with
value g and rates a = <grad, v_A>, b = <grad, v_B> is f(tau) = g + a A(tau) + b B(tau). Its
derivative -a / (p_y - tau) + b / (p_k + tau) changes sign at most once, at
tau* = (b p_y - a p_k) / (a + b), so f is monotone on [0, tau*] and on [tau*, T]: the first root
is bracketed exactly and found by bisection.

Shapes: m paths, S functions per path; everything float64.
"""

from __future__ import annotations

import torch

__all__ = ["RootFind", "first_roots", "flow_coordinates"]

#: bisection halvings of a root's bracket (float64: the bracket reaches rounding long before)
HALVINGS = 100
#: a bracket is kept while it starts within this relative margin of its path's first root
PRUNE_MARGIN = 1e-9
#: a function within this share of its rate's reach is at zero: it crosses within a relative
#: tau of this at most (the slack of a unit just crossed is at zero up to rounding)
AT_ZERO = 1e-12
#: a function at zero whose rate is below this share of the largest rate of its path's functions
#: is flat: its rate is rounding (a max-pool window of units all held or off at zero), never a root
FLAT = 1e-11


def flow_coordinates(tau: torch.Tensor, py: torch.Tensor, pk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A(tau) = log(1 - tau / p_y), B(tau) = log(1 + tau / p_k), broadcast."""
    return torch.log1p(-tau / py), torch.log1p(tau / pk)


class RootFind:
    """First roots of f = g + a A + b B on [0, T] for m paths of S functions each.

    Args:
        g, a, b: (m, S) values and rates (g must be >= 0 up to rounding; +inf: never a root).
        py, pk: (m,) source and target probability at tau = 0; T: (m,) end of the search.
        scale: (m, S) the size of rounding in g (a function with g <= scale and a falling start
            is at zero).
    """

    def __init__(
        self,
        g: torch.Tensor,
        a: torch.Tensor,
        b: torch.Tensor,
        py: torch.Tensor,
        pk: torch.Tensor,
        T: torch.Tensor,
        scale: torch.Tensor,
    ) -> None:
        self.g, self.a, self.b = g.clamp_min(0.0), a, b
        self.py, self.pk, self.T = py[:, None], pk[:, None], T[:, None]
        slope0 = -a / self.py + b / self.pk
        tol = AT_ZERO * (a.abs() + b.abs()) + scale
        rate = a.abs() / self.py + b.abs() / self.pk
        finite_rate = torch.where(torch.isfinite(g), rate, torch.zeros_like(rate))
        largest = torch.cat([finite_rate, rate.new_zeros(rate.shape[0], 1)], 1).amax(-1, keepdim=True)
        # at zero with a slope within rounding of zero (tangent): f'' has the sign of -a there,
        # so f falls at once where a > 0 and, convex, never returns to zero where a < 0
        tangent = (g <= tol) & (slope0.abs() <= AT_ZERO * rate)
        #: (m, S) functions at zero whose rate is rounding, or tangent and rising: never a root
        self.flat = (g <= tol) & ((rate <= FLAT * largest) | (tangent & (a <= 0)))
        #: (m, S) functions at zero and falling at tau = 0: they cross at once
        self.immediate = (g <= tol) & ((slope0 < 0) | tangent) & ~self.flat

    def value(
        self, tau: torch.Tensor, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None
    ) -> torch.Tensor:
        """f at tau, for all functions (tau (m, S) or broadcastable) or the entries (rows, cols)."""
        if rows is None or cols is None:
            A, B = flow_coordinates(tau, self.py, self.pk)
            return self.g + self.a * A + self.b * B
        A, B = flow_coordinates(tau, self.py[rows, 0], self.pk[rows, 0])
        return self.g[rows, cols] + self.a[rows, cols] * A + self.b[rows, cols] * B

    def first(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(m,) the first root per path (inf where none in [0, T]) and (m, S) the roots that can
        be first (within SIMULTANEOUS of it; inf for the others)."""
        a, b = self.a, self.b
        if a.shape[1] == 0:
            return torch.full_like(self.T[:, 0], float("inf")), torch.empty_like(a)
        # where f' changes sign (nan or inf where a + b = 0: then it never does)
        star = (b * self.py - a * self.pk) / (a + b)
        inside = torch.isfinite(star) & (star > 0) & (star < self.T)
        t1 = torch.where(inside, star, self.T.expand_as(star))
        f1 = self.value(t1)
        fT = self.value(self.T.expand_as(star))
        finite = torch.isfinite(self.g) & ~self.flat
        in_first = finite & (f1 < 0) & ~self.immediate
        in_second = finite & ~in_first & inside & (fT < 0) & ~self.immediate
        roots = torch.full_like(self.g, float("inf"))
        roots[self.immediate] = 0.0
        rows, cols = (in_first | in_second).nonzero(as_tuple=True)
        if rows.numel():
            lo = torch.where(in_first[rows, cols], torch.zeros_like(t1[rows, cols]), t1[rows, cols])
            hi = torch.where(in_first[rows, cols], t1[rows, cols], self.T[rows, 0])
            best = roots.min(-1).values
            roots[rows, cols] = self._bisect(rows, cols, lo, hi, best)
        return roots.min(-1).values, roots

    def _bisect(
        self, rows: torch.Tensor, cols: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, best: torch.Tensor
    ) -> torch.Tensor:
        """The roots in [lo, hi] (k,) where f(lo) >= 0 > f(hi) (f monotone there), each the hi end of
        its last bracket; inf for those that cannot be their path's first (their bracket starts past
        another's end, ``best`` (m,) the first root known per path). Bisection on u = log(1 + tau /
        p_k), in which a root many decades below T (a target at p_k ~ 1e-14) is as well scaled as
        any other."""
        pk = self.pk[rows, 0]
        u_lo, u_hi = torch.log1p(lo / pk), torch.log1p(hi / pk)
        out = torch.full_like(lo, float("inf"))
        live = torch.arange(lo.numel(), device=lo.device)
        for it in range(HALVINGS):
            u_mid = 0.5 * (u_lo + u_hi)
            neg = self.value(pk[live] * torch.expm1(u_mid), rows[live], cols[live]) < 0
            u_hi = torch.where(neg, u_mid, u_hi)
            u_lo = torch.where(neg, u_lo, u_mid)
            if it % 8 == 7 or it == HALVINGS - 1:
                # drop brackets that start past the end of another of their path's
                first = best.clone().scatter_reduce(0, rows[live], pk[live] * torch.expm1(u_hi), reduce="amin")
                lo_tau = pk[live] * torch.expm1(u_lo)
                keep = lo_tau <= first[rows[live]] * (1 + PRUNE_MARGIN)
                out[live] = torch.where(keep, pk[live] * torch.expm1(u_hi), out[live])
                live, u_lo, u_hi = live[keep], u_lo[keep], u_hi[keep]
                if live.numel() == 0 or bool((u_hi - u_lo <= 2e-16 * u_hi).all()):
                    break
        if live.numel():
            out[live] = pk[live] * torch.expm1(u_hi)
        return out


def first_roots(
    g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, py: torch.Tensor, pk: torch.Tensor, T: torch.Tensor
) -> torch.Tensor:
    """(m, S) the first root of each g + a A + b B in [0, T] (inf where none); see ``RootFind``.

    Example:
        >>> one = torch.ones(1, 1, dtype=torch.float64)
        >>> py, pk, T = (torch.tensor([v], dtype=torch.float64) for v in (0.8, 0.1, 0.3))
        >>> r = first_roots(0.1 * one, one, 0 * one, py, pk, T)  # 0.1 + log(1 - tau / 0.8) = 0
        >>> round(float(r), 6), round(0.8 * (1 - float(torch.exp(torch.tensor(-0.1)))), 6)
        (0.07613, 0.07613)
    """
    return RootFind(g, a, b, py, pk, T, torch.zeros_like(g)).first()[1]
