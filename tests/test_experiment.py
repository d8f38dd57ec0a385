"""The sweep runner: run folder contents, stratified selection, determinism, resume, crash safety,
full-disk behaviour and torchrun sharding.

Real model (resnet20) and data (``cifar10-exact``) from the offline mirror, a few images each
(every image is 9 paths, about 1-3 s on one CPU thread). The folder is ``$FRMARGIN_MIRROR`` when
set, else ``<repo>/../shared/assets``; the tests needing it are skipped when it is absent.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from frmargin.errors import FrmarginError
from frmargin.options import TraceOptions
from frmargin.runs.config import RunConfig, fingerprint
from frmargin.runs.experiment import run_experiment
from frmargin.runs.targets import select_images
from mirror import MIRROR, needs_mirror

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PATH_COLUMNS = (
    "image_index", "source", "target", "method", "metric", "success", "status", "first_hit", "shielded",
    "fr_length", "predicted_length", "predicted_first_hit", "lower_bound", "confidence", "l2", "linf",
    "steps", "jacobian_evals", "forward_evals",
)  # fmt: skip
KEY = ["image_index", "target"]
SUBPROCESS_TIMEOUT = 180


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """FRMARGIN_MIRROR / FRMARGIN_HOME for this module (and the env of its subprocesses)."""
    if MIRROR is None:
        pytest.skip("offline asset mirror not found; set FRMARGIN_MIRROR")
    home = tmp_path_factory.mktemp("frmargin-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRMARGIN_MIRROR", str(MIRROR))
        mp.setenv("FRMARGIN_HOME", str(home))
        yield {
            **os.environ,
            "FRMARGIN_MIRROR": str(MIRROR),
            "FRMARGIN_HOME": str(home),
            # same thread count as this process (conftest pins 1): results are compared bit for bit
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }


def _config(images: int, **kw) -> RunConfig:
    """A run configuration; keyword arguments that are tracing options go into ``trace``."""
    fields = {f.name for f in dataclasses.fields(TraceOptions)}
    trace = TraceOptions(**{k: v for k, v in kw.items() if k in fields})
    rest = {k: v for k, v in kw.items() if k not in fields}
    return RunConfig(images=images, data="cifar10-exact", chunk_images=1, trace=trace, **rest)


def _comparable(paths: pd.DataFrame) -> pd.DataFrame:
    """The table without timing columns, in a canonical row order."""
    timing = [c for c in paths.columns if "time" in c or "second" in c]
    return paths.drop(columns=timing).sort_values(KEY).reset_index(drop=True)


def _read_paths(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(Path(folder) / "paths.parquet")


def _assert_same_table(actual: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    dup = actual.duplicated(KEY)
    assert not dup.any(), f"{what}: duplicated (image_index, target) rows:\n{actual[dup][KEY]}"
    a, e = _comparable(actual), _comparable(expected)
    missing = set(map(tuple, e[KEY].values)) - set(map(tuple, a[KEY].values))
    extra = set(map(tuple, a[KEY].values)) - set(map(tuple, e[KEY].values))
    assert not missing and not extra, f"{what}: missing rows {sorted(missing)}, extra rows {sorted(extra)}"
    assert list(a.columns) == list(e.columns), f"{what}: columns {list(a.columns)} != {list(e.columns)}"
    pd.testing.assert_frame_equal(a, e, check_exact=True, obj=what)


def _n_paths(folder: Path) -> int:
    """9 paths per correctly classified image of a finished run (3 of the 4 seed-drawn images of run4)."""
    return 9 * int(pd.read_parquet(Path(folder) / "images.parquet")["correct"].sum())


def _parts(folder: Path) -> list[Path]:
    return sorted((Path(folder) / "paths.parquet").glob("part-*.parquet"))


def _run_cli(args: list[str], env: dict, cwd: Path, timeout: int = SUBPROCESS_TIMEOUT):
    return subprocess.run(
        [sys.executable, "-m", "frmargin", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- shared runs


@pytest.fixture(scope="module")
def run3(env, tmp_path_factory) -> Path:
    """The reference tiny run: 3 images, one image per chunk."""
    out = tmp_path_factory.mktemp("run3") / "run"
    return run_experiment(_config(3), out, progress=False)


@pytest.fixture(scope="module")
def run4(env, tmp_path_factory) -> Path:
    """Uninterrupted single-process 4-image run: reference for the crash and torchrun tests."""
    out = tmp_path_factory.mktemp("run4") / "run"
    return run_experiment(_config(4), out, progress=False)


# --------------------------------------------------------------------------- selection (no assets)


def test_select_images_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(10), 30)
    np.random.default_rng(7).shuffle(labels)
    a = select_images(labels, 20, 10, seed=0)
    assert len(a) == 20 and len(np.unique(a)) == 20, "20 distinct images expected"
    assert np.all(np.diff(a) > 0), "selection must come back sorted"
    np.testing.assert_array_equal(np.bincount(labels[a], minlength=10), np.full(10, 2), err_msg="N/10 per class")
    np.testing.assert_array_equal(select_images(labels, 20, 10, seed=0), a, err_msg="same seed, same images")
    b = select_images(labels, 20, 10, seed=1)
    assert not np.array_equal(a, b), "another seed must select other images"
    np.testing.assert_array_equal(np.bincount(labels[b], minlength=10), np.full(10, 2))
    # the remainder goes to the first classes
    c = select_images(labels, 23, 10, seed=0)
    np.testing.assert_array_equal(np.bincount(labels[c], minlength=10), [3, 3, 3] + [2] * 7)


def test_select_images_too_many_for_a_class_is_a_user_error():
    labels = np.repeat(np.arange(10), 3)
    with pytest.raises(FrmarginError, match="images"):
        select_images(labels, 40, 10, seed=0)


def test_top_classes_enters_the_fingerprint_only_when_set():
    assert "top_classes" not in RunConfig().identity(), "runs made before the option must keep their fingerprint"
    assert RunConfig(trace=TraceOptions(top_classes=5)).fingerprint() != RunConfig().fingerprint()
    with pytest.raises(FrmarginError, match="top_classes"):
        RunConfig(trace=TraceOptions(top_classes=1)).validate()


@needs_mirror
def test_run_with_top_classes(env, tmp_path):
    """Two images with 4 classes kept per path: every path ends ok, run.json records the option,
    and the lengths agree with the closed form (the coarse flow moves p on the same line)."""
    out = run_experiment(_config(2, top_classes=4), tmp_path / "run", progress=False)
    info = json.loads((out / "run.json").read_text())
    assert info["top_classes"] == 4 and RunConfig.from_run_info(info).trace.top_classes == 4
    paths = _read_paths(out)
    assert len(paths) == 9 * int(pd.read_parquet(out / "images.parquet")["correct"].sum()) > 0
    assert (paths["status"] == "ok").all(), paths["status"].value_counts().to_dict()
    rel = ((paths["fr_length"] - paths["predicted_length"]) / paths["predicted_length"]).abs()
    assert rel.median() < 1e-2, f"median relative error {rel.median():.3g}"


# --------------------------------------------------------------------------- run folder contents


@needs_mirror
def test_run_folder_contents(run3):
    info = json.loads((run3 / "run.json").read_text())
    assert info["status"] == "complete"
    assert info["fingerprint"] == fingerprint(_config(3), info["model_identity"], info["data_identity"])
    assert info["options_fingerprint"] == _config(3).options_fingerprint() and info["fingerprint_version"] == 2
    assert info["class_names"] == CIFAR10_CLASSES
    assert info["world_size"] == 1
    for pkg in ("python", "torch", "numpy", "pandas"):
        assert info["versions"].get(pkg), f"run.json versions lacks {pkg}: {info['versions']}"
    timing = info["timing"]
    for key in ("total", "tracing", "per_path"):
        assert isinstance(timing.get(key), (int, float)) and timing[key] >= 0, f"timing[{key!r}]: {timing}"
    assert timing["total"] >= timing["tracing"] > 0

    images = pd.read_parquet(run3 / "images.parquet")
    assert len(images) == 3 and images["image_index"].is_unique
    assert images["label"].nunique() == 3, "3 images of 10 classes: one of each of 3 classes drawn with the seed"
    assert "drawn with the seed" in info["image_selection"] and info["targets_used"] == "all"
    ranks = _read_paths(run3).groupby("image_index")["target_rank"].apply(sorted)
    assert all(r == list(range(1, 10)) for r in ranks), f"target_rank per image: {ranks.tolist()}"
    np.testing.assert_array_equal(images["correct"], images["label"] == images["prediction"])
    assert info["accuracy"] == pytest.approx(images["correct"].mean())
    assert info["n_correct"] == int(images["correct"].sum())

    paths = _read_paths(run3)
    missing = [c for c in PATH_COLUMNS if c not in paths.columns]
    assert not missing, f"paths.parquet lacks columns {missing}"
    assert info["n_paths"] == len(paths)
    assert not paths.duplicated(KEY).any()
    correct = images[images["correct"]]
    assert set(paths["image_index"]) == set(correct["image_index"]), "one set of paths per correct image"
    assert len(paths) == 9 * len(correct) and len(paths) > 0
    for row in correct.itertuples():
        mine = paths[paths["image_index"] == row.image_index]
        assert (mine["source"] == row.prediction).all()
        assert sorted(mine["target"]) == [c for c in range(10) if c != row.prediction], (
            f"image {row.image_index}: targets {sorted(mine['target'])}"
        )
    assert (paths["target"] != paths["source"]).all()
    assert set(paths["method"]) == {"converged"} and set(paths["metric"]) == {"fisher"}

    expected_shielded = paths["success"] & (paths["first_hit"] != paths["target"])
    np.testing.assert_array_equal(paths["shielded"].to_numpy(), expected_shielded.to_numpy())

    ok = paths[paths["success"]]
    assert len(ok) > 0, "no successful path at all"
    below = ok[ok["fr_length"] < ok["lower_bound"] - 1e-9]
    assert below.empty, f"fr_length below the lower bound:\n{below[[*KEY, 'fr_length', 'lower_bound']]}"
    rel = ((ok["fr_length"] - ok["predicted_length"]).abs() / ok["predicted_length"]).median()
    assert rel < 0.02, f"median |traced - predicted| / predicted = {rel:.4f} >= 2%"


@needs_mirror
def test_run_json_records_the_configuration_once(run3):
    info = json.loads((run3 / "run.json").read_text())
    # only the requested values whose resolved form stands at the top level share a name with it
    shared = {"damping", "max_steps", "accuracy", "device", "temperature"}
    assert set(info["config"]) & set(info) == shared, sorted(info["config"])
    assert info["config"]["damping"] is None and info["config"]["accuracy"] == {}
    assert RunConfig.from_run_info(info) == _config(3)
    assert info["data_requested"] == "cifar10-exact" and info["damping"] == 1e-14 and info["max_steps"] == 200
    assert info["tracer_options"]["eta"] == 0.6 and info["config"]["chunk_images"] == 1


@needs_mirror
def test_same_config_twice_gives_identical_tables(run3, tmp_path):
    again = run_experiment(_config(3), tmp_path / "again", progress=False)
    _assert_same_table(_read_paths(again), _read_paths(run3), "second run of the same config")
    pd.testing.assert_frame_equal(
        pd.read_parquet(again / "images.parquet"), pd.read_parquet(run3 / "images.parquet"), check_exact=True
    )


# --------------------------------------------------------------------------- resume


@needs_mirror
def test_resume_redoes_only_the_missing_part(run3, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run3, out)
    parts = _parts(out)
    n_correct = int(pd.read_parquet(out / "images.parquet")["correct"].sum())
    assert len(parts) == n_correct >= 2, f"one part per correct image expected, got {[p.name for p in parts]}"
    victim = parts[1]
    victim.unlink()
    kept = {p.name: p.read_bytes() for p in parts if p != victim}
    run_experiment(_config(3), out, resume=True, progress=False)
    assert victim.exists(), "the deleted part was not traced again"
    for name, data in kept.items():
        assert (out / "paths.parquet" / name).read_bytes() == data, f"finished part {name} was redone"
    _assert_same_table(_read_paths(out), _read_paths(run3), "resumed run")
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["n_paths"] == 9 * n_correct


@needs_mirror
def test_rerun_without_resume_is_refused(run3):
    before = (run3 / "run.json").read_text()
    with pytest.raises(FrmarginError, match="resume"):
        run_experiment(_config(3), run3, progress=False)
    assert (run3 / "run.json").read_text() == before


@needs_mirror
@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
@pytest.mark.parametrize(
    "change", [{"images": 2}, {"seed": 1}, {"metric": "euclidean"}], ids=["images", "seed", "metric"]
)
def test_different_config_in_same_folder_is_refused(run3, resume, change):
    before = {p.name: p.read_bytes() for p in _parts(run3)}
    change = dict(change)
    config = _config(change.pop("images", 3), **change)
    with pytest.raises(FrmarginError) as info:
        run_experiment(config, run3, resume=resume, progress=False)
    message = str(info.value)
    assert "--out" in message and str(run3) in message, f"message should name --out and the folder: {message}"
    assert {p.name: p.read_bytes() for p in _parts(run3)} == before, "the other run's results were touched"


@needs_mirror
def test_a_pure_flow_run_resumes_only_as_one(env, tmp_path):
    """A run traced without the damped continuation (as every run folder written before it
    existed) is not resumed by a default run: the error names --continuation and what resumes it;
    with --continuation none it resumes."""
    out = run_experiment(_config(2, continuation="none"), tmp_path / "run", progress=False)
    with pytest.raises(FrmarginError, match=r"option '--continuation'.*pure flow.*--continuation none"):
        run_experiment(_config(2), out, resume=True, progress=False)
    run_experiment(_config(2, continuation="none"), out, resume=True, progress=False)
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@needs_mirror
def test_non_empty_folder_without_a_run_is_refused(env, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FrmarginError, match="--out"):
        run_experiment(_config(2), tmp_path, progress=False)


# --------------------------------------------------------------------------- full disk


@pytest.fixture(scope="module")
def disk_full_run(env, tmp_path_factory):
    """A run whose first part write fails half way with ENOSPC; returns (error, folder)."""
    out = tmp_path_factory.mktemp("diskfull") / "run"
    original = pd.DataFrame.to_parquet

    def to_parquet(self, path, *args, **kwargs):
        name = Path(path).name
        if "part-" not in name:
            return original(self, path, *args, **kwargs)
        buf = io.BytesIO()
        original(self, buf, *args, **kwargs)
        data = buf.getvalue()
        Path(path).write_bytes(data[: len(data) // 2])  # the disk filled up half way through
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pd.DataFrame, "to_parquet", to_parquet)
        with pytest.raises(OSError) as info:
            run_experiment(_config(2), out, progress=False)
    return info.value, out


@needs_mirror
def test_disk_full_raises_and_leaves_no_half_written_part(disk_full_run):
    err, out = disk_full_run
    assert err.errno == errno.ENOSPC, f"expected ENOSPC to come through, got {err!r}"
    assert _parts(out) == [], f"a part file exists after a failed write: {[p.name for p in _parts(out)]}"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] != "complete"


@needs_mirror
def test_disk_full_cleans_up_its_temporary_file(disk_full_run):
    _, out = disk_full_run
    leftovers = [p.name for p in (out / "paths.parquet").iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"half-written temporary files left behind after ENOSPC: {leftovers}"


# --------------------------------------------------------------------------- crash safety (real CLI)


@needs_mirror
def test_kill_9_then_resume_gives_the_uninterrupted_table(env, run4, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--data", "cifar10-exact", "--images", "4", "--chunk-images", "1", "--out", str(out),
            "--no-progress", "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "frmargin", *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while not _parts(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        still_running = proc.poll() is None
        if still_running:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert still_running, f"the run ended before it could be killed (rc {proc.returncode}): {stderr[-2000:]}"
    assert proc.returncode == -signal.SIGKILL

    done = _parts(out)
    assert 1 <= len(done) < len(_parts(run4)), f"parts after the kill: {[p.name for p in done]}"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "running", "a killed run must not say complete"
    assert [s["status"] for s in info["sessions"]] == ["running"], info["sessions"]
    report = _run_cli(["report", str(out), "--out", str(tmp_path / "report")], env, tmp_path)
    assert "incomplete run" in report.stderr and str(out) in report.stderr, report.stderr[-2000:]
    # a finished part is whole; a temporary file (possibly half-written) is never read as a part
    partial = pd.read_parquet(out / "paths.parquet")
    assert len(partial) == 9 * len(done) and not partial.duplicated(KEY).any()
    # make sure a half-written temporary file is there, whatever the moment of the kill was
    planted = out / "paths.parquet" / f".part-{len(done):05d}.parquet.tmp-{proc.pid + 100000}"
    planted.write_bytes(done[0].read_bytes()[:500])
    partial = pd.read_parquet(out / "paths.parquet")
    assert len(partial) == 9 * len(done), "a temporary file was read as a part"

    res = _run_cli([*args, "--resume"], env, tmp_path)
    assert res.returncode == 0, f"resume failed (rc {res.returncode}): {res.stderr[-3000:]}"
    assert len(_parts(out)) == len(_parts(run4)) >= 3
    _assert_same_table(_read_paths(out), _read_paths(run4), "killed then resumed run")
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["n_paths"] == _n_paths(run4) >= 27
    # the killed session stays recorded as killed; the resumed one traced only the missing parts
    assert [s["status"] for s in info["sessions"]] == ["killed", "complete"], info["sessions"]
    assert info["sessions"][-1]["paths_traced"] == info["n_paths"] - 9 * len(done)


# --------------------------------------------------------------------------- torchrun


def _gloo_available() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_gloo_available()


@pytest.fixture(scope="module")
def torchrun_run(env, tmp_path_factory):
    if not _gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    base = tmp_path_factory.mktemp("torchrun")
    out = base / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "frmargin", "run", "--data", "cifar10-exact", "--images", "4", "--chunk-images", "1",
           "--out", str(out), "--no-progress", "--device", "cpu"]  # fmt: skip
    res = subprocess.run(cmd, env=env, cwd=base, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    return res, out


@needs_mirror
def test_torchrun_two_ranks_equal_a_single_process_run(torchrun_run, run4):
    res, out = torchrun_run
    assert res.returncode == 0, f"torchrun failed (rc {res.returncode}):\n{res.stderr[-4000:]}"
    # one part per chunk of correctly classified images (chunk_images=1: one per such image)
    n_correct = int(pd.read_parquet(run4 / "images.parquet")["correct"].sum())
    assert (
        [p.name for p in _parts(out)]
        == [p.name for p in _parts(run4)]
        == [f"part-{i:05d}.parquet" for i in range(n_correct)]
    )
    _assert_same_table(_read_paths(out), _read_paths(run4), "torchrun (2 ranks) run")
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "images.parquet"), pd.read_parquet(run4 / "images.parquet"), check_exact=True
    )
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2
    assert info["status"] == "complete" and info["n_paths"] == _n_paths(run4) >= 27
    assert info["fingerprint"] == json.loads((run4 / "run.json").read_text())["fingerprint"]
    assert res.stdout.count("results in") == 1, f"only rank 0 should print the result line: {res.stdout!r}"


@needs_mirror
def test_torchrun_session_counts_every_rank(torchrun_run, run4):
    res, out = torchrun_run
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads((out / "run.json").read_text())
    traced = sum(s["paths_traced"] for s in info["sessions"])
    assert traced == info["n_paths"] == _n_paths(run4), (
        f"run.json sessions count {traced} traced paths, but {info['n_paths']} paths were traced "
        "(only rank 0's paths are counted)"
    )
