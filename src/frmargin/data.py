"""Datasets: the CIFAR-10 test split (official, JPEG copy, exact subset) and user ``.npz`` files.

``load_dataset(name)`` returns a frozen ``Dataset`` with images (N, 3, 32, 32) float32 in [0, 1],
int64 labels and a provenance string. Names:

- ``cifar10``: the official test split, from the CIFAR-10 python tarball (downloaded, or a local
  copy in the home folder or mirror, or a ``cifar-10-batches-py`` folder there). It is converted once
  into ``<home>/data/cifar10-test.npz`` and read from there afterwards.
- ``cifar10-jpeg``: the 10,000 test images decoded from a JPEG copy (mirror only); NOT the
  official pixels: standard ResNets lose about 10 points of accuracy on it.
- ``cifar10-exact``: 300 lossless test images with their official indices (mirror only).
- a path to an ``.npz`` with ``images`` (N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1], and
  ``labels`` (N,); optional ``test_index``, ``class_names`` and ``source``. A path to a CIFAR-10
  python tarball or a ``cifar-10-batches-py`` folder loads the official split from there.

The official batches are Python pickles: they are read with a restricted unpickler that allows the
numpy array globals only, and the tarball is read in memory with its member names checked.

Example:
    >>> ds = load_dataset("cifar10-exact")  # doctest: +SKIP
    >>> ds.images.shape, ds.labels[:3]  # doctest: +SKIP
    (torch.Size([300, 3, 32, 32]), tensor([3, 8, 8]))
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from . import assets
from .errors import AssetError, bad_argument

__all__ = [
    "CIFAR10_CLASSES",
    "DATASET_NAMES",
    "Dataset",
    "load_dataset",
    "read_cifar_archive",
    "read_cifar_folder",
    "restricted_unpickle",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
DATASET_NAMES: tuple[str, ...] = ("cifar10", "cifar10-jpeg", "cifar10-exact")

CIFAR_ASSET = "cifar10-python"
CIFAR_FOLDER = "cifar-10-batches-py"
CONVERTED_FILE = "cifar10-test.npz"
JPEG_CAVEAT = (
    "data: JPEG (quality ~75) copy of the CIFAR-10 test split, not the official images; "
    "standard ResNets lose about 10 points of accuracy on it"
)
_CIFAR_SOURCE = "official CIFAR-10 test split (cifar-10-python.tar.gz, https://www.cs.toronto.edu/~kriz/cifar.html)"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images with labels and their provenance.

    Attributes:
        name: ``cifar10``, ``cifar10-jpeg``, ``cifar10-exact`` or the path it was loaded from.
        images: (N, C, H, W) float32 in [0, 1] (C, H, W = 3, 32, 32 for CIFAR-10).
        labels: (N,) int64.
        class_names: one name per class.
        test_index: (N,) int64, position of each image in the official test split (or in the file).
        source: human-readable provenance.
        identity: ``name``, ``sha256`` of the file the images come from, ``source``, ``num_images``;
            fit for recording in result files.
        caveat: a warning every report made from this data must show in its header, or None.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    test_index: torch.Tensor
    source: str
    identity: dict = field(default_factory=dict)
    caveat: str | None = None

    @property
    def is_jpeg_copy(self) -> bool:
        """True for the JPEG copy of CIFAR-10 (its accuracies are not the published ones)."""
        return self.name == "cifar10-jpeg"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, limit: int | None) -> Dataset:
        """The first ``limit`` images (all when None).

        Example:
            >>> len(load_dataset("cifar10-exact").head(10))  # doctest: +SKIP
            10
        """
        if limit is None:
            return self
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise bad_argument("limit", limit, "a positive integer or None")
        n = min(limit, len(self))
        identity = {**self.identity, "num_images": n}
        return dataclasses.replace(
            self,
            images=self.images[:n],
            labels=self.labels[:n],
            test_index=self.test_index[:n],
            identity=identity,
        )

    def header(self) -> list[str]:
        """Lines for the header of a report or run: data name, size, source and the caveat."""
        lines = [f"data: {self.name} ({len(self)} images)", f"source: {self.source}"]
        if self.caveat:
            lines.append(f"CAVEAT: {self.caveat}")
        return lines


# ----------------------------------------------------------------------------- public entry


def load_dataset(name: str | os.PathLike, *, progress: bool = True) -> Dataset:
    """Load a dataset by name or path (see the module docstring).

    Raises:
        FrmarginError: unknown name, or a file without the expected arrays.
        AssetError: a file is missing or fails its checksum.

    Example:
        >>> ds = load_dataset("cifar10-jpeg")  # doctest: +SKIP
        >>> ds.is_jpeg_copy, len(ds)  # doctest: +SKIP
        (True, 10000)
    """
    if name == "imagenet-sample":  # 1,000 ImageNet images at 224x224, see frmargin.imagenet
        from .imagenet import load_imagenet_sample

        return load_imagenet_sample(progress=progress)
    if isinstance(name, str) and name in DATASET_NAMES:
        if name == "cifar10":
            return _load_cifar10(progress)
        asset = "cifar10-test-jpeg" if name == "cifar10-jpeg" else "cifar10-test-exact"
        path = assets.fetch(asset, progress=progress)
        return _from_npz(path, name, assets.get_asset(asset).digest)
    path = Path(name).expanduser()
    if path.is_dir() or str(path).endswith((".tar.gz", ".tgz")):
        if not path.exists():
            raise AssetError(f"argument 'name': {str(path)!r} does not exist, expected a CIFAR-10 tarball or folder")
        return _load_cifar10(progress, local=path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise AssetError(f"argument 'name': file {str(path)!r} does not exist, expected an .npz file")
        return _from_npz(path, str(path), assets.file_digest(path, "sha256"))
    raise bad_argument(
        "name",
        str(name),
        f"one of {', '.join(DATASET_NAMES)}, imagenet-sample, a path to an .npz with 'images' and 'labels' arrays, "
        "or a CIFAR-10 python tarball or cifar-10-batches-py folder",
    )


# ----------------------------------------------------------------------------- npz files


def _as_text(value: np.ndarray | None) -> str | None:
    if value is None:
        return None
    flat = [str(v) for v in np.atleast_1d(value).ravel()]
    return "; ".join(dict.fromkeys(flat))  # unique, in order


def _from_npz(path: Path, name: str, sha256: str) -> Dataset:
    """Read an ``.npz`` (no pickles) into a ``Dataset``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise AssetError(f"file {str(path)!r}: cannot be read as .npz ({type(e).__name__}: {e})") from e
    for key in ("images", "labels"):
        if key not in arrays:
            raise AssetError(f"file {str(path)!r}: got arrays {sorted(arrays)}, expected 'images' and 'labels'")
    images = _images_to_tensor(arrays["images"], path)
    n = images.shape[0]
    labels = arrays["labels"]
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or (n and labels.min() < 0):
        raise AssetError(
            f"file {str(path)!r}: got labels {labels.dtype} {labels.shape}, "
            f"expected non-negative integers of shape ({n},)"
        )
    test_index = arrays.get("test_index", np.arange(n))
    if test_index.shape != (n,) or not np.issubdtype(test_index.dtype, np.integer):
        raise AssetError(
            f"file {str(path)!r}: got test_index {test_index.dtype} {test_index.shape}, expected ({n},) integers"
        )
    if "class_names" in arrays:
        class_names = tuple(str(c) for c in arrays["class_names"].ravel())
    elif n == 0 or labels.max() < len(CIFAR10_CLASSES):
        class_names = CIFAR10_CLASSES
    else:
        class_names = tuple(str(i) for i in range(int(labels.max()) + 1))
    if n and labels.max() >= len(class_names):
        raise AssetError(f"file {str(path)!r}: got label {int(labels.max())}, expected < {len(class_names)} classes")

    file_source = _as_text(arrays.get("source"))
    caveat = None
    if name == "cifar10-jpeg":
        source = f"JPEG copy (q~75) of the CIFAR-10 test split, not the official images: {file_source}"
        caveat = JPEG_CAVEAT
    elif name == "cifar10-exact":
        source = f"{n} exact (lossless) CIFAR-10 test images with official indices: {file_source}"
    elif name == "cifar10":
        source = file_source or _CIFAR_SOURCE
    else:
        source = f"user file {path}" + (f": {file_source}" if file_source else "")
    return Dataset(
        name=name,
        images=images,
        labels=torch.from_numpy(labels.astype(np.int64, copy=False)),
        class_names=class_names,
        test_index=torch.from_numpy(test_index.astype(np.int64, copy=False)),
        source=source,
        identity={"name": name, "sha256": sha256, "source": source, "num_images": n},
        caveat=caveat,
    )


