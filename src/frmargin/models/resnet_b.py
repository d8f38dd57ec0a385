"""CIFAR ResNets with option-B shortcuts, laid out like chenyaofo/pytorch-cifar-models.

Same stem, stages and basic block as ``resnet_cifar`` (He et al. 2016, CIFAR variant: 3x3 conv
3 -> 16, BN, ReLU; three stages of n basic blocks with 16, 32, 64 channels, stride 2 at the first
block of stages 2 and 3; no conv bias), but where the shape changes the shortcut is "option B":
``downsample`` = 1x1 conv (stride 2, no bias) + BN. Torchvision naming (``conv1``, ``bn1``,
``layer1..3``, ``downsample``, ``fc``). Head: global average pool, ``fc`` Linear(64, 10).

These modules take normalized inputs; ``frmargin.models`` wraps them with their normalization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import bad_argument
from .resnet_cifar import WIDTHS

__all__ = ["BasicBlockB", "CifarResNetB", "cifar_resnet_b"]


class BasicBlockB(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus shortcut (identity or 1x1 conv + BN), ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class CifarResNetB(nn.Module):
    """Option-B CIFAR ResNet with ``blocks`` basic blocks per stage: (B, 3, 32, 32) -> (B, num_classes)."""

    def __init__(self, blocks: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        in_planes = WIDTHS[0]
        stages = []
        for i, planes in enumerate(WIDTHS):
            layers = []
            for j in range(blocks):
                layers.append(BasicBlockB(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(WIDTHS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(out.mean(dim=(-2, -1)))


def cifar_resnet_b(depth: int, num_classes: int = 10) -> CifarResNetB:
    """Option-B ResNet-``depth`` for CIFAR (depth = 6 n + 2: 20, 56, ...), random weights.

    Example:
        >>> cifar_resnet_b(20)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise bad_argument("depth", depth, "an integer 6 n + 2 with n >= 1 (20, 32, 44, 56, ...)")
    return CifarResNetB((depth - 2) // 6, num_classes)
