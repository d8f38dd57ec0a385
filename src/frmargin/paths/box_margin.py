"""The true Fisher-Rao margin inside a box, estimated without following the natural-gradient
flow: the FR length of a discretized input path from x0 to the decision boundary, minimized
over the path inside the box (a path-energy method started from the traced path).

A path is N nodes x_1 .. x_N after x0 (x_N on the boundary z_y = max_{c != y} z_c). The
optimizer lowers the chordal energy sum_i |sqrt p(x_i) - sqrt p(x_{i-1})|^2 (its minimizers are
constant-speed geodesics, and sqrt p embeds the simplex isometrically in a sphere of radius 2 up
to scale), by Adam steps projected onto the box; the end node moves tangentially to the
boundary and is pulled back onto it by Newton steps on the logit gap. A path is measured by
its first class change along the polyline, subdivided ``pieces`` times: the sum of closed-form
FR distances up to the tie, located on the straight p-segment that crosses it, so every
measured length is >= LB (triangle inequality) and converges from below as ``pieces`` grows.
The estimate is the least measured length met, and never more than the traced length.

Shapes: P paths, N nodes, C classes, *S the input shape, D = prod(S).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import bad_argument
from ..geometry import fisher_rao_distance, margin_lower_bound
from .simplex_line import SimplexLine

__all__ = ["BoxMargin", "box_margin"]

#: Newton steps pulling the end node back onto the boundary after each update
NEWTON_STEPS = 2


@dataclass(frozen=True)
class BoxMargin:
    """In-box margin estimates of P paths.

    Attributes:
        length: (P,) float64 the estimate: min(least measured optimized length, traced length).
        optimized: (P,) float64 least measured length of the optimized paths (may exceed the
            traced one where the optimizer did not improve on it).
        lower_bound: (P,) float64 LB(p(x0)), the softmax-only bound (unconstrained margin).
        x_end: (P, *S) end point (first point past the change) of the best optimized path.
    """

    length: torch.Tensor
    optimized: torch.Tensor
    lower_bound: torch.Tensor
    x_end: torch.Tensor


def _gap(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{c != y} z_c, (..,) for z (.., C) and y broadcastable to z[..., 0]."""
    zy = z.gather(-1, y[..., None])[..., 0]
    other = z.scatter(-1, y[..., None], -float("inf")).max(-1).values
    return zy - other


