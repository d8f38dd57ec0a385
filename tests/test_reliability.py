"""Issue 18 without assets: the run-folder lock, the fingerprint, content-keyed checksums,
download caps, simplex checks of the closed forms and option validation before any work."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import importlib.util
import json
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from frmargin import assets, geometry
from frmargin.errors import AssetError, FrmarginError
from frmargin.options import TraceOptions
from frmargin.runs import folder
from frmargin.runs.config import RunConfig, fingerprint, resume_mismatch
from frmargin.runs.lock import LOCK_FILE, RunLock, lock_holder

# ----------------------------------------------------------------------------- the lock (item 1)


def test_second_lock_on_a_folder_is_refused_naming_folder_and_holder(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(FrmarginError, match=r"in use by another run.*pid \d+ on host") as err:
            RunLock(tmp_path).acquire()
        assert str(tmp_path) in str(err.value)
    assert not (tmp_path / LOCK_FILE).exists(), "the lock is released on exit"


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = 2**22 + 12345  # above the usual pid_max of 4194304: no such process
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "started": 0}))
    with RunLock(tmp_path):
        assert lock_holder(tmp_path)["pid"] == os.getpid()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    with pytest.raises(FrmarginError, match="host elsewhere"):
        RunLock(tmp_path).acquire()


# ------------------------------------------------------------------------ fingerprint (items 2, 11)


def test_fingerprint_covers_weights_data_and_batch_size():
    c = RunConfig(images=4)
    base = fingerprint(c, {"sha256": "a"}, {"sha256": "b"})
    assert base != fingerprint(c, {"sha256": "a"}, {"sha256": "other"})
    assert base != fingerprint(c, {"sha256": "other"}, {"sha256": "b"})
    assert base != fingerprint(RunConfig(images=4, trace=TraceOptions(batch_size=8)), {"sha256": "a"}, {"sha256": "b"})
    assert base == fingerprint(RunConfig(images=4, baselines=("fmn",)), {"sha256": "a"}, {"sha256": "b"})


def test_legacy_run_json_resumes_when_nothing_changed_and_is_refused_otherwise():
    c = RunConfig(images=4)
    legacy = {"fingerprint": c.fingerprint(), "config": {"batch_size": 64}, "data_identity": {"sha256": "d"},
              "model_identity": {"sha256": "m"}}  # fmt: skip
    assert resume_mismatch(legacy, c, {"sha256": "m"}, {"sha256": "d"}) is None
    assert "data content" in resume_mismatch(legacy, c, {"sha256": "m"}, {"sha256": "new"})
    assert "batch-size" in resume_mismatch(legacy, RunConfig(images=4, trace=TraceOptions(batch_size=8)), None, None)


# --------------------------------------------------------------------- validation first (item 6)


@pytest.mark.parametrize(
    "change",
    [{"max_steps": 0}, {"damping": -1.0}, {"damping": float("nan")}, {"eta": float("nan")},
     {"eta": -1.0}, {"solver": "cg"}, {"damping_mode": "bogus"}, {"seed": -1},
     {"device": "bogus"}, {"baselines": ("deepfol",)}, {"max_steps": True}],
)  # fmt: skip
def test_bad_options_are_refused_before_the_folder_is_touched(tmp_path, change):
    from frmargin.options import TraceOptions
    from frmargin.runs.experiment import run_experiment

    out = tmp_path / "run"
    tracing = {f.name for f in dataclasses.fields(TraceOptions)}
    with pytest.raises(FrmarginError):
        trace = TraceOptions(**{k: v for k, v in change.items() if k in tracing})
        rest = {k: v for k, v in change.items() if k not in tracing}
        run_experiment(RunConfig(images=2, data="cifar10-exact", trace=trace, **rest), out, progress=False)
    assert not out.exists()


def test_unknown_baseline_gets_a_suggestion():
    with pytest.raises(FrmarginError, match="did you mean 'deepfool'"):
        RunConfig(baselines=("deepfol",)).validate()


def test_out_that_is_a_file_is_a_clear_error(tmp_path):
    from frmargin.runs.experiment import run_experiment

    out = tmp_path / "file"
    out.write_text("x")
    with pytest.raises(FrmarginError, match=r"--out.*is a file"):
        run_experiment(RunConfig(images=2, data="cifar10-exact"), out, progress=False)


# ----------------------------------------------------------------------- checksums (item 3)


def test_in_place_edit_with_restored_mtime_is_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    f = tmp_path / "weights.th"
    f.write_bytes(b"a" * 4096)
    good = assets.file_digest(f)
    st = f.stat()
    with open(f, "r+b") as h:
        h.seek(100)
        h.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    assert assets.file_digest(f) != good


def test_cache_of_big_files_is_keyed_by_content_derived_stat(tmp_path, monkeypatch):
    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(assets.store, "ALWAYS_HASH_BYTES", 10)
    f = tmp_path / "data.npz"
    f.write_bytes(b"a" * 4096)
    assets.file_digest(f)
    assert assets.store.cached_digest(f, "sha256") is not None
    st = f.stat()
    with open(f, "r+b") as h:
        h.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert assets.store.cached_digest(f, "sha256") is None
    assert assets.file_digest(f) == assets.store.hash_file(f, "sha256")


# ----------------------------------------------------------------------- downloads (item 8)


class _Endless(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(64):
                self.wfile.write(b"x" * 65536)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_download_stops_at_the_size_cap_and_keeps_nothing(home, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(assets.downloads, "DOWNLOAD_CAP_BYTES", 200_000)
    dest = home / "data" / "blob.bin"
    try:  # an asset without a recorded size: the general cap
        with pytest.raises(AssetError, match="cap of 200000"):
            assets.download(f"http://127.0.0.1:{server.server_port}/w", dest, _blob(), progress=False)
    finally:
        server.shutdown()
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_full_disk_during_download_names_the_file_and_removes_the_part(home, monkeypatch):
    import errno

    def full(url, part, *args, **kwargs):
        part.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(assets.downloads, "_download_once", full)
    dest = home / "weights" / "resnet20-12fca82f.th"
    with pytest.raises(AssetError, match=r"no space left.*partial file was removed"):
        assets.download("http://127.0.0.1:1/w", dest, "resnet20", progress=False)
    assert not dest.with_name(dest.name + ".part").exists()


class _Oversized(http.server.BaseHTTPRequestHandler):
    """A body 1000 bytes larger than the asset's recorded size, announced or not."""

    def do_GET(self):
        body = PAYLOAD + b"y" * 1000
        self.send_response(200)
        if self.server.announce:  # type: ignore[attr-defined]
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


