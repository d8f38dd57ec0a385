"""The ImageNet sample: 1,000 images, one per ImageNet-1k class, preprocessed for 224x224 models.

``load_imagenet_sample()`` (``load_dataset("imagenet-sample")``) returns a ``Dataset`` with images
(1000, 3, 224, 224) float32 in [0, 1] and labels 0..999 = rank of each image's WordNet id among the
1,000 sorted wnids (the order of ``imagenet_labels.txt`` lines 1..1000 and of the models' logits).

Preprocessing (the one the MobileNetV2 accuracy in the assets README was measured with): decode with
Pillow, convert to RGB (grayscale and CMYK files included), central crop of 87.5% of each side
(TensorFlow's ``central_crop``: start = int((H - 0.875 H) / 2), size = H - 2 start), bilinear
resize to 224x224 (``PIL.Image.resize``, which filters when shrinking), /255.

The checksum list ``sample-SHA256SUMS`` is an asset (its sha256 is pinned); every image is checked
against it before decoding. The decoded uint8 array is cached in ``<home>/data/`` under a name keyed
by the checksums of the list and of the labels file and by the preprocessing version, with a record
of its own sha256, so later loads read one file (about 150 MB) instead of 1,000 JPEGs.

The images are probably ImageNet training-set images (EliSchwartz/imagenet-sample-images): models
score higher on them than on the validation set; every result made from them carries that caveat.

Example:
    >>> ds = load_imagenet_sample()  # doctest: +SKIP
    >>> ds.images.shape, ds.class_names[ds.labels[0]]  # doctest: +SKIP
    (torch.Size([1000, 3, 224, 224]), 'tench, Tinca tinca')
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .. import assets
from ..errors import AssetError
from .dataset import Dataset

__all__ = ["CAVEAT", "CROP_FRACTION", "SIZE", "decode_image", "load_imagenet_sample", "read_checksums"]

NAME = "imagenet-sample"
SUMS_ASSET = "imagenet-sample"
LABELS_ASSET = "imagenet-labels"
SAMPLE_FOLDER = "sample"
NUM_CLASSES = 1000
SIZE = 224
CROP_FRACTION = 0.875
PREPROCESS = "rgb-central_crop0.875-pil_bilinear224-v1"  # change it when the pipeline changes
CAVEAT = "data: probably ImageNet training-set images, one per class (accuracies run higher than on the validation set)"
SOURCE = (
    "1,000 ImageNet images, one per class (EliSchwartz/imagenet-sample-images commit bc69043e; "
    "probably training-set images), RGB, central crop 87.5%, bilinear resize to 224x224"
)


def read_checksums(path: Path) -> list[tuple[str, str]]:
    """``(sha256, file name)`` per line of a ``sha256sum`` list, sorted by file name.

    Raises:
        AssetError: a malformed line or a name with a folder in it.
    """
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        name = name.lstrip("*")
        if len(digest) != 64 or not name or "/" in name or "\\" in name or name.startswith("."):
            raise AssetError(f"file {str(path)!r} line {n}: got {line!r}, expected '<sha256>  <file name>'")
        rows.append((digest.lower(), name))
    return sorted(rows, key=lambda r: r[1])


def _class_names(path: Path) -> tuple[str, ...]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) != NUM_CLASSES + 1 or lines[0].strip() != "background":
        raise AssetError(
            f"file {str(path)!r}: got {len(lines)} lines starting {lines[:1]!r}, "
            f"expected {NUM_CLASSES + 1} lines starting with 'background'"
        )
    names = [s.strip() for s in lines[1:]]
    # two classes share a name ("crane": the bird 134 and the machine 517): readers need them distinct
    seen = {n: names.count(n) for n in names}
    return tuple(f"{n} (class {i})" if seen[n] > 1 else n for i, n in enumerate(names))


def decode_image(data: bytes, size: int = SIZE, fraction: float = CROP_FRACTION) -> np.ndarray:
    """JPEG (or any Pillow format) bytes -> (size, size, 3) uint8 RGB: central crop, bilinear resize.

    Example:
        >>> decode_image(Path("n01440764_tench.JPEG").read_bytes()).shape  # doctest: +SKIP
        (224, 224, 3)
    """
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
    w, h = rgb.size
    top, left = int((h - h * fraction) / 2), int((w - w * fraction) / 2)
    box = (left, top, w - left, h - top)
    out = rgb.crop(box).resize((size, size), Image.Resampling.BILINEAR)
    return np.array(out, dtype=np.uint8)


def _cache_paths(key: str) -> tuple[Path, Path]:
    base = assets.home_dir() / "data" / f"{NAME}-{key}.npz"
    return base, base.with_name(base.name + ".json")


def _cache_key(sums: assets.Asset, labels: assets.Asset) -> str:
    text = f"{sums.checksum} {labels.checksum} {PREPROCESS}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_cache(key: str) -> tuple[dict[str, np.ndarray], str] | None:
    npz, record_path = _cache_paths(key)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not npz.is_file() or record.get("key") != key or assets.file_digest(npz, "sha256") != record.get("sha256"):
        return None  # absent or damaged: decode again
    try:
        with np.load(npz, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, record["sha256"]
    except Exception:
        return None


def _decode_all(sums_path: Path, key: str) -> dict[str, np.ndarray]:
    rows = read_checksums(sums_path)
    wnids = [name.split("_", 1)[0] for _, name in rows]
    if len(rows) != NUM_CLASSES or len(set(wnids)) != NUM_CLASSES:
        raise AssetError(
            f"file {str(sums_path)!r}: got {len(rows)} files with {len(set(wnids))} distinct wnids, "
            f"expected {NUM_CLASSES} files, one per class"
        )
    folder = sums_path.parent / SAMPLE_FOLDER
    images = np.empty((len(rows), SIZE, SIZE, 3), dtype=np.uint8)
    gray = []
    for i, (digest, name) in enumerate(rows):
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise assets.AssetMissingError(
                f"image {str(path)!r} listed in {str(sums_path)!r} cannot be read ({e}); "
                f"expected the {NUM_CLASSES} sample images in the folder {SAMPLE_FOLDER}/ beside the list"
            ) from e
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise AssetError(f"image {str(path)!r} fails its checksum: got sha256 {actual}, expected sha256 {digest}")
        images[i] = decode_image(data)
        gray.append(_is_gray(data))
    order = np.argsort(wnids, kind="stable")
    ranks = np.searchsorted(np.array(sorted(wnids)), np.array(wnids))  # class = rank of the wnid
    return {
        "images": images[order],
        "labels": ranks[order].astype(np.int64),
        "wnid": np.array(wnids)[order],
        "filename": np.array([r[1] for r in rows])[order],
        "grayscale": np.array(gray)[order],
        "key": np.array(key),
    }


def _is_gray(data: bytes) -> bool:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.mode in ("L", "LA", "1", "I", "I;16")


def _write_cache(arrays: dict[str, np.ndarray], key: str) -> str:
    npz, record_path = _cache_paths(key)
    assets.writable_folder(npz.parent)
    tmp = npz.with_name(f"{npz.name}.{os.getpid()}.tmp.npz")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:  # an uncompressed .npz: fast to read
        for name, value in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
    os.replace(tmp, npz)
    sha = assets.file_digest(npz, "sha256")
    tmp_record = record_path.with_name(f"{record_path.name}.{os.getpid()}.tmp")
    tmp_record.write_text(json.dumps({"key": key, "sha256": sha, "preprocess": PREPROCESS}, indent=1), encoding="utf-8")
    os.replace(tmp_record, record_path)
    return sha


def load_imagenet_sample(*, progress: bool = True) -> Dataset:
    """The 1,000 sample images as a ``Dataset`` (see the module docstring); cached after the first call.

    Raises:
        AssetError: the checksum list, the labels file or an image is missing or fails its checksum.

    Example:
        >>> ds = load_imagenet_sample()  # doctest: +SKIP
        >>> len(ds), ds.caveat.startswith("data: probably ImageNet training-set")  # doctest: +SKIP
        (1000, True)
    """
    sums, labels_asset = assets.get_asset(SUMS_ASSET), assets.get_asset(LABELS_ASSET)
    sums_path = assets.fetch(sums, progress=progress)
    class_names = _class_names(assets.fetch(labels_asset, progress=progress))
    key = _cache_key(sums, labels_asset)
    cached = _read_cache(key)
    if cached is None:
        _write_cache(_decode_all(sums_path, key), key)
        cached = _read_cache(key)
        if cached is None:
            raise AssetError(f"cache of {NAME} in {str(_cache_paths(key)[0])!r} was written but cannot be read back")
    arrays, sha = cached
    images = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    labels = torch.from_numpy(arrays["labels"].astype(np.int64, copy=False))
    n = int(labels.shape[0])
    return Dataset(
        name=NAME,
        images=images,
        labels=labels,
        class_names=class_names,
        test_index=torch.arange(n),
        source=SOURCE,
        identity={
            "name": NAME,
            "sha256": sums.digest,
            "source": SOURCE,
            "num_images": n,
            "preprocess": PREPROCESS,
            "cache_sha256": sha,
        },
        caveat=CAVEAT,
    )
