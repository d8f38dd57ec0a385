"""MobileNetV2 1.0 (224 x 224, ImageNet-1k) from its 8-bit quantized TFLite file, run in float32.

``load_imagenet_model("mobilenetv2-imagenet")`` returns the DEQUANTIZED FLOAT VERSION of the 8-bit
quantized model ``mobilenet_v2_1.0_224_quant.tflite`` (google-coral/test_data): weights are
dequantized, activations are not re-quantized, so its logits differ from integer TFLite execution
(it scores top-1 84.6%, top-5 96.5% on the 1,000 ``imagenet-sample`` images). It is differentiable.

Input: RGB in [0, 1] of shape (B, 3, 224, 224). The file's uint8 input has scale 1/128 and zero
point 128; pixel values are taken as ``pixel = 255 x`` (the 8-bit value a [0, 1] image came from),
so the model sees ``(255 x - 128) / 128``, i.e. ``Normalized`` with mean = std = 128/255 per channel.
Output: (B, 1000) logits in the sorted-wnid order (the file's background logit 0 is dropped).

The conversion (``frmargin.models.tflite``) runs once per file checksum; the converted graph is
cached as ``<home>/weights/<file>.<sha256[:16]>.converted.pt`` and read back with
``torch.load(..., weights_only=True)``, so later loads need neither the ``tflite`` package nor parsing.

Example:
    >>> model = load_imagenet_model("mobilenetv2-imagenet")  # doctest: +SKIP
    >>> model(torch.rand(2, 3, 224, 224)).shape  # doctest: +SKIP
    torch.Size([2, 1000])
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .. import assets
from ..errors import AssetError, bad_argument
from .tflite import TFLiteGraph, read_tflite
from .tflite_net import TFLiteNet
from .wrappers import Normalized

__all__ = ["CAVEAT", "IMAGENET_MODELS", "DropFirstLogit", "imagenet_model_info", "load_imagenet_model"]

IMAGENET_MODELS: tuple[str, ...] = ("mobilenetv2-imagenet",)
PIXEL_SCALE = 255.0  # pixel = 255 x for x in [0, 1]
CAVEAT = (
    "model: dequantized float32 version of an 8-bit quantized TFLite MobileNetV2 "
    "(weights dequantized, activations not re-quantized); its outputs differ from integer TFLite execution"
)
EXPECTED = {"imagenet-sample": {"top1": 0.846, "top5": 0.965}}


class DropFirstLogit(nn.Module):
    """``net(x)[:, 1:]``: drops the background logit of a 1001-output ImageNet model."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 1:]


def _check(name: str) -> None:
    if name not in IMAGENET_MODELS:
        raise bad_argument("model", name, f"one of {', '.join(IMAGENET_MODELS)}")


def converted_path(name: str) -> Path:
    """Where the converted graph of model ``name`` is cached (keyed by the file's sha256)."""
    a = assets.get_asset(name)
    return assets.home_dir() / a.kind / f"{a.filename}.{a.digest[:16]}.converted.pt"


def load_graph(name: str, *, progress: bool = True) -> tuple[TFLiteGraph, bool]:
    """The converted graph of ``name`` and whether it came from the cache.

    The TFLite file is fetched and its sha256 checked every time (a cached check is cheap); the
    cache is used when it records that same sha256, else the file is converted and the cache
    rewritten atomically.

    Raises:
        AssetError: the file is missing, corrupt or holds an unsupported graph.
    """
    _check(name)
    a = assets.get_asset(name)
    path = assets.fetch(name, progress=progress)
    cache = converted_path(name)
    if cache.is_file():
        try:
            saved = torch.load(cache, map_location="cpu", weights_only=True)
            if isinstance(saved, dict) and saved.get("source_sha256") == a.digest:
                return TFLiteGraph.from_dict(saved["graph"]), True
        except Exception:  # damaged or from another version: convert again
            pass
    graph = read_tflite(path.read_bytes(), str(path))
    assets.writable_folder(cache.parent)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    torch.save({"source_sha256": a.digest, "graph": graph.to_dict()}, tmp)
    os.replace(tmp, cache)
    return graph, False


def build_imagenet_model(graph: TFLiteGraph) -> Normalized:
    """``Normalized(DropFirstLogit(TFLiteNet(graph)))`` from a graph with a quantized uint8 input.

    The graph input real = scale * (255 x - zero_point) is ``(x - mean) / std`` with
    mean = zero_point / 255 and std = 1 / (255 scale).
    """
    if graph.input_quant is None:
        raise AssetError("TFLite graph: got a float input, expected a quantized (uint8) image input")
    scale, zero_point = graph.input_quant
    channels = graph.input_shape[-1]
    mean = (zero_point / PIXEL_SCALE,) * channels
    std = (1.0 / (PIXEL_SCALE * scale),) * channels
    return Normalized(DropFirstLogit(TFLiteNet(graph)), mean, std)


def load_imagenet_model(name: str, *, progress: bool = True) -> Normalized:
    """The pretrained ImageNet model ``name``: inputs (B, 3, 224, 224) in [0, 1], logits (B, 1000).

    Eval mode, frozen parameters, channels-last weights. The dequantized float version of an
    8-bit quantized model: it differs from integer TFLite execution.

    Raises:
        FrmarginError: unknown name.
        AssetError: the TFLite file is missing, corrupt or unsupported.

    Example:
        >>> load_imagenet_model("mobilenetv2-imagenet")(torch.rand(1, 3, 224, 224)).argmax(-1)  # doctest: +SKIP
    """
    graph, _ = load_graph(name, progress=progress)
    model = build_imagenet_model(graph)
    with torch.no_grad():  # channels-last convolution weights: about 2x faster forward passes on CPU
        for p in model.parameters():
            if p.ndim == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    model.requires_grad_(False)
    return model.eval()


def imagenet_model_info(name: str) -> dict:
    """Facts about an ImageNet model: file, checksum, architecture, input scaling, accuracies.

    Example:
        >>> imagenet_model_info("mobilenetv2-imagenet")["expected_accuracy"]["imagenet-sample"]["top1"]
        0.846
    """
    _check(name)
    a = assets.get_asset(name)
    return {
        "name": name,
        "file": a.filename,
        "sha256": a.digest,
        "architecture": "MobileNetV2 1.0, 224x224, ImageNet-1k; dequantized float32 version of an 8-bit "
        "quantized TFLite model (differs from integer TFLite execution)",
        "normalization": {
            "name": "TFLite uint8 input: (255 x - 128) / 128",
            "mean": (128 / 255,) * 3,
            "std": (128 / 255,) * 3,
        },
        "input": "RGB in [0, 1], shape (B, 3, 224, 224)",
        "output": "(B, 1000) logits, sorted-wnid order (background logit dropped, softmax dropped)",
        "num_classes": 1000,
        "url": a.urls[0] if a.urls else None,
        "licence": a.licence,
        "caveat": CAVEAT,
        "expected_accuracy": EXPECTED,
    }
