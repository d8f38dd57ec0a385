"""The zoo: building, loading and describing the registered models (``registry``), and the
top-1 accuracy of any model.

Example:
    >>> model = load_model("resnet20")  # doctest: +SKIP
    >>> model(torch.rand(4, 3, 32, 32)).shape  # doctest: +SKIP
    torch.Size([4, 10])
"""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import assets
from ..errors import AssetError, FrmarginError, bad_argument
from .custom import load_user_model
from .mobilenet import IMAGENET_MODELS, imagenet_model_info, load_imagenet_model
from .registry import MODELS, ModelSpec, get_spec
from .wrappers import Normalized

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MODEL_NAMES",
    "build_model",
    "fuse_batchnorm",
    "is_registered",
    "list_models",
    "load_model",
    "model_info",
    "top1_correct",
]

MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def model_info(name: str) -> dict:
    """Facts about a pretrained model: file, checksum, family, architecture, training,
    normalization, accuracies.

    ``expected_accuracy`` holds top-1 fractions: ``cifar10`` on the official test split (10,000
    images), ``published`` upstream (or None), and on ``cifar10-exact`` and ``cifar10-jpeg``.

    Example:
        >>> model_info("resnet20")["expected_accuracy"]["cifar10"]
        0.9173
    """
    if name in IMAGENET_MODELS:
        return imagenet_model_info(name)
    s = get_spec(name)
    a = assets.get_asset(s.asset_name)
    return {
        "name": s.name,
        "file": a.filename,
        "sha256": a.digest,
        "family": s.family,
        "architecture": s.architecture,
        "training": s.training,
        "normalization": {"name": s.normalization.name, "mean": s.normalization.mean, "std": s.normalization.std},
        "input": s.input,
        "url": a.urls[0] if a.urls else None,
        "licence": a.licence,
        "expected_accuracy": {
            "cifar10": s.accuracy,
            "published": s.published,
            "cifar10-exact": s.acc_exact,
            "cifar10-jpeg": s.acc_jpeg,
        },
    }


def list_models() -> pd.DataFrame:
    """The model zoo as a DataFrame, one row per model.

    Columns: ``name``, ``family``, ``architecture``, ``training``, ``normalization``, ``accuracy``
    (top-1 fraction measured on ``accuracy_data``: ``cifar10``, the official CIFAR-10 test split, for
    every CIFAR model), ``accuracy_data``, ``published`` (upstream top-1, NaN where there is none),
    ``file``, ``sha256``.

    Example:
        >>> list_models().set_index("name").loc["cnn-a-mix", "training"]
        'mixed clean/PGD'
    """
    import pandas as pd

    rows = []
    for s in MODELS.values():
        a = assets.get_asset(s.asset_name)
        rows.append(
            {
                "name": s.name,
                "family": s.family,
                "architecture": s.architecture,
                "training": s.training,
                "normalization": s.normalization.name,
                "accuracy": s.accuracy,
                "accuracy_data": s.accuracy_data,
                "published": s.published,
                "file": a.filename,
                "sha256": a.digest,
            }
        )
    return pd.DataFrame(rows)


