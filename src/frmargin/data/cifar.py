"""Reading the official CIFAR-10 python batches: from the tarball (in memory) or an extracted folder.

The batches are Python pickles: they are read with a restricted unpickler that allows the numpy
array globals only, and the tarball is read in memory with every member name checked (nothing is
extracted to disk). The md5 of each member used is checked against the registry.

Example:
    >>> arrays = read_cifar_archive("cifar-10-python.tar.gz")  # doctest: +SKIP
    >>> arrays["images"].shape  # doctest: +SKIP
    (10000, 32, 32, 3)
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from .. import assets
from ..errors import AssetError
from .dataset import CIFAR10_CLASSES

__all__ = ["CIFAR_ASSET", "CIFAR_FOLDER", "read_cifar_archive", "read_cifar_folder", "restricted_unpickle"]

CIFAR_ASSET = "cifar10-python"
CIFAR_FOLDER = "cifar-10-batches-py"


# ----------------------------------------------------------------------------- safe unpickling


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Allows the numpy globals an ndarray needs and nothing else."""

    def __init__(self, file: io.BufferedIOBase, origin: str) -> None:
        super().__init__(file, encoding="bytes")
        self.origin = origin

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _NUMPY_GLOBALS:
            raise AssetError(
                f"file {self.origin!r}: refusing to unpickle global {module}.{name}; "
                f"expected only numpy array globals {sorted('.'.join(g) for g in _NUMPY_GLOBALS)}"
            )
        if module == "numpy.core.multiarray":  # the name older numpy wrote; numpy 2 moved it
            module = _MULTIARRAY
        return super().find_class(module, name)


try:
    import numpy._core.multiarray

    _MULTIARRAY = "numpy._core.multiarray"
except ImportError:  # numpy < 2
    _MULTIARRAY = "numpy.core.multiarray"


def restricted_unpickle(data: bytes, origin: str) -> object:
    """Unpickle ``data`` allowing only numpy array globals (CIFAR-10 python batches need no more).

    Raises:
        AssetError: the pickle refers to any other global, or is malformed.
    """
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), origin).load()
    except AssetError:
        raise
    except Exception as e:
        raise AssetError(f"file {origin!r}: cannot be unpickled ({type(e).__name__}: {e})") from e


# ----------------------------------------------------------------------------- official CIFAR-10


def _key(d: dict, name: str, origin: str) -> object:
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise AssetError(f"file {origin!r}: got keys {sorted(map(str, d))}, expected {name!r}")


def _parse_batches(test_batch: bytes, meta: bytes, origin: str) -> dict[str, np.ndarray]:
    """Arrays of the converted store from the raw ``test_batch`` and ``batches.meta`` files."""
    batch = restricted_unpickle(test_batch, f"{origin}/test_batch")
    info = restricted_unpickle(meta, f"{origin}/batches.meta")
    if not isinstance(batch, dict) or not isinstance(info, dict):
        raise AssetError(f"{origin!r}: expected pickled dicts in test_batch and batches.meta")
    data = np.asarray(_key(batch, "data", origin + "/test_batch"))
    labels = np.asarray(_key(batch, "labels", origin + "/test_batch"), dtype=np.int64)
    raw_names = _key(info, "label_names", origin + "/batches.meta")
    if not isinstance(raw_names, (list, tuple)):
        raise AssetError(f"{origin}/batches.meta: got label_names of type {type(raw_names).__name__}, expected a list")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw_names)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise AssetError(
            f"{origin}/test_batch: got data {data.dtype} {data.shape} and {labels.shape} labels, "
            "expected uint8 (N, 3072) and N labels"
        )
    if names != CIFAR10_CLASSES:
        raise AssetError(f"{origin}/batches.meta: got label names {names}, expected {CIFAR10_CLASSES}")
    if data.shape[0] and (labels.min() < 0 or labels.max() >= len(names)):
        raise AssetError(f"{origin}/test_batch: got labels outside [0, {len(names)})")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3) like the mirror files
    return {
        "images": np.ascontiguousarray(images),
        "labels": labels,
        "test_index": np.arange(data.shape[0], dtype=np.int64),
        "class_names": np.array(names),
    }


def _check_member_md5(asset: assets.Asset, member: str, data: bytes, origin: str) -> None:
    expected = dict(asset.members).get(f"{CIFAR_FOLDER}/{member}")
    actual = hashlib.md5(data).hexdigest()
    if expected is not None and actual != expected:
        raise AssetError(f"file {origin}/{member!s}: fails its checksum: got md5 {actual}, expected md5 {expected}")


def _safe_member_name(name: str) -> bool:
    p = PurePosixPath(name)
    return not p.is_absolute() and ".." not in p.parts and "\\" not in name and ":" not in name


def read_cifar_archive(path: str | Path, asset: str | assets.Asset = CIFAR_ASSET) -> dict[str, np.ndarray]:
    """Read the test split from a CIFAR-10 python tarball, in memory.

    The archive must already be verified. Every member name is checked: an archive with an absolute
    name, a ``..`` component or a link or device member is refused as a whole, and nothing is
    written to disk. Returns arrays ``images`` (N, 32, 32, 3) uint8, ``labels``, ``test_index``,
    ``class_names``.

    Raises:
        AssetError: unsafe member, missing member or bad contents.
    """
    a = assets.get_asset(asset)
    path = Path(path)
    wanted = {f"{CIFAR_FOLDER}/test_batch": b"", f"{CIFAR_FOLDER}/batches.meta": b""}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar.getmembers():
                if not _safe_member_name(member.name) or not (member.isfile() or member.isdir()):
                    raise AssetError(
                        f"archive {str(path)!r}: refusing unsafe member {member.name!r} "
                        "(absolute, '..', link or device); expected plain files under cifar-10-batches-py/"
                    )
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    f = tar.extractfile(member)
                    wanted[name] = f.read() if f is not None else b""
    except tarfile.TarError as e:
        raise AssetError(f"archive {str(path)!r}: cannot be read ({type(e).__name__}: {e})") from e
    for name, data in wanted.items():
        if not data:
            raise AssetError(f"archive {str(path)!r}: got no member {name!r}, expected the CIFAR-10 python layout")
        _check_member_md5(a, name.rsplit("/", 1)[1], data, str(path) + ":" + CIFAR_FOLDER)
    return _parse_batches(wanted[f"{CIFAR_FOLDER}/test_batch"], wanted[f"{CIFAR_FOLDER}/batches.meta"], str(path))


def read_cifar_folder(folder: str | Path, asset: str | assets.Asset = CIFAR_ASSET) -> dict[str, np.ndarray]:
    """Read the test split from an extracted ``cifar-10-batches-py`` folder (md5 of each member checked)."""
    a = assets.get_asset(asset)
    folder = Path(folder)
    if (folder / CIFAR_FOLDER).is_dir():
        folder = folder / CIFAR_FOLDER
    raw = {}
    for member in ("test_batch", "batches.meta"):
        p = folder / member
        if not p.is_file():
            raise AssetError(f"folder {str(folder)!r}: got no file {member!r}, expected the CIFAR-10 python layout")
        raw[member] = p.read_bytes()
        _check_member_md5(a, member, raw[member], str(folder))
    return _parse_batches(raw["test_batch"], raw["batches.meta"], str(folder))
