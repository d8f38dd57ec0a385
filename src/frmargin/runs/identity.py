"""What a run was made from: identity dicts of models and data, with structural hashes.

Registered models keep their asset facts (``model_info``: file, sha256, architecture, ...) and
datasets loaded by name or path keep the identity their loader gives them. A module or tensors
handed in from Python are identified by a structural hash: SHA-256 over every parameter and buffer
(name, dtype, shape, bytes) of the module, and over the images, labels and class names of the data.
Equal hashes mean the same weights and data; a resumed run compares them.

Example:
    >>> import torch
    >>> a = model_identity(torch.nn.Linear(2, 3))
    >>> a["kind"], len(a["structural_hash"])
    ('module', 64)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["data_identity", "model_identity", "structural_hash", "tensors_hash"]


def _update(h: Any, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def structural_hash(module: nn.Module) -> str:
    """SHA-256 (hex) of a module's parameters and buffers: names, dtypes, shapes and values.

    Example:
        >>> m = torch.nn.Linear(2, 2)
        >>> structural_hash(m) == structural_hash(m)
        True
    """
    h = hashlib.sha256()
    state = module.state_dict(keep_vars=False)
    for name in sorted(state):
        value = state[name]
        if isinstance(value, torch.Tensor):
            _update(h, name, value)
    for name, buf in sorted(module.named_buffers()):  # non-persistent buffers too (e.g. normalization)
        _update(h, "buffer:" + name, buf)
    return h.hexdigest()


def tensors_hash(tensors: Sequence[torch.Tensor], texts: Sequence[str] = ()) -> str:
    """SHA-256 (hex) of tensors (dtype, shape, bytes) and strings, in order."""
    h = hashlib.sha256()
    for i, t in enumerate(tensors):
        _update(h, str(i), t)
    for text in texts:
        h.update(text.encode() + b"\0")
    return h.hexdigest()


def model_identity(model: str | nn.Module, **facts: object) -> dict:
    """The ``model_identity`` entry of run.json.

    Args:
        model: a registered name (its ``model_info``) or a module (its structural hash).
        **facts: entries to add, e.g. ``spec``, ``file``, ``sha256``, ``normalization``.
    """
    if isinstance(model, str):
        from ..models import model_info

        try:
            return {**model_info(model), **facts}
        except (KeyError, ValueError):
            return {"name": model, **facts}
    n_params = sum(int(p.numel()) for p in model.parameters())
    return {
        "name": facts.pop("name", type(model).__name__),
        "kind": facts.pop("kind", "module"),
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "num_parameters": n_params,
        "structural_hash": structural_hash(model),
        **facts,
    }


def data_identity(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], name: str) -> dict:
    """The identity of in-memory data: its name, size and structural hash (``sha256``)."""
    digest = tensors_hash([images, labels], list(class_names))
    return {"name": name, "sha256": digest, "source": "in-memory tensors", "num_images": int(labels.shape[0])}