def build_model(name: str) -> Normalized:
    """The named architecture with its normalization, random weights, eval mode.

    Example:
        >>> build_model("resnet2b-adv2")(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    s = get_spec(name)
    return Normalized(s.builder(), s.normalization.mean, s.normalization.std).eval()


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that follows a Conv2d into the convolution, in place.

    Two layouts are recognised: attributes ``convX``/``bnX`` of one module, and a Conv2d directly
    followed by a BatchNorm2d in an ``nn.Sequential``. The folded BN becomes ``nn.Identity``. The
    function computed is the same (up to rounding); forward passes and Jacobians get cheaper.

    Example:
        >>> m = fuse_batchnorm(build_model("shufflenetv2-x0.5"))
        >>> any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
        False
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for sub in list(module.modules()):
        children = list(sub.named_children())
        pairs = [(name, "conv" + name[2:]) for name, _ in children if name.startswith("bn")]
        if isinstance(sub, nn.Sequential):
            pairs += [(b, c) for (c, _), (b, _) in itertools.pairwise(children)]
        for bn_name, conv_name in pairs:
            bn, conv = getattr(sub, bn_name, None), getattr(sub, conv_name, None)
            if isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d) and not bn.training:
                setattr(sub, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(sub, bn_name, nn.Identity())
    return module


def _state_dict(checkpoint: object, spec: ModelSpec, path: Path) -> dict:
    """The state dict of a checkpoint in the spec's layout, with the spec's key prefix removed."""
    if spec.checkpoint == "wrapped":
        state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise AssetError(f"weight file {str(path)!r}: got no 'state_dict' entry, expected a checkpoint dict")
    elif isinstance(checkpoint, dict) and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    else:
        raise AssetError(f"weight file {str(path)!r}: got {type(checkpoint).__name__}, expected a bare state dict")
    return {k.removeprefix(spec.prefix) if spec.prefix else k: v for k, v in state.items()}


def _read_net(spec: ModelSpec, path: Path) -> nn.Module:
    """The network of ``spec`` with the weights of the verified file ``path`` (strict load)."""
    if spec.loader is not None:
        return spec.loader(path)
    net = spec.builder()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text advises weights_only=False: never relay that
        raise AssetError(
            f"weight file {str(path)!r}: holds pickled objects or code beyond plain tensors, refused for "
            "safety (nothing in it was run); replace it with a good copy of the weights"
        ) from None
    except Exception as e:
        detail = next((line for line in str(e).splitlines() if line.strip() and "weights_only" not in line), "")
        raise AssetError(
            f"weight file {str(path)!r}: cannot be read ({type(e).__name__}: {detail[:200]}); replace it with a good copy"
        ) from e
    try:
        net.load_state_dict(_state_dict(checkpoint, spec, path), strict=True)
    except RuntimeError as e:
        raise AssetError(f"weight file {str(path)!r} does not fit {spec.name}: {e}") from e
    return net


def _channels_last(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)


def is_registered(name: str) -> bool:
    """True for the names of the zoo (and the ImageNet models)."""
    return name in MODELS or name in IMAGENET_MODELS


def load_model(
    name: str,
    *,
    progress: bool = True,
    fuse: bool = True,
    weights: str | None = None,
    weights_sha256: str | None = None,
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> nn.Module:
    """A pretrained model from the asset store: inputs (B, 3, 32, 32) in [0, 1], logits (B, 10).

    Any other ``name`` is a user's model (``frmargin.models.custom``): ``package.module:callable``
    or ``path/to/file.py:callable`` (with ``weights``, ``weights_sha256``), a TorchScript file or
    a ``torch.export`` ``.pt2`` archive, wrapped in ``Normalized`` when ``normalize=(means, stds)``.

    The weight file is fetched (see ``frmargin.assets``), its sha256 checked, and only then read
    with ``torch.load(..., weights_only=True)`` and loaded strictly. Parameters are frozen; the
    model is in eval mode.

    With ``fuse`` (default) batch norm is folded into the convolutions (same function, cheaper).
    Where the spec says so, convolution weights are stored channels-last, which makes CPU forward
    passes and Jacobians about 25% faster (inputs may keep the usual layout).

    Raises:
        FrmarginError: unknown name.
        AssetError: the weight file is missing, corrupt or does not fit the architecture.

    Example:
        >>> load_model("resnet20")(torch.rand(1, 3, 32, 32)).argmax(-1)  # doctest: +SKIP
    """
    if not is_registered(name):
        return load_user_model(name, weights=weights, weights_sha256=weights_sha256, normalize=normalize)[0]
    if weights is not None or normalize is not None:
        what = "--weights" if weights is not None else "--normalize"
        raise FrmarginError(
            f"option '{what}': given with the registered model {name!r}, expected it only with a user's model "
            "(registered models hold their weights and normalization)"
        )
    if name in IMAGENET_MODELS:
        return load_imagenet_model(name, progress=progress)
    spec = get_spec(name)
    path = assets.fetch(spec.asset_name, progress=progress)
    net = _read_net(spec, path).eval()
    model = Normalized(net, spec.normalization.mean, spec.normalization.std).eval()
    if fuse:
        fuse_batchnorm(model)
    if spec.channels_last:
        _channels_last(model)
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
