"""``load_dataset``: a dataset by name or path (see ``frmargin.data`` for the names)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .. import assets
from ..errors import AssetError, bad_argument
from .classes import CIFAR10_CLASSES
from .dataset import JPEG_CAVEAT, Dataset
from .folder import is_image_folder, read_image_folder
from .imagenet import load_imagenet_sample
from .npz import read_npz
from .official import load_cifar10

__all__ = ["AUTO", "DATASET_NAMES", "load_dataset"]

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
    if name == "imagenet-sample":  # 1,000 ImageNet images at 224x224, see frmargin.data.imagenet
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
