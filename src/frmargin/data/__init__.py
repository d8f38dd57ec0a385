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

Modules: ``dataset`` (the record), ``npz`` (reading and writing ``.npz``), ``cifar`` (the python
batches: restricted unpickler, safe tarball reading), ``official`` (how ``cifar10`` is resolved).

Example:
    >>> ds = load_dataset("cifar10-exact")  # doctest: +SKIP
    >>> ds.images.shape, ds.labels[:3]  # doctest: +SKIP
    (torch.Size([300, 3, 32, 32]), tensor([3, 8, 8]))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .. import assets
from ..errors import AssetError, bad_argument
from .cifar import CIFAR_ASSET, CIFAR_FOLDER, read_cifar_archive, read_cifar_folder, restricted_unpickle
from .dataset import CIFAR10_CLASSES, JPEG_CAVEAT, Dataset
from .folder import is_image_folder, read_image_folder
from .npz import read_npz
from .official import CONVERTED_FILE, LOSSLESS_ASSET, load_cifar10

__all__ = [
    "AUTO",
    "CIFAR10_CLASSES",
    "CIFAR_ASSET",
    "CIFAR_FOLDER",
    "CONVERTED_FILE",
    "DATASET_NAMES",
    "JPEG_CAVEAT",
    "LOSSLESS_ASSET",
    "Dataset",
    "load_dataset",
    "read_cifar_archive",
    "read_cifar_folder",
    "read_image_folder",
    "restricted_unpickle",
]

DATASET_NAMES: tuple[str, ...] = ("cifar10", "cifar10-jpeg", "cifar10-exact")
AUTO = "auto"
_MIRROR_SETS = {"cifar10-jpeg": "cifar10-test-jpeg", "cifar10-exact": "cifar10-test-exact"}


def _jpeg_source(text: str | None, n: int) -> str:
    return f"JPEG copy (q~75) of the CIFAR-10 test split, not the official images: {text}"


def _exact_source(text: str | None, n: int) -> str:
    return f"{n} exact (lossless) CIFAR-10 test images with official indices: {text}"


def _mirror_set(name: str, progress: bool) -> Dataset:
    asset = assets.get_asset(_MIRROR_SETS[name])
    path = assets.fetch(asset, progress=progress)
    if name == "cifar10-jpeg":
        return read_npz(path, name, asset.digest, _jpeg_source, JPEG_CAVEAT, CIFAR10_CLASSES)
    return read_npz(path, name, asset.digest, _exact_source, class_names=CIFAR10_CLASSES)


def _user_source(path: Path) -> Callable[[str | None, int], str]:
    return lambda text, n: f"user file {path}" + (f": {text}" if text else "")


def load_dataset(name: str | os.PathLike, *, progress: bool = True, resize: tuple[int, int] | None = None) -> Dataset:
    """Load a dataset by name or path (see the module docstring).

    Raises:
        FrmarginError: unknown name, or a file without the expected arrays.
        AssetError: a file is missing or fails its checksum (``auto`` falls back to the JPEG copy
            only when the official split is missing, never when a copy of it is corrupt).

    Example:
        >>> ds = load_dataset("cifar10-jpeg")  # doctest: +SKIP
        >>> ds.is_jpeg_copy, len(ds)  # doctest: +SKIP
        (True, 10000)
    """
    if name == "imagenet-sample":  # 1,000 ImageNet images at 224x224, see frmargin.imagenet
        from ..imagenet import load_imagenet_sample

        return load_imagenet_sample(progress=progress)
    if isinstance(name, str) and name == AUTO:
        try:
            return load_cifar10(progress)
        except assets.AssetMissingError:
            return _mirror_set("cifar10-jpeg", progress)
    if isinstance(name, str) and name in DATASET_NAMES:
        return load_cifar10(progress) if name == "cifar10" else _mirror_set(name, progress)
    path = Path(name).expanduser()
    if is_image_folder(path):
        return read_image_folder(path, resize)
    if resize is not None:
        raise bad_argument("resize", resize, "an image folder as data (other data keep their size)")
    if path.is_dir() or str(path).endswith((".tar.gz", ".tgz")):
        if not path.exists():
            raise AssetError(f"argument 'name': {str(path)!r} does not exist, expected a CIFAR-10 tarball or folder")
        return load_cifar10(progress, local=path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise AssetError(f"argument 'name': file {str(path)!r} does not exist, expected an .npz file")
        return read_npz(path, str(path), assets.file_digest(path, "sha256"), _user_source(path))
    raise bad_argument(
        "name",
        str(name),
        f"one of {', '.join(DATASET_NAMES)}, {AUTO}, imagenet-sample, a path to an .npz with 'images' and 'labels' arrays, "
        "an image folder root/<class>/<file> (PNG or JPEG), or a CIFAR-10 python tarball or cifar-10-batches-py folder",
    )
