"""CIFAR ResNets with option-B shortcuts, laid out like chenyaofo/pytorch-cifar-models.

Same stem, stages and basic block as ``resnet_cifar`` (He et al. 2016, CIFAR variant: 3x3 conv
3 -> 16, BN, ReLU; three stages of n basic blocks with 16, 32, 64 channels, stride 2 at the first
block of stages 2 and 3; no conv bias), but where the shape changes the shortcut is "option B":
``downsample`` = 1x1 conv (stride 2, no bias) + BN. Torchvision naming (``conv1``, ``bn1``,
``layer1..3``, ``downsample``, ``fc``). Head: global average pool, ``fc`` Linear(64, 10).

These modules take normalized inputs; ``frmargin.models`` wraps them with their normalization.
"""

from __future__ import annotations

from torch import nn

from .resnet_cifar import CifarResNet, Layout, cifar_resnet

__all__ = ["OPTION_B", "cifar_resnet_b", "conv_shortcut"]


def conv_shortcut(in_planes: int, planes: int, stride: int) -> nn.Module:
    """Option B: 1x1 conv (``stride``, no bias) + BN, (B, in_planes, H, W) -> (B, planes, H / stride, W / stride)."""
    return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))


OPTION_B = Layout(conv_shortcut, "downsample", "fc")


def cifar_resnet_b(depth: int, num_classes: int = 10) -> CifarResNet:
    """Option-B ResNet-``depth`` for CIFAR (depth = 6 n + 2: 20, 56, ...), random weights.

    Example:
        >>> import torch
        >>> cifar_resnet_b(20)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return cifar_resnet(depth, num_classes, OPTION_B)
