"""The path-table columns of a run with a perturbation model (``TraceOptions.perturbation``).

Per path: ``out_of_range`` (the share of input coordinates of x_end outside the input range)
and ``range_violation`` (the largest distance of one outside it); in natural-gradient runs also
``subspace_margin`` (the image's true margin within the subspace, ``paths.subspace_margin``)
and ``target_margin`` (its nearest boundary point toward the path's target; NaN where none was
found). ``u_norm`` comes with the ``PathResult``. Euclidean runs leave the margins NaN (they
are properties of the image and the subspace, measured once by the natural-gradient run).

Shapes: P paths, N images of the chunk.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..options import TraceOptions
from ..paths import PathResult
from ..paths.subspace_margin import subspace_margin
from ..perturbation.bases import build_subspace
from ..perturbation.spec import parse_perturbation
from ..perturbation.validity import out_of_range
from .config import RunConfig

__all__ = [
    "MARGIN_ITERATIONS",
    "MARGIN_LR",
    "MARGIN_NODES",
    "PERTURBATION_COLUMNS",
    "run_trace_options",
    "subspace_columns",
]

#: the columns ``subspace_columns`` adds
PERTURBATION_COLUMNS = ("out_of_range", "range_violation", "subspace_margin", "target_margin")
#: the path-energy minimization of a run's subspace margins (``paths.subspace_margin``)
#: (4 nodes and 100 Adam steps: within 0.5% of a fine grid's shortest path on a K = 2 affine model,
#: for the cost of 8 nodes and 60 steps, 5% above it)
MARGIN_NODES = 4
MARGIN_ITERATIONS = 100
MARGIN_LR = 0.1


def run_trace_options(config: RunConfig) -> TraceOptions:
    """The run's tracing options, a ``random`` model without a seed drawn with the run's."""
    trace = config.trace
    if trace.perturbation == "pixels":
        return trace
    return trace.replace(perturbation=parse_perturbation(trace.perturbation).with_seed(config.seed).text)


def subspace_columns(
    model: nn.Module,
    x_images: torch.Tensor,
    rep: torch.Tensor,
    source: torch.Tensor,
    result: PathResult,
    config: RunConfig,
) -> dict[str, np.ndarray]:
    """The columns (``PERTURBATION_COLUMNS``) of P paths from the chunk's images x_images
    (N, *S), ``rep`` (P,) the image of each path (indices into x_images), ``source`` (P,)."""
    share, worst = out_of_range(result.x_end, config.input_range)
    columns = {"out_of_range": share.cpu().numpy(), "range_violation": worst.cpu().numpy()}
    nan = np.full(len(result), np.nan)
    if config.trace.metric != "fisher":
        return {**columns, "subspace_margin": nan, "target_margin": nan.copy()}
    images, first = torch.unique(rep, return_inverse=True)
    y = torch.zeros(images.numel(), dtype=torch.long, device=rep.device)
    y[first] = source
    ok = result.success
    assert result.u_end is not None
    ends = (first[ok], result.u_end[ok], result.fr_length[ok])
    subspace = build_subspace(run_trace_options(config).perturbation, x_images[images])
    est = subspace_margin(model, subspace, y, ends, nodes=MARGIN_NODES, iterations=MARGIN_ITERATIONS, lr=MARGIN_LR)
    assert result.target is not None
    toward = est.toward[first, result.target.to(first.device)]
    return {**columns, "subspace_margin": _finite(est.margin[first]), "target_margin": _finite(toward)}


def _finite(t: torch.Tensor) -> np.ndarray:
    """``t`` as numpy, NaN where it is not finite (no boundary point found)."""
    return torch.where(torch.isfinite(t), t, torch.full_like(t, float("nan"))).cpu().numpy()


def add_subspace_columns(frame: pd.DataFrame, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """The path table with the perturbation columns appended."""
    for name in PERTURBATION_COLUMNS:
        frame[name] = columns[name]
    return frame
