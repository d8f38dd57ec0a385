"""How ``cifar10`` (and ``auto``) resolve: tarball before the lossless copy, the lossless copy before
a download, the JPEG copy only for ``auto`` and only when the official split is missing; and the
real lossless file of the mirror (shape, labels, checksum, no caveat, same pixels as the exact set)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_fixtures import (
    LOSSLESS_TEXT,
    assert_matches,
    cifar_members,
    fake_npz_asset,
    make_tarball,
    serve,
    use_tarball_checksums,
)
from frmargin import assets
from frmargin.data import CIFAR10_CLASSES, JPEG_CAVEAT, load_dataset
from frmargin.data.official import lossless_source
from frmargin.errors import AssetError
from mirror import REAL_MIRROR

LOSSLESS_FILE = REAL_MIRROR / "data" / "cifar10-test-lossless.npz"
needs_lossless = pytest.mark.skipif(not LOSSLESS_FILE.is_file(), reason="shared asset mirror (lossless split) absent")
#: sha256 of cifar10-test-lossless.npz, from the assets README table
LOSSLESS_SHA256 = "8b121d315e21a1cabcec5a9e48123ebf0443006c634289dc10c1a944c6665278"
JPEG_WORDS = ("jpeg", "jpg")  # what the report looks for in a run's data source to flag a JPEG copy


def assert_official(ds, sha256: str) -> None:
    """The dataset is labelled as the official test images of the lossless copy, without caveat."""
    assert ds.name == "cifar10" and ds.caveat is None and not ds.is_jpeg_copy
    assert ds.source.startswith("official CIFAR-10 test split, lossless copy (cifar10-test-lossless.npz")
    assert sha256 in ds.source and ds.identity["sha256"] == sha256
    assert ds.identity == {"name": "cifar10", "sha256": sha256, "source": ds.source, "num_images": len(ds)}
    assert not any(w in ds.source.lower() for w in JPEG_WORDS), ds.source
    assert not any(line.startswith("CAVEAT") for line in ds.header())


# ----------------------------------------------------------------------------- resolution (synthetic)


def test_without_tarball_cifar10_is_the_lossless_copy(home: Path, tmp_path: Path, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    _, images, labels = fake_npz_asset(monkeypatch, "cifar10-test-lossless", mirror)
    monkeypatch.setenv("FRMARGIN_MIRROR", str(mirror))
    ds = load_dataset("cifar10", progress=False)
    assert_matches(ds, images, labels)
    assert_official(ds, assets.ASSETS["cifar10-test-lossless"].digest)
    assert not (home / "data" / "cifar10-test.npz").exists()  # nothing converted, nothing downloaded


def test_lossless_copy_in_the_home_folder(home: Path, monkeypatch) -> None:
    _, images, labels = fake_npz_asset(monkeypatch, "cifar10-test-lossless", home)
    assert_matches(load_dataset("cifar10", progress=False), images, labels)


def test_local_tarball_wins_over_the_lossless_copy(home: Path, tmp_path: Path, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    fake_npz_asset(monkeypatch, "cifar10-test-lossless", mirror)
    members, images, labels = cifar_members(n=6, seed=4)
    a = use_tarball_checksums(monkeypatch, make_tarball(mirror / "data" / "cifar-10-python.tar.gz", members), members)
    monkeypatch.setenv("FRMARGIN_MIRROR", str(mirror))
    ds = load_dataset("cifar10", progress=False)
    assert_matches(ds, images, labels)
    assert a.checksum in ds.source and "lossless" not in ds.source and ds.caveat is None
    converted = home / "data" / "cifar10-test.npz"
    assert ds.identity["sha256"] == hashlib.sha256(converted.read_bytes()).hexdigest()


def test_converted_store_wins_over_the_lossless_copy(home: Path, tmp_path: Path, monkeypatch) -> None:
    members, images, labels = cifar_members(n=3, seed=6)
    tarball = make_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    use_tarball_checksums(monkeypatch, tarball, members)
    load_dataset(tarball)  # converts into the home folder
    fake_npz_asset(monkeypatch, "cifar10-test-lossless", home)
    assert_matches(load_dataset("cifar10", progress=False), images, labels)


def test_lossless_copy_is_used_before_a_download(home: Path, tmp_path: Path, monkeypatch) -> None:
    _, images, labels = fake_npz_asset(monkeypatch, "cifar10-test-lossless", home)
    members, _, _ = cifar_members(n=2)
    srv = tmp_path / "srv"
    use_tarball_checksums(monkeypatch, make_tarball(srv / "data" / "cifar-10-python.tar.gz", members), members)
    with serve(srv) as base:
        monkeypatch.setenv("FRMARGIN_MIRROR", base)
        ds = load_dataset("cifar10", progress=False)
    assert_matches(ds, images, labels)
    assert not (home / "data" / "cifar-10-python.tar.gz").exists()


def test_http_mirror_without_tarball_serves_the_lossless_copy(home: Path, tmp_path: Path, monkeypatch) -> None:
    srv = tmp_path / "srv"
    _, images, labels = fake_npz_asset(monkeypatch, "cifar10-test-lossless", srv)
    with serve(srv) as base:
        monkeypatch.setenv("FRMARGIN_MIRROR", base)
        ds = load_dataset("cifar10", progress=False)
    assert_matches(ds, images, labels)
    assert_official(ds, assets.ASSETS["cifar10-test-lossless"].digest)
    assert (home / "data" / "cifar10-test-lossless.npz").is_file()


def test_corrupt_lossless_copy_is_refused(home: Path, tmp_path: Path, monkeypatch) -> None:
    path, _, _ = fake_npz_asset(monkeypatch, "cifar10-test-lossless", home)
    path.write_bytes(path.read_bytes()[:-5] + b"XXXXX")
    for name in ("cifar10", "auto"):  # auto falls back only when the split is missing, not corrupt
        with pytest.raises(AssetError, match="fails its checksum"):
            load_dataset(name, progress=False)


def test_auto_is_the_official_split_when_it_can_be_had(home: Path, tmp_path: Path, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    fake_npz_asset(monkeypatch, "cifar10-test-lossless", mirror, seed=1)
    fake_npz_asset(monkeypatch, "cifar10-test-jpeg", mirror, seed=2)
    monkeypatch.setenv("FRMARGIN_MIRROR", str(mirror))
    assert_official(load_dataset("auto"), assets.ASSETS["cifar10-test-lossless"].digest)


def test_auto_falls_back_to_the_jpeg_copy_with_its_caveat(home: Path, tmp_path: Path, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    _, images, labels = fake_npz_asset(monkeypatch, "cifar10-test-jpeg", mirror)
    monkeypatch.setenv("FRMARGIN_MIRROR", str(mirror))
    ds = load_dataset("auto")
    assert_matches(ds, images, labels)
    assert ds.name == "cifar10-jpeg" and ds.is_jpeg_copy and ds.caveat == JPEG_CAVEAT
    assert ds.source.startswith("JPEG copy")


def test_lossless_source_keeps_provenance_and_drops_the_jpeg_clause() -> None:
    text = lossless_source(LOSSLESS_TEXT, "ab12")
    assert text == (
        "official CIFAR-10 test split, lossless copy (cifar10-test-lossless.npz, sha256 ab12): "
        "fake/CIFAR-10-dataset@0000 test/<class>/<name>.png (PNG), in official test order"
    )
    assert lossless_source(None, "ab12").endswith("sha256 ab12), in official test order")


# ----------------------------------------------------------------------------- the real lossless file


@pytest.fixture
def mirror_home(home: Path, monkeypatch) -> Path:
    monkeypatch.setenv("FRMARGIN_MIRROR", str(REAL_MIRROR))
    return home


def test_lossless_asset_is_registered() -> None:
    a = assets.get_asset("cifar10-test-lossless")
    assert (a.filename, a.kind, a.checksum) == ("cifar10-test-lossless.npz", "data", f"sha256:{LOSSLESS_SHA256}")


@needs_lossless
def test_real_lossless_split_is_the_official_test_set(mirror_home: Path) -> None:
    ds = load_dataset("cifar10", progress=False)
    assert len(ds) == 10_000 and ds.images.shape == (10_000, 3, 32, 32) and ds.images.dtype == torch.float32
    assert torch.bincount(ds.labels).tolist() == [1000] * 10 and ds.class_names == CIFAR10_CLASSES
    assert ds.test_index.tolist() == list(range(10_000))
    assert_official(ds, LOSSLESS_SHA256)
    assert "cyizhuo/CIFAR-10-dataset@a828d74f" in ds.source
    assert assets.fetch("cifar10-test-lossless", progress=False).is_relative_to(REAL_MIRROR.resolve())
    # The 300 exact images are the same pixels at their official indices.
    exact = load_dataset("cifar10-exact")
    assert torch.equal(ds.images[exact.test_index], exact.images)
    assert torch.equal(ds.labels[exact.test_index], exact.labels)
    # Labels agree with the file's own record of where each image came from (test/<class>/...).
    with np.load(LOSSLESS_FILE, allow_pickle=True) as z:  # the test's own look at the file, not the loader
        folders = [str(f).split("/")[1] for f in z["filename"][:50]]
    assert folders == [CIFAR10_CLASSES[c] for c in ds.labels[:50].tolist()]
