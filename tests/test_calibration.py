"""Temperature: the wrapper, ``fit_temperature`` against a known optimum, the run option
(validation, fingerprint, run.json) and closed-form agreement of traced paths at T = auto."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import frmargin
from frmargin.errors import FrmarginError
from frmargin.runs.config import IDENTITY_FIELDS, RunConfig
from frmargin.temperature import Temperature, fit_temperature_logits, held_out_indices, mean_nll
from mirror import MIRROR, needs_mirror

T_RTOL = 1e-6  # the fit's tolerance on T (the minimizer works to 1e-10 in log T)
CLOSED_FORM_MEDIAN = 0.01  # default accuracy of the converged mode (benchmarks: < 1% / < 3%)
CLOSED_FORM_P90 = 0.03


def _one_hot_problem(C: int, s: float, n_right: int, n_wrong: int):
    """Linear model z = s x on one-hot inputs: n_right inputs labelled with their hot class,
    n_wrong labelled with another class. NLL-optimal p_hot = q = n_right / n: T* = s / log((C - 1) q / (1 - q))."""
    model = nn.Linear(C, C, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(s * torch.eye(C, dtype=torch.float64))
    hot = torch.arange(n_right + n_wrong) % C
    x = torch.nn.functional.one_hot(hot, C).double()
    y = hot.clone()
    y[n_right:] = (hot[n_right:] + 1 + torch.arange(n_wrong) % (C - 1)) % C
    q = n_right / (n_right + n_wrong)
    return model.eval(), x, y, s / math.log((C - 1) * q / (1 - q))


@pytest.mark.parametrize(("C", "s", "n_right", "n_wrong"), [(10, 6.0, 7, 3), (4, 1.0, 9, 1), (3, 8.0, 2, 2)])
def test_fit_temperature_recovers_the_known_optimum(C, s, n_right, n_wrong):
    model, x, y, expected = _one_hot_problem(C, s, n_right, n_wrong)
    t = frmargin.fit_temperature(model, x, y)
    assert t == pytest.approx(expected, rel=T_RTOL), (t, expected)
    with torch.no_grad():
        z = model(x)
    # the optimum: the NLL derivative in T vanishes, and the fit lowers the NLL
    h = 1e-5 * expected
    slope = (mean_nll(z, y, expected + h) - mean_nll(z, y, expected - h)) / (2 * h)
    assert abs(slope) < 1e-6
    fit = fit_temperature_logits(z, y)
    assert fit.nll_after <= fit.nll_before


def test_temperature_wrapper_divides_logits():
    net = nn.Linear(5, 3).double().eval()
    x = torch.randn(4, 5, dtype=torch.float64)
    wrapped = Temperature(net, 2.5)
    torch.testing.assert_close(wrapped(x), net(x) / 2.5, rtol=0, atol=0)
    assert not wrapped.training
    for bad in (0, -1.0, float("nan"), float("inf"), "x", True):
        with pytest.raises(FrmarginError, match="temperature"):
            Temperature(net, bad)


@pytest.mark.parametrize("bad", [0, 0.0, -2.0, float("nan"), "hot"])
def test_run_config_refuses_bad_temperature(bad):
    with pytest.raises(FrmarginError, match="'temperature'"):
        RunConfig(images=10, temperature=bad).validate()


def test_fingerprint_holds_temperature_only_when_not_one():
    config = RunConfig(images=10)
    without = {k: v for k, v in config.identity().items() if k != "temperature"}
    assert "temperature" in IDENTITY_FIELDS and "temperature" not in config.identity()
    old = hashlib.sha256(json.dumps(without, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert config.fingerprint() == old  # runs made before the option keep their fingerprint
    prints = {RunConfig(images=10, temperature=t).fingerprint() for t in (1.0, 2.0, "auto")}
    assert len(prints) == 3


def test_held_out_images_avoid_the_selection():
    selected = np.array([0, 3, 5, 9])
    held = held_out_indices(20, selected, 10, seed=1)
    assert held.size == 10 and not set(held) & set(selected)
    np.testing.assert_array_equal(held, held_out_indices(20, selected, 10, seed=1))
    assert held_out_indices(20, selected, 100, seed=1).size == 16


def test_cli_run_refuses_bad_temperature(tmp_path):
    from typer.testing import CliRunner

    from frmargin.cli import app

    result = CliRunner().invoke(app, ["run", "--temperature", "-1", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert "--temperature" in str(result.exception) and "'-1'" in str(result.exception)
    assert not (tmp_path / "r").exists()


@needs_mirror
def test_auto_temperature_run_keeps_closed_form_agreement(tmp_path, monkeypatch):
    from frmargin.analysis import closed_form_agreement
    from frmargin.runs.experiment import run_experiment
    from frmargin.temperature import HELD_OUT_IMAGES

    monkeypatch.setenv("FRMARGIN_MIRROR", str(MIRROR))
    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    config = RunConfig(model="resnet20", data="cifar10-exact", images=3, temperature="auto", chunk_images=3)
    out = run_experiment(config, tmp_path / "run", progress=False)
    info = json.loads((out / "run.json").read_text())
    t, fit = info["temperature"], info["temperature_fit"]
    assert t > 1.0 and t != pytest.approx(1.0)  # ResNet-20 is over-confident
    images = pd.read_parquet(out / "images.parquet")
    data = frmargin.load_dataset("cifar10-exact")
    assert fit["nll_after"] < fit["nll_before"]
    assert fit["n_images"] == len(info["temperature_images"]) == min(HELD_OUT_IMAGES, len(data.labels) - len(images))
    assert not set(info["temperature_images"]) & set(images["image_index"])
    # the traced model is logits / T: confidences in images.parquet are p(T)
    model = frmargin.load_model("resnet20")
    x = data.images[torch.as_tensor(images["image_index"].to_numpy())]
    with torch.no_grad():
        p = torch.softmax(model(x).double() / t, -1)
    np.testing.assert_allclose(images["confidence"], p.max(-1).values.numpy(), rtol=1e-5)
    agreement = closed_form_agreement(pd.read_parquet(out / "paths.parquet")).set_index("quantity")["value"]
    assert agreement["rel_error_median"] < CLOSED_FORM_MEDIAN
    assert agreement["rel_error_p90"] < CLOSED_FORM_P90
    assert agreement["first_hit_agreement"] >= 0.95
    # resume reuses the recorded T (no refit) and redoes nothing
    run_experiment(config, out, resume=True, progress=False)
    assert json.loads((out / "run.json").read_text())["temperature"] == t
