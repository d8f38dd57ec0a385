"""The asset store: lookup order, mirrors, atomic resumable downloads, checksums, cache."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from frmargin import assets
from frmargin.cli.assets import assets_table
from frmargin.errors import AssetError, FrmarginError

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
from mirror import REAL_MIRROR  # noqa: E402

# ----------------------------------------------------------------------------- helpers


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files under ``server.root``; honours Range; can cut the first response short."""

    def do_GET(self) -> None:
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        path = srv.root / self.path.lstrip("/")  # type: ignore[attr-defined]
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.ranges:  # type: ignore[attr-defined]
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:  # type: ignore[attr-defined]
            body, srv.cut_after = body[: srv.cut_after], None  # type: ignore[attr-defined]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(root: Path, *, cut_after: int | None = None, ranges: bool = True) -> Iterator[tuple[str, list]]:
    """An http server on 127.0.0.1 for ``root``; yields (base address, request log)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.root, server.log, server.cut_after, server.ranges = root, [], cut_after, ranges  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.log  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def blob_asset(url: str = "http://127.0.0.1:9/up/blob.bin", payload: bytes = PAYLOAD) -> assets.Asset:
    return assets.Asset(
        name="blob",
        filename="blob.bin",
        kind="data",
        algorithm="sha256",
        digest=hashlib.sha256(payload).hexdigest(),
        urls=(url,),
    )


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- downloads


def test_http_mirror_download_is_verified_atomic_and_reused(home: Path, tmp_path: Path, monkeypatch) -> None:
    write(tmp_path / "srv" / "data" / "blob.bin", PAYLOAD)
    a = blob_asset()
    with serve(tmp_path / "srv") as (base, log):
        monkeypatch.setenv("FRMARGIN_MIRROR", base)
        path = assets.fetch(a, progress=False)
    assert path == home / "data" / "blob.bin"
    assert path.read_bytes() == PAYLOAD
    assert log == [("/data/blob.bin", None)]  # mirror replaces upstream: the upstream url is never used
    assert not list(path.parent.glob("*.part"))
    # Server gone, hashing forbidden: the second fetch uses the cached verification (of a file
    # treated as big: small files are hashed on every load, see test_reliability).
    monkeypatch.setattr(assets.store, "ALWAYS_HASH_BYTES", 0)
    monkeypatch.setattr(assets.store, "_hash_file", lambda *a: pytest.fail("re-hashed a verified file"))
    assert assets.fetch(a, progress=False) == path


def test_http_mirror_flat_layout_and_upstream_name(home: Path, tmp_path: Path, monkeypatch) -> None:
    write(tmp_path / "srv" / "blob.bin", PAYLOAD)
    with serve(tmp_path / "srv") as (base, log):
        monkeypatch.setenv("FRMARGIN_MIRROR", base + "/")
        assert assets.fetch(blob_asset(), progress=False).read_bytes() == PAYLOAD
    assert [p for p, _ in log] == ["/data/blob.bin", "/blob.bin"]


def test_upstream_download_without_mirror_shows_progress(home: Path, tmp_path: Path, capsys) -> None:
    write(tmp_path / "srv" / "up" / "blob.bin", PAYLOAD)
    with serve(tmp_path / "srv") as (base, _):
        path = assets.fetch(blob_asset(base + "/up/blob.bin"))
    assert path.read_bytes() == PAYLOAD
    captured = capsys.readouterr()
    assert "blob.bin" in captured.err and captured.out == ""


def test_interrupted_download_is_resumed(home: Path, tmp_path: Path) -> None:
    write(tmp_path / "srv" / "up" / "blob.bin", PAYLOAD)
    with serve(tmp_path / "srv", cut_after=5000) as (base, log):
        path = assets.fetch(blob_asset(base + "/up/blob.bin"), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert log == [("/up/blob.bin", None), ("/up/blob.bin", "bytes=5000-")]


def test_server_without_ranges_restarts_the_download(home: Path, tmp_path: Path) -> None:
    write(tmp_path / "srv" / "up" / "blob.bin", PAYLOAD)
    with serve(tmp_path / "srv", cut_after=5000, ranges=False) as (base, log):
        path = assets.fetch(blob_asset(base + "/up/blob.bin"), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert len(log) == 2


def test_corrupt_download_is_refused_and_removed(home: Path, tmp_path: Path) -> None:
    write(tmp_path / "srv" / "up" / "blob.bin", PAYLOAD[:-1] + b"X")
    with serve(tmp_path / "srv") as (base, _):
        a = blob_asset(base + "/up/blob.bin")
        with pytest.raises(AssetError) as err:
            assets.fetch(a, progress=False)
    msg = str(err.value)
    assert "blob.bin" in msg and a.digest in msg and "sha256" in msg
    assert hashlib.sha256(PAYLOAD[:-1] + b"X").hexdigest() in msg
    assert not (home / "data" / "blob.bin").exists()
    assert not (home / "data" / "blob.bin.part").exists()


def test_stale_partial_file_is_discarded(home: Path, tmp_path: Path) -> None:
    """A .part whose start is wrong fails the checksum once, then is downloaded from scratch."""
    write(tmp_path / "srv" / "up" / "blob.bin", PAYLOAD)
    write(home / "data" / "blob.bin.part", b"\xff" * 3000)
    with serve(tmp_path / "srv") as (base, log):
        path = assets.fetch(blob_asset(base + "/up/blob.bin"), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert log == [("/up/blob.bin", "bytes=3000-"), ("/up/blob.bin", None)]


def test_unreachable_asset_error_says_what_where_and_how(home: Path) -> None:
    a = blob_asset("http://127.0.0.1:9/up/blob.bin")  # port 9 (discard): connection refused
    with pytest.raises(assets.AssetMissingError) as err:
        assets.fetch(a, progress=False)
    msg = str(err.value)
    for part in (
        "blob.bin",
        str(home / "data" / "blob.bin"),
        "http://127.0.0.1:9/up/blob.bin",
        "FRMARGIN_MIRROR",
        a.digest,
    ):
        assert part in msg
    assert not (home / "data" / "blob.bin").exists()


def test_missing_from_mirror_folder_lists_the_places(home: Path, tmp_path: Path, monkeypatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("FRMARGIN_MIRROR", str(mirror))
    with pytest.raises(assets.AssetMissingError) as err:
        assets.fetch(blob_asset(), progress=False)
    msg = str(err.value)
    assert str(mirror / "data" / "blob.bin") in msg and str(mirror / "blob.bin") in msg
    assert "upstream was not contacted" in msg


def test_nonexistent_mirror_folder_is_an_error(home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FRMARGIN_MIRROR", str(tmp_path / "nowhere"))
    with pytest.raises(AssetError, match=r"FRMARGIN_MIRROR.*nowhere"):
        assets.fetch(blob_asset(), progress=False)


# ----------------------------------------------------------------------------- local copies


@pytest.mark.parametrize("layout", ["data/blob.bin", "blob.bin"])
def test_mirror_folder_is_used_in_place(home: Path, tmp_path: Path, monkeypatch, layout: str) -> None:
    src = write(tmp_path / "mirror" / layout, PAYLOAD)
    monkeypatch.setenv("FRMARGIN_MIRROR", str(tmp_path / "mirror"))
    assert assets.fetch(blob_asset(), progress=False) == src
    assert not (home / "data" / "blob.bin").exists()


def test_corrupt_local_file_is_refused(home: Path) -> None:
    bad = write(home / "data" / "blob.bin", b"not the payload")
    a = blob_asset()
    with pytest.raises(AssetError) as err:
        assets.fetch(a, progress=False)
    msg = str(err.value)
    assert str(bad) in msg and a.digest in msg and hashlib.sha256(b"not the payload").hexdigest() in msg


def test_verification_cache_notices_a_changed_file(home: Path) -> None:
    path = write(home / "data" / "blob.bin", PAYLOAD)
    a = blob_asset()
    assert assets.fetch(a, progress=False) == path
    st = path.stat()
    path.write_bytes(PAYLOAD[:-1] + b"X")  # same size, new content
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssetError, match="fails its checksum"):
        assets.fetch(a, progress=False)


def test_file_digest_hashes_a_big_file_once(home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(assets.store, "ALWAYS_HASH_BYTES", 0)  # small files are hashed every time
    path = write(tmp_path / "f.bin", PAYLOAD)
    calls = []
    real = assets.store._hash_file
    monkeypatch.setattr(assets.store, "_hash_file", lambda p, alg: calls.append(alg) or real(p, alg))
    assert assets.file_digest(path) == hashlib.sha256(PAYLOAD).hexdigest()
    assert assets.file_digest(path) == hashlib.sha256(PAYLOAD).hexdigest()
    assert assets.file_digest(path, "md5") == hashlib.md5(PAYLOAD).hexdigest()
    assert calls == ["sha256", "md5"]


def test_asset_status_states(home: Path, monkeypatch) -> None:
    a = blob_asset()
    assert assets.asset_status(a).state == "missing"
    write(home / "data" / "blob.bin", PAYLOAD)
    assert assets.asset_status(a, verify=False).state == "present"
    assert assets.asset_status(a).state == "verified"
    assert assets.asset_status(a, verify=False).state == "present"  # --no-verify never says verified
    (home / "data" / "blob.bin").write_bytes(b"junk")
    assert assets.asset_status(a).state == "corrupt"


def test_registry_and_bad_names() -> None:
    assert {"resnet20", "resnet56", "resnet2b-adv2", "cifar10-python", "cifar10-test-jpeg"} <= set(assets.ASSETS)
    assert assets.ASSETS["cifar10-python"].checksum == "md5:c58f30108f718f92721af3b95e74349a"
    assert all(a.urls for a in assets.ASSETS.values() if a.kind == "weights")
    with pytest.raises(FrmarginError, match="argument 'asset'"):
        assets.get_asset("resnet9000")
    with pytest.raises(ValueError, match="argument 'kind'"):
        assets.Asset("x", "x", "models", "sha256", "0")


def test_assets_command_lists_every_asset(home: Path, capsys) -> None:
    print("\n".join(assets_table()))
    out = capsys.readouterr().out
    for name in assets.ASSETS:
        assert name in out
    assert "missing" in out and str(home) in out


# ----------------------------------------------------------------------------- the real mirror


@pytest.mark.skipif(not (REAL_MIRROR / "weights").is_dir(), reason="shared asset mirror absent")
def test_real_mirror_files_verify(home: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("FRMARGIN_MIRROR", str(REAL_MIRROR))
    for name in assets.ASSETS:
        if name == "cifar10-python":
            continue
        path = assets.fetch(name, progress=False)
        assert path.is_relative_to(REAL_MIRROR.resolve()), name
        # the recorded size caps a download of the file: it must be the file's size
        assert assets.get_asset(name).size == path.stat().st_size, name
        assert assets.asset_status(name, verify=False).state == "present"
    print("\n".join(assets_table()))
    out = capsys.readouterr().out
    assert out.count("verified") == len(assets.ASSETS) - 1


# sha256 of the files added with the model zoo, from the assets README table
ZOO_SHA256 = {
    "cifar10-test-lossless": "8b121d315e21a1cabcec5a9e48123ebf0443006c634289dc10c1a944c6665278",
    "resnet20-b": "4118986f0df73003d572b0e397f0ac7b3f60af1f31aff3d2da164536e36f6ec8",
    "resnet56-b": "187c023aee0c9cf3093a682d9447a538cbaf5489f7ae78a7df4edf2246ce380b",
    "shufflenetv2-x0.5": "1308b4e9c4f88656a3b09775c273fc5ffe8fca9c84044123cf3d138c8dec10bd",
    "cnn-a-adv2": "e45d79e68342395f4ada6f89852ae41feba14b430a3b2462a04d7f5e02c65657",
    "cnn-a-adv4": "f872a69536be3f0ab98397094bb7c3952d747b08321b81eafd00d9fab5eca0e7",
    "cnn-a-mix": "5a1370f41961766db169ad9f945e9cc3157c9afd7986eac73bf2786c35dc3773",
}


def test_zoo_assets_are_registered_with_the_readme_checksums() -> None:
    from frmargin.models import MODEL_NAMES

    for name, digest in ZOO_SHA256.items():
        assert assets.get_asset(name).checksum == f"sha256:{digest}", name
    for name in MODEL_NAMES:  # every model's weights are an asset of the same name, with an upstream address
        a = assets.get_asset(name)
        assert a.kind == "weights" and a.algorithm == "sha256" and a.urls, name
    chenyaofo = assets.get_asset("shufflenetv2-x0.5")
    assert chenyaofo.urls[0].endswith("/releases/download/shufflenetv2/cifar10_shufflenetv2_x0_5-1308b4e9.pt")
    assert chenyaofo.filename.split("-")[-1].removesuffix(".pt") == chenyaofo.digest[:8]  # the name's hash prefix


def test_public_names_stay_importable_from_the_packages() -> None:
    import frmargin.data as data

    for name in (*assets.__all__, "download", "RETRY_BACKOFF_S", "local_copy"):
        assert hasattr(assets, name), name
    for name in (*data.__all__, "Dataset", "load_dataset", "read_cifar_archive", "restricted_unpickle"):
        assert hasattr(data, name), name
    assert callable(assets.download) and assets.downloads.download is assets.download
