"""The CIFAR ResNet family of He et al. (2016), laid out like akamaster/pytorch_resnet_cifar10.

Stem: conv3x3 3 -> 16 (no bias), BN, ReLU. Three stages of n basic blocks with 16, 32, 64 channels;
the first block of stages 2 and 3 has stride 2. Shortcut "option A": identity, or where the shape
changes, ``x[:, :, ::2, ::2]`` zero-padded with planes // 4 channels on each side (no parameters).
Head: global average pool, Linear(64, 10). Depth = 6 n + 2.

The block and the network serve every CIFAR ResNet layout: a ``Layout`` names the shortcut used where
the shape changes and the attribute names of the checkpoint (``resnet_b`` holds option B).

These modules take normalized inputs; ``frmargin.models`` wraps them with their normalization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import bad_argument

__all__ = ["OPTION_A", "BasicBlock", "CifarResNet", "Layout", "cifar_resnet", "pad_shortcut"]

WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class Layout:
    """One checkpoint layout of the CIFAR ResNet.

    Attributes:
        shortcut: ``(in_planes, planes, stride) -> module``, the shortcut of a block whose shape
            changes (other blocks have ``nn.Identity``).
        shortcut_name: the block's attribute (and state-dict key) of the shortcut.
        head_name: the network's attribute (and state-dict key) of the final Linear.
    """

    shortcut: Callable[[int, int, int], nn.Module]
    shortcut_name: str
    head_name: str


class _PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the channels (pad on each side)."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


def pad_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    """Option A: (B, in_planes, H, W) -> (B, planes, H / 2, W / 2), zero-padded channels, no parameters."""
    return _PadShortcut(planes // 4)


OPTION_A = Layout(pad_shortcut, "shortcut", "linear")


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut (identity or the layout's), ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, layout: Layout = OPTION_A) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes = stride != 1 or in_planes != planes
        self.shortcut_name = layout.shortcut_name
        self.add_module(layout.shortcut_name, layout.shortcut(in_planes, planes, stride) if changes else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + getattr(self, self.shortcut_name)(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet with ``blocks`` basic blocks per stage: (B, 3, 32, 32) -> (B, num_classes)."""

    def __init__(self, blocks: int, num_classes: int = 10, layout: Layout = OPTION_A) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        in_planes = WIDTHS[0]
        stages = []
        for i, planes in enumerate(WIDTHS):
            layers = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride, layout))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.head_name = layout.head_name
        self.add_module(layout.head_name, nn.Linear(WIDTHS[-1], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = out.mean(dim=(-2, -1))
        return getattr(self, self.head_name)(out)


def cifar_resnet(depth: int, num_classes: int = 10, layout: Layout = OPTION_A) -> CifarResNet:
    """ResNet-``depth`` for CIFAR (depth = 6 n + 2: 20, 32, 44, 56, 110, ...), random weights.

    Example:
        >>> cifar_resnet(20)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise bad_argument("depth", depth, "an integer 6 n + 2 with n >= 1 (20, 32, 44, 56, ...)")
    return CifarResNet((depth - 2) // 6, num_classes, layout)
