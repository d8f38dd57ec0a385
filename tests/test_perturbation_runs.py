"""Runs with a perturbation model, end to end on a small trained CNN of three classes: the
``--perturbation`` option of ``run`` and ``study``, what run.json and the fingerprint record,
the path table's columns in input space and in u, the subspace margin never below LB, and the
report's perturbation section; bad input refused before any tracing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from frmargin.errors import FrmarginError
from frmargin.options import TraceOptions
from frmargin.paths.options import STATUSES
from frmargin.runs.config import RunConfig
from frmargin.runs.experiment import run_experiment
from frmargin.runs.study import CLOSED_FORM, StudyPlan, study_runs
from user_models import bars, frmargin

N_CLASSES = 3
N_IMAGES = 6
#: lower bounds hold to float rounding
LB_SLACK = 1e-9


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 8 * 8, N_CLASSES))
    x, y = bars(4, 0)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    root = tmp_path_factory.mktemp("perturbed")
    np.savez(root / "digits.npz", images=x.numpy(), labels=y.numpy())
    return {"net": net.eval().requires_grad_(False), "x": x, "y": y, "root": root}


def _run(digits: dict, out: Path, perturbation: str, metric: str = "fisher") -> tuple[dict, pd.DataFrame]:
    config = RunConfig(
        images=N_IMAGES,
        chunk_images=2,
        input_range=(0.0, 1.0),
        trace=TraceOptions(perturbation=perturbation, metric=metric),
    )
    run_experiment(config, out, model=digits["net"], data=(digits["x"], digits["y"]), progress=False)
    return json.loads((out / "run.json").read_text()), pd.read_parquet(out / "paths.parquet")


@pytest.mark.parametrize(
    "perturbation, family, k",
    [("dct:1", "dct", 1), ("random:2:5", "random", 2), ("color", "color", 2)],
)
def test_run_records_the_model_and_its_columns(digits, tmp_path, perturbation, family, k):
    info, paths = _run(digits, tmp_path / "run", perturbation)
    entry = info["perturbation"]
    assert (entry["family"], entry["k"]) == (family, k)
    assert (entry["basis_sha256"] is None) == (family == "color")
    assert RunConfig.from_run_info(info).trace.perturbation == perturbation
    assert set(paths["status"]) <= set(STATUSES)
    for column in ("u_norm", "l2", "out_of_range", "range_violation", "subspace_margin", "target_margin"):
        assert column in paths, column
    ok = paths["success"].astype(bool)
    assert ok.any()
    assert (paths.loc[ok, "fr_length"] >= paths.loc[ok, "lower_bound"] - LB_SLACK).all()
    margin = paths.groupby("image_index")[["subspace_margin", "lower_bound"]].first().dropna()
    assert len(margin) and (margin["subspace_margin"] >= margin["lower_bound"] - LB_SLACK).all()
    assert paths.loc[ok, "u_norm"].notna().all() and (paths.loc[ok, "out_of_range"].between(0, 1)).all()


def test_seeds_and_files_change_the_fingerprint(digits, tmp_path):
    """Another seed of random directions, or another basis file, is another run."""
    a = RunConfig(images=4, trace=TraceOptions(perturbation="random:2:1"))
    b = RunConfig(images=4, trace=TraceOptions(perturbation="random:2:2"))
    assert a.fingerprint() != b.fingerprint()
    for name, scale in (("one.npy", 1.0), ("two.npy", 2.0)):
        basis = scale * np.eye(64)[:2].reshape(2, 1, 8, 8)
        np.save(tmp_path / name, basis)
    one = RunConfig(images=4, trace=TraceOptions(perturbation=f"basis:{tmp_path / 'one.npy'}"))
    two = RunConfig(images=4, trace=TraceOptions(perturbation=f"basis:{tmp_path / 'two.npy'}"))
    assert one.fingerprint() != two.fingerprint()


def test_euclidean_run_and_report_section(digits, tmp_path, capsys):
    """A Euclidean run in u leaves the margins to the natural-gradient run; the report of a
    natural-gradient run gets the perturbation section."""
    _, paths = _run(digits, tmp_path / "euclid", "dct:2", metric="euclidean")
    assert paths["subspace_margin"].isna().all() and paths["u_norm"].notna().any()
    out = tmp_path / "fisher"
    _run(digits, out, "dct:2")
    code, _, err = frmargin(capsys, "report", str(out))
    assert code == 0, err
    text = (out / "report.md").read_text()
    assert "Perturbation model" in text and "dct:2" in text and "subspace margin" in text


@pytest.mark.parametrize(
    "perturbation, fragment",
    [
        ("dct:65", "K <= 64"),
        ("random:0", "K in '0'"),
        ("wavelet:4", "pixels, dct:K"),
        ("random:65", "K <= 64"),
    ],
)
def test_cli_run_refuses_bad_models_before_tracing(digits, tmp_path, capsys, perturbation, fragment):
    out = tmp_path / "bad"
    common = ["--images", str(N_IMAGES), "--no-progress", "--threads", "1", "--out", str(out)]
    code, _, err = frmargin(
        capsys,
        "run",
        "--data",
        str(digits["root"] / "digits.npz"),
        "--perturbation",
        perturbation,
        "--model",
        f"{_model_file(digits)}:net",
        *common,
    )
    assert code == 2 and "--perturbation" in err and fragment in err, err
    assert not list((out / "paths.parquet").glob("part-*"))  # no chunk traced


def _model_file(digits: dict) -> Path:
    """A model file with the fixture's trained weights (a user's ``file.py:callable``)."""
    root = digits["root"]
    torch.save(digits["net"].state_dict(), root / "net.pt")
    source = (
        "import torch\nfrom torch import nn\n\n\ndef net():\n"
        "    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(256, 3))\n"
        f"    m.load_state_dict(torch.load({str(root / 'net.pt')!r}))\n    return m.eval()\n"
    )
    (root / "usernet.py").write_text(source)
    return root / "usernet.py"


def test_study_passes_the_model_to_every_run(tmp_path):
    plan = StudyPlan(
        models=("a", "b"), images=4, metrics=("fisher", "euclidean"), trace=TraceOptions(perturbation="dct:4")
    )
    runs = study_runs(plan, tmp_path)
    traced = [r for r in runs if r.kind != CLOSED_FORM]  # the closed-form pass traces nothing
    assert len(traced) == 4 and {r.config.trace.perturbation for r in traced} == {"dct:4"}
    assert {r.kind for r in runs} == {CLOSED_FORM, "fisher", "euclidean"}


def test_cli_study_refuses_an_unknown_family(tmp_path):
    from typer.testing import CliRunner

    from frmargin.cli import app

    args = ["study", "--models", "resnet20", "--images", "10", "--perturbation", "jpeg:4", "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and isinstance(result.exception, FrmarginError), result.output
    assert "'--perturbation'" in str(result.exception) and "jpeg:4" in str(result.exception)
    assert not (tmp_path / "s").exists()
