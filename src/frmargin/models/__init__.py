"""Pretrained CIFAR-10 models: definitions, normalization wrappers and weight loading.

Every model returned here takes RGB images in [0, 1] of shape (B, 3, 32, 32), normalizes them
inside, returns logits (B, 10) and is in eval mode with frozen parameters. Any other ``nn.Module``
that returns logits works with the rest of the library as well.

Example:
    >>> from frmargin.models import load_model
    >>> model = load_model("resnet20")  # doctest: +SKIP
    >>> model(torch.rand(4, 3, 32, 32)).shape  # doctest: +SKIP
    torch.Size([4, 10])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from .. import assets
from ..errors import AssetError, bad_argument
from .mobilenet import IMAGENET_MODELS, imagenet_model_info, load_imagenet_model
from .resnet_adv import resnet2b, resnet4b
from .resnet_cifar import cifar_resnet

__all__ = [
    "MODEL_NAMES",
    "Normalized",
    "build_model",
    "load_model",
    "model_info",
    "top1_correct",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)


class Normalized(nn.Module):
    """``net((x - mean) / std)`` for x of shape (B, C, H, W) in [0, 1]; mean, std of shape (C,)."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass(frozen=True)
class _Spec:
    name: str
    builder: Callable[[], nn.Module]
    architecture: str
    normalization: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    acc_exact: float
    acc_jpeg: float
    acc_published: float | None


_IMAGENET = ("ImageNet", IMAGENET_MEAN, IMAGENET_STD)
_CIFAR = ("CIFAR", CIFAR_MEAN, CIFAR_STD)
_ADV = "PGD adversarially trained (L-inf 2/255)"


def _standard(depth: int, exact: float, jpeg: float, published: float) -> _Spec:
    arch = f"CIFAR ResNet-{depth} ({(depth - 2) // 6} blocks/stage)"
    return _Spec(f"resnet{depth}", partial(cifar_resnet, depth), arch, *_IMAGENET, exact, jpeg, published)


# Expected top-1: on the exact images (assets README, measured on 493 images), on the JPEG copy, published.
_SPECS: dict[str, _Spec] = {
    s.name: s
    for s in (
        _standard(20, 0.917, 0.810, 0.9173),
        _standard(32, 0.927, 0.826, 0.9263),
        _standard(44, 0.917, 0.827, 0.9310),
        _standard(56, 0.935, 0.832, 0.9339),
        _Spec("resnet2b-adv2", resnet2b, f"ResNet-2B, {_ADV}", *_CIFAR, 0.704, 0.687, None),
        _Spec("resnet4b-adv2", resnet4b, f"ResNet-4B, {_ADV}", *_CIFAR, 0.785, 0.765, None),
    )
}

MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise bad_argument("model", name, f"one of {', '.join(MODEL_NAMES)}")
    return _SPECS[name]


def model_info(name: str) -> dict:
    """Facts about a pretrained model: file, checksum, architecture, normalization, accuracies.

    Accuracies are top-1 fractions measured on the 300 exact images (``cifar10-exact``) and on the
    JPEG copy (``cifar10-jpeg``), and the published test accuracy where there is one.

    Example:
        >>> model_info("resnet20")["expected_accuracy"]["cifar10-exact"]
        0.917
    """
    if name in IMAGENET_MODELS:
        return imagenet_model_info(name)
    s = _spec(name)
    a = assets.get_asset(name)
    return {
        "name": s.name,
        "file": a.filename,
        "sha256": a.digest,
        "architecture": s.architecture,
        "normalization": {"name": s.normalization, "mean": s.mean, "std": s.std},
        "input": "RGB in [0, 1], shape (B, 3, 32, 32)",
        "url": a.urls[0] if a.urls else None,
        "licence": a.licence,
        "expected_accuracy": {
            "cifar10-exact": s.acc_exact,
            "cifar10-jpeg": s.acc_jpeg,
            "published": s.acc_published,
        },
    }


def build_model(name: str) -> Normalized:
    """The named architecture with its normalization, random weights, eval mode.

    Example:
        >>> build_model("resnet2b-adv2")(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    s = _spec(name)
    return Normalized(s.builder(), s.mean, s.std).eval()


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that follows a Conv2d (attributes ``convX``/``bnX`` of one
    module) into the convolution, in place. The function computed is the same (up to rounding);
    forward passes and Jacobians get cheaper.

    Example:
        >>> m = fuse_batchnorm(build_model("resnet20"))
        >>> any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
        False
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for sub in list(module.modules()):
        for name, child in list(sub.named_children()):
            if isinstance(child, nn.BatchNorm2d) and name.startswith("bn"):
                conv = getattr(sub, "conv" + name[2:], None)
                if isinstance(conv, nn.Conv2d) and not child.training:
                    setattr(sub, "conv" + name[2:], fuse_conv_bn_eval(conv, child))
                    setattr(sub, name, nn.Identity())
    return module


def load_model(name: str, *, progress: bool = True, fuse: bool = True) -> Normalized:
    """A pretrained model from the asset store: inputs (B, 3, 32, 32) in [0, 1], logits (B, 10).

    The weight file is fetched (see ``frmargin.assets``), its sha256 checked, and only then read
    with ``torch.load(..., weights_only=True)``. Parameters are frozen; the model is in eval mode.

    With ``fuse`` (default) batch norm is folded into the convolutions (same function, cheaper).
    The convolution weights are stored channels-last, which makes CPU forward passes and
    Jacobians about 25% faster (inputs may keep the usual layout).

    Raises:
        FrmarginError: unknown name.
        AssetError: the weight file is missing, corrupt or does not fit the architecture.

    Example:
        >>> load_model("resnet20")(torch.rand(1, 3, 32, 32)).argmax(-1)  # doctest: +SKIP
    """
    if name in IMAGENET_MODELS:
        return load_imagenet_model(name, progress=progress)
    model = build_model(name)
    path = assets.fetch(name, progress=progress)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AssetError(f"weight file {str(path)!r}: cannot be read ({type(e).__name__}: {e})") from e
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise AssetError(f"weight file {str(path)!r}: got no 'state_dict' entry, expected a checkpoint dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise AssetError(f"weight file {str(path)!r} does not fit {name}: {e}") from e
    model.eval()
    if fuse:
        fuse_batchnorm(model)
    model.to(memory_format=torch.channels_last)
    model.requires_grad_(False)
    return model.eval()


@torch.no_grad()
def top1_correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250) -> int:
    """Number of images whose arg-max logit equals the label; images (N, 3, H, W), labels (N,).

    Example:
        >>> x, y = torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
        >>> top1_correct(build_model("resnet20"), x, y) <= 4
        True
    """
    if images.shape[0] != labels.shape[0]:
        raise bad_argument("labels", f"{labels.shape[0]} labels", f"{images.shape[0]}, one per image")
    if batch_size < 1:
        raise bad_argument("batch_size", batch_size, "a positive integer")
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
    return correct
