"""The small ResNets ResNet-2B and ResNet-4B of Verified-Intelligence/alpha-beta-CROWN.

No batch norm; every conv has a bias. Stem: conv3x3 stride 2, 3 -> ``stem`` channels, ReLU. Stages
of 2 basic blocks; the first block of each stage has stride 2. Basic block:
``relu(conv2(relu(conv1(x))) + shortcut(x))`` with 3x3 convs (padding 1); the shortcut is a 1x1 conv
with the block's stride when the shape changes, else identity. Head: flatten, Linear(-> 100), ReLU,
Linear(100 -> 10).

The checkpoints fix the widths: 2B has stem 8 and one stage of 16 channels (flatten 16*8*8 = 1024);
4B has stem 16 and stages of 32 and 32 channels (flatten 32*4*4 = 512).

These modules take normalized inputs; ``frmargin.models`` wraps them with their normalization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import bad_argument

__all__ = ["AdvBasicBlock", "AdvResNet", "resnet2b", "resnet4b"]


class AdvBasicBlock(nn.Module):
    """relu(conv2(relu(conv1(x))) + shortcut(x)); all convs with bias."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        return F.relu(out + self.shortcut(x))


class AdvResNet(nn.Module):
    """Stem, ``len(stages)`` stages of ``blocks`` blocks, dense head: (B, 3, H, W) -> (B, num_classes).

    Args:
        stem: channels of the stem conv.
        stages: channels of each stage.
        blocks: basic blocks per stage.
        image_size: input height and width (square).
        hidden: width of the hidden dense layer.
    """

    def __init__(
        self,
        stem: int,
        stages: tuple[int, ...],
        blocks: int = 2,
        image_size: int = 32,
        hidden: int = 100,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if not stages or image_size % 2 ** (len(stages) + 1):
            raise bad_argument("image_size", image_size, f"a multiple of {2 ** (len(stages) + 1)}")
        self.conv1 = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=True)
        in_planes = stem
        for i, planes in enumerate(stages, start=1):
            layers = []
            for j in range(blocks):
                layers.append(AdvBasicBlock(in_planes, planes, 2 if j == 0 else 1))
                in_planes = planes
            self.add_module(f"layer{i}", nn.Sequential(*layers))
        self.num_stages = len(stages)
        side = image_size // 2 ** (len(stages) + 1)
        self.linear1 = nn.Linear(stages[-1] * side * side, hidden)
        self.linear2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        for i in range(1, self.num_stages + 1):
            out = getattr(self, f"layer{i}")(out)
        out = F.relu(self.linear1(out.flatten(1)))
        return self.linear2(out)


def resnet2b() -> AdvResNet:
    """ResNet-2B, random weights.

    Example:
        >>> resnet2b()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return AdvResNet(stem=8, stages=(16,))


def resnet4b() -> AdvResNet:
    """ResNet-4B, random weights.

    Example:
        >>> resnet4b()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return AdvResNet(stem=16, stages=(32, 32))
