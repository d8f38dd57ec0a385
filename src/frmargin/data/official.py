"""The official CIFAR-10 test split (``load_dataset("cifar10")``): where it is taken from.

Resolution, first that applies:

1. the converted store ``<home>/data/cifar10-test.npz``, made earlier from the python tarball
   (valid only if it matches its record and came from a tarball with the registered md5);
2. a local python tarball (home folder or mirror folder) or an extracted ``cifar-10-batches-py``
   folder there: converted once into the store, then read from it;
3. the lossless copy ``cifar10-test-lossless.npz`` (asset ``cifar10-test-lossless``) in the home
   folder or mirror folder: the same 10,000 images, bit-exact, in official order;
4. the python tarball downloaded (upstream, or an http(s) mirror) and converted;
5. the lossless copy downloaded from an http(s) mirror.

Every route gives the official test images: dataset ``cifar10``, no caveat. ``source`` and
``identity["sha256"]`` say which file the images came from (converted store or lossless copy).

Example:
    >>> load_cifar10(progress=False).source  # doctest: +SKIP
    'official CIFAR-10 test split, lossless copy (cifar10-test-lossless.npz, sha256 8b121d31...): ...'
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import assets
from . import cifar
from .cifar import CIFAR_ASSET, CIFAR_FOLDER
from .dataset import CIFAR10_CLASSES, Dataset
from .npz import read_npz, write_npz

__all__ = ["CONVERTED_FILE", "LOSSLESS_ASSET", "NAME", "convert", "load_cifar10", "load_lossless", "lossless_source"]

NAME = "cifar10"
LOSSLESS_ASSET = "cifar10-test-lossless"
CONVERTED_FILE = "cifar10-test.npz"
_TARBALL_SOURCE = "official CIFAR-10 test split (cifar-10-python.tar.gz, https://www.cs.toronto.edu/~kriz/cifar.html)"
#: words that mark a JPEG copy to readers of a run's provenance (the report flags such runs)
_JPEG_WORDS = ("jpeg", "jpg")


# ----------------------------------------------------------------------------- lossless copy


def lossless_source(text: str | None, sha256: str) -> str:
    """The provenance line of the lossless copy from the file's own ``source`` text.

    Clauses of that text that mention the JPEG copy (it was used only to recover the official
    order) are left out, so that nothing downstream mistakes these images for the JPEG copy.

    Example:
        >>> lossless_source("official CIFAR-10 test split, lossless: a/b@1 (PNG); ordered via the JPEG copy", "ab")
        'official CIFAR-10 test split, lossless copy (cifar10-test-lossless.npz, sha256 ab): a/b@1 (PNG), in official test order'
    """
    clauses = [c.strip() for c in (text or "").split(";")]
    kept = [c for c in clauses if c and not any(w in c.lower() for w in _JPEG_WORDS)]
    provenance = "; ".join(kept).removeprefix("official CIFAR-10 test split, lossless:").strip()
    head = f"official CIFAR-10 test split, lossless copy ({assets.get_asset(LOSSLESS_ASSET).filename}, sha256 {sha256})"
    return f"{head}: {provenance}, in official test order" if provenance else f"{head}, in official test order"


def load_lossless(path: str | Path) -> Dataset:
    """The official test split from a verified copy of ``cifar10-test-lossless.npz``."""
    sha = assets.get_asset(LOSSLESS_ASSET).digest
    return read_npz(path, NAME, sha, lambda text, n: lossless_source(text, sha), class_names=CIFAR10_CLASSES)


# ----------------------------------------------------------------------------- converted store


def _converted_paths() -> tuple[Path, Path]:
    base = assets.home_dir() / "data"
    return base / CONVERTED_FILE, base / (CONVERTED_FILE + ".json")


def _read_converted(npz: Path, sha256: str) -> Dataset:
    return read_npz(npz, NAME, sha256, lambda text, n: text or _TARBALL_SOURCE, class_names=CIFAR10_CLASSES)


def _load_converted(asset: assets.Asset) -> Dataset | None:
    """The converted store if it exists, matches its record and came from this tarball checksum."""
    npz, record_path = _converted_paths()
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not npz.is_file() or record.get("from") != asset.checksum:
        return None
    if assets.file_digest(npz, "sha256") != record.get("sha256"):
        return None  # damaged: convert again
    return _read_converted(npz, record["sha256"])


def _store_converted(arrays: dict[str, np.ndarray], asset: assets.Asset) -> Dataset:
    """Write the converted store atomically (uncompressed .npz, fast to read) and load it."""
    npz, record_path = _converted_paths()
    assets.writable_folder(npz.parent)
    tmp = npz.with_name(f"{npz.name}.{os.getpid()}.tmp")
    write_npz(tmp, arrays)
    os.replace(tmp, npz)
    sha = assets.file_digest(npz, "sha256")
    record = {"sha256": sha, "from": asset.checksum, "num_images": int(arrays["labels"].shape[0])}
    tmp_record = record_path.with_name(f"{record_path.name}.{os.getpid()}.tmp")
    tmp_record.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp_record, record_path)
    return _read_converted(npz, sha)


def convert(local: Path, asset: assets.Asset) -> Dataset:
    """Convert a verified tarball or an extracted folder into the store and load it."""
    if local.is_dir():
        arrays = cifar.read_cifar_folder(local, asset)
        origin = f"folder {local}"
    else:
        arrays = cifar.read_cifar_archive(local, asset)
        origin = f"{local.name} ({asset.checksum})"
    arrays["source"] = np.array(f"official CIFAR-10 test split, converted from {origin}")
    return _store_converted(arrays, asset)


# ----------------------------------------------------------------------------- resolution


def _find_local_folder() -> Path | None:
    candidates = [assets.home_dir() / "data" / CIFAR_FOLDER]
    base = assets.mirror_setting()
    if base is not None and not base.startswith(("http://", "https://")):
        candidates += [Path(base) / "data" / CIFAR_FOLDER, Path(base) / CIFAR_FOLDER]
    return next((c for c in candidates if (c / "test_batch").is_file()), None)


def _local(asset: str | assets.Asset) -> Path | None:
    try:
        return assets.fetch(asset, download_missing=False)
    except assets.AssetMissingError:
        return None


def load_cifar10(progress: bool = True, local: Path | None = None) -> Dataset:
    """The official CIFAR-10 test split, resolved as the module docstring says.

    Args:
        progress: progress bars for downloads.
        local: a tarball or ``cifar-10-batches-py`` folder to convert instead of resolving.

    Raises:
        AssetError: a copy fails its checksum or has bad contents.
        AssetMissingError: neither the tarball nor the lossless copy can be had; the message says
            where each was looked for and how to supply one.
    """
    asset = assets.get_asset(CIFAR_ASSET)
    if local is not None:
        if local.is_file():
            assets.verify_file(local, asset)
        return convert(local, asset)
    done = _load_converted(asset)
    if done is not None:
        return done
    found = _local(asset) or _find_local_folder()
    if found is not None:
        return convert(found, asset)
    lossless = _local(LOSSLESS_ASSET)
    if lossless is not None:
        return load_lossless(lossless)
    try:
        return convert(assets.fetch(asset, progress=progress), asset)
    except assets.AssetMissingError as tarball_missing:
        try:
            return load_lossless(assets.fetch(LOSSLESS_ASSET, progress=progress))
        except assets.AssetMissingError as lossless_missing:
            raise assets.AssetMissingError(
                f"the official CIFAR-10 test split is missing. {tarball_missing} An extracted {CIFAR_FOLDER} "
                f"folder in {assets.home_dir() / 'data'} is accepted too. Instead of the tarball, the lossless "
                f"copy serves as well: {lossless_missing}"
            ) from None
