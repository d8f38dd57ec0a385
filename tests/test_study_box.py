"""The study's run kinds: the in-box estimate on candidate paths (the rule, the run option, the
same per-image minimum as estimating every path), the closed-form pass over every image, and
Euclidean paths that a temperature does not change (why a study traces them once)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from frmargin.analysis.study_box import box_images, candidate_check
from frmargin.errors import FrmarginError
from frmargin.options import TraceOptions
from frmargin.runs.box_estimate import SETTLED_RTOL, candidate_paths, parse_box_margin
from frmargin.runs.config import RunConfig, cli_spelling
from mirror import needs_mirror

# ------------------------------------------------------------------------- the candidate rule


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("all", ("all", math.inf)), ("none", ("none", 0.0)), ("candidates:1", ("candidates", 1.0)),
     ("candidates:1.05", ("candidates", 1.05))],
)  # fmt: skip
def test_parse_box_margin(text, parsed):
    assert parse_box_margin(text) == parsed


@pytest.mark.parametrize("text", ["", "some", "candidates", "candidates:", "candidates:0.99", "candidates:nan",
                                  "candidates:inf", "top:2", "all:1"])  # fmt: skip
def test_bad_box_margin_is_refused_by_name(text):
    with pytest.raises(FrmarginError, match=r"'--box-margin': got .*expected all, none or candidates:FACTOR"):
        RunConfig(box_margin=text).validate(spell=cli_spelling)


def test_candidate_paths_pick_the_paths_near_the_shortest_of_unsettled_images():
    image = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
    ok = np.array([True, True, True, False, True, True, True, True, True])
    traced = np.array([1.00, 1.04, 1.06, 0.5, 2.0, 2.0, 3.0, 1.0, 1.01])
    lb = np.array([0.9] * 4 + [2.0 * (1 + SETTLED_RTOL / 2)] * 3 + [0.5] * 2)
    got = candidate_paths("candidates:1.05", image, ok, traced, lb)
    # image 0: within 5% of its shortest ok path (the failed path does not count); image 1: its
    # shortest is within 0.1% of LB, settled; image 2: both paths within 5%
    assert got.tolist() == [True, True, False, False, False, False, False, True, True]
    assert candidate_paths("all", image, ok, traced, lb).tolist() == ok.tolist()
    assert not candidate_paths("none", image, ok, traced, lb).any()
    assert candidate_paths("candidates:10", image, ok, traced, lb).sum() == 5


def test_box_margin_enters_the_fingerprint_only_when_set():
    assert "box_margin" not in RunConfig().identity(), "runs made before the option keep their fingerprint"
    assert RunConfig(box_margin="all").fingerprint() == RunConfig().fingerprint()
    assert RunConfig(box_margin="candidates:1.05").fingerprint() != RunConfig().fingerprint()
    info = {"config": {"box_margin": "candidates:1.05"}}
    assert RunConfig.from_run_info(info).box_margin == "candidates:1.05"


def test_candidate_check_on_a_table():
    paths = pd.DataFrame({"image_index": [0, 0, 0, 1, 1], "source": 0, "status": "ok", "box_changes": 1,
                          "fr_length": [1.0, 1.02, 1.5, 0.8, 0.81], "lower_bound": [0.9, 0.9, 0.9, 0.7, 0.7],
                          "box_margin": [0.98, 1.01, 0.95, 0.79, 0.8]})  # fmt: skip
    check = candidate_check(paths, "candidates:1.05").set_index("image_index")
    # image 0: the path outside the candidates has the least estimate (0.95), so the rule misses it
    assert check.loc[0, "all_paths"] == 0.95 and check.loc[0, "candidates"] == 0.98
    assert check.loc[0, "rel_diff"] == pytest.approx(0.98 / 0.95 - 1)
    assert check.loc[1, "rel_diff"] == 0 and check.loc[1, "candidate_paths"] == 2


# ---------------------------------------------------------------------- real models (mirror)


def _box_run(tmp_path, rule: str):
    from frmargin.runs.experiment import run_experiment

    config = RunConfig(model="cnn-a-adv4", data="cifar10-exact", images=4, seed=3, chunk_images=4,
                       trace=TraceOptions(box=(0.0, 1.0)), box_margin=rule)  # fmt: skip
    out = run_experiment(config, tmp_path / rule.replace(":", "-"), progress=False)
    return pd.read_parquet(out / "paths.parquet").sort_values(["image_index", "target"]).reset_index(drop=True)


@pytest.mark.slow
@needs_mirror
def test_candidates_give_the_per_image_minimum_of_all_paths(tmp_path, mirror_env):
    """cnn-a-adv4 in the box (the box binds on most of its paths): estimating the candidates only
    gives each image the least estimate of estimating every path, on fewer paths."""
    every = _box_run(tmp_path, "all")
    chosen = _box_run(tmp_path, "candidates:1.05")
    ok = every["status"] == "ok"
    assert every.loc[ok, "box_margin"].notna().all() and every.loc[~ok, "box_margin"].isna().all()
    picked = chosen["box_margin"].notna()
    assert 0 < picked.sum() < ok.sum(), f"{picked.sum()} candidates of {ok.sum()} ok paths"
    cols = ["image_index", "target", "fr_length", "status"]
    pd.testing.assert_frame_equal(every[cols], chosen[cols])  # the same traced paths
    np.testing.assert_allclose(chosen.loc[picked, "box_margin"], every.loc[picked, "box_margin"], rtol=1e-6)
    a, b = box_images(every).set_index("image_index"), box_images(chosen).set_index("image_index")
    np.testing.assert_allclose(b["estimate"], a["estimate"], rtol=1e-6)
    assert (candidate_check(every, "candidates:1.05")["rel_diff"].abs() < 1e-12).all()
    # a candidate rule that keeps nothing would give the traced lengths, above the estimates
    assert (box_images(every.assign(box_margin=np.nan))["estimate"] >= a["estimate"].to_numpy() - 1e-12).all()


@pytest.mark.slow
@needs_mirror
def test_closed_form_pass_resumes_and_matches_the_model(tmp_path, mirror_env):
    import frmargin
    from frmargin.runs.closed_form import INFO_FILE, LOGITS_DIR, closed_form_complete, read_closed_form, run_closed_form

    config = RunConfig(model="resnet4b-adv2", data="cifar10-exact")
    out = tmp_path / "closed"
    run_closed_form(config, out, 0, 1)
    table = read_closed_form(out)
    data = frmargin.load_dataset("cifar10-exact")
    with torch.no_grad():
        z = frmargin.load_model("resnet4b-adv2")(data.images[:7])
    np.testing.assert_allclose(table.filter(regex=r"^z\d$").to_numpy()[:7], z.numpy(), rtol=1e-5, atol=1e-5)
    assert len(table) == 300 and (table["label"].to_numpy() == data.labels.numpy()).all()
    assert closed_form_complete(config, out) and json.loads((out / INFO_FILE).read_text())["n_images"] == 300
    part = out / LOGITS_DIR / "part-00000.parquet"
    kept = part.stat().st_mtime_ns
    run_closed_form(config, out, 0, 1)  # a rerun keeps the finished part
    assert part.stat().st_mtime_ns == kept
    part.unlink()
    run_closed_form(config, out, 0, 1)  # a missing part is computed again
    pd.testing.assert_frame_equal(read_closed_form(out), table)
    with pytest.raises(FrmarginError, match="another closed-form pass"):
        closed_form_complete(RunConfig(model="resnet2b-adv2", data="cifar10-exact"), out)


def _euclidean(net, x, y, target, opts):
    from frmargin.paths import trace_paths

    res = trace_paths(net, x, y, target, opts)
    return res, torch.tensor([s == "ok" for s in res.status])


def _differences(a, ok_a, b, ok_b) -> tuple[int, int, float]:
    """(paths whose status differs, paths ok in both whose first hit differs, median relative L2 change)."""
    both = ok_a & ok_b
    rel = ((b.l2 - a.l2).abs() / a.l2)[both]
    return int((ok_a != ok_b).sum()), int((a.first_hit[both] != b.first_hit[both]).sum()), float(rel.median())


@pytest.mark.slow
@needs_mirror
@pytest.mark.parametrize("model", ["cnn-a-adv2", "resnet4b-adv2"])
def test_a_temperature_changes_euclidean_paths_no_more_than_the_step_control(model, mirror_env):
    """Until the first change a Euclidean path descends z_top - z_k; at T the logits are z / T, so
    its direction is the same and only the step control (it caps each step's FR length, measured
    at p(T)) cuts the path differently. Measured against halving the step (``eta``): T = 0.5 and
    2 change statuses, first hits and the L2 at the change no more than that does."""
    import frmargin
    from frmargin.temperature import Temperature

    net = frmargin.load_model(model)
    x = frmargin.load_dataset("cifar10-exact").images[:12]
    with torch.no_grad():
        y = net(x).argmax(-1)
    rep = torch.arange(len(x)).repeat_interleave(9)
    target = torch.stack([torch.tensor([c for c in range(10) if c != int(k)]) for k in y]).reshape(-1)
    x, y = x[rep], y[rep]
    opts = TraceOptions(metric="euclidean")
    one, ok = _euclidean(net, x, y, target, opts)
    assert ok.float().mean() > 0.9
    finer = _differences(one, ok, *_euclidean(net, x, y, target, opts.replace(eta=opts.eta / 2)))
    for t in (0.5, 2.0):
        status, first_hit, l2 = _differences(one, ok, *_euclidean(Temperature(net, t), x, y, target, opts))
        assert status <= finer[0] + 3 and first_hit <= finer[1] + 2, (t, (status, first_hit), finer)
        assert l2 < 0.05, f"T = {t}: median L2 at the change moved by {l2:.3g} (eta / 2: {finer[2]:.3g})"
    # a direction that depended on T would meet other classes first on many paths
    hot = _euclidean(net, x, y, target, opts.replace(metric="fisher"))
    assert _differences(one, ok, *hot)[1] > 10


def test_the_box_diagnosis_flow_realizes_lb_on_an_affine_model():
    """``docs/results/box_diagnosis.py`` integrates the closed form's flow by exact steps: where the
    logits are affine in the input (a constant Jacobian of rank C - 1), its length is LB."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "docs" / "results" / "box_diagnosis.py"
    spec = importlib.util.spec_from_file_location("box_diagnosis", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = torch.nn.Linear(3 * 4 * 4, 5).double()
    x0 = torch.rand(3, 4, 4, dtype=torch.float64) * 0.2 + 0.4
    flat = torch.nn.Sequential(torch.nn.Flatten(), model)
    found = module.exact_flow(flat, x0)
    assert found["flow_over_lb"] == pytest.approx(1.0, abs=5e-3)
    assert found["flow_min_conditioning"] > 1e-3
