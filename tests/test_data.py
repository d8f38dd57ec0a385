"""Datasets: the CIFAR-10 tarball path end to end on loopback, safe unpickling and extraction,
the mirror's JPEG and exact sets, and user .npz files."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_fixtures import assert_matches, cifar_members, make_tarball, serve, use_tarball_checksums
from frmargin import assets, data
from frmargin.data import load_dataset, restricted_unpickle
from frmargin.errors import AssetError, FrmarginError
from mirror import REAL_MIRROR

needs_mirror = pytest.mark.skipif(not (REAL_MIRROR / "data").is_dir(), reason="shared asset mirror absent")


# ----------------------------------------------------------------------------- official CIFAR-10


def test_cifar10_download_verify_convert_reuse(home: Path, tmp_path: Path, monkeypatch) -> None:
    members, images, labels = cifar_members()
    tarball = make_tarball(tmp_path / "srv" / "data" / "cifar-10-python.tar.gz", members)
    a = use_tarball_checksums(monkeypatch, tarball, members)
    with serve(tmp_path / "srv") as base:
        monkeypatch.setenv("FRMARGIN_MIRROR", base)
        ds = load_dataset("cifar10", progress=False)
    assert_matches(ds, images, labels)
    assert ds.name == "cifar10" and not ds.is_jpeg_copy and ds.caveat is None
    assert "official CIFAR-10 test split" in ds.source and a.checksum in ds.source
    converted = home / "data" / "cifar10-test.npz"
    assert (home / "data" / "cifar-10-python.tar.gz").is_file() and converted.is_file()
    assert ds.identity["sha256"] == hashlib.sha256(converted.read_bytes()).hexdigest()

    # Second load: no server, no tarball, no conversion; the converted store is read as is.
    (home / "data" / "cifar-10-python.tar.gz").unlink()
    mtime = converted.stat().st_mtime_ns
    monkeypatch.setattr(data.cifar, "read_cifar_archive", lambda *a, **k: pytest.fail("converted again"))
    again = load_dataset("cifar10", progress=False)
    assert_matches(again, images, labels)
    assert converted.stat().st_mtime_ns == mtime


def test_cifar10_corrupt_download_is_refused(home: Path, tmp_path: Path, monkeypatch) -> None:
    members, _, _ = cifar_members()
    good = make_tarball(tmp_path / "good.tar.gz", members)
    a = use_tarball_checksums(monkeypatch, good, members)
    bad = tmp_path / "srv" / "data" / "cifar-10-python.tar.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(good.read_bytes()[:-10] + b"0123456789")
    with serve(tmp_path / "srv") as base:
        monkeypatch.setenv("FRMARGIN_MIRROR", base)
        with pytest.raises(AssetError) as err:
            load_dataset("cifar10", progress=False)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and f"md5 {a.digest}" in msg
    assert hashlib.md5(bad.read_bytes()).hexdigest() in msg
    assert sorted(p.name for p in (home / "data").iterdir()) == []


def test_cifar10_from_local_tarball_path(home: Path, tmp_path: Path, monkeypatch) -> None:
    members, images, labels = cifar_members(n=7, seed=1)
    tarball = make_tarball(tmp_path / "downloads" / "cifar-10-python.tar.gz", members)
    use_tarball_checksums(monkeypatch, tarball, members)
    assert_matches(load_dataset(str(tarball)), images, labels)
    assert (home / "data" / "cifar10-test.npz").is_file()


def test_cifar10_local_tarball_with_wrong_md5_is_refused(home: Path, tmp_path: Path) -> None:
    members, _, _ = cifar_members(n=3)
    tarball = make_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(AssetError, match="c58f30108f718f92721af3b95e74349a"):
        load_dataset(str(tarball))


def test_cifar10_from_extracted_folder_in_home(home: Path, tmp_path: Path, monkeypatch) -> None:
    members, images, labels = cifar_members(n=5, seed=2)
    use_tarball_checksums(monkeypatch, make_tarball(tmp_path / "t.tar.gz", members), members)
    folder = home / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, payload in members.items():
        (folder / name).write_bytes(payload)
    assert_matches(load_dataset("cifar10", progress=False), images, labels)


def test_cifar10_folder_member_checksum_is_checked(home: Path, tmp_path: Path) -> None:
    members, _, _ = cifar_members(n=5)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, payload in members.items():
        (folder / name).write_bytes(payload)
    with pytest.raises(AssetError, match=r"test_batch.*md5.*40351d587109b95175f43aff81a1287e"):
        load_dataset(str(folder))


def test_cifar10_missing_everywhere_says_how_to_supply(home: Path, monkeypatch) -> None:
    monkeypatch.setitem(
        assets.ASSETS,
        "cifar10-python",
        dataclasses.replace(assets.ASSETS["cifar10-python"], urls=("http://127.0.0.1:9/c.tgz",)),
    )
    with pytest.raises(assets.AssetMissingError) as err:
        load_dataset("cifar10", progress=False)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and str(home / "data") in msg and "cifar-10-batches-py" in msg
    assert "FRMARGIN_MIRROR" in msg and "cifar10-test-lossless.npz" in msg


# ----------------------------------------------------------------------------- safety


def test_py2_batches_unpickle_to_arrays() -> None:
    members, images, labels = cifar_members(n=4)
    batch = restricted_unpickle(members["test_batch"], "test_batch")
    assert np.array_equal(batch[b"data"].reshape(4, 3, 32, 32), images) and batch[b"labels"] == labels.tolist()


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _Exploit(marker)}, protocol=4)
    with pytest.raises(AssetError, match=r"refusing to unpickle global (posix|nt|os)\.system"):
        restricted_unpickle(payload, "test_batch")
    assert not marker.exists()


def test_malicious_batch_inside_a_verified_tarball_is_refused(home: Path, tmp_path: Path, monkeypatch) -> None:
    marker = tmp_path / "pwned"
    members, _, _ = cifar_members(n=2)
    members["test_batch"] = pickle.dumps({b"data": _Exploit(marker)}, protocol=4)
    tarball = make_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    use_tarball_checksums(monkeypatch, tarball, members)
    with pytest.raises(AssetError, match=r"refusing to unpickle global (posix|nt|os)\.system"):
        load_dataset(str(tarball))
    assert not marker.exists()


def _evil(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 4 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member",
    [
        _evil("../evil"),
        _evil("cifar-10-batches-py/../../evil"),
        _evil("/tmp/evil-abs"),
        _evil("cifar-10-batches-py/link", tarfile.SYMTYPE, "/etc/passwd"),
        _evil("cifar-10-batches-py/hard", tarfile.LNKTYPE, "../../evil"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink"],
)
def test_unsafe_archive_members_are_refused(home: Path, tmp_path: Path, monkeypatch, member: tarfile.TarInfo) -> None:
    members, _, _ = cifar_members(n=2)
    work = tmp_path / "a" / "b"
    tarball = make_tarball(work / "cifar-10-python.tar.gz", members, extra=(member,))
    use_tarball_checksums(monkeypatch, tarball, members)
    with pytest.raises(AssetError, match="unsafe member"):
        load_dataset(str(tarball))
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not (home / "data" / "cifar10-test.npz").exists()


# ----------------------------------------------------------------------------- the mirror's sets


@pytest.fixture
def mirror_home(home: Path, monkeypatch) -> Path:
    monkeypatch.setenv("FRMARGIN_MIRROR", str(REAL_MIRROR))
    return home


@needs_mirror
def test_cifar10_exact(mirror_home: Path) -> None:
    ds = load_dataset("cifar10-exact")
    assert len(ds) == 300 and ds.images.shape == (300, 3, 32, 32) and ds.images.dtype == torch.float32
    assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
    assert ds.labels.dtype == torch.int64 and ds.test_index.dtype == torch.int64
    assert ds.test_index[:100].tolist() == list(range(100)) and len(set(ds.test_index.tolist())) == 300
    assert not ds.is_jpeg_copy and ds.caveat is None
    assert "exact" in ds.source and "eth-sri/eran" in ds.source
    assert ds.identity["sha256"] == assets.ASSETS["cifar10-test-exact"].digest
    assert ds.identity["name"] == "cifar10-exact" and ds.identity["source"] == ds.source


@needs_mirror
def test_cifar10_jpeg_is_complete_labelled_and_fast(mirror_home: Path, monkeypatch) -> None:
    load_dataset("cifar10-jpeg")  # first load verifies the file
    monkeypatch.setattr(assets.store, "_hash_file", lambda *a: pytest.fail("re-hashed a verified file"))
    ds = load_dataset("cifar10-jpeg")  # speed is a benchmark's business; here: no second hash
    assert len(ds) == 10_000 and ds.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.test_index.tolist() == list(range(10_000))
    assert ds.is_jpeg_copy and "JPEG copy" in ds.source
    assert any("JPEG" in line and line.startswith("CAVEAT") for line in ds.header())
    small = ds.head(25)
    assert len(small) == 25 and small.identity["num_images"] == 25 and small.caveat == ds.caveat


# ----------------------------------------------------------------------------- user files and names


def test_user_npz_nhwc_uint8(home: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 9])
    path = tmp_path / "mine.npz"
    np.savez(path, images=images, labels=labels, source=np.array("my camera"))
    ds = load_dataset(path)
    torch.testing.assert_close(ds.images, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, rtol=0, atol=0)
    assert ds.labels.tolist() == labels.tolist() and ds.test_index.tolist() == list(range(6))
    assert ds.source == f"user file {path}: my camera" and not ds.is_jpeg_copy
    assert ds.identity["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_user_npz_nchw_float_with_class_names(home: Path, tmp_path: Path) -> None:
    images = np.random.default_rng(1).random((3, 3, 8, 8), dtype=np.float32)
    path = tmp_path / "f.npz"
    np.savez(path, images=images, labels=np.array([0, 1, 1]), class_names=np.array(["a", "b"]))
    ds = load_dataset(str(path))
    assert ds.images.shape == (3, 3, 8, 8) and ds.class_names == ("a", "b")


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"images": np.zeros((2, 32, 32, 3), np.uint8)}, "expected 'images' and 'labels'"),
        ({"images": np.full((2, 3, 4, 4), 2.0), "labels": np.zeros(2, int)}, r"outside \[0, 1\]"),
        ({"images": np.zeros((2, 3, 4, 4)), "labels": np.zeros(3, int)}, r"shape \(2,\)"),
        ({"images": np.zeros((2, 3, 4, 4)), "labels": np.array([None, 1], dtype=object)}, "cannot be read"),
    ],
    ids=["no-labels", "range", "label-count", "pickled-object"],
)
def test_bad_user_npz_names_the_file(home: Path, tmp_path: Path, arrays: dict, match: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(AssetError, match=match) as err:
        load_dataset(path)
    assert str(path) in str(err.value)


def test_unknown_name_and_bad_limit(home: Path, tmp_path: Path) -> None:
    with pytest.raises(FrmarginError, match=r"argument 'name'.*cifar10-jpeg"):
        load_dataset("imagenet")
    with pytest.raises(AssetError, match="does not exist"):
        load_dataset(tmp_path / "nope.npz")
    path = tmp_path / "ok.npz"
    np.savez(path, images=np.zeros((2, 3, 4, 4), np.float32), labels=np.zeros(2, int))
    with pytest.raises(FrmarginError, match="argument 'limit'"):
        load_dataset(path).head(0)


def test_conversion_is_deterministic(tmp_path: Path, monkeypatch) -> None:
    """Same tarball, conversions a day apart: byte-identical store, same identity sha256."""
    import types
    import zipfile

    members, _, _ = cifar_members(n=4, seed=3)
    tarball = make_tarball(tmp_path / "cifar-10-python.tar.gz", members)
    use_tarball_checksums(monkeypatch, tarball, members)
    digests = []
    for day, run in enumerate(("a", "b")):
        clock = types.SimpleNamespace(time=lambda d=day: 1.7e9 + 86400 * d, localtime=time.localtime)
        monkeypatch.setattr(zipfile, "time", clock)
        monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / run))
        digests.append(load_dataset(tarball).identity["sha256"])
    assert digests[0] == digests[1]
