"""The study: validation before any tracing, the cross-model statistics, NG shielding against
the closed form on two registered models, the report, and kill-and-resume of a study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from frmargin.analysis.study import contrast, paired_ratios, study_verdicts
from frmargin.errors import FrmarginError
from frmargin.runs import study as study_mod
from frmargin.runs.study import StudyPlan, parse_list, parse_temperatures, run_study
from mirror import MIRROR, needs_mirror

SHIELD_ATOL_PATHS = 1  # NG shielded % may differ from the closed form by at most this many paths
KILL_TIMEOUT = 120


# ------------------------------------------------------------------------------ bad input


@pytest.fixture
def no_tracing(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("tracing started before the input was checked")

    monkeypatch.setattr("frmargin.runs.experiment.run_experiment", fail)


@pytest.mark.parametrize(
    ("plan", "match"),
    [
        (dict(models=("resnet20", "no-such-net")), r"'--models': got 'no-such-net', expected one of resnet20"),
        (dict(models=("resnet20", "resnet20")), r"'--models': got 'resnet20' twice"),
        (dict(models=()), r"'--models': got an empty list"),
        (dict(models=("resnet20",), temperatures=(0.0,)), r"temperature"),
        (dict(models=("resnet20",), temperatures=(-1.0,)), r"temperature"),
        (dict(models=("resnet20",), metrics=("fisher", "manhattan")), r"'--metrics': got 'manhattan'"),
        (dict(models=("resnet20",), baselines=("pgd",)), r"'--baselines': got 'pgd'"),
    ],
)
def test_bad_plan_fails_before_tracing(plan, match, tmp_path, no_tracing):
    with pytest.raises(FrmarginError, match=match):
        run_study(StudyPlan(images=10, **plan), tmp_path / "s")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--models", "resnet20,nope"], "'--models': got 'nope'"),
        (["--models", "resnet20,resnet20"], "twice"),
        (["--models", ""], "'--models': got ''"),
        (["--models", "resnet20,"], "'--models'"),
        (["--models", "resnet20", "--temperature", "0"], "'--temperature': got '0'"),
        (["--models", "resnet20", "--temperature", "-3"], "'--temperature': got '-3'"),
        (["--models", "resnet20", "--temperature", "1,1"], "twice"),
    ],
)
def test_cli_study_bad_input(args, match, tmp_path, no_tracing):
    from typer.testing import CliRunner

    from frmargin.cli import app

    result = CliRunner().invoke(app, ["study", *args, "--images", "10", "--out", str(tmp_path / "s")])
    assert result.exit_code != 0 and isinstance(result.exception, FrmarginError), result.output
    assert match in str(result.exception)
    assert not (tmp_path / "s").exists()


def test_parsers():
    assert parse_list(" a, b ", "models") == ("a", "b")
    assert parse_temperatures("1,auto,2.5") == (1.0, "auto", 2.5)
    with pytest.raises(FrmarginError, match="'--temperature': got 'hot'"):
        parse_temperatures("hot")


def test_run_folders_of_a_plan(tmp_path):
    plan = StudyPlan(models=("a", "b"), images=4, metrics=("fisher", "euclidean"), temperatures=(1.0, "auto"),
                     baselines=("fmn",))  # fmt: skip
    runs = study_mod.study_runs(plan, tmp_path)
    folders = [r.folder.relative_to(tmp_path).as_posix() for r in runs]
    assert folders[:4] == ["a/fisher", "a/euclidean", "a-Tauto/fisher", "a-Tauto/euclidean"]
    assert [r.config.baselines for r in runs[:2]] == [("fmn",), ()]
    assert len({r.config.fingerprint() for r in runs}) == 8


# ------------------------------------------------------------------- cross-model statistics


def _values(shift: float, n_per_class: int = 8, seed: int = 0) -> pd.DataFrame:
    """Four runs on the same images; the robust ones (r1, r2) have margins shifted by ``shift``."""
    rng = np.random.default_rng(seed)
    images = np.arange(3 * n_per_class)
    base = rng.normal(1.0, 0.3, images.size)
    frames = []
    for run, add in (("s1", 0.0), ("s2", 0.0), ("r1", shift), ("r2", shift)):
        noise = rng.normal(0, 0.01, images.size)
        frames.append(pd.DataFrame({"run": run, "image_index": images, "label": images % 3,
                                    "num": base + add + noise, "den": 1.0}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_paired_ratios_and_contrast():
    values = _values(0.5)
    point, reps = paired_ratios(values, n_boot=200, seed=0)
    direct = values.groupby("run")["num"].mean()
    np.testing.assert_allclose(point[direct.index], direct, rtol=1e-12)
    value, lo, hi = contrast(point, reps, {"r1": 0.5, "r2": 0.5, "s1": -0.5, "s2": -0.5})
    assert value == pytest.approx(0.5, abs=0.02) and lo < value < hi and lo > 0.4
    # pairing: images are resampled jointly, so the shared image effect cancels in the difference
    assert hi - lo < 0.05 < float(reps["s1"].quantile(0.975) - reps["s1"].quantile(0.025))


@pytest.mark.parametrize(("shift", "verdict"), [(0.5, "changes"), (0.0, "no detectable change")])
def test_adversarial_verdict(shift, verdict):
    rows = pd.DataFrame(
        {"model": ["s1", "s2", "r1", "r2"], "temperature": "1",
         "training": ["standard", "standard", "adversarial", "adversarial"], "family": ["A", "B", "C", "C"]},
        index=["s1", "s2", "r1", "r2"],
    )  # fmt: skip
    stats = {"margin": paired_ratios(_values(shift), n_boot=200, seed=0)}
    table = study_verdicts(rows, stats).set_index("question")
    adv = table.loc["Does adversarial training change it?"]
    assert adv["verdict"] == verdict and adv["value"] == pytest.approx(shift, abs=0.02)
    assert table.loc["Does calibration (T = auto versus T = 1) change it?", "verdict"] == "not tested"
    arch = table.loc["Does the architecture (family, among standard models) change it?"]
    assert arch["verdict"] == "no detectable change"


# ---------------------------------------------------------------- registered models (mirror)


@pytest.fixture
def mirror_env(tmp_path, monkeypatch):
    if MIRROR is None:
        pytest.skip("offline asset mirror not found")
    monkeypatch.setenv("FRMARGIN_MIRROR", str(MIRROR))
    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _closed_form_shielded_pct(model_name: str, run_dir: Path) -> float:
    """% of (correct image, target) pairs with p_c > (p_y + p_k) / 2 for some c, from the model's
    own softmax outputs (the exact flow), over the targets of the run's successful paths."""
    import frmargin

    paths = pd.read_parquet(run_dir / "paths.parquet")
    paths = paths[paths["success"]]
    data = frmargin.load_dataset("cifar10-exact")
    model = frmargin.load_model(model_name)
    with torch.no_grad():
        p = torch.softmax(model(data.images[torch.as_tensor(paths["image_index"].to_numpy())]).double(), -1)
    rows = torch.arange(len(paths))
    y = torch.as_tensor(paths["source"].to_numpy())
    k = torch.as_tensor(paths["target"].to_numpy())
    half = (p[rows, y] + p[rows, k]) / 2
    others = p.clone()
    others[rows, y] = others[rows, k] = 0.0
    return float(100 * (others > half[:, None]).any(-1).double().mean())


