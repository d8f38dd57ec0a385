"""The study: its plan and runs, validation before any tracing, the cross-model statistics, NG
shielding against the closed form on two registered models, and the report.

Scale-out (torchrun), kill-and-resume and locks: tests/test_study_scale.py; the box run and the
closed-form pass: tests/test_study_box.py; the study's analysis: tests/test_study_analysis.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from frmargin.analysis.study import contrast, paired_ratios, study_verdicts
from frmargin.errors import FrmarginError
from frmargin.options import TraceOptions
from frmargin.runs import study as study_mod
from frmargin.runs.study import StudyPlan, parse_list, parse_temperatures
from frmargin.runs.study_runner import run_study
from mirror import needs_mirror

SHIELD_ATOL_PATHS = 1  # NG shielded % may differ from the closed form by at most this many paths


# ------------------------------------------------------------------------------ bad input


@pytest.fixture
def no_tracing(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("tracing started before the input was checked")

    monkeypatch.setattr("frmargin.runs.experiment.run_experiment", fail)
    monkeypatch.setattr("frmargin.runs.study_runner.run_closed_form", fail)


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
        (
            dict(models=("resnet20",), trace=TraceOptions(box=(-0.5, 1.0))),
            r"'box': got \(-0.5, 1.0\), expected a box inside",
        ),
        (dict(models=("resnet20",), box_margin="candidates:0.5"), r"'box_margin': got 'candidates:0.5'"),
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
        (["--models", "resnet20", "--box", "0,2"], "'--box': got (0.0, 2.0), expected a box inside the input range"),
        (["--models", "resnet20", "--box", "0,1", "--box-margin", "some"], "'--box-margin': got 'some'"),
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
    """The closed-form pass of every model first, then model by model: natural gradient at every
    temperature (the baselines with the first), Euclidean once, the box run at the first T."""
    plan = StudyPlan(models=("a", "b"), images=4, metrics=("fisher", "euclidean"), temperatures=(1.0, "auto"),
                     baselines=("fmn",), trace=TraceOptions(box=(0.0, 1.0)))  # fmt: skip
    runs = study_mod.study_runs(plan, tmp_path)
    folders = [r.folder.relative_to(tmp_path).as_posix() for r in runs]
    assert folders == [
        "a/closed-form", "b/closed-form",
        "a/fisher", "a/euclidean", "a-Tauto/fisher", "a/box",
        "b/fisher", "b/euclidean", "b-Tauto/fisher", "b/box",
    ]  # fmt: skip
    assert [r.config.baselines for r in runs[2:6]] == [("fmn",), (), (), ()]
    assert [r.config.trace.box for r in runs[2:6]] == [None, None, None, (0.0, 1.0)]
    assert [r.config.temperature for r in runs[2:6]] == [1.0, 1.0, "auto", 1.0]
    assert [r.config.trace.metric for r in runs[2:6]] == ["fisher", "euclidean", "fisher", "fisher"]
    assert runs[5].config.box_margin == "candidates:1.05" and runs[2].config.box_margin == "all"
    assert len({r.config.fingerprint() for r in runs[2:]}) == 8
    no_box = study_mod.study_runs(StudyPlan(models=("a",), images=4, closed_form=False), tmp_path)
    assert [r.folder.relative_to(tmp_path).as_posix() for r in no_box] == ["a/fisher"]


def test_a_study_traced_with_the_pure_flow_resumes_only_as_one(tmp_path):
    """A study whose natural-gradient runs traced the pure flow (made before the damped
    continuation existed, or with --continuation none) is not resumed by a default study: the
    error names --continuation and what resumes it."""
    import json

    from frmargin.runs import folder
    from frmargin.runs.study_runner import run_finished

    def plan(**trace):
        return StudyPlan(models=("a",), images=4, closed_form=False, trace=TraceOptions(**trace))

    (pure,) = study_mod.study_runs(plan(continuation="none"), tmp_path)
    pure.folder.mkdir(parents=True)
    info = {"fingerprint_version": 2, "options_fingerprint": pure.config.options_fingerprint(), "status": "complete"}
    (pure.folder / folder.RUN_FILE).write_text(json.dumps(info))
    assert run_finished(pure)
    (damped,) = study_mod.study_runs(plan(), tmp_path)
    assert damped.folder == pure.folder
    with pytest.raises(FrmarginError, match=r"'--continuation'.*pure flow.*--continuation none"):
        run_finished(damped)
    # Euclidean runs have no continuation: the option leaves them as they were
    euclid = [
        StudyPlan(models=("a",), images=4, closed_form=False, metrics=("euclidean",), trace=TraceOptions(**t))
        for t in ({}, {"continuation": "none"})
    ]
    assert len({study_mod.study_runs(e, tmp_path)[0].config.options_fingerprint() for e in euclid}) == 1


def test_a_study_folder_made_before_the_continuation_resumes_with_the_pure_flow(tmp_path):
    """A study folder made before the continuation option existed recorded its plan without it
    (the fingerprint of today's default plan) and traced the pure flow: --continuation none
    continues it, the default is refused naming --continuation, and another plan names --out."""
    import json

    from frmargin.runs.study_runner import _check_folder

    def plan(**trace):
        return StudyPlan(models=("a",), images=4, trace=TraceOptions(**trace))

    def folder_of(fingerprint: str):
        out = tmp_path / fingerprint
        out.mkdir()
        (out / "study.json").write_text(json.dumps({"fingerprint": fingerprint}))
        return out

    pure, default = plan(continuation="none"), plan()
    assert pure.fingerprint() != default.fingerprint()
    assert pure.fingerprints() == {pure.fingerprint(), default.fingerprint()}
    assert default.fingerprints() == {default.fingerprint()}
    before = folder_of(default.fingerprint())  # what a folder from before the option recorded
    _check_folder(pure, before)
    _check_folder(default, before)  # its runs then refuse the default (run_finished, above)
    made_pure = folder_of(pure.fingerprint())
    _check_folder(pure, made_pure)
    with pytest.raises(FrmarginError, match=r"'--continuation'.*pure flow.*--continuation none"):
        _check_folder(default, made_pure)
    with pytest.raises(FrmarginError, match=r"'--out'.*holds a different study"):
        _check_folder(plan(continuation="none", eta=0.3), made_pure)


def test_a_plan_field_added_later_keeps_the_fingerprint():
    """Fields added after a study's first layout enter its fingerprint only when set, so a study
    folder made before them resumes."""
    plan = StudyPlan(models=("a",), images=4)
    assert plan.fingerprint() == StudyPlan(models=("a",), images=4, closed_form=True).fingerprint()
    assert plan.fingerprint() != StudyPlan(models=("a",), images=4, closed_form=False).fingerprint()
    assert plan.fingerprint() != StudyPlan(models=("a",), images=4, box_margin="all").fingerprint()
    assert plan.fingerprint() != StudyPlan(models=("a",), images=5).fingerprint()


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
    table = pd.read_csv(tmp_path / "s" / "study_table.csv").set_index("model")
    for name in models:
        paths = pd.read_parquet(tmp_path / "s" / name / "fisher" / "paths.parquet")
        n = int(paths["success"].sum())
        expected = _closed_form_shielded_pct(name, tmp_path / "s" / name / "fisher")
        assert abs(table.loc[name, "ng_shielded_pct"] - expected) <= 100 * SHIELD_ATOL_PATHS / n + 1e-9, name
        assert abs(table.loc[name, "ng_predicted_shielded_pct"] - expected) < 1e-9, name
        assert table.loc[name, "test_images"] == 300 and table.loc[name, "runs_done"] == "2 of 2"
    assert table.loc["cnn-a-adv2", "ng_shielded_pct"] > 0  # a low-confidence model: shielding is predicted
    verdicts = pd.read_csv(tmp_path / "s" / "study_verdicts.csv")
    assert set(verdicts["verdict"]) <= {"changes", "no detectable change", "not tested", "undetermined", "agrees",
                                        "on every model"}  # fmt: skip
    adv = verdicts[verdicts["question"].str.startswith("Does adversarial")]
    assert (adv["verdict"] != "not tested").all()
    closed = verdicts[verdicts["question"].str.startswith("Is natural-gradient")].set_index("model")
    assert closed.loc["all", "verdict"] == "on every model", closed
    text = page.with_name("report.md").read_text()
    assert "cnn-a-adv2" in text and "resnet20-b" in text and "study_shielding.png" in text
    # a rerun skips every finished run
    before = (tmp_path / "s" / "resnet20-b" / "fisher" / "run.json").read_bytes()
    run_study(plan, tmp_path / "s")
    assert (tmp_path / "s" / "resnet20-b" / "fisher" / "run.json").read_bytes() == before
