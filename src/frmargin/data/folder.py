"""Image folders: ``root/<class>/<file>`` (PNG or JPEG) read with Pillow into a ``Dataset``.

Class names are the sub-folder names, sorted; files are taken in sorted order within each class.
Images are grayscale (one channel) when every file is, else RGB; all must have one size unless
``resize=(H, W)`` is given (bilinear). The identity's ``sha256`` covers every file's relative path
and bytes, so renaming or editing a file changes it.

Example:
    >>> ds = read_image_folder("digits/", resize=(8, 8))  # doctest: +SKIP
    >>> ds.class_names  # doctest: +SKIP
    ('0', '1', ..., '9')
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import AssetError, bad_argument
from .dataset import Dataset

__all__ = ["IMAGE_SUFFIXES", "is_image_folder", "read_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _class_files(root: Path) -> list[tuple[str, list[Path]]]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    return [
        (d.name, sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)) for d in classes
    ]


def is_image_folder(root: Path) -> bool:
    """True when ``root`` has at least one sub-folder holding a PNG or JPEG file."""
    return root.is_dir() and any(files for _, files in _class_files(root))


def _read(path: Path, resize: tuple[int, int] | None) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = "L" if im.mode in ("L", "1", "I;16", "I") else "RGB"
            img = im.convert(mode)
    except Exception as e:
        raise AssetError(f"image {str(path)!r}: cannot be read ({type(e).__name__}: {e})") from e
    if resize is not None:
        img = img.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
    return img


def read_image_folder(root: str | Path, resize: tuple[int, int] | None = None) -> Dataset:
    """Read ``root/<class>/<file>`` into a ``Dataset`` (images (N, C, H, W) float32 in [0, 1]).

    Raises:
        AssetError: no class folder with images, an unreadable file, or images of different sizes
            without ``resize``.
    """
    root = Path(root)
    if resize is not None and (len(resize) != 2 or min(resize) < 1):
        raise bad_argument("resize", resize, "H,W with positive integers")
    classes = [(name, files) for name, files in _class_files(root)]
    if not any(files for _, files in classes):
        raise AssetError(f"image folder {str(root)!r}: got no PNG or JPEG files, expected root/<class>/<file>")
    digest = hashlib.sha256()
    pictures, labels = [], []
    for label, (name, files) in enumerate(classes):
        for f in files:
            digest.update(f"{name}/{f.name}\0".encode())
            digest.update(hashlib.sha256(f.read_bytes()).digest())
            pictures.append((f, _read(f, resize)))
            labels.append(label)
    gray = all(img.mode == "L" for _, img in pictures)
    arrays = []
    for _, img in pictures:
        a = np.asarray(img.convert("L" if gray else "RGB"), dtype=np.uint8)
        arrays.append(a[None] if gray else a.transpose(2, 0, 1))
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        odd = next(f for (f, _), a in zip(pictures, arrays, strict=True) if a.shape != first)
        raise AssetError(
            f"image folder {str(root)!r}: got images of sizes {sorted(s[1:] for s in shapes)} "
            f"(e.g. {str(odd)!r}), expected one size: pass --resize H,W"
        )
    images = torch.from_numpy(np.stack(arrays)).float().div_(255.0)
    n = images.shape[0]
    text = f"image folder {root} ({len(classes)} classes" + (
        f", resized to {resize[0]}x{resize[1]})" if resize else ")"
    )
    return Dataset(
        name=str(root),
        images=images,
        labels=torch.tensor(labels, dtype=torch.int64),
        class_names=tuple(name for name, _ in classes),
        test_index=torch.arange(n),
        source=text,
        identity={"name": str(root), "sha256": digest.hexdigest(), "source": text, "num_images": n, "resize": resize},
    )