def measure(
    model: Callable[[torch.Tensor], torch.Tensor], nodes: torch.Tensor, y: torch.Tensor, pieces: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """FR length (P,) of each polyline nodes (P, N + 1, *S) up to its first class change away
    from y (P,), and the first point past the change (P, *S); inf where there is none.

    Example:
        >>> model = torch.nn.Linear(1, 2).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0], [-1.0]])), model.bias.zero_()
        >>> nodes = torch.tensor([[[1.0], [-1.0]]], dtype=torch.float64)
        >>> length, _ = measure(model, nodes, torch.tensor([0]), 8)
        >>> round(float(length), 4)  # 2 arcsin((sqrt p_0 - sqrt p_1) / sqrt 2) at z = (1, -1)
        0.8658
    """
    P = nodes.shape[0]
    S = nodes.shape[2:]
    t = torch.linspace(0.0, 1.0, pieces + 1, dtype=nodes.dtype, device=nodes.device)[:-1]
    a, b = nodes[:, :-1], nodes[:, 1:]
    shape = (1, 1, pieces) + (1,) * len(S)
    pts = a[:, :, None] + t.view(shape) * (b - a)[:, :, None]
    pts = torch.cat([pts.reshape(P, -1, *S), nodes[:, -1:]], 1)  # (P, M, *S)
    with torch.no_grad():
        z = model(pts.reshape(-1, *S)).reshape(P, pts.shape[1], -1).to(torch.float64)
    p = torch.softmax(z, -1)
    changed = _gap(z, y[:, None].expand(-1, pts.shape[1])) < 0
    has = changed.any(-1)
    first = torch.where(has, changed.long().argmax(-1), torch.full_like(y, pts.shape[1] - 1)).clamp_min(1)
    steps = fisher_rao_distance(p[:, :-1], p[:, 1:])
    before = torch.arange(steps.shape[1], device=y.device)[None] < (first - 1)[:, None]
    length = (steps * before).sum(-1)
    rows = torch.arange(P, device=y.device)
    pa, pb = p[rows, first - 1], p[rows, first]
    t_tie = SimplexLine(pa, pb - pa).crossing(y)
    t_tie = torch.nan_to_num(t_tie, nan=1.0, posinf=1.0).clamp(0.0, 1.0)
    p_tie = pa + t_tie[:, None] * (pb - pa)
    length = length + fisher_rao_distance(pa, p_tie)
    length = torch.where(has, length, torch.full_like(length, float("inf")))
    return length, pts[rows, first]


def _check(
    x0: torch.Tensor, source: torch.Tensor, x_end: torch.Tensor, traced: torch.Tensor, box: tuple[float, float]
) -> None:
    P = x0.shape[0]
    if x_end.shape != x0.shape:
        raise bad_argument("x_end", f"shape {tuple(x_end.shape)}", f"the shape of x0, {tuple(x0.shape)}")
    for name, t in (("source", source), ("traced_length", traced)):
        if t.shape != (P,):
            raise bad_argument(name, f"shape {tuple(t.shape)}", f"({P},), one per path")
    lo, hi = box
    for name, t in (("x0", x0), ("x_end", x_end)):
        if (t < lo).any() or (t > hi).any():
            raise bad_argument(name, f"values in [{t.min().item():.4g}, {t.max().item():.4g}]", f"inside box {box}")


def box_margin(
    model: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    source: torch.Tensor,
    x_end: torch.Tensor,
    traced_length: torch.Tensor,
    box: tuple[float, float],
    *,
    nodes: int = 12,
    iterations: int = 200,
    lr: float = 0.05,
    pieces: int = 4,
    measure_every: int = 10,
) -> BoxMargin:
    """In-box FR margin estimates for P paths that changed the class from x0 to x_end.

    Args:
        model: (B, *S) -> logits (B, C), in eval mode.
        x0: (P, *S) start points inside the box; source: (P,) their classes (the argmax).
        x_end: (P, *S) ends of the traced paths (first points past the change), inside the box.
        traced_length: (P,) FR lengths of the traced paths.
        box: (lo, hi).
        nodes: N, nodes of the discretized path after x0; iterations: optimizer steps;
        lr: Adam step relative to max |x_end - x0| of each path; pieces: subdivision of each
        segment when a path is measured; measure_every: iterations between measurements.

    Returns:
        ``BoxMargin``; lower_bound <= length <= traced_length on every path.

    Example:
        >>> model = torch.nn.Linear(2, 3).double().eval()
        >>> x0 = torch.full((1, 2), 0.5, dtype=torch.float64)
        >>> y = model(x0).argmax(-1)
        >>> from frmargin.paths import trace_paths
        >>> res = trace_paths(model, x0, y, (y + 1) % 3, box=(0.0, 1.0))
        >>> est = box_margin(model, x0, y, res.x_end, res.fr_length, (0.0, 1.0), iterations=20)
        >>> bool(est.lower_bound <= est.length) and bool(est.length <= res.fr_length)
        True
    """
    _check(x0, source, x_end, traced_length, box)
    if not (isinstance(nodes, int) and nodes >= 2):
        raise bad_argument("nodes", nodes, "an integer >= 2")
    lo, hi = box
    P, S = x0.shape[0], x0.shape[1:]
    with torch.no_grad():
        lb = margin_lower_bound(torch.softmax(model(x0).detach().to(torch.float64), -1), source)
    frac = torch.linspace(0.0, 1.0, nodes + 1, dtype=x0.dtype, device=x0.device)[1:]
    shape = (1, nodes) + (1,) * len(S)
    path = (x0[:, None] + frac.view(shape) * (x_end - x0)[:, None]).detach().clone().requires_grad_(True)
    scale = (x_end - x0).reshape(P, -1).abs().amax(-1).clamp_min(1e-12)
    opt = torch.optim.Adam([path], lr=1.0)
    best = torch.full((P,), float("inf"), dtype=torch.float64, device=x0.device)
    best_end = x_end.clone()
    for it in range(iterations + 1):
        if it % measure_every == 0 or it == iterations:
            length, end = measure(model, torch.cat([x0[:, None], path.detach()], 1), source, pieces)
            better = length < best
            best = torch.where(better, length, best)
            best_end[better] = end[better]
        if it == iterations:
            break
        last = path.detach().clone()
        opt.zero_grad()
        z = model(torch.cat([x0[:, None], path], 1).reshape(-1, *S)).reshape(P, nodes + 1, -1)
        u = torch.exp(0.5 * torch.log_softmax(z.to(torch.float64), -1))
        energy = nodes * (u[:, 1:] - u[:, :-1]).square().sum((-1, -2))
        energy.sum().backward()
        with torch.no_grad():
            assert path.grad is not None
            # the end node slides along the boundary: drop the part of its gradient across it
            normal = _end_normal(model, path[:, -1].detach(), source)
            g = path.grad[:, -1].reshape(P, -1)
            n = normal.reshape(P, -1)
            g -= (g * n).sum(-1, keepdim=True) / n.square().sum(-1, keepdim=True).clamp_min(1e-300) * n
            # Adam with a per-path step: the gradient scaled by each path's own extent
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * it / iterations))).item()
        _scaled_step(opt, path, scale)
        with torch.no_grad():
            path.clamp_(lo, hi)
            path[:, -1] = _onto_boundary(model, path[:, -1], source, box)
            # a path the update threw to non-finite points (a Newton step off a flat gap, possible
            # without bounds) keeps its last points
            lost = ~torch.isfinite(path.reshape(P, -1)).all(-1)
            if lost.any():
                path[lost] = last[lost]
    length = torch.minimum(best, traced_length.to(torch.float64))
    return BoxMargin(length=length, optimized=best, lower_bound=lb, x_end=best_end)


