"""Models: the zoo's definitions and weights, users' own models, and the wrappers that adapt them.

Modules: ``registry`` (the zoo's facts), ``zoo`` (building and loading them), ``wrappers``
(``Normalized``), ``custom`` (users' factories, TorchScript and ``torch.export`` files),
``checkpoints`` (weight files as training scripts write them), ``outputs`` (``logits_of``: Hugging
Face outputs, dicts and tuples read as logits), ``ecosystem`` (``timm:NAME``, ``robustbench:NAME``),
``mobilenet`` and ``tflite`` (the ImageNet MobileNetV2 imported from TFLite), and one module per
architecture (``resnet_cifar``, ``resnet_b``, ``resnet_adv``, ``shufflenet``, ``cnn_a``).

Every model returned here takes RGB images in [0, 1] of shape (B, 3, 32, 32), normalizes them
inside, returns logits (B, 10) and is in eval mode with frozen parameters. Any other ``nn.Module``
that returns logits works with the rest of the library as well; ``logits_of(model)`` adapts one
whose output holds them. ``list_models()`` lists the zoo
(twelve models of five families); ``frmargin.models.registry`` holds the facts.

Example:
    >>> from frmargin.models import load_model
    >>> model = load_model("resnet20")  # doctest: +SKIP
    >>> model(torch.rand(4, 3, 32, 32)).shape  # doctest: +SKIP
    torch.Size([4, 10])
"""

from __future__ import annotations

from .checkpoints import load_weights
from .outputs import LogitsOf, logits_of
from .registry import ModelSpec
from .wrappers import Normalized
from .zoo import (
    MODEL_NAMES,
    build_model,
    fuse_batchnorm,
    is_registered,
    list_models,
    load_model,
    model_info,
    top1_correct,
)

__all__ = [
    "MODEL_NAMES",
    "LogitsOf",
    "ModelSpec",
    "Normalized",
    "build_model",
    "fuse_batchnorm",
    "is_registered",
    "list_models",
    "load_model",
    "load_weights",
    "logits_of",
    "model_info",
    "top1_correct",
]