@pytest.mark.slow
@needs_mirror
def test_study_ng_shielding_matches_closed_form(tmp_path, mirror_env):
    from frmargin.report.study import study_report

    models = ("cnn-a-adv2", "resnet20-b")
    plan = StudyPlan(models=models, images=6, data="cifar10-exact", chunk_images=6)
    run_study(plan, tmp_path / "s")
    page = study_report(tmp_path / "s", n_boot=50)
    table = pd.read_csv(tmp_path / "s" / "study_table.csv").set_index("run")
    for name in models:
        paths = pd.read_parquet(tmp_path / "s" / name / "fisher" / "paths.parquet")
        n = int(paths["success"].sum())
        expected = _closed_form_shielded_pct(name, tmp_path / "s" / name / "fisher")
        assert abs(table.loc[name, "ng_shielded_pct"] - expected) <= 100 * SHIELD_ATOL_PATHS / n + 1e-9, name
        assert abs(table.loc[name, "ng_predicted_shielded_pct"] - expected) < 1e-9, name
    assert table.loc["cnn-a-adv2", "ng_shielded_pct"] > 0  # a low-confidence model: shielding is predicted
    verdicts = pd.read_csv(tmp_path / "s" / "study_verdicts.csv")
    assert set(verdicts["verdict"]) <= {"changes", "no detectable change", "not tested", "undetermined"}
    adv = verdicts[verdicts["question"].str.startswith("Does adversarial")]
    assert (adv["verdict"] != "not tested").all()
    text = page.with_name("report.md").read_text()
    assert "cnn-a-adv2" in text and "resnet20-b" in text and "study_shielding.png" in text
    # a rerun skips every finished run
    before = (tmp_path / "s" / "resnet20-b" / "fisher" / "run.json").read_bytes()
    run_study(plan, tmp_path / "s")
    assert (tmp_path / "s" / "resnet20-b" / "fisher" / "run.json").read_bytes() == before


