"""Wrappers that adapt a network to what frmargin expects: inputs in [0, 1] (``Normalized``)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import bad_argument

__all__ = ["Normalized"]


class Normalized(nn.Module):
    """``net((x - mean) / std)`` for x of shape (B, C, H, W) in [0, 1]; mean, std of shape (C,)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.mean.shape[1]:  # no silent broadcast of 1 channel to 3
            raise bad_argument(
                "x", f"shape {tuple(x.shape)}", f"(B, {self.mean.shape[1]}, H, W): one normalization per channel"
            )
        return self.net((x - self.mean) / self.std)