def _scaled_step(opt: torch.optim.Adam, path: torch.Tensor, scale: torch.Tensor) -> None:
    """One Adam step whose size is ``lr`` times each path's extent ``scale`` (P,)."""
    before = path.detach().clone()
    opt.step()
    with torch.no_grad():
        shape = (-1,) + (1,) * (path.ndim - 1)
        path.copy_(before + (path - before) * scale.view(shape).to(path.dtype))


def _end_normal(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient (P, *S) of the logit gap z_y - max_{c != y} z_c at x (P, *S)."""
    with torch.enable_grad():
        xx = x.detach().clone().requires_grad_(True)
        _gap(model(xx), y).sum().backward()
    assert xx.grad is not None
    return xx.grad


def _onto_boundary(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, box: tuple[float, float]
) -> torch.Tensor:
    """x (P, *S) moved onto the boundary gap = 0 by Newton steps along the gap gradient
    restricted to the coordinates that can move inside the box."""
    lo, hi = box
    P = x.shape[0]
    for _ in range(NEWTON_STEPS):
        with torch.enable_grad():
            xx = x.detach().clone().requires_grad_(True)
            gap = _gap(model(xx), y)
            gap.sum().backward()
        assert xx.grad is not None
        g = xx.grad.reshape(P, -1)
        xf = x.reshape(P, -1)
        # moving along -gap * g: a coordinate at a bound that this would push out is held
        move = -gap.detach()[:, None] * g
        held = ((xf <= lo) & (move < 0)) | ((xf >= hi) & (move > 0))
        g = torch.where(held, torch.zeros_like(g), g)
        step = -gap.detach()[:, None] * g / g.square().sum(-1, keepdim=True).clamp_min(1e-300)
        x = (xf + step).clamp(lo, hi).reshape(x.shape)
    return x
