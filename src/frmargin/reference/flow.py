"""``exact_flow``: the exact natural-gradient flow of a piecewise-linear network, event by event.

For each path (an input, its source class, a target class) the flow moves p along its simplex
line, and x with the minimum-norm velocity that does so, through one activation region after
another (``regions``), until the source ties with another class. It gives the flow's input path
and its L2 distance at the class change to rounding, the number of regions it crossed, and what
happened on the way (boundaries it slid along, where it left the valid input range, its largest
input speed), in float64. Slow (one Jacobian and two forward-mode products per region) and meant
as a reference: the tracer's paths and its ``l2`` column are measured against it.

Shapes: P paths, C classes, *S the input shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import pandas as pd
import torch

from ..errors import bad_argument
from ..geometry import fr_distance
from .linearize import PiecewiseLinear
from .regions import RegionWalk, line_length

__all__ = ["EXACT_STATUSES", "ExactPaths", "exact_flow"]

#: ok: the class changed; rank_deficient: the centred Jacobian (with the rows of the boundaries
#: held) lost rank, so p cannot follow its line; corner: several units reached zero at once and
#: no choice of sides for them lets the flow go on (or more than ``sliding.MAX_CORNER`` did);
#: zeno: it held and released units ``regions.ZENO`` times in a row without entering a new
#: region; max_regions: the region budget ran out; misclassified: the source is not the argmax at x0
EXACT_STATUSES = ("ok", "rank_deficient", "corner", "zeno", "max_regions", "misclassified")


@dataclass(frozen=True)
class ExactPaths:
    """The exact flow of P paths.

    Attributes:
        status: one of ``EXACT_STATUSES`` per path.
        fr_length: (P,) FR length to the class change (the arc of the simplex line; up to the
            last region reached where the path did not end ``ok``).
        l2, linf: (P,) norms of x_end - x0.
        first_hit: (P,) the class that ties with the source at the end of the line (-1 where
            the path did not end ``ok``).
        x_end: (P, *S) float64 point where the flow ends (on the tie when ``ok``).
        regions: (P,) activation regions the path passed through (1: none crossed).
        slides: (P,) boundaries the flow slid along (units held at their kink).
        left_range: (P,) FR length at which x first left the valid range (NaN: never, or no range).
        max_speed: (P,) largest L2 input speed per unit FR length (at the regions' starts).
        max_condition: (P,) largest condition number of the centred Jacobian solved.
        line_error: (P,) largest FR distance between the network's p and the line's, at the
            regions' starts and at the end: a self-check (rounding, ~1e-12).
        profile: per path (n, 2) float64: FR length and L2 at each region change (``record``).
    """

    status: list[str]
    fr_length: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    first_hit: torch.Tensor
    x_end: torch.Tensor
    regions: torch.Tensor
    slides: torch.Tensor
    left_range: torch.Tensor
    max_speed: torch.Tensor
    max_condition: torch.Tensor
    line_error: torch.Tensor
    profile: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.status)

    def to_frame(self) -> pd.DataFrame:
        """One row per path, every scalar field."""
        data: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("x_end", "profile"):
                continue
            data[f.name] = value.numpy() if isinstance(value, torch.Tensor) else value
        return pd.DataFrame(data)


def _check(
    x: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    max_regions: int,
    valid: tuple[float, float] | None,
) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] == 0:
        raise bad_argument("x", getattr(x, "shape", type(x).__name__), "a tensor (P, *S) of P >= 1 inputs")
    for name, v in (("source", source), ("target", target)):
        if not isinstance(v, torch.Tensor) or v.shape != (x.shape[0],) or v.dtype != torch.int64:
            raise bad_argument(name, getattr(v, "shape", v), f"an int64 tensor of shape ({x.shape[0]},)")
    if (source == target).any():
        raise bad_argument("target", target.tolist(), "a class different from source on every path")
    if not (isinstance(max_regions, int) and max_regions >= 1):
        raise bad_argument("max_regions", max_regions, "an integer >= 1")
    if valid is not None and not (
        len(valid) == 2 and all(isinstance(v, (int, float)) for v in valid) and float(valid[0]) < float(valid[1])
    ):
        raise bad_argument("valid", valid, "None or (lo, hi) with lo < hi")


def exact_flow(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    valid: tuple[float, float] | None = (0.0, 1.0),
    max_regions: int = 200_000,
    batch_size: int = 16,
    record: bool = False,
) -> ExactPaths:
    """The exact natural-gradient flow from x (P, *S) toward ``target`` (P,), region by region.

    The model must be piecewise linear in its input (ReLU, leaky ReLU, absolute value, 2-D
    max-pool, linear and convolution layers, eval-mode batch norm, additions, average pooling,
    reshapes); anything else raises ``NotPiecewiseLinear`` naming the module. It runs in float64
    on a copy of the model. ``valid``: the input range whose exit is recorded (``left_range``).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x = torch.randn(2, 4)
        >>> y = net(x).argmax(-1)
        >>> paths = exact_flow(net, x, y, (y + 1) % 3, valid=None)
        >>> paths.status
        ['ok', 'ok']
    """
    _check(x, source, target, max_regions, valid)
    net = PiecewiseLinear(model, x[:1])
    parts = []
    for lo in range(0, x.shape[0], batch_size):
        sl = slice(lo, lo + batch_size)
        parts.append(RegionWalk(net, x[sl], source[sl], target[sl], valid, max_regions, record).run())
    return _collect(net, parts)


def _collect(net: PiecewiseLinear, parts: list[RegionWalk]) -> ExactPaths:
    """The results of the batches, on the CPU; the line's self-check closed at the end points."""

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(w, name) for w in parts]).cpu()

    x0, x_end = cat("x0"), cat("x")
    delta = (x_end - x0).flatten(1)
    status = [st for w in parts for st in w.status]
    with torch.no_grad():
        p_end = torch.softmax(torch.cat([net.model(w.x) for w in parts]), -1).cpu()
    # the network's p at the end points against the line's
    p_line = cat("p0").clone()
    rows = torch.arange(p_line.shape[0])
    y, k, s = cat("y"), cat("k"), cat("s")
    p_line[rows, y] -= s
    p_line[rows, k] += s
    ok = torch.tensor([st == "ok" for st in status])
    return ExactPaths(
        status=status,
        fr_length=torch.cat([line_length(w.s, w.py0, w.pk0) for w in parts]).cpu(),
        l2=delta.norm(dim=-1),
        linf=delta.abs().amax(-1),
        first_hit=torch.where(ok, cat("hit"), torch.full_like(y, -1)),
        x_end=x_end,
        regions=cat("regions"),
        slides=cat("slides"),
        left_range=cat("left_range"),
        max_speed=cat("max_speed"),
        max_condition=cat("max_condition"),
        line_error=torch.maximum(cat("line_error"), fr_distance(p_end, p_line)),
        profile=None
        if parts[0].profile is None
        else [torch.tensor(pr, dtype=torch.float64) for w in parts for pr in (w.profile or [])],
    )
