"""Issue 18 with the real model and data: two runs into one folder, resume after the data
changed, damaged and foreign parts, sessions, incomplete-run warning, input checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from frmargin.errors import FrmarginError
from frmargin.options import TraceOptions
from frmargin.runs import folder
from frmargin.runs.config import RunConfig
from frmargin.runs.experiment import run_experiment
from mirror import MIRROR

TIMEOUT = 240


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if MIRROR is None:
        pytest.skip("offline asset mirror not found; set FRMARGIN_MIRROR")
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRMARGIN_MIRROR", str(MIRROR))
        mp.setenv("FRMARGIN_HOME", str(home))
        yield {**os.environ, "FRMARGIN_MIRROR": str(MIRROR), "FRMARGIN_HOME": str(home), "OMP_NUM_THREADS": "1"}


def _npz(path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture(scope="module")
def exact(env):
    from frmargin.data import load_dataset

    d = load_dataset("cifar10-exact")
    first = [int(np.flatnonzero(d.labels.numpy() == c)[0]) for c in range(10)]
    second = [int(np.flatnonzero(d.labels.numpy() == c)[1]) for c in range(10)]
    return d.images.numpy(), d.labels.numpy(), first, second


def _cli(args, env, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "frmargin", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_two_runs_into_one_folder_one_wins_the_other_exits_2(env, tmp_path):
    out = tmp_path / "run"
    common = ["run", "--data", "cifar10-exact", "--images", "2", "--threads", "1", "--no-progress", "--out", str(out)]
    procs = [_cli([*common, "--seed", str(seed)], env, tmp_path) for seed in (0, 1)]
    results = [(p.wait(timeout=TIMEOUT), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert str(out) in loser and ("in use by another run" in loser or "different run" in loser), loser
    assert len(loser.strip().splitlines()) == 1, loser
    info = json.loads((out / "run.json").read_text())
    images = pd.read_parquet(out / "images.parquet")
    paths = pd.read_parquet(out / "paths.parquet")
    winner = 0 if results[0][0] == 0 else 1
    assert info["seed"] == winner
    assert set(paths["image_index"]) == set(images.loc[images["correct"], "image_index"])
    assert not paths.duplicated(["image_index", "target"]).any()
    assert info["status"] == "complete" and info["sessions"][-1]["status"] == "complete"


def test_resume_after_the_data_changed_is_refused(env, exact, tmp_path):
    images, labels, first, second = exact
    data = _npz(tmp_path / "d.npz", images[first], labels[first])
    config = RunConfig(images=1, data=str(data), chunk_images=1)
    out = run_experiment(config, tmp_path / "run", progress=False)
    before = pd.read_parquet(out / "paths.parquet")
    _npz(data, images[second], labels[second])
    with pytest.raises(FrmarginError, match="other data content"):
        run_experiment(config, out, resume=True, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "paths.parquet"), before)


def test_damaged_and_foreign_parts_are_retraced_on_resume(env, exact, tmp_path):
    images, labels, first, _ = exact
    data = _npz(tmp_path / "d.npz", images[first], labels[first])
    config = RunConfig(images=2, data=str(data), chunk_images=1)
    out = run_experiment(config, tmp_path / "run", progress=False)
    reference = pd.read_parquet(out / "paths.parquet").sort_values(["image_index", "target"]).reset_index(drop=True)
    other = run_experiment(RunConfig(images=2, data=str(data), chunk_images=1, seed=0, trace=TraceOptions(damping=1e-12)),
                           tmp_path / "other", progress=False)  # fmt: skip
    folder.path_part(out, 1).write_bytes(folder.path_part(other, 1).read_bytes())  # another run's
    run = folder.load_run(out)
    assert any("another run" in n for n in run.notes), run.notes
    assert len(run.paths) == 9, "the report leaves the foreign part out"
    folder.path_part(out, 0).write_bytes(folder.path_part(out, 0).read_bytes()[:50])  # truncated
    with pytest.raises(FrmarginError, match="part-00000"):
        folder.load_run(out)  # the report names the damaged file
    run_experiment(config, out, resume=True, progress=False)
    again = pd.read_parquet(out / "paths.parquet").sort_values(["image_index", "target"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(again.drop(columns=[c for c in again if "time" in c]),
                                  reference.drop(columns=[c for c in reference if "time" in c]))  # fmt: skip
    info = json.loads((out / "run.json").read_text())
    assert [s["status"] for s in info["sessions"]] == ["complete", "complete"]


def test_killed_session_is_recorded_and_report_warns_on_incomplete_run(env, exact, tmp_path):
    images, labels, first, _ = exact
    data = _npz(tmp_path / "d.npz", images[first], labels[first])
    out = run_experiment(RunConfig(images=1, data=str(data)), tmp_path / "run", progress=False)
    info = json.loads((out / "run.json").read_text())
    info["sessions"].append({"status": "running", "pid": 1})
    info["status"] = "running"
    folder.write_json(info, out / "run.json")
    assert not folder.load_run(out).complete
    res = subprocess.run([sys.executable, "-m", "frmargin", "report", str(out), "--out", str(tmp_path / "rep")],
                         env=env, capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
    assert "incomplete run" in res.stderr
    run_experiment(RunConfig(images=1, data=str(data)), out, resume=True, progress=False)
    statuses = [s["status"] for s in json.loads((out / "run.json").read_text())["sessions"]]
    assert statuses == ["complete", "killed", "complete"]


@pytest.mark.parametrize("bad", ["small", "gray", "label"])
def test_wrong_images_or_labels_are_refused_before_tracing(env, exact, tmp_path, bad):
    images, labels, first, _ = exact
    x, y = images[first].copy(), labels[first].copy()
    if bad == "small":
        x = x[:, :, :16, :16]
    elif bad == "gray":
        x = x[:, :1]
    else:
        y[3] = 10
    data = _npz(tmp_path / "d.npz", x, y)
    # images that do not fit the model name --data; a label the model has no logit for names both
    expected = "option '--model'.*11 classes" if bad == "label" else "option '--data'"
    with pytest.raises(FrmarginError, match=expected):
        run_experiment(RunConfig(images=1, data=str(data)), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    assert not list((tmp_path / "run").glob("paths.parquet/*"))
