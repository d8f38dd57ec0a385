"""The true Fisher-Rao margin within a perturbation model's subspace: the least FR length from
u = 0 to the decision boundary over all paths in u, not over the flows that happened to end.

Candidates per image: the end of every traced path (its FR length kept as a bound) (a class change reached by the flow) and,
for each other class c, the point where the straight line in u along the gradient of z_c - z_y
(at u = 0) first changes the class (doubling, then bisection, forward passes only). Per image
and class of the first change, the candidate whose straight path (or traced flow) is shortest
is kept; its straight path from u = 0 is shortened by the path-energy minimization of
``box_margin`` (Adam on the chordal energy of a discretized path, its end node sliding along
the boundary) run in u without bounds; its length is measured up to its first class change, so
every estimate is >= LB. Per image the margin is the least over candidates; per (image, class
c) the nearest boundary point toward c is the least over the candidates whose first change is
to c. The estimate converges from above as candidates and iterations grow (each is a measured
path); K = 1 and K = 2 references are ``frmargin.perturbation.oracles``.

Shapes: N images, P paths, C classes, K directions, *S the input shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..geometry import margin_lower_bound
from ..perturbation.bases import Subspace
from .box_margin import box_margin, measure

__all__ = ["LINE_DOUBLINGS", "SubspaceMargin", "line_ends", "subspace_margin"]

#: the straight line toward a class is followed up to 2^LINE_DOUBLINGS x its first step
LINE_DOUBLINGS = 24
#: bisection steps locating the change on a straight line
LINE_BISECTIONS = 30
_FREE = (-float("inf"), float("inf"))


class _Pathwise:
    """The model seen from u for candidates of given images: a call with m x R rows (R rows per
    candidate, candidate-major, as ``box_margin`` makes them) maps each to x0 + B u of its image."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], subspace: Subspace, image: torch.Tensor) -> None:
        self.model, self.subspace, self.image = model, subspace, image

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        rows = self.image.repeat_interleave(u.shape[0] // self.image.numel())
        return self.model(self.subspace.embed(rows, u))


@dataclass(frozen=True)
class SubspaceMargin:
    """Subspace margins of N images.

    Attributes:
        margin: (N,) float64 least FR length to the boundary found (inf: none found).
        toward: (N, C) float64 least FR length to a point where class c takes over first (inf:
            none found; inf on the source's column).
        u_end: (N, C, K) the first point past the change of each best path toward c (NaN: none).
        lower_bound: (N,) float64 LB(p(x0)).
    """

    margin: torch.Tensor
    toward: torch.Tensor
    u_end: torch.Tensor
    lower_bound: torch.Tensor


def line_ends(
    model: Callable[[torch.Tensor], torch.Tensor], subspace: Subspace, source: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each image i (N,) and class c != source: the first point past the class change on
    the straight line u = t g, g the gradient in u of z_c - z_source at u = 0, scaled so the
    first step changes the gap by 1. Returns (image (m,), class (m,), u (m, K)) of the lines
    that changed the class within 2^LINE_DOUBLINGS steps."""
    N, K = source.numel(), subspace.k
    images = torch.arange(N, device=source.device)
    zeros = torch.zeros(N, K, dtype=subspace.x0.dtype, device=source.device)
    with torch.enable_grad():
        u = zeros.clone().requires_grad_(True)
        z = _Pathwise(model, subspace, images)(u)
        C = z.shape[-1]
        grads = [
            torch.autograd.grad((z[:, c] - z.gather(1, source[:, None])[:, 0]).sum(), u, retain_graph=True)[0]
            for c in range(C)
        ]
    img, cls = torch.meshgrid(images, torch.arange(C, device=source.device), indexing="ij")
    img, cls = img.reshape(-1), cls.reshape(-1)
    keep = cls != source[img]
    img, cls = img[keep], cls[keep]
    g = torch.stack(grads, 1)[img, cls]  # (m, K)
    slope = g.square().sum(-1)
    direction = g / slope.clamp_min(1e-300)[:, None]  # a unit step changes z_c - z_y by ~1
    direction = torch.where(slope[:, None] > 0, direction, torch.zeros_like(direction))
    f = _Pathwise(model, subspace, img)
    y = source[img]

    def changed(t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return f(t[:, None] * direction).argmax(-1) != y

    lo = torch.zeros(img.numel(), dtype=direction.dtype, device=direction.device)
    hi = torch.ones_like(lo)
    done = changed(hi)
    for _ in range(LINE_DOUBLINGS):
        if done.all():
            break
        lo = torch.where(done, lo, hi)
        hi = torch.where(done, hi, 2 * hi)
        done = done | changed(hi)
    for _ in range(LINE_BISECTIONS):
        mid = (lo + hi) / 2
        c = changed(mid) & done
        hi, lo = torch.where(c, mid, hi), torch.where(c | ~done, lo, mid)
    return img[done], cls[done], (hi[:, None] * direction)[done]


def _shortest_per_class(
    model: Callable[[torch.Tensor], torch.Tensor],
    subspace: Subspace,
    source: torch.Tensor,
    img: torch.Tensor,
    u: torch.Tensor,
    traced: torch.Tensor,
    pieces: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Of the candidates (image (m,), end u (m, K), traced length (m,)), per image and class
    of their first change along the straight path, the one whose straight path (or traced
    flow) is shortest."""
    f = _Pathwise(model, subspace, img)
    nodes = torch.stack([torch.zeros_like(u), u], 1)
    length, end = measure(f, nodes, source[img], pieces)
    length = torch.minimum(length, traced)
    with torch.no_grad():
        hit = f(end).argmax(-1)
    key = img * (int(hit.max()) + 1) + hit
    order = torch.argsort(length, stable=True)
    seen: set[int] = set()
    keep = []
    for j in order.tolist():
        if int(key[j]) not in seen:
            keep.append(j)
            seen.add(int(key[j]))
    rows = torch.tensor(keep, dtype=torch.long, device=img.device)
    return img[rows], u[rows], traced[rows]


def subspace_margin(
    model: Callable[[torch.Tensor], torch.Tensor],
    subspace: Subspace,
    source: torch.Tensor,
    ends: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    *,
    nodes: int = 6,
    iterations: int = 300,
    lr: float = 0.1,
    pieces: int = 4,
) -> SubspaceMargin:
    """Subspace margins of the images x0 = ``subspace.x0`` (N, *S) of classes ``source`` (N,).

    Args:
        model: (B, *S) -> logits (B, C), in eval mode.
        subspace: the perturbation model around the N images.
        source: (N,) the class of each image (its argmax).
        ends: (image (P,), u_end (P, K), length (P,)) the first points past the change of
            traced paths and their FR lengths (``PathResult.u_end`` and ``fr_length`` of its
            successful paths), or None.
        nodes, iterations, lr, pieces: of the path-energy minimization (``box_margin``). Few
            nodes converge in fewer Adam steps: on a K = 2 affine model, 6 nodes and 300 steps
            come within 0.1% of a fine grid's shortest path, 12 nodes and 200 steps 2% above it.

    Returns:
        ``SubspaceMargin``; every finite length is >= its image's LB.

    Example:
        >>> est = subspace_margin(model, build_subspace("dct:2", x0), y)  # doctest: +SKIP
    """
    img, _cls, u = line_ends(model, subspace, source)
    traced = torch.full((img.numel(),), float("inf"), dtype=torch.float64, device=img.device)
    if ends is not None and ends[0].numel():
        img, u = torch.cat([img, ends[0].to(img.device)]), torch.cat([u, ends[1].to(u.dtype)])
        traced = torch.cat([traced, ends[2].to(traced)])
    if img.numel():
        img, u, traced = _shortest_per_class(model, subspace, source, img, u, traced, pieces)
    N, K = source.numel(), subspace.k
    with torch.no_grad():
        C = model(subspace.x0[:1]).shape[-1]
    toward = torch.full((N, C), float("inf"), dtype=torch.float64, device=source.device)
    u_best = torch.full((N, C, K), float("nan"), dtype=subspace.x0.dtype, device=source.device)
    if img.numel():
        f = _Pathwise(model, subspace, img)
        zeros = torch.zeros_like(u)
        est = box_margin(
            f, zeros, source[img], u, traced, _FREE, nodes=nodes, iterations=iterations, lr=lr, pieces=pieces
        )
        with torch.no_grad():
            hit = f(est.x_end).argmax(-1)
        for j in torch.argsort(est.length, descending=True).tolist():  # the least written last
            if torch.isfinite(est.length[j]):
                toward[img[j], hit[j]] = est.length[j]
                u_best[img[j], hit[j]] = est.x_end[j]
    with torch.no_grad():
        lb = margin_lower_bound(torch.softmax(model(subspace.x0).to(torch.float64), -1), source)
    return SubspaceMargin(margin=toward.min(-1).values, toward=toward, u_end=u_best, lower_bound=lb)
