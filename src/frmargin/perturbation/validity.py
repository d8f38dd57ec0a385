"""How far perturbed inputs leave the valid input range: a path in a subspace may end at an
input no image has (pixels below 0 or above 1).

Example:
    >>> out_of_range(torch.tensor([[-0.5, 0.2, 1.1, 0.9]]), (0.0, 1.0))
    (tensor([0.5000], dtype=torch.float64), tensor([0.5000], dtype=torch.float64))
"""

from __future__ import annotations

import torch

__all__ = ["out_of_range"]


def out_of_range(x: torch.Tensor, input_range: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """For inputs x (P, *S): the share (P,) of coordinates outside [lo, hi] and the largest
    distance (P,) of a coordinate outside it (0 when inside), float64."""
    lo, hi = (float(v) for v in input_range)
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    below, above = (lo - flat).clamp_min(0), (flat - hi).clamp_min(0)
    outside = (below > 0) | (above > 0)
    return outside.to(torch.float64).mean(-1), torch.maximum(below, above).amax(-1)
