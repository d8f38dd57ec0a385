"""A study shared over torchrun ranks: the same tables as one process at equal threads per rank,
kill -9 mid-study then resume (nothing lost, redone or mixed), and a held study folder refused on
every rank. Two small registered models, a few ``cifar10-exact`` images, the real command line
(CPU, gloo)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mirror import MIRROR

pytestmark = [pytest.mark.slow, pytest.mark.skipif(MIRROR is None, reason="offline asset mirror not found")]

TIMEOUT = 600
PLAN = ["--models", "cnn-a-adv2,resnet4b-adv2", "--images", "4", "--seed", "4", "--data", "cifar10-exact",
        "--metrics", "fisher,euclidean", "--temperature", "1", "--baselines", "fmn", "--box", "0,1",
        "--chunk-images", "1", "--threads", "1", "--no-progress", "--device", "cpu"]  # fmt: skip
TIMING = ("seconds_per_path", "box_seconds_per_path")
KEY = ["image_index", "target"]


def _gloo() -> None:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("frmargin-home")
    return {**os.environ, "FRMARGIN_MIRROR": str(MIRROR), "FRMARGIN_HOME": str(home), "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip


def _port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(out: Path, ranks: int) -> list[str]:
    study = ["-m", "frmargin", "study", *PLAN, "--out", str(out)]
    if ranks == 1:
        return [sys.executable, *study]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
            "--master_addr", "127.0.0.1", "--master_port", str(_port()), *study]  # fmt: skip


def _run(out: Path, ranks: int, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(out, ranks), env=env, cwd=out.parent, capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory) -> Path:
    """The study in one process (one thread)."""
    out = tmp_path_factory.mktemp("one") / "study"
    res = _run(out, 1, env)
    assert res.returncode == 0, res.stderr[-4000:]
    return out


def _paths(folder: Path) -> pd.DataFrame:
    frame = pd.read_parquet(folder / "paths.parquet")
    timing = [c for c in frame.columns if "time" in c or "second" in c]
    return frame.drop(columns=timing).sort_values(KEY).reset_index(drop=True)


def assert_same_study(actual: Path, expected: Path) -> None:
    """Every table of the two study folders equal (timing aside): paths of every run, closed-form
    logits, baselines, and the study's own tables."""
    runs = sorted(p.parent.relative_to(expected) for p in expected.glob("*/*/run.json"))
    assert runs == sorted(p.parent.relative_to(actual) for p in actual.glob("*/*/run.json")) and len(runs) == 6
    for run in runs:
        got, want = _paths(actual / run), _paths(expected / run)
        assert not got.duplicated(KEY).any(), f"{run}: duplicated paths"
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=str(run))
        for table in ("images.parquet", "baselines.parquet"):
            if (expected / run / table).exists():
                a, b = (pd.read_parquet(d / run / table).sort_values("image_index", ignore_index=True)
                        for d in (actual, expected))  # fmt: skip
                pd.testing.assert_frame_equal(a, b, check_exact=True, obj=f"{run}/{table}")
    for logits in expected.glob("*/closed-form/logits.parquet"):
        rel = logits.relative_to(expected)
        pd.testing.assert_frame_equal(pd.read_parquet(actual / rel), pd.read_parquet(logits), check_exact=True)
    for table in ("study_table.csv", "study_verdicts.csv", "study_box.csv", "study_margins.csv"):
        a, b = (pd.read_csv(d / table) for d in (actual, expected))
        a, b = (f.drop(columns=[c for c in TIMING if c in f.columns]) for f in (a, b))
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=table)


def test_torchrun_two_ranks_give_the_table_of_one_process(env, reference, tmp_path):
    _gloo()
    out = tmp_path / "study"
    res = _run(out, 2, env)
    assert res.returncode == 0, res.stderr[-4000:]
    assert_same_study(out, reference)
    assert res.stdout.count("study report:") == 1, "only rank 0 writes and announces the report"
    for info in (json.loads(p.read_text()) for p in out.glob("*/*/run.json")):
        assert info["world_size"] == 2 and info["status"] == "complete"
        assert sum(s["paths_traced"] for s in info["sessions"]) == info["n_paths"], "every rank's paths counted"
    # the chunks were shared: a run with several chunks has parts written by both ranks' sessions
    study = json.loads((out / "study.json").read_text())
    assert study["status"] == "complete" and {r["status"] for r in study["runs"]} == {"complete"}


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, the deepest first."""
    for child in _children(pid):
        _kill_tree(child)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _mid_run(out: Path) -> Path | None:
    """A traced run with some but not all of its parts (one part per correct image here)."""
    for images in out.glob("*/*/images.parquet"):
        try:
            correct = int(pd.read_parquet(images)["correct"].sum())
        except Exception:  # being written
            continue
        parts = list((images.parent / "paths.parquet").glob("part-*.parquet"))
        if 1 <= len(parts) < correct - 1:
            return images.parent
    return None


def test_killed_torchrun_study_resumes_without_losing_redoing_or_mixing(env, reference, tmp_path):
    _gloo()
    out = tmp_path / "study"
    proc = subprocess.Popen(_command(out, 2), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    victim, deadline = None, time.monotonic() + TIMEOUT
    try:
        while victim is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            victim = _mid_run(out)
        assert victim is not None, f"the study ended (rc {proc.poll()}) before it could be killed mid-run"
    finally:
        _kill_tree(proc.pid)  # both ranks (torchrun starts them in sessions of their own) and the launcher
        proc.wait(timeout=30)
    study = json.loads((out / "study.json").read_text())
    entry = next(r for r in study["runs"] if Path(r["folder"]) == victim)
    assert entry["status"] == "running" and study["status"] == "running"
    assert json.loads((victim / "run.json").read_text())["status"] == "running"
    finished = {p: p.read_bytes() for p in out.glob("*/*/paths.parquet/part-*.parquet")}
    mtimes = {p: p.stat().st_mtime_ns for p in finished}
    done_runs = {Path(r["folder"]) for r in study["runs"] if r["status"] == "complete" and r["kind"] != "closed-form"}
    infos = {d: (d / "run.json").read_bytes() for d in done_runs}
    res = _run(out, 2, env)  # the same command resumes (the lock of the killed rank 0 is stale)
    assert res.returncode == 0, res.stderr[-4000:]
    assert {p: p.stat().st_mtime_ns for p in finished} == mtimes, "a finished part was traced again"
    assert {d: (d / "run.json").read_bytes() for d in done_runs} == infos, "a finished run was redone"
    info = json.loads((victim / "run.json").read_text())
    assert [s["status"] for s in info["sessions"]] == ["killed", "complete"], info["sessions"]
    kept = sum(len(pd.read_parquet(p)) for p in finished if p.parent.parent == victim)
    assert info["sessions"][-1]["paths_traced"] == info["n_paths"] - kept
    assert_same_study(out, reference)


def test_a_held_study_folder_is_refused_on_every_rank(env, tmp_path):
    _gloo()
    out = tmp_path / "study"
    out.mkdir()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    (out / ".lock").write_text(json.dumps(holder))
    res = _run(out, 2, env)
    assert res.returncode != 0
    assert res.stderr.count("is in use by another run") == 2, res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [".lock"], "nothing may start in a held folder"