def _images_to_tensor(images: np.ndarray, path: Path) -> torch.Tensor:
    """(N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1] -> (N, C, H, W) float32."""
    if images.ndim != 4:
        raise AssetError(
            f"file {str(path)!r}: got images of shape {images.shape}, expected (N, H, W, C) or (N, C, H, W)"
        )
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    images = np.ascontiguousarray(images)
    if images.dtype == np.uint8:
        return torch.from_numpy(images).float().div_(255.0)
    if not np.issubdtype(images.dtype, np.floating):
        raise AssetError(f"file {str(path)!r}: got images of dtype {images.dtype}, expected uint8 or float in [0, 1]")
    t = torch.from_numpy(images.astype(np.float32, copy=False))
    if t.numel() and (not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1):
        raise AssetError(f"file {str(path)!r}: got float images outside [0, 1], expected values in [0, 1]")
    return t


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
    names = tuple(
        n.decode() if isinstance(n, bytes) else str(n) for n in _key(info, "label_names", origin + "/batches.meta")
    )
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


def _converted_paths() -> tuple[Path, Path]:
    base = assets.home_dir() / "data"
    return base / CONVERTED_FILE, base / (CONVERTED_FILE + ".json")


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
    return _from_npz(npz, "cifar10", record["sha256"])


def _find_local_folder() -> Path | None:
    candidates = [assets.home_dir() / "data" / CIFAR_FOLDER]
    base = assets.mirror_setting()
    if base is not None and not base.startswith(("http://", "https://")):
        candidates += [Path(base) / "data" / CIFAR_FOLDER, Path(base) / CIFAR_FOLDER]
    return next((c for c in candidates if (c / "test_batch").is_file()), None)


