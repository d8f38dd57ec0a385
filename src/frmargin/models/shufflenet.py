"""ShuffleNetV2 (Ma et al. 2018) for CIFAR, laid out like chenyaofo/pytorch-cifar-models.

Torchvision's ShuffleNetV2 blocks and naming (``conv1``, ``stage2..4``, ``conv5``, ``fc``): a unit
with stride 1 splits its channels in two halves, passes the first through and transforms the second
(``branch2``: 1x1 conv-BN-ReLU, depthwise 3x3 conv-BN, 1x1 conv-BN-ReLU); a unit with stride 2
transforms the whole input in two branches (``branch1``: depthwise 3x3 conv-BN, 1x1 conv-BN-ReLU).
The halves are concatenated and shuffled with 2 groups. CIFAR changes: the stem is a 3x3 conv with
stride 1 (+ BN + ReLU) and there is no max-pool. Head: ``conv5`` (1x1 conv-BN-ReLU), mean over H, W,
``fc``. No conv has a bias.

These modules take normalized inputs; ``frmargin.models`` wraps them with their normalization.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import bad_argument

__all__ = ["InvertedResidual", "ShuffleNetV2", "channel_shuffle", "shufflenet_v2"]

#: output channels of the stem, stages 2-4 and conv5, per width multiplier (torchvision's table)
CHANNELS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
REPEATS = (4, 8, 4)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W) with channel g * (C / groups) + i moved to i * groups + g."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return [*layers, nn.ReLU()] if relu else layers


class InvertedResidual(nn.Module):
    """One ShuffleNetV2 unit: (B, inp, H, W) -> (B, oup, H / stride, W / stride)."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2) or oup % 2 or (stride == 1 and inp != oup):
            raise bad_argument("stride", stride, "1 (with inp == oup) or 2, and an even oup")
        self.stride = stride
        half = oup // 2
        self.branch1 = nn.Sequential()
        if stride > 1:
            self.branch1 = nn.Sequential(
                *_conv_bn(inp, inp, 3, stride, groups=inp, relu=False), *_conv_bn(inp, half, 1)
            )
        self.branch2 = nn.Sequential(
            *_conv_bn(inp if stride > 1 else half, half, 1),
            *_conv_bn(half, half, 3, stride, groups=half, relu=False),
            *_conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 with a CIFAR stem: (B, 3, H, W) -> (B, num_classes).

    Args:
        channels: output channels of the stem, of stages 2-4 and of conv5.
        repeats: units per stage (the first of each has stride 2).
    """

    def __init__(
        self, channels: tuple[int, ...] = CHANNELS[0.5], repeats: tuple[int, ...] = REPEATS, num_classes: int = 10
    ) -> None:
        super().__init__()
        if len(channels) != len(repeats) + 2:
            raise bad_argument("channels", channels, f"{len(repeats) + 2} entries (stem, stages, conv5)")
        self.conv1 = nn.Sequential(*_conv_bn(3, channels[0], 3))
        cin = channels[0]
        for i, (cout, n) in enumerate(zip(channels[1:-1], repeats, strict=True), start=2):
            units = [InvertedResidual(cin, cout, 2)] + [InvertedResidual(cout, cout, 1) for _ in range(n - 1)]
            self.add_module(f"stage{i}", nn.Sequential(*units))
            cin = cout
        self.num_stages = len(repeats)
        self.conv5 = nn.Sequential(*_conv_bn(cin, channels[-1], 1))
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for i in range(2, self.num_stages + 2):
            out = getattr(self, f"stage{i}")(out)
        out = self.conv5(out)
        return self.fc(out.mean(dim=(-2, -1)))


def shufflenet_v2(width: float = 0.5, num_classes: int = 10) -> ShuffleNetV2:
    """ShuffleNetV2 x``width`` with a CIFAR stem, random weights.

    Example:
        >>> shufflenet_v2(0.5)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    if width not in CHANNELS:
        raise bad_argument("width", width, f"one of {sorted(CHANNELS)}")
    return ShuffleNetV2(CHANNELS[width], REPEATS, num_classes)
