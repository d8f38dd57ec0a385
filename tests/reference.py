"""Dense brute-force references in float64, for small inputs only.

Each function recomputes a quantity of frmargin the slow, obvious way: per-sample autograd
Jacobians, the dense D x D Fisher, ``torch.linalg.solve``, the arccos form of the FR distance,
numerical quadrature on the simplex and an RK4 integration of the natural-gradient ODE.
"""

from __future__ import annotations

import copy
import math

import torch
from scipy import integrate
from torch import nn


def as_double(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` (the reference for a float32 model)."""
    return copy.deepcopy(model).double().eval()


def jacobian(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C, D) logit Jacobian, one autograd.functional.jacobian per sample, float64."""
    ref = as_double(model)
    x = x.detach().to(torch.float64)
    rows = []
    for xi in x:
        Ji = torch.autograd.functional.jacobian(lambda u: ref(u[None])[0], xi)
        rows.append(Ji.reshape(Ji.shape[0], -1))
    return torch.stack(rows)


def probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(as_double(model)(x.detach().to(torch.float64)), -1)


def fisher(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, D, D) dense G = J^T (diag p - p p^T) J, float64."""
    J = jacobian(model, x)
    p = probs(model, x)
    M = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return J.transpose(-1, -2) @ M @ J


def largest_eigenvalue(G: torch.Tensor) -> torch.Tensor:
    return torch.linalg.eigvalsh(0.5 * (G + G.transpose(-1, -2)))[:, -1]


def damped_solve(G: torch.Tensor, g: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """(G + lam I)^{-1} g on the dense D x D matrix, (B, D)."""
    D = G.shape[-1]
    lam = torch.as_tensor(lam, dtype=torch.float64).reshape(-1, 1, 1)
    A = G + lam * torch.eye(D, dtype=torch.float64)
    return torch.linalg.solve(A, g.to(torch.float64)[:, :, None])[:, :, 0]


def fr_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """2 arccos(sum sqrt(p q)), float64."""
    bc = (p.to(torch.float64) * q.to(torch.float64)).clamp_min(0).sqrt().sum(-1)
    return 2 * torch.arccos(bc.clamp(-1.0, 1.0))


# --------------------------------------------------------------------------- simplex flow


def simplex_flow(p: list[float], y: int, k: int, tol: float = 1e-14) -> tuple[float, int]:
    """Length and first class hit of the line p_y - t, p_k + t (others fixed).

    The crossing is found by bisection on the argmax (no closed form) and the FR length
    integral of sqrt(sum_c pdot_c^2 / p_c) = sqrt(1/p_y + 1/p_k) by adaptive quadrature.
    """
    p = [float(v) for v in p]
    C = len(p)

    def at(t: float) -> list[float]:
        q = list(p)
        q[y] -= t
        q[k] += t
        return q

    def top(t: float) -> int:
        q = at(t)
        return max(range(C), key=lambda c: (q[c], c == y))  # ties keep y

    lo, hi = 0.0, p[y]
    assert top(lo) == y and top(hi) != y
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if top(mid) == y:
            lo = mid
        else:
            hi = mid
    t_star = 0.5 * (lo + hi)
    length, _ = integrate.quad(
        lambda t: math.sqrt(1 / (p[y] - t) + 1 / (p[k] + t)), 0.0, t_star, epsabs=1e-13, epsrel=1e-12, limit=200
    )
    q = at(hi)
    hit = max((c for c in range(C) if c != y), key=lambda c: q[c])
    return length, hit


def brute_lower_bound(p: list[float], y: int, n: int = 200_000, seed: int = 0) -> float:
    """min FR distance from p to boundary points {q : q_y = q_c = max q} sampled at random.

    Samples points on the boundary face of every rival c: q_y = q_c = s, the rest a random
    sub-probability with entries <= s. An upper estimate of the true minimum (sampling).
    """
    gen = torch.Generator().manual_seed(seed)
    p_t = torch.tensor(p, dtype=torch.float64)
    C = p_t.numel()
    best = float("inf")
    for c in range(C):
        if c == y:
            continue
        rest = [j for j in range(C) if j not in (y, c)]
        # candidate points near the projection: rest proportional to p scaled by a factor
        s = torch.rand(n, generator=gen, dtype=torch.float64) * 0.5
        f = torch.rand(n, generator=gen, dtype=torch.float64) * 1.5
        q = torch.zeros(n, C, dtype=torch.float64)
        q[:, y] = s
        q[:, c] = s
        if rest:
            noise = 1 + 0.3 * torch.randn(n, len(rest), generator=gen, dtype=torch.float64)
            q[:, rest] = (p_t[rest] * noise).clamp_min(0) * f[:, None]
        q = q / q.sum(-1, keepdim=True)
        ok = q[:, y] >= q.max(-1).values - 1e-15
        if ok.any():
            best = min(best, float(fr_distance(p_t.expand(int(ok.sum()), C), q[ok]).min()))
    return best


# --------------------------------------------------------------------------- input-space ODE


def _velocity(model: nn.Module, x: torch.Tensor, top: int, k: int, lam_rel: float) -> torch.Tensor:
    """Unit-FR-speed natural-gradient descent direction of log p_top - log p_k at one x (D,)."""
    J = jacobian(model, x[None])[0]
    p = probs(model, x[None])[0]
    M = torch.diag(p) - torch.outer(p, p)
    G = J.T @ M @ J
    a = torch.zeros_like(p)
    a[top], a[k] = 1.0, -1.0
    g = J.T @ a
    if lam_rel > 0:
        lam = lam_rel * torch.linalg.eigvalsh(G)[-1]
        v = torch.linalg.solve(G + lam * torch.eye(G.shape[0], dtype=G.dtype), g)
    else:
        v = torch.linalg.pinv(G, hermitian=True, rtol=1e-11) @ g
    speed = torch.sqrt(v @ G @ v)
    return -v / speed


def _rk4(model, x, h, top, k, lam_rel):
    k1 = _velocity(model, x, top, k, lam_rel)
    k2 = _velocity(model, x + 0.5 * h * k1, top, k, lam_rel)
    k3 = _velocity(model, x + 0.5 * h * k2, top, k, lam_rel)
    k4 = _velocity(model, x + h * k3, top, k, lam_rel)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def ode_path(
    model: nn.Module,
    x0: torch.Tensor,
    source: int,
    target: int,
    h: float = 0.01,
    lam_rel: float = 0.0,
    max_length: float = 10.0,
) -> tuple[float, int, torch.Tensor]:
    """Integrate dx/dt = -(G + lam I)^{-1} grad L / |.|_G with RK4 at unit FR speed.

    The FR length is the integral of sqrt(xdot^T G xdot) = 1 dt, i.e. the elapsed time; the last
    step is cut by bisection on its size to the first point where the argmax leaves ``source``.
    Returns (length, first class hit, end point). For tiny problems (D <= 16).
    """
    model = as_double(model)
    x = x0.detach().to(torch.float64).reshape(-1)

    def argmax(u):
        with torch.no_grad():
            return int(model(u[None])[0].argmax())

    assert argmax(x) == source
    t = 0.0
    while t < max_length:
        x_new = _rk4(model, x, h, source, target, lam_rel)
        if argmax(x_new) != source:
            lo, hi = 0.0, h
            for _ in range(45):
                mid = 0.5 * (lo + hi)
                if argmax(_rk4(model, x, mid, source, target, lam_rel)) == source:
                    lo = mid
                else:
                    hi = mid
            x_end = _rk4(model, x, hi, source, target, lam_rel)
            return t + hi, argmax(x_end), x_end
        x, t = x_new, t + h
    raise AssertionError(f"ODE reference: no class change within FR length {max_length}")
