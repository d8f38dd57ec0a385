"""Exact references for paths in a subspace of a linear softmax model z = W x + b: the FR length
of a straight line in u (K = 1: the flow's path, each direction of the line) and the shortest
path on a fine grid of the u-plane (K = 2). Tests check the tracer and the subspace margin
against them; they hold for any model whose logits are affine along the segments they use.

Lengths are sums of closed-form FR distances between consecutive points of a fine grid (they
converge from below as the grid is refined), ended where the first class change happens on the
last segment, located exactly from the affine logits.

Shapes: C classes, K directions, D input dimensions.

Example:
    >>> W = torch.tensor([[1.0], [0.0], [-1.0]], dtype=torch.float64)
    >>> model = lambda x: x @ W.T
    >>> x0 = torch.zeros(1, dtype=torch.float64)
    >>> b = torch.ones(1, dtype=torch.float64)
    >>> length, hit, t = line_length(model, x0 + 1.0, -b, 0, t_max=10.0)
    >>> hit, round(t, 6)  # z = (1 - t, 0, t - 1): class 1 ties class 0 at t = 1
    (1, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..geometry import fr_distance

__all__ = ["grid_margin", "line_length", "subspace_line_margin"]

Model = Callable[[torch.Tensor], torch.Tensor]


def _first_change(z: torch.Tensor, y: int) -> int | None:
    """Index of the first row of logits z (N, C) whose argmax is not y (None: none)."""
    changed = (z.argmax(-1) != y).nonzero()
    return None if changed.numel() == 0 else int(changed[0, 0])


def _ties(za: torch.Tensor, zb: torch.Tensor, y: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where on the affine segments za -> zb (N, C) a class first ties y, (N,) in [0, 1], and
    which (N,); y is the argmax at za."""
    ga = za[:, y : y + 1] - za
    gb = zb[:, y : y + 1] - zb
    s = torch.where(gb < 0, ga / (ga - gb).clamp_min(1e-300), torch.full_like(ga, float("inf")))
    s[:, y] = float("inf")
    return s.min(-1)


def line_length(
    model: Model, x0: torch.Tensor, direction: torch.Tensor, y: int, *, t_max: float, n: int = 20000
) -> tuple[float, int, float]:
    """FR length of p(x0 + t direction) for t from 0 up to the first class change away from y
    (fine quadrature, ``n`` points on [0, t_max]), the class that took over, and t there;
    (inf, -1, inf) when the class does not change before t_max.

    x0, direction: (D,) float64.
    """
    t = torch.linspace(0.0, t_max, n + 1, dtype=torch.float64)
    with torch.no_grad():
        z = model(x0[None] + t[:, None] * direction[None]).to(torch.float64)
    i = _first_change(z, y)
    if i is None:
        return float("inf"), -1, float("inf")
    p = torch.softmax(z, -1)
    length = float(fr_distance(p[: i - 1], p[1:i]).sum())
    s, c = _ties(z[i - 1 : i], z[i : i + 1], y)
    z_tie = z[i - 1] + s * (z[i] - z[i - 1])
    length += float(fr_distance(p[i - 1], torch.softmax(z_tie, -1)))
    return length, int(c), float(t[i - 1] + s * (t[i] - t[i - 1]))


def subspace_line_margin(
    model: Model, x0: torch.Tensor, direction: torch.Tensor, y: int, *, t_max: float, n: int = 20000
) -> tuple[float, int]:
    """K = 1: the subspace margin is the shorter of the two directions of the line,
    (length, class hit)."""
    plus = line_length(model, x0, direction, y, t_max=t_max, n=n)
    minus = line_length(model, x0, -direction, y, t_max=t_max, n=n)
    best = min(plus, minus, key=lambda r: r[0])
    return best[0], best[1]


def _offsets(reach: int) -> list[tuple[int, int]]:
    """Grid moves (i, j) with |i|, |j| <= reach and gcd 1: directions every ~atan(1 / reach)."""
    from math import gcd

    return [(i, j) for i in range(-reach, reach + 1) for j in range(-reach, reach + 1) if (i or j) and gcd(i, j) == 1]


def grid_margin(
    model: Model, x0: torch.Tensor, basis: torch.Tensor, y: int, *, radius: float, n: int = 201, reach: int = 4
) -> tuple[float, int]:
    """K = 2: the shortest FR length from u = 0 to the decision boundary of y over paths on an
    n x n grid of the square [-radius, radius]^2 of the plane x0 + u @ basis (basis (2, D)),
    moves to the grid points within ``reach`` steps (Dijkstra, scipy), the last move ended at
    the exact tie of its affine segment. Returns (length, class hit).
    """
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    g = torch.linspace(-radius, radius, n, dtype=torch.float64)
    uu = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        z = model(x0[None] + uu @ basis).to(torch.float64)
    p = torch.softmax(z, -1)
    inside = z.argmax(-1) == y
    ii, jj = np.divmod(np.arange(n * n), n)
    rows, cols, weights = [], [], []
    for di, dj in _offsets(reach):
        a_i, a_j = ii + di, jj + dj
        ok = (a_i >= 0) & (a_i < n) & (a_j >= 0) & (a_j < n)
        src, dst = np.arange(n * n)[ok], (a_i * n + a_j)[ok]
        both = inside.numpy()[src] & inside.numpy()[dst]
        src, dst = src[both], dst[both]
        rows.append(src)
        cols.append(dst)
        weights.append(fr_distance(p[src], p[dst]).numpy() + 1e-300)
    graph = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n * n, n * n))
    start = (n // 2) * n + n // 2
    dist = dijkstra(graph.tocsr(), indices=start)
    best, hit = float("inf"), -1
    for di, dj in _offsets(reach):  # every move from a reached point inside to one outside
        a_i, a_j = ii + di, jj + dj
        ok = (a_i >= 0) & (a_i < n) & (a_j >= 0) & (a_j < n)
        src, dst = np.arange(n * n)[ok], (a_i * n + a_j)[ok]
        cross = inside.numpy()[src] & ~inside.numpy()[dst] & np.isfinite(dist[src])
        if not cross.any():
            continue
        a, b = torch.as_tensor(src[cross]), torch.as_tensor(dst[cross])
        s, c = _ties(z[a], z[b], y)
        tie = torch.softmax(z[a] + s[:, None] * (z[b] - z[a]), -1)
        total = torch.as_tensor(dist[src[cross]]) + fr_distance(p[a], tie)
        k = int(total.argmin())
        if float(total[k]) < best:
            best, hit = float(total[k]), int(c[k])
    return best, hit
