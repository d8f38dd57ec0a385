"""``.npz`` files: reading them into a ``Dataset`` (never unpickling) and writing them reproducibly.

A file holds ``images`` (N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1], and ``labels`` (N,);
optionally ``test_index`` (N,), ``class_names`` and ``source`` (text). Other arrays are ignored and
not even read (e.g. the pickled ``filename`` array of the lossless CIFAR-10 file).

Example:
    >>> ds = read_npz("mine.npz", "mine.npz", sha256="...", source=lambda text, n: text or "mine")  # doctest: +SKIP
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import AssetError
from .dataset import Dataset, generic_class_names

__all__ = ["as_text", "read_npz", "write_npz"]

KEYS = ("images", "labels", "test_index", "class_names", "source")


def as_text(value: np.ndarray | None) -> str | None:
    """The text of a string array (unique entries, in order, joined by '; '), or None."""
    if value is None:
        return None
    flat = [str(v) for v in np.atleast_1d(value).ravel()]
    return "; ".join(dict.fromkeys(flat))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in KEYS if k in z.files}
    except Exception as e:
        raise AssetError(f"file {str(path)!r}: cannot be read as .npz ({type(e).__name__}: {e})") from e


def read_npz(
    path: str | Path,
    name: str,
    sha256: str,
    source: Callable[[str | None, int], str],
    caveat: str | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """Read an ``.npz`` (no pickles) into a ``Dataset``.

    Args:
        path: the file.
        name: the dataset's name.
        sha256: the file's digest, recorded in ``identity``.
        source: the provenance line from the file's own ``source`` text (or None) and the image count.
        caveat: the caveat every report on these data must show, or None.
        class_names: the names when the file has no ``class_names`` array (the CIFAR-10 sets pass
            theirs); None: ``class 0 .. class C-1``, never another dataset's names.

    Raises:
        AssetError: unreadable file, missing arrays, or arrays of the wrong shape, type or range.
    """
    path = Path(path)
    arrays = _read_arrays(path)
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
    elif class_names is None:
        class_names = generic_class_names(int(labels.max()) + 1 if n else 0)
    if n and labels.max() >= len(class_names):
        raise AssetError(f"file {str(path)!r}: got label {int(labels.max())}, expected < {len(class_names)} classes")
    text = source(as_text(arrays.get("source")), n)
    return Dataset(
        name=name,
        images=images,
        labels=torch.from_numpy(labels.astype(np.int64, copy=False)),
        class_names=class_names,
        test_index=torch.from_numpy(test_index.astype(np.int64, copy=False)),
        source=text,
        identity={"name": name, "sha256": sha256, "source": text, "num_images": n},
        caveat=caveat,
    )


def _images_to_tensor(images: np.ndarray, path: Path) -> torch.Tensor:
    """(N, H, W, C) or (N, C, H, W), uint8 or float in [0, 1] -> (N, C, H, W) float32."""
    if images.ndim != 4:
        raise AssetError(
            f"file {str(path)!r}: got images of shape {images.shape}, expected (N, H, W, C) or (N, C, H, W)"
        )
    if images.shape[0] == 0:
        raise AssetError(f"file {str(path)!r}: holds no images (shape {images.shape}), expected at least one")
    if images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.transpose(0, 3, 1, 2)
    if images.shape[1] not in (1, 3):
        raise AssetError(
            f"file {str(path)!r}: got images of shape {images.shape}, expected 1 (gray) or 3 (RGB) channels "
            "as (N, H, W, C) or (N, C, H, W); drop an alpha channel first (images[..., :3])"
        )
    images = np.ascontiguousarray(images)
    if images.dtype == np.uint8:
        return torch.from_numpy(images).float().div_(255.0)
    if not np.issubdtype(images.dtype, np.floating):
        raise AssetError(f"file {str(path)!r}: got images of dtype {images.dtype}, expected uint8 or float in [0, 1]")
    t = torch.from_numpy(images.astype(np.float32, copy=False))
    if t.numel() and (not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1):
        raise AssetError(f"file {str(path)!r}: got float images outside [0, 1], expected values in [0, 1]")
    return t


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz with fixed timestamps: the same arrays give the same bytes (and sha256)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with z.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
