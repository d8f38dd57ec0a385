"""The ImageNet sample dataset: preprocessing on synthetic images, checksums, label order and the
cache on a fake three-class sample, and the real 1,000 images of the mirror."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from frmargin import assets
from frmargin.data import imagenet, load_dataset
from frmargin.data.imagenet import decode_image
from frmargin.errors import AssetError
from mirror import REAL_MIRROR


def _jpeg(arr: np.ndarray, quality: int = 95) -> bytes:
    f = io.BytesIO()
    Image.fromarray(arr).save(f, format="JPEG", quality=quality)
    return f.getvalue()


def _png(arr: np.ndarray) -> bytes:
    f = io.BytesIO()
    Image.fromarray(arr).save(f, format="PNG")
    return f.getvalue()


# ----------------------------------------------------------------------------- preprocessing


def test_central_crop_box_and_rgb() -> None:
    """A 16x24 image: TF central_crop(0.875) starts at int((16 - 14) / 2) = 1 and int((24 - 21) / 2) = 1,
    so the crop is rows 1..14, columns 1..22 (22 wide: the remainder stays on the right)."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    crop = arr[1:15, 1:23]
    expected = np.asarray(Image.fromarray(crop).resize((14, 14), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_image(_png(arr), size=14), expected)
    square = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(_png(square), size=14), square[1:15, 1:15])  # no resampling


def test_grayscale_is_replicated_to_rgb() -> None:
    gray = np.random.default_rng(1).integers(0, 256, (40, 32), dtype=np.uint8)
    out = decode_image(_png(gray), size=8)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    alone = np.asarray(Image.fromarray(gray[2:38, 2:30]).resize((8, 8), Image.Resampling.BILINEAR))
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], alone)


# ----------------------------------------------------------------------------- a fake sample


@pytest.fixture
def fake_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three images (one grayscale) listed out of wnid order, with their own assets registered."""
    mirror = tmp_path / "mirror"
    folder = mirror / "imagenet" / "sample"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    files = {
        "n03000000_zebra_crossing.JPEG": _jpeg(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)),
        "n01000000_aardvark.JPEG": _jpeg(rng.integers(0, 256, (50, 40), dtype=np.uint8)),  # grayscale
        "n02000000_mid_thing.JPEG": _jpeg(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items())
    (mirror / "imagenet" / "sample-SHA256SUMS").write_text(sums)
    labels = "background\naardvark\nmid thing\nzebra crossing\n"
    (mirror / "imagenet" / "imagenet_labels.txt").write_text(labels)
    for key, text in (("imagenet-sample", sums), ("imagenet-labels", labels)):
        digest = hashlib.sha256(text.encode()).hexdigest()
        monkeypatch.setitem(assets.ASSETS, key, dataclasses.replace(assets.ASSETS[key], digest=digest))
    monkeypatch.setattr(imagenet, "NUM_CLASSES", 3)
    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FRMARGIN_MIRROR", str(mirror))
    return folder


def test_fake_sample_order_grayscale_and_cache(fake_sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = load_dataset("imagenet-sample", progress=False)
    assert ds.images.shape == (3, 3, 224, 224) and ds.images.dtype == torch.float32
    assert ds.images.min() >= 0 and ds.images.max() <= 1
    assert ds.labels.tolist() == [0, 1, 2]  # rank of the wnid, not the order of the list
    assert ds.class_names == ("aardvark", "mid thing", "zebra crossing")
    first = decode_image((fake_sample / "n01000000_aardvark.JPEG").read_bytes())
    torch.testing.assert_close(ds.images[0], torch.from_numpy(first).permute(2, 0, 1).float() / 255, rtol=0, atol=0)
    assert torch.equal(ds.images[0, 0], ds.images[0, 1]) and torch.equal(ds.images[0, 0], ds.images[0, 2])
    assert not torch.equal(ds.images[2, 0], ds.images[2, 1])
    assert ds.caveat is not None and "training-set" in ds.caveat and ds.identity["num_images"] == 3

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(imagenet, "_decode_all", no_decoding)
    again = load_dataset("imagenet-sample", progress=False)
    assert torch.equal(again.images, ds.images) and torch.equal(again.labels, ds.labels)


def test_damaged_cache_is_rebuilt(fake_sample: Path) -> None:
    ds = load_dataset("imagenet-sample", progress=False)
    npz = next((assets.home_dir() / "data").glob("imagenet-sample-*.npz"))
    npz.write_bytes(b"junk")
    again = load_dataset("imagenet-sample", progress=False)
    assert torch.equal(again.images, ds.images)


def test_image_failing_its_checksum_is_refused(fake_sample: Path) -> None:
    (fake_sample / "n02000000_mid_thing.JPEG").write_bytes(_jpeg(np.zeros((30, 30, 3), np.uint8)))
    with pytest.raises(AssetError, match=r"n02000000_mid_thing\.JPEG.*fails its checksum"):
        load_dataset("imagenet-sample", progress=False)


def test_tampered_checksum_list_is_refused(fake_sample: Path) -> None:
    sums = fake_sample.parent / "sample-SHA256SUMS"
    sums.write_text(sums.read_text().replace("n02000000", "n02000001"))
    with pytest.raises(AssetError, match="fails its checksum"):
        load_dataset("imagenet-sample", progress=False)


# ----------------------------------------------------------------------------- the real sample


def _mirror() -> Path | None:
    folder = REAL_MIRROR
    return folder if (folder / "imagenet" / "sample-SHA256SUMS").is_file() else None


MIRROR = _mirror()


@pytest.mark.skipif(MIRROR is None, reason="asset mirror with imagenet/ not found; set FRMARGIN_MIRROR")
@pytest.mark.slow
def test_real_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert MIRROR is not None
    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FRMARGIN_MIRROR", str(MIRROR))
    ds = load_dataset("imagenet-sample", progress=False)
    assert ds.images.shape == (1000, 3, 224, 224) and ds.images.dtype == torch.float32
    assert ds.labels.tolist() == list(range(1000)) and len(ds.class_names) == 1000
    assert ds.class_names[0] == "tench, Tinca tinca" and ds.class_names[-1].startswith("toilet tissue")
    names = sorted(p.name for p in (MIRROR / "imagenet" / "sample").glob("*.JPEG"))
    assert len(names) == 1000
    # the readable part of each file name is among the label's synonyms for (nearly) every class
    hits = sum(
        n.split("_", 1)[1][:-5].replace("_", " ").lower() in ds.class_names[i].lower() for i, n in enumerate(names)
    )
    assert hits >= 950, f"only {hits} of 1000 file names match their class name"
    gray = [i for i, n in enumerate(names) if Image.open(MIRROR / "imagenet" / "sample" / n).mode == "L"]
    assert len(gray) == 23
    assert torch.equal(ds.images[gray[0], 0], ds.images[gray[0], 1]) and torch.equal(
        ds.images[gray[0], 1], ds.images[gray[0], 2]
    )
    assert ds.caveat is not None and "training-set" in ds.caveat
