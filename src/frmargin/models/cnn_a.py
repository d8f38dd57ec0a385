"""CNN-A of the SDP-FO verification benchmarks (Dathathri et al. 2020), as in alpha-beta-CROWN.

A ``Sequential`` whose state-dict keys are ``0.*, 2.*, 5.*, 7.*``: Conv2d(3, 16, 4, stride 2,
padding 1), ReLU, Conv2d(16, 32, 4, stride 2, padding 1), ReLU, Flatten (channel-major, 32 * 8 * 8 =
2048), Linear(2048, 100), ReLU, Linear(100, 10). Every layer has a bias; no batch norm.

These modules take normalized inputs; ``frmargin.models`` wraps them with their normalization.
"""

from __future__ import annotations

from torch import nn

__all__ = ["cnn_a"]


def cnn_a(num_classes: int = 10) -> nn.Sequential:
    """CNN-A for 32x32 RGB inputs, random weights.

    Example:
        >>> import torch
        >>> cnn_a()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return nn.Sequential(
        nn.Conv2d(3, 16, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )
