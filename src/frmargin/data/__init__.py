"""Datasets: the CIFAR-10 test split (official, JPEG copy, exact subset) and user ``.npz`` files.

``load_dataset(name)`` returns a frozen ``Dataset`` with images (N, 3, 32, 32) float32 in [0, 1],
int64 labels and a provenance string. Names:

- ``cifar10``: the official test split (all 10,000 images, official order, no caveat). Taken from
  the CIFAR-10 python tarball when one is in the home folder or mirror folder (converted once into
  ``<home>/data/cifar10-test.npz``), else from the lossless copy ``cifar10-test-lossless.npz`` of
  the mirror, else from the tarball downloaded (see ``frmargin.data.official`` for the full order).
- ``cifar10-jpeg``: the 10,000 test images decoded from a JPEG copy (mirror only); NOT the
  official pixels: standard ResNets lose about 10 points of accuracy on it.
- ``cifar10-exact``: 300 lossless test images with their official indices (mirror only).
- ``auto``: ``cifar10`` when it can be had by any route, else ``cifar10-jpeg`` (with its caveat).
- a path to an image folder ``root/<class>/<file>`` (PNG or JPEG; class names = folder names,
  sorted; ``resize=(H, W)`` optional), see ``frmargin.data.folder``.
- a path to an ``.npz`` with ``images`` (N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1], and
  ``labels`` (N,); optional ``test_index``, ``class_names`` and ``source`` (without ``class_names``: ``class 0 ..
  class C-1``). A path to a CIFAR-10
  python tarball or a ``cifar-10-batches-py`` folder loads the official split from there.

Modules: ``load`` (``load_dataset``), ``classes`` (the CIFAR-10 class names), ``dataset`` (the
record), ``npz`` (reading and writing ``.npz``), ``folder`` (image folders), ``cifar`` (the python
batches: restricted unpickler, safe tarball reading), ``official`` (how ``cifar10`` is resolved),
``imagenet`` (the ImageNet sample). Names load on first use, so ``frmargin.data.classes`` imports
no torch.

Example:
    >>> ds = load_dataset("cifar10-exact")  # doctest: +SKIP
    >>> ds.images.shape, ds.labels[:3]  # doctest: +SKIP
    (torch.Size([300, 3, 32, 32]), tensor([3, 8, 8]))
"""

from __future__ import annotations

from typing import Any

from .._lazy import lazy_attribute, lazy_dir

_LAZY = {
    "AUTO": ".load",
    "DATASET_NAMES": ".load",
    "load_dataset": ".load",
    "CIFAR10_CLASSES": ".classes",
    "JPEG_CAVEAT": ".dataset",
    "Dataset": ".dataset",
    "CIFAR_ASSET": ".cifar",
    "CIFAR_FOLDER": ".cifar",
    "read_cifar_archive": ".cifar",
    "read_cifar_folder": ".cifar",
    "restricted_unpickle": ".cifar",
    "read_image_folder": ".folder",
    "CONVERTED_FILE": ".official",
    "LOSSLESS_ASSET": ".official",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)


def __dir__() -> list[str]:
    return lazy_dir(__name__, __all__)
