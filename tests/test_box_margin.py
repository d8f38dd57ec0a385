"""The in-box FR margin estimate: a known answer (a linear softmax model on 2-D inputs in a box,
whose in-box margin a shortest path on a fine grid gives independently), its bounds (never
above the traced path, never below LB) on digit models, and refusals of bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from digits import digit_mlp, digits
from frmargin.errors import FrmarginError
from frmargin.geometry import fisher_rao_distance, margin_lower_bound
from frmargin.paths import trace_paths
from frmargin.paths.box_margin import box_margin, measure

KNOWN = 0.01  # the estimate vs the grid's shortest path, relative
GRID = 241  # grid nodes per side of [0, 1]^2 (x0 sits on a node)
STENCIL = 4  # edges to every node (i, j) with |i|, |j| <= STENCIL, gcd 1: 48 directions
BOX = (0.0, 1.0)


def _linear(W, b) -> torch.nn.Module:
    m = torch.nn.Linear(2, 3).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor(W, dtype=torch.float64))
        m.bias.copy_(torch.tensor(b, dtype=torch.float64))
    return m.eval()


def grid_margin(model, x0: torch.Tensor, y: int) -> float:
    """Shortest FR path on a grid of [0, 1]^2 from x0 (a node) to the first node of another class,
    edges measured by chord sums over 4 pieces; the last edge is cut at the tie on its p-segment.
    Independent of ``box_margin`` (Dijkstra on a graph, no optimizer)."""
    xs = torch.linspace(0, 1, GRID, dtype=torch.float64)
    X = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        p = torch.softmax(model(X), -1)
    inside = (p.argmax(-1) == y).numpy()
    index = np.arange(GRID * GRID).reshape(GRID, GRID)
    rows, cols, weights = [], [], []
    for di in range(-STENCIL, STENCIL + 1):
        for dj in range(-STENCIL, STENCIL + 1):
            if (di, dj) == (0, 0) or math.gcd(abs(di), abs(dj)) != 1:
                continue
            a = index[max(0, -di) : GRID - max(0, di), max(0, -dj) : GRID - max(0, dj)].ravel()
            b = index[max(0, di) : GRID - max(0, -di), max(0, dj) : GRID - max(0, -dj)].ravel()
            a, b = a[inside[a]], b[inside[a]]
            length = torch.zeros(len(a), dtype=torch.float64)
            prev = p[a]
            for k in range(1, 5):
                with torch.no_grad():
                    q = torch.softmax(model(X[a] + k / 4 * (X[b] - X[a])), -1)
                if k == 4:  # an edge into another class ends at the tie on its last piece
                    out = ~torch.from_numpy(inside[b])
                    t = _tie(prev[out], q[out], y)
                    q = q.clone()
                    q[out] = prev[out] + t[:, None] * (q[out] - prev[out])
                length += fisher_rao_distance(prev, q)
                prev = q
            rows.append(a)
            cols.append(b)
            weights.append(length.numpy() + 1e-300)
    n = GRID * GRID
    graph = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    i0, j0 = (round(float(v) * (GRID - 1)) for v in x0[0])
    dist = dijkstra(graph.tocsr(), indices=index[i0, j0])
    return float(dist[~inside].min())


def _tie(pa: torch.Tensor, pb: torch.Tensor, y: int) -> torch.Tensor:
    """Where on the segment pa -> pb (k, C) the largest other class ties with y, (k,)."""
    d = pb - pa
    t = torch.where(d - d[:, y : y + 1] > 0, (pa[:, y : y + 1] - pa) / (d - d[:, y : y + 1]), torch.inf)
    t[:, y] = torch.inf
    return t.min(-1).values.clamp(0, 1)


@pytest.mark.parametrize(
    "W, b, node",
    [
        ([[-1.61, 1.66], [2.57, -8.75], [3.57, 2.98]], [-0.25, 0.85, -0.35], (30, 70)),
        ([[-4.1, 7.03], [2.31, -0.19], [1.05, 2.57]], [-0.51, 0.37, -1.12], (74, 23)),
    ],
    ids=["corner", "edge"],
)
def test_in_box_margin_of_a_linear_model_matches_the_grid(W, b, node):
    model = _linear(W, b)
    x = torch.tensor([node], dtype=torch.float64) / (GRID - 1)
    y = int(model(x).argmax())
    xs = x.repeat(2, 1)
    s = torch.full((2,), y)
    t = torch.tensor([(y + 1) % 3, (y + 2) % 3])
    res = trace_paths(model, xs, s, t, box=BOX)
    assert res.status == ["ok", "ok"]
    est = box_margin(model, xs, s, res.x_end, res.fr_length, BOX)
    lb = float(margin_lower_bound(torch.softmax(model(x), -1), torch.tensor([y])))
    ref = grid_margin(model, x, y)
    assert ref > 1.15 * lb, "the box must bind: its margin well above the softmax-only bound"
    got = float(est.length.min())
    assert abs(got - ref) <= KNOWN * ref, f"in-box margin {got:.5f}, grid {ref:.5f}"


def test_in_box_margin_from_a_poor_start_reaches_the_grid_value():
    """Started from the chord to a far corner (70% longer than the margin), the optimizer must
    find the in-box margin itself: without it (iterations=0) the estimate stays at the start."""
    model = _linear([[-1.61, 1.66], [2.57, -8.75], [3.57, 2.98]], [-0.25, 0.85, -0.35])
    x = torch.tensor([[30, 70]], dtype=torch.float64) / (GRID - 1)
    y = torch.tensor([int(model(x).argmax())])
    start, end = measure(model, torch.stack([x[0], torch.tensor([1.0, 0.0], dtype=torch.float64)])[None], y, 2000)
    ref = grid_margin(model, x, int(y))
    assert float(start) > 1.5 * ref
    est = box_margin(model, x, y, end, torch.tensor([math.inf]), BOX, iterations=400)
    assert abs(float(est.length) - ref) <= KNOWN * ref, f"in-box margin {float(est.length):.5f}, grid {ref:.5f}"


def test_estimate_lies_between_the_lower_bound_and_the_traced_length():
    model = digit_mlp(0)
    x, y = digits(10, seed=5)
    with torch.no_grad():
        good = (model(x).argmax(-1) == y).nonzero()[:3, 0]
    xs, s = x[good].repeat_interleave(2, 0), y[good].repeat_interleave(2)
    t = (s + torch.tensor([1, 2]).repeat(len(good))) % 5
    res = trace_paths(model, xs, s, t, box=BOX)
    ok = torch.tensor([st == "ok" for st in res.status])
    est = box_margin(model, xs[ok], s[ok], res.x_end[ok], res.fr_length[ok], BOX, iterations=40)
    assert (est.lower_bound <= est.length + 1e-12).all()
    assert (est.length <= res.fr_length[ok]).all()
    assert (est.optimized >= est.lower_bound - 1e-12).all(), "a measured path below LB"
    assert est.x_end.min() >= 0 and est.x_end.max() <= 1


def test_measure_of_a_binary_path_is_the_closed_form():
    """C = 2: every path to the boundary has the same FR length 2 arcsin(sqrt p_y) - pi/2."""
    model = torch.nn.Linear(3, 2).double().eval()
    x0 = torch.tensor([[0.2, 0.4, 0.9]], dtype=torch.float64)
    with torch.no_grad():
        z = model(x0)
        p = torch.softmax(z, -1)[0]
        y = int(z.argmax())
        g = model.weight[y] - model.weight[1 - y]
        far = x0 - 3.0 * (z[0, y] - z[0, 1 - y]) / g.square().sum() * g  # well past the boundary
    nodes = torch.stack([x0[0], 0.5 * (x0[0] + far[0]) + 0.1, far[0]])[None]
    length, _ = measure(model, nodes, torch.tensor([y]), 64)
    exact = 2 * math.asin(math.sqrt(p[y])) - math.pi / 2
    assert abs(float(length) - exact) <= 1e-9, (float(length), exact)


def test_bad_input_is_refused():
    model = torch.nn.Linear(2, 3).double().eval()
    x = torch.full((1, 2), 0.5, dtype=torch.float64)
    y = torch.tensor([0])
    with pytest.raises(FrmarginError, match="x_end"):
        box_margin(model, x, y, torch.full((1, 3), 0.5, dtype=torch.float64), torch.ones(1), BOX)
    with pytest.raises(FrmarginError, match=r"x_end.*inside box"):
        box_margin(model, x, y, torch.full((1, 2), 2.0, dtype=torch.float64), torch.ones(1), BOX)
    with pytest.raises(FrmarginError, match="nodes"):
        box_margin(model, x, y, x, torch.ones(1), BOX, nodes=1)