def _load_cifar10(progress: bool, local: Path | None = None) -> Dataset:
    asset = assets.get_asset(CIFAR_ASSET)
    if local is None:
        done = _load_converted(asset)
        if done is not None:
            return done
        try:
            local = assets.fetch(asset, download_missing=False)
        except assets.AssetMissingError:
            local = _find_local_folder()
        if local is None:
            try:
                local = assets.fetch(asset, progress=progress)
            except assets.AssetMissingError as e:
                raise assets.AssetMissingError(
                    f"{e} An extracted {CIFAR_FOLDER} folder in {assets.home_dir() / 'data'} is accepted too."
                ) from None
    elif local.is_file():
        assets.verify_file(local, asset)
    if local.is_dir():
        arrays = read_cifar_folder(local, asset)
        origin = f"folder {local}"
    else:
        arrays = read_cifar_archive(local, asset)
        origin = f"{local.name} ({asset.checksum})"
    arrays["source"] = np.array(f"official CIFAR-10 test split, converted from {origin}")
    return _store_converted(arrays, asset)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz with fixed timestamps: the same arrays give the same bytes (and sha256)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def _store_converted(arrays: dict[str, np.ndarray], asset: assets.Asset) -> Dataset:
    """Write the converted store atomically (uncompressed .npz, fast to read) and load it."""
    npz, record_path = _converted_paths()
    npz.parent.mkdir(parents=True, exist_ok=True)
    tmp = npz.with_name(f"{npz.name}.{os.getpid()}.tmp")
    _write_npz(tmp, arrays)
    os.replace(tmp, npz)
    sha = assets.file_digest(npz, "sha256")
    record = {"sha256": sha, "from": asset.checksum, "num_images": int(arrays["labels"].shape[0])}
    tmp_record = record_path.with_name(f"{record_path.name}.{os.getpid()}.tmp")
    tmp_record.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp_record, record_path)
    return _from_npz(npz, "cifar10", sha)
