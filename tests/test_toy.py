"""Tests of the 2-D toy problem, its model and the path-tracing demo (frmargin.demo.toy)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from matplotlib.image import imread

from frmargin import FrmarginError
from frmargin.demo.toy import CSV_NAME, FIGURE_NAME, make_toy_problem, run_toy_demo, train_toy_model

MIN_TRAIN_ACCURACY = 0.9
#: share of paths per metric that must end with status "ok" in the tiny demo
MIN_OK_SHARE = 0.7
LENGTH_ATOL = 1e-9
TERMINAL = {"ok", "damped", "budget", "stalled"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = dict(n_points=3, n_per_class=60, epochs=150, seed=0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    summary = run_toy_demo(out, progress=False, **TINY)
    return out, summary, pd.read_csv(out / CSV_NAME)


def test_problem_shapes_and_names():
    problem = make_toy_problem(n_classes=5, n_per_class=30, seed=0)
    assert problem.X.shape == (150, 2) and problem.X.dtype == torch.float32
    assert problem.y.shape == (150,)
    assert torch.bincount(problem.y).tolist() == [30] * 5
    assert problem.class_names[0] == "center" and len(problem.class_names) == 5
    assert problem.centers.shape == (5, 2)
    # the centre class is surrounded: every ring centre lies farther out than the central one
    assert (problem.centers[1:].norm(dim=-1) > 1.0).all()


def test_problem_deterministic():
    a, b = make_toy_problem(seed=3), make_toy_problem(seed=3)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    assert not torch.equal(a.X, make_toy_problem(seed=4).X)


@pytest.mark.parametrize("bad", [2, 9, 4.0])
def test_problem_rejects_bad_class_count(bad):
    with pytest.raises(FrmarginError, match="n_classes"):
        make_toy_problem(n_classes=bad)


def test_model_accurate_and_deterministic():
    problem = make_toy_problem(n_per_class=100, seed=0)
    model = train_toy_model(problem, epochs=200, seed=0)
    assert not model.training
    with torch.no_grad():
        accuracy = (model(problem.X).argmax(-1) == problem.y).double().mean().item()
    assert accuracy > MIN_TRAIN_ACCURACY, accuracy
    again = train_toy_model(problem, epochs=200, seed=0)
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    assert not any(isinstance(m, torch.nn.ReLU) for m in model.modules())


def test_demo_writes_files_and_summary(demo):
    out, summary, _table = demo
    assert (out / CSV_NAME).is_file() and (out / FIGURE_NAME).is_file()
    assert summary["files"] == {"csv": out / CSV_NAME, "figure": out / FIGURE_NAME}
    assert summary["train_accuracy"] > MIN_TRAIN_ACCURACY
    assert summary["paths"] == {"fisher": 12, "euclidean": 12}
    for metric in ("fisher", "euclidean"):
        assert 0.0 <= summary["shielding_rate"][metric] <= 1.0
        assert 0.0 <= summary["closed_form_agreement"][metric] <= 1.0


def test_demo_paths_terminate_and_respect_lower_bound(demo):
    _, _, table = demo
    expected = {
        "point",
        "source",
        "target",
        "metric",
        "first_hit",
        "shielded",
        "fr_length",
        "l2",
        "status",
        "predicted_first_hit",
        "predicted_length",
        "lower_bound",
    }
    assert expected <= set(table.columns)
    assert len(table) == 2 * 3 * 4
    assert set(table["status"]) <= TERMINAL
    for metric, rows in table.groupby("metric"):
        reached = rows["status"].isin(["ok", "damped"])  # damped: a real path to the change
        assert reached.mean() >= MIN_OK_SHARE, (metric, rows["status"].value_counts())
    ok = table[table["status"].isin(["ok", "damped"])]
    worst = (ok["fr_length"] - ok["lower_bound"]).min()
    assert worst >= -LENGTH_ATOL, worst
    assert (ok["first_hit"] != ok["source"]).all() and (ok["first_hit"] >= 0).all()
    assert (ok["shielded"].astype(bool) == (ok["first_hit"] != ok["target"])).all()
    assert (table["source"] != table["target"]).all()


def test_demo_figure_is_valid_png(demo):
    out, _, _ = demo
    path = out / FIGURE_NAME
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