def _plan_args(study: dict) -> dict:
    """StudyPlan keyword arguments from study.json's plan (lists back to tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in study["plan"].items()}


@pytest.mark.slow
@needs_mirror
def test_killed_study_resumes_without_losing_or_redoing_runs(tmp_path, mirror_env):
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "frmargin", "study", "--models", "cnn-a-adv2,cnn-a-adv4", "--images", "2",
           "--metrics", "fisher", "--data", "cifar10-exact", "--chunk-images", "1", "--threads", "1",
           "--seed", "4", "--no-progress", "--out", str(out)]  # fmt: skip
    # seed 4: cnn-a-adv2 classifies 1 of the 2 images correctly, cnn-a-adv4 both, so the second run
    # has two parts and the kill after its first part lands mid-run
    proc = subprocess.Popen(cmd, env=mirror_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first, second = out / "cnn-a-adv2" / "fisher", out / "cnn-a-adv4" / "fisher"
    deadline = time.time() + KILL_TIMEOUT
    try:
        while time.time() < deadline:  # kill once the first run is finished and the second has parts
            if (second / "paths.parquet").exists() and any((second / "paths.parquet").glob("part-*.parquet")):
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    study = json.loads((out / "study.json").read_text())
    assert [r["status"] for r in study["runs"]] == ["complete", "running"]
    killed = json.loads((second / "run.json").read_text())
    # the kill came mid-run: the second run is unfinished, and it says so
    assert killed["status"] == "running" and [s["status"] for s in killed["sessions"]] == ["running"]
    assert not study_mod._finished(study_mod.study_runs(study_mod.StudyPlan(**_plan_args(study)), out)[1])
    first_info = (first / "run.json").read_bytes()
    kept = sorted(p.name for p in (second / "paths.parquet").glob("part-*.parquet"))
    assert 1 <= len(kept) < killed["n_correct"], kept
    mtimes = {p: (second / "paths.parquet" / p).stat().st_mtime_ns for p in kept}
    done = subprocess.run(cmd, env=mirror_env, capture_output=True, text=True, timeout=KILL_TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert (first / "run.json").read_bytes() == first_info  # the finished run was not redone
    assert {p: (second / "paths.parquet" / p).stat().st_mtime_ns for p in kept} == mtimes  # nor its parts
    info = json.loads((second / "run.json").read_text())
    # the killed session stays recorded (as killed); the resumed one traced only the missing parts
    assert info["status"] == "complete"
    assert [s["status"] for s in info["sessions"]] == ["killed", "complete"], info["sessions"]
    assert info["sessions"][-1]["paths_traced"] == 9 * (info["n_correct"] - len(kept))
    paths = pd.read_parquet(second / "paths.parquet")
    assert not paths.duplicated(["image_index", "target"]).any()
    assert len(paths) == 9 * info["n_correct"]
    assert json.loads((out / "study.json").read_text())["status"] == "complete"
    assert (out / "report.html").exists()
