"""Synthetic CIFAR-10 files for the data tests: python batches, tarballs, npz assets, a loopback server."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from frmargin import assets, data
from frmargin.data import CIFAR10_CLASSES


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes str and bytes as Python-2 strings (BINSTRING), like the official CIFAR-10 batches."""

    def _binstring(self, raw: bytes) -> None:
        head = (
            pickle.SHORT_BINSTRING + bytes([len(raw)])
            if len(raw) < 256
            else pickle.BINSTRING + struct.pack("<i", len(raw))
        )
        self.write(head + raw)

    def save_bytes(self, obj: bytes) -> None:
        self._binstring(obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self._binstring(obj.encode("latin1"))
        self.memoize(obj)

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]
    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def py2_pickle(obj: object) -> bytes:
    f = io.BytesIO()
    _Py2Pickler(f, protocol=2).dump(obj)
    return f.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def cifar_members(n: int = 20, seed: int = 0) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    """Raw ``test_batch`` and ``batches.meta`` in the official layout; also the images and labels."""
    rng = np.random.default_rng(seed)
    flat = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist()
    batch = {
        "batch_label": "testing batch 1 of 1",
        "labels": labels,
        "data": flat,
        "filenames": [f"img_{i}.png" for i in range(n)],
    }
    meta = {"num_cases_per_batch": 10000, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    members = {"test_batch": py2_pickle(batch), "batches.meta": py2_pickle(meta)}
    return members, flat.reshape(n, 3, 32, 32), np.array(labels)


def add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def make_tarball(path: Path, members: dict[str, bytes], extra: tuple[tarfile.TarInfo, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            add_member(tar, f"cifar-10-batches-py/{name}", payload)
        add_member(tar, "cifar-10-batches-py/readme.html", b"<html></html>")
        for info in extra:
            tar.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    return path


def use_tarball_checksums(monkeypatch: pytest.MonkeyPatch, tarball: Path, members: dict[str, bytes]) -> assets.Asset:
    """Registry injection: the test tarball's md5 and member md5s replace the official ones."""
    a = dataclasses.replace(
        assets.ASSETS["cifar10-python"],
        digest=hashlib.md5(tarball.read_bytes()).hexdigest(),
        members=tuple((f"cifar-10-batches-py/{k}", hashlib.md5(v).hexdigest()) for k, v in members.items()),
    )
    monkeypatch.setitem(assets.ASSETS, "cifar10-python", a)
    return a


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    """A plain static http server for ``root`` on 127.0.0.1."""
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def assert_matches(ds: data.Dataset, images: np.ndarray, labels: np.ndarray) -> None:
    assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.int64
    assert ds.images.shape == (len(labels), 3, 32, 32)
    torch.testing.assert_close(ds.images, torch.from_numpy(images).float() / 255, rtol=0, atol=0)
    assert ds.labels.tolist() == labels.tolist()
    assert ds.test_index.tolist() == list(range(len(labels)))
    assert ds.class_names == CIFAR10_CLASSES


LOSSLESS_TEXT = (
    "official CIFAR-10 test split, lossless: fake/CIFAR-10-dataset@0000 test/<class>/<name>.png (PNG); "
    "ordered by official test index (nearest-image match against the JPEG copy)"
)


def fake_npz_asset(
    monkeypatch: pytest.MonkeyPatch, asset: str, folder: Path, n: int = 10, seed: int = 5
) -> tuple[Path, np.ndarray, np.ndarray]:
    """A small stand-in for a mirror ``.npz`` data asset at ``folder/data/<file>``, registered
    under ``asset`` with its own sha256. Like the real lossless file it carries a ``source`` text
    and a pickled (object) ``filename`` array, which must never be unpickled."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n) % 10
    path = folder / "data" / assets.ASSETS[asset].filename
    path.parent.mkdir(parents=True, exist_ok=True)
    filenames = np.array([f"test/{CIFAR10_CLASSES[c]}/{i}.png" for i, c in enumerate(labels)], dtype=object)
    np.savez_compressed(
        path,
        images=images,
        labels=labels.astype(np.int64),
        test_index=np.arange(n, dtype=np.int64),
        source=np.array(LOSSLESS_TEXT),
        filename=filenames,
    )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(assets.ASSETS, asset, dataclasses.replace(assets.ASSETS[asset], digest=digest))
    return path, images.transpose(0, 3, 1, 2), labels