PAYLOAD = bytes(range(256)) * 64  # 16 KiB


def _blob(size: int | None = None) -> assets.Asset:
    import hashlib

    return assets.Asset("blob", "blob.bin", "data", "sha256", hashlib.sha256(PAYLOAD).hexdigest(), size=size)


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "no-length"])
def test_download_larger_than_the_recorded_size_is_refused(home, announce):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Oversized)
    server.announce = announce  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dest = home / "data" / "blob.bin"
    try:
        with pytest.raises(AssetError, match=f"more than the expected {len(PAYLOAD)}") as err:
            assets.download(f"http://127.0.0.1:{server.server_port}/b", dest, _blob(len(PAYLOAD)), progress=False)
    finally:
        server.shutdown()
    assert "blob.bin" in str(err.value) and "nothing was kept" in str(err.value)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_registered_sizes_are_positive_byte_counts():
    assert all(isinstance(a.size, int) and a.size > 0 for a in assets.ASSETS.values())
    with pytest.raises(FrmarginError, match="'size': got -1"):
        assets.Asset("x", "x.bin", "data", "sha256", "0" * 64, size=-1)


class _Slow(http.server.BaseHTTPRequestHandler):
    """Announces the whole payload, then sends 1 KiB every 2 s (until told to stop)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        try:
            for i in range(0, len(PAYLOAD), 1024):
                self.wfile.write(PAYLOAD[i : i + 1024])
                self.wfile.flush()
                if self.server.stop.wait(2.0):  # type: ignore[attr-defined]
                    return
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_slow_server_hits_the_download_deadline(home, monkeypatch, how):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    server.stop = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with pytest.raises(AssetError, match=r"did not finish within the deadline of 1 s") as err:
            if how == "environment":  # the user's knob; fetch does not try the next address
                monkeypatch.setenv("FRMARGIN_MIRROR", base)
                monkeypatch.setenv("FRMARGIN_DOWNLOAD_DEADLINE", "1")
                assets.fetch(_blob(), progress=False)
            else:
                assets.download(base + "/b", home / "data" / "blob.bin", _blob(), progress=False, deadline=1.0)
    finally:
        server.stop.set()  # type: ignore[attr-defined]
        server.shutdown()
    text = str(err.value)
    assert "blob.bin" in text and base in text and "FRMARGIN_DOWNLOAD_DEADLINE=SECONDS" in text
    part = home / "data" / "blob.bin.part"
    assert not (home / "data" / "blob.bin").exists()
    assert part.exists() and 0 < part.stat().st_size < len(PAYLOAD)  # kept: the next try resumes it


@pytest.mark.parametrize("value", ["soon", "0", "-3", "inf"])
def test_bad_download_deadline_variable_is_named(home, monkeypatch, value):
    monkeypatch.setenv("FRMARGIN_DOWNLOAD_DEADLINE", value)
    with pytest.raises(AssetError, match=rf"FRMARGIN_DOWNLOAD_DEADLINE: got '{value}', expected a number of seconds"):
        assets.download("http://127.0.0.1:9/b", home / "data" / "blob.bin", _blob(), progress=False)


# ----------------------------------------------------------------------- the home folder (item 8)


def _home_variants(tmp_path, monkeypatch, via: str) -> Path:
    """Point the asset home at ``tmp_path/h`` (through FRMARGIN_HOME, or HOME with no
    FRMARGIN_HOME: the user cache folder under it); returns the folder that must be usable."""
    monkeypatch.delenv("FRMARGIN_MIRROR", raising=False)
    h = tmp_path / "h"
    if via == "FRMARGIN_HOME":
        monkeypatch.setenv("FRMARGIN_HOME", str(h))
    else:
        monkeypatch.delenv("FRMARGIN_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        monkeypatch.setenv("HOME", str(h))
        assert assets.home_dir().is_relative_to(h), assets.home_dir()
    return h


def _read_only(folder: Path, monkeypatch) -> None:
    """Make ``folder`` read-only; root ignores permission bits, so there the refusal the kernel
    gives a user (EACCES on creating anything inside) is simulated."""
    import errno

    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return
    inside = str(folder) + os.sep

    def refuse(real):
        def call(path, *args, **kwargs):
            if os.fspath(path).startswith(inside):
                raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "mkdir", refuse(os.mkdir))
    monkeypatch.setattr(os, "open", refuse(os.open))


@contextlib.contextmanager
def _unusable(h: Path, problem: str, monkeypatch):
    """The home ``h`` made a file or read-only for the block (its mode restored after)."""
    if problem == "a file":
        h.write_text("not a folder")
    else:
        _read_only(h, monkeypatch)
    try:
        yield
    finally:
        if h.is_dir():
            h.chmod(0o755)


@pytest.mark.parametrize("via", ["FRMARGIN_HOME", "HOME"])
@pytest.mark.parametrize("problem", ["read-only", "a file"])
def test_unusable_home_is_one_clear_error_naming_it(tmp_path, monkeypatch, via, problem):
    h = _home_variants(tmp_path, monkeypatch, via)
    with _unusable(h, problem, monkeypatch), pytest.raises(AssetError) as err:
        assets.download("http://127.0.0.1:9/b", assets.store_path(_blob()), _blob(), progress=False)
    text = str(err.value)
    assert not isinstance(err.value, OSError)
    assert "frmargin home folder" in text and "FRMARGIN_HOME" in text, text
    assert str(h) in text, text
    assert ("is a file" in text) == (problem == "a file"), text
    assert ("not writable" in text) == (problem == "read-only"), text


def test_cli_with_a_home_that_is_a_file_prints_one_line(tmp_path):
    import subprocess
    import sys

    h = tmp_path / "home"
    h.write_text("not a folder")
    env = {**os.environ, "FRMARGIN_HOME": str(h), "FRMARGIN_MIRROR": "http://127.0.0.1:9"}
    res = subprocess.run([sys.executable, "-m", "frmargin", "accuracy", "--model", "resnet20", "--data",
                          "cifar10-exact"], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("frmargin: error:"), res.stderr
    assert str(h) in lines[0] and "is a file" in lines[0] and "FRMARGIN_HOME" in lines[0], lines[0]


# ------------------------------------------------------------------------ closed forms (item 9)


def test_fisher_rao_distance_refuses_unnormalized_inputs():
    with pytest.raises(FrmarginError, match=r"argument 'p'.*summing to 1"):
        geometry.fisher_rao_distance(torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 4.0]]))
    d = geometry.fisher_rao_distance(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]))
    assert abs(d.item() - torch.pi) < 1e-12


def test_closed_forms_refuse_unnormalized_p_and_float_classes():
    p = torch.tensor([[0.7, 0.6, 0.1]], dtype=torch.float64)
    with pytest.raises(FrmarginError, match="argument 'p'"):
        geometry.margin_lower_bound(p)
    with pytest.raises(FrmarginError, match="argument 'p'"):
        geometry.predicted_path(p, torch.tensor([0]), torch.tensor([1]))
    q = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    with pytest.raises(FrmarginError, match=r"argument 'source'.*float"):
        geometry.predicted_path(q, torch.tensor([0.7]), torch.tensor([1]))
    rounded = q + torch.tensor([[1e-9, 0.0, -1e-9]], dtype=torch.float64)  # rounding only: accepted
    assert torch.isfinite(geometry.margin_lower_bound(rounded)).all()


# ----------------------------------------------------------------------- complete runs (item 5)


def test_run_is_complete_reads_the_status(tmp_path):
    assert not folder.run_is_complete(tmp_path)
    folder.write_json({"status": "running"}, tmp_path / folder.RUN_FILE)
    assert not folder.run_is_complete(tmp_path)
    folder.write_json({"status": "complete"}, tmp_path / folder.RUN_FILE)
    assert folder.run_is_complete(tmp_path)


# ------------------------------------------------------------------------------ API inputs (item 9)


def _tiny(labels, shape=(3, 4, 4)):
    from frmargin.data.dataset import Dataset

    g = torch.Generator().manual_seed(0)
    images = torch.rand(len(labels), *shape, generator=g)
    return Dataset("tiny", images, torch.tensor(labels), ("a", "b", "c"), torch.arange(len(labels)), "test", {})


@pytest.mark.parametrize(
    ("labels", "identity", "match"),
    [
        ([0, -1, 2], {}, r"option '--data': labels in \[-1, 2\], expected class indices in \[0, 3\)"),
        ([0, 1, 2], {"input_shape": [3, 8, 8]}, r"option '--data': .* shape \(3, 4, 4\) .* expects \(3, 8, 8\)"),
        ([0, 1, 2], {"input": "RGB, shape (B, 1, 4, 4)"}, r"option '--data': .* expects \(1, 4, 4\)"),
    ],
    ids=["negative-label", "input_shape", "input-description"],
)
def test_preflight_owns_the_input_checks(labels, identity, match):
    from frmargin.runs.preflight import preflight

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    with pytest.raises(FrmarginError, match=match):
        preflight(net, _tiny(labels), RunConfig(), torch.device("cpu"), torch.float32, identity)
    assert preflight(net, _tiny([0, 1, 2]), RunConfig(), torch.device("cpu"), torch.float32, {}) == 3


def _cnn(dtype=torch.float64, C=4):
    from conftest import make_cnn

    return make_cnn(in_ch=3, size=8, C=C, dtype=dtype)


@pytest.mark.parametrize(
    "x, match",
    [(torch.rand(2, 3, 8, 8, dtype=torch.float32), r"argument 'x'.*float32.*float64"),
     (torch.rand(3, 8, 8, dtype=torch.float64), r"argument 'x'.*batched"),
     (torch.rand(2, 8, 8, 3, dtype=torch.float64), r"argument 'x'.*channels")],
)  # fmt: skip
def test_trace_paths_refuses_inputs_the_model_cannot_take(x, match):
    from frmargin import trace_paths

    with pytest.raises(FrmarginError, match=match):
        trace_paths(_cnn(), x, torch.zeros(x.shape[0], dtype=torch.long), torch.ones(x.shape[0], dtype=torch.long))


def test_data_fisher_refuses_train_mode_nan_and_other_dtypes():
    from frmargin import DataFisher

    model = _cnn()
    with pytest.raises(FrmarginError, match="train mode"):
        DataFisher(model.train(), torch.rand(2, 3, 8, 8, dtype=torch.float64))
    model.eval()
    with pytest.raises(FrmarginError, match="NaN"):
        DataFisher(model, torch.full((2, 3, 8, 8), float("nan"), dtype=torch.float64))
    with pytest.raises(FrmarginError, match="float32"):
        DataFisher(model, torch.rand(2, 3, 8, 8, dtype=torch.float32))


def test_always_on_functional_dropout_and_probability_outputs_are_refused():
    from frmargin import min_l2_attack, trace_paths

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _cnn(C=10)  # 10 outputs: two identical random masks are unlikely (2**-20)

        def forward(self, x):
            return torch.nn.functional.dropout(self.net(x), 0.5, training=True)

    class Probs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _cnn()

        def forward(self, x):
            return torch.softmax(self.net(x), -1)

    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    y, t = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    with pytest.raises(FrmarginError, match="deterministic"):
        trace_paths(Noisy().eval(), x, y, t)
    pytest.importorskip("foolbox")
    with pytest.raises(FrmarginError, match="probabilities"):
        min_l2_attack(Probs().eval(), x, y, attack="deepfool")


def test_nan_logits_are_reported_as_non_finite_output_not_as_dropout():
    """A model whose logits are NaN once blamed dropout ("outputs that change between identical
    calls", since NaN != NaN); it is non-finite output, and every entry point says so."""
    from frmargin import DataFisher, min_l2_attack, trace_paths

    class NaNLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _cnn()

        def forward(self, x):
            return self.net(x) * float("nan")

    model = NaNLogits().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    y, t = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    calls = [lambda: trace_paths(model, x, y, t), lambda: DataFisher(model, x)]
    if importlib.util.find_spec("foolbox") is not None:
        calls.append(lambda: min_l2_attack(model, x, y, attack="deepfool"))
    for call in calls:
        with pytest.raises(FrmarginError, match=r"argument 'model'.*non-finite output") as err:
            call()
        assert "identical calls" not in str(err.value) and "dropout" not in str(err.value)


def test_max_steps_true_is_not_a_step_budget():
    from frmargin.paths.options import resolve_options

    with pytest.raises(FrmarginError, match="max_steps"):
        resolve_options(max_steps=True)


# ----------------------------------------------------------------------- data files (item 10)


@pytest.mark.parametrize("images", [np.zeros((0, 32, 32, 3), np.uint8), np.zeros((4, 32, 32, 4), np.uint8)])
def test_empty_or_rgba_npz_is_a_clear_error(tmp_path, monkeypatch, images):
    from frmargin.data import load_dataset

    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    path = tmp_path / "d.npz"
    np.savez(path, images=images, labels=np.zeros(len(images), np.int64))
    with pytest.raises(FrmarginError, match=r"d\.npz.*(no images|alpha)"):
        load_dataset(str(path))


def _write_official_store(h: Path) -> None:
    from frmargin.data import official
    from frmargin.data.cifar import CIFAR_ASSET

    official._store_converted({"x": np.zeros(2, dtype=np.uint8)}, assets.get_asset(CIFAR_ASSET))


def _write_imagenet_cache(h: Path) -> None:
    from frmargin.data import imagenet

    imagenet._write_cache({"x": np.zeros(2, dtype=np.uint8)}, "k")


@pytest.mark.parametrize("write", [_write_official_store, _write_imagenet_cache], ids=["cifar10-store", "imagenet"])
@pytest.mark.parametrize("problem", ["read-only", "a file"])
def test_every_writer_of_the_home_names_an_unusable_home(tmp_path, monkeypatch, write, problem):
    """The converted CIFAR-10 store and the ImageNet sample cache are written under the home:
    an unusable home is the same one clear AssetError as for downloads, before anything is written."""
    h = _home_variants(tmp_path, monkeypatch, "FRMARGIN_HOME")
    with _unusable(h, problem, monkeypatch), pytest.raises(AssetError) as err:
        write(h)
    text = str(err.value)
    assert "frmargin home folder" in text and "FRMARGIN_HOME" in text and str(h) in text, text
