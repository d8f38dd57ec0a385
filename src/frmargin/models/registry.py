"""The model zoo: one ``ModelSpec`` per pretrained model, with the facts needed to build, load and
describe it (architecture, family, training, input normalization, accuracies).

To add a model, append a ``ModelSpec`` to ``_TABLE`` (and its weight file to the asset registry
under the same name, or name another asset in ``asset``). A spec whose file is not a PyTorch
checkpoint (e.g. TFLite) supplies ``loader``: a function from the verified file to the loaded
network; ``load_model`` then wraps, freezes and returns it like the others.

Accuracies are top-1 fractions. ``accuracy`` is measured on the official CIFAR-10 test split (all
10,000 images; the assets README table, reproduced by ``tests/test_models.py``); ``published`` is
the upstream figure where there is one; ``acc_exact`` and ``acc_jpeg`` are on ``cifar10-exact``
and ``cifar10-jpeg`` (for the first six models as recorded before, ``acc_exact`` from 493 exact
images; for the others measured with this code on the 300 images of ``cifar10-exact``).

Example:
    >>> MODELS["resnet20-b"].family
    'ResNet option-B (chenyaofo)'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from torch import nn

from ..errors import bad_argument
from .cnn_a import cnn_a
from .resnet_adv import resnet2b, resnet4b
from .resnet_b import cifar_resnet_b
from .resnet_cifar import cifar_resnet
from .shufflenet import shufflenet_v2

__all__ = ["CHECKPOINT_LAYOUTS", "MODELS", "NORMALIZATIONS", "ModelSpec", "Normalization", "get_spec"]


@dataclass(frozen=True)
class Normalization:
    """``(x - mean) / std`` per RGB channel, for inputs in [0, 1]."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


NORMALIZATIONS: dict[str, Normalization] = {
    n.name: n
    for n in (
        Normalization("ImageNet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        Normalization("CIFAR (A)", (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
        Normalization("CIFAR (B)", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        Normalization("SDP", (125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255)),
    )
}

#: ``"wrapped"``: a dict with the state dict under ``"state_dict"``; ``"bare"``: the file is the state dict
CHECKPOINT_LAYOUTS = ("wrapped", "bare")

STANDARD = "standard"


def adversarial(eps: str) -> str:
    """The training label of PGD adversarial training at L-inf radius ``eps`` (e.g. ``"2/255"``)."""
    return f"adversarial (PGD, L-inf {eps})"


@dataclass(frozen=True)
class ModelSpec:
    """Everything known about one pretrained model.

    Attributes:
        name: registry key and (by default) asset name, e.g. ``"resnet20"``.
        builder: the architecture with random weights (it takes normalized inputs).
        family: e.g. ``"ResNet (akamaster)"``.
        architecture: one line, e.g. ``"CIFAR ResNet-20 (3 blocks/stage), option-A shortcuts"``.
        training: ``"standard"``, ``"adversarial (PGD, L-inf 2/255)"``, ``"mixed clean/PGD"``, ...
        normalization: applied inside the loaded model.
        accuracy: top-1 on ``accuracy_data`` (for CIFAR-10 models the official test split; the
            assets README table, reproduced by the tests).
        published: the upstream top-1, or None.
        acc_exact: top-1 on ``cifar10-exact`` (or None).
        acc_jpeg: top-1 on ``cifar10-jpeg`` (or None).
        checkpoint: one of ``CHECKPOINT_LAYOUTS``.
        prefix: a key prefix to strip (e.g. ``"module."`` of DataParallel checkpoints).
        channels_last: store conv weights channels-last (faster CPU forward passes and Jacobians).
        asset: the asset holding the weights; None means ``name``.
        loader: for files that are not PyTorch checkpoints: verified path -> network.
        input: the expected input, in words.
        accuracy_data: the data ``accuracy`` is measured on (e.g. another model family's sample set).
    """

    name: str
    builder: Callable[[], nn.Module]
    family: str
    architecture: str
    training: str
    normalization: Normalization
    accuracy: float
    published: float | None = None
    acc_exact: float | None = None
    acc_jpeg: float | None = None
    checkpoint: str = "bare"
    prefix: str = ""
    channels_last: bool = True
    asset: str | None = None
    loader: Callable[[Path], nn.Module] | None = None
    input: str = "RGB in [0, 1], shape (B, 3, 32, 32)"
    accuracy_data: str = "cifar10"

    def __post_init__(self) -> None:
        if self.checkpoint not in CHECKPOINT_LAYOUTS:
            raise bad_argument("checkpoint", self.checkpoint, f"one of {CHECKPOINT_LAYOUTS}")

    @property
    def asset_name(self) -> str:
        """The asset holding the weights."""
        return self.asset or self.name


_AKAMASTER = "ResNet (akamaster)"
_CHENYAOFO = "ResNet option-B (chenyaofo)"


def _akamaster(depth: int, accuracy: float, exact: float, jpeg: float) -> ModelSpec:
    n = (depth - 2) // 6
    return ModelSpec(
        f"resnet{depth}",
        partial(cifar_resnet, depth),
        _AKAMASTER,
        f"CIFAR ResNet-{depth} ({n} blocks/stage), option-A shortcuts",
        STANDARD,
        NORMALIZATIONS["ImageNet"],
        accuracy,
        published=accuracy,
        acc_exact=exact,
        acc_jpeg=jpeg,
        checkpoint="wrapped",
        prefix="module.",
    )


def _chenyaofo(depth: int, accuracy: float, exact: float, jpeg: float) -> ModelSpec:
    n = (depth - 2) // 6
    return ModelSpec(
        f"resnet{depth}-b",
        partial(cifar_resnet_b, depth),
        _CHENYAOFO,
        f"CIFAR ResNet-{depth} ({n} blocks/stage), option-B shortcuts (1x1 conv + BN)",
        STANDARD,
        NORMALIZATIONS["CIFAR (B)"],
        accuracy,
        published=accuracy,
        acc_exact=exact,
        acc_jpeg=jpeg,
    )


def _robust(blocks: str, builder: Callable[[], nn.Module], accuracy: float, exact: float, jpeg: float) -> ModelSpec:
    return ModelSpec(
        f"resnet{blocks}-adv2",
        builder,
        "ResNet-2B/4B",
        f"ResNet-{blocks.upper()} (alpha-beta-CROWN), no batch norm",
        adversarial("2/255"),
        NORMALIZATIONS["CIFAR (A)"],
        accuracy,
        acc_exact=exact,
        acc_jpeg=jpeg,
        checkpoint="wrapped",
    )


def _cnn_a(name: str, training: str, accuracy: float, exact: float, jpeg: float) -> ModelSpec:
    return ModelSpec(
        name,
        cnn_a,
        "CNN-A",
        "CNN-A (SDP-FO): 2 strided 4x4 convs (16, 32), dense 100, dense 10",
        training,
        NORMALIZATIONS["SDP"],
        accuracy,
        acc_exact=exact,
        acc_jpeg=jpeg,
        channels_last=False,  # measured: no gain for so small a net
    )


_TABLE: tuple[ModelSpec, ...] = (
    _akamaster(20, 0.9173, 0.917, 0.810),
    _akamaster(32, 0.9263, 0.927, 0.826),
    _akamaster(44, 0.9310, 0.917, 0.827),
    _akamaster(56, 0.9339, 0.935, 0.832),
    _robust("2b", resnet2b, 0.6925, 0.704, 0.687),
    _robust("4b", resnet4b, 0.7720, 0.785, 0.765),
    _chenyaofo(20, 0.9260, 0.943, 0.8105),
    _chenyaofo(56, 0.9437, 0.957, 0.8367),
    ModelSpec(
        "shufflenetv2-x0.5",
        partial(shufflenet_v2, 0.5),
        "ShuffleNetV2",
        "ShuffleNetV2 x0.5 (chenyaofo), CIFAR stem: 3x3 conv stride 1, no max-pool",
        STANDARD,
        NORMALIZATIONS["CIFAR (B)"],
        0.9065,
        published=0.9013,
        acc_exact=0.903,
        acc_jpeg=0.8338,
        channels_last=False,  # measured: depthwise convs are slower channels-last on CPU
    ),
    _cnn_a("cnn-a-adv2", adversarial("2/255"), 0.6565, 0.700, 0.6554),
    _cnn_a("cnn-a-adv4", adversarial("4/255"), 0.5652, 0.593, 0.5602),
    _cnn_a("cnn-a-mix", "mixed clean/PGD", 0.7418, 0.793, 0.7319),
)

MODELS: dict[str, ModelSpec] = {s.name: s for s in _TABLE}


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model.

    Raises:
        FrmarginError: no model of that name.
    """
    if name not in MODELS:
        raise bad_argument("model", name, f"one of {', '.join(MODELS)}")
    return MODELS[name]
