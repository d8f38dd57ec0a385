"""The line attacks (ossa, tssa, random) against closed forms: the exact class change along a line of
a linear model, the exact minimum of a binary logistic model (where v_1 is the weight direction);
TSSA's two steps against their construction from fisher_spectrum; seeded directions; the counts of
model evaluations; and, on the asset mirror, OSSA never below FMN on ResNet-20."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("foolbox")

from conftest import make_logistic, make_mlp
from frmargin import fisher_spectrum
from frmargin.analysis import FMN_TOLERANCE
from frmargin.baselines import DEFAULTS, min_l2_attack
from frmargin.baselines.spectral import TSSA_FIRST_SHARE, seeded_directions, tssa_point
from mirror import REAL_MIRROR
from test_baselines import WIDE_BOUNDS, linear_case

BISECTION = 2.0 ** -(DEFAULTS["refine_steps"] - 1)  # relative width left of a ratio-2 interval
BELOW = 1e-9  # float64: never below the exact value


def exact_along(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B,) smallest |t| at which argmax(W (x + t v) + b) leaves y, over both signs (unbounded)."""
    W, b = model.weight.detach().double(), model.bias.detach().double()
    z = x.double() @ W.T + b
    gaps = z.gather(1, y[:, None]) - z  # >= 0, (B, C)
    rates = (v.double() @ W.T) - (v.double() @ W.T).gather(1, y[:, None])  # d(z_c - z_y)/dt
    best = torch.full((len(y),), math.inf, dtype=torch.float64)
    for sign in (1.0, -1.0):
        r = sign * rates
        t = torch.where(r > 0, gaps / r.clamp_min(1e-300), math.inf)
        t[torch.arange(len(y)), y] = math.inf
        best = torch.minimum(best, t.min(1).values)
    return best


@pytest.mark.parametrize("attack", ["ossa", "random"])
def test_linear_model_exact_class_change_along_the_line(attack: str) -> None:
    model, x, y = linear_case(torch.float64, B=12)
    model = model.eval()
    v = fisher_spectrum(model, x, 1).vectors[:, 0] if attack == "ossa" else seeded_directions(x)
    exact = exact_along(model, x, y, v)
    res = min_l2_attack(model, x, y, attack, bounds=WIDE_BOUNDS)
    assert res.status == ["ok"] * len(y)
    ratio = res.distance / exact
    assert (ratio >= 1 - BELOW).all() and (ratio <= 1 + BISECTION).all(), ratio
    step = (res.x_adv - x) / res.distance[:, None]
    assert ((step * v).sum(1).abs() > 1 - 1e-12).all(), "the point lies on the line x +- t v"


@pytest.mark.parametrize("attack", ["ossa", "tssa", "deepfool"])
def test_binary_logistic_exact_minimum(attack: str) -> None:
    """G_x = p (1 - p) w w^T: v_1 = +-w / |w| everywhere, so one or two eigenvector steps are the
    shortest way to the boundary z = 0, at distance |z| / |w|."""
    model = make_logistic(D=10, seed=2, scale=3.0)
    x = torch.randn(16, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        z = model(x)
        y = z.argmax(1)
    w = model.lin.weight.detach()[0]
    exact = z[:, 1].abs() / w.norm()
    res = min_l2_attack(model, x, y, attack, bounds=WIDE_BOUNDS)
    assert res.status == ["ok"] * len(y)
    ratio = res.distance / exact
    assert (ratio >= 1 - BELOW).all() and (ratio <= 1 + BISECTION).all(), ratio


def test_tssa_point_is_two_eigenvector_steps_with_the_budget_split() -> None:
    """tssa_point against its construction from fisher_spectrum: 60% of t along +-v_1(x) (the sign
    that lowers p_y), then 40% along v_1(x_1), aligned with the first step; clipped to the box."""
    model = make_mlp(12, 5, 16, 2, seed=3)
    x = torch.rand(6, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(1)
    t = torch.linspace(0.05, 3.0, 6, dtype=torch.float64)
    opts = {**DEFAULTS, "bounds": (0.0, 1.0)}
    v1 = fisher_spectrum(model, x, 1).vectors[:, 0]
    got = tssa_point(model, x, y, v1, t, opts)
    flipped = tssa_point(model, x, y, -v1, t, opts)  # the sign rules make the point sign-free
    torch.testing.assert_close(flipped, got, rtol=0, atol=1e-12)
    for i in range(6):
        assert TSSA_FIRST_SHARE == 0.6
        steps = [(x[i] + s * 0.6 * t[i] * v1[i]).clamp(0, 1) for s in (1.0, -1.0)]
        with torch.no_grad():
            p = [torch.softmax(model(c[None]), -1)[0, y[i]] for c in steps]
        x1 = steps[1] if p[1] < p[0] else steps[0]
        v2 = fisher_spectrum(model, x1[None], 1).vectors[0, 0]
        v2 = v2 if float((x1 - x[i]) @ v2) >= 0 else -v2
        expected = (x1 + 0.4 * t[i] * v2).clamp(0, 1)
        torch.testing.assert_close(got[i], expected, rtol=0, atol=1e-12)
        assert float((got[i] - x[i]).norm()) <= float(t[i]) * (1 + 1e-12), "within the budget"


def test_seeded_directions_follow_the_image_not_the_batch() -> None:
    x = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    d = seeded_directions(x)
    assert d.shape == x.shape and d.dtype == x.dtype
    torch.testing.assert_close(d.flatten(1).norm(dim=1), torch.ones(5), rtol=0, atol=1e-6)
    for i in range(5):
        assert torch.equal(seeded_directions(x[i : i + 1])[0], d[i])
    assert float((d[0] * d[1]).sum().abs()) < 0.5, "different images, different directions"
    model, xs, y = linear_case(torch.float64, B=6)
    whole = min_l2_attack(model, xs, y, "random", bounds=WIDE_BOUNDS, batch_size=6)
    single = min_l2_attack(model, xs, y, "random", bounds=WIDE_BOUNDS, batch_size=1)
    assert torch.equal(whole.distance, single.distance)


def test_evaluation_counts() -> None:
    """OSSA: one Jacobian (C backward passes) per input; random: none; every attack counts its
    scan, bisection and checks as forward passes; a misclassified input costs its clean check."""
    model, x, y = linear_case(torch.float64, B=4, C=5)
    y = y.clone()
    y[3] = (y[3] + 1) % 5
    results = {a: min_l2_attack(model, x, y, a, bounds=WIDE_BOUNDS) for a in ("ossa", "random", "tssa", "fmn")}
    ossa, rand, tssa, fmn = results.values()
    assert torch.equal(ossa.backward_passes[:3], torch.full((3,), 5.0, dtype=torch.float64))
    assert torch.equal(rand.backward_passes[:3], torch.zeros(3, dtype=torch.float64))
    levels = DEFAULTS["refine_steps"] + 1  # at least a scan level, the bisection and the checks
    for res in results.values():
        assert res.forward_passes[3] == 1 and res.backward_passes[3] == 0, res.attack
        assert (res.forward_passes[:3] >= levels).all(), res.attack
    assert (tssa.backward_passes[:3] > 5 * DEFAULTS["refine_steps"]).all(), "a Jacobian per budget tried"
    assert (fmn.backward_passes[:3] >= DEFAULTS["fmn_steps"]).all()


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_MIRROR / "weights").is_dir(), reason="shared asset mirror absent")
def test_resnet20_ossa_never_below_fmn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A class change along +-v_1 is an adversarial point, so FMN's minimum is at most OSSA's
    distance, up to FMN's own tolerance."""
    from frmargin.data import load_dataset
    from frmargin.models import load_model

    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FRMARGIN_MIRROR", str(REAL_MIRROR))
    model = load_model("resnet20", progress=False)
    ds = load_dataset("cifar10-exact", progress=False)
    x, y = ds.images[:8], ds.labels[:8]
    ossa, fmn = (min_l2_attack(model, x, y, a) for a in ("ossa", "fmn"))
    both = torch.tensor([a == b == "ok" for a, b in zip(ossa.status, fmn.status)])
    assert both.sum() >= 5
    assert (ossa.distance[both] >= fmn.distance[both] * (1 - FMN_TOLERANCE)).all()
    assert (ossa.backward_passes[both] == 10).all()


def test_a_run_records_evaluations_and_lambda_1_and_reads_parts_of_both_kinds(tmp_path: Path) -> None:
    """A run with deepfool, resumed with ossa added: every row counts its model evaluations; the
    ossa rows carry lambda_1 (fisher_spectrum's at the image) and lambda_1 at the attack's point;
    the deepfool parts written before have neither, and the table holds the union of columns."""
    from conftest import make_cnn
    from frmargin import RunConfig, run_experiment
    from frmargin.runs.folder import load_run

    model = make_cnn(1, 8, 3, seed=2, dtype=torch.float32, scale=0.3)
    x = torch.rand(60, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    assert torch.bincount(y, minlength=3).min() >= 2
    config = RunConfig(images=6, chunk_images=3, baselines=("deepfool",), input_range=(0.0, 1.0))
    out = run_experiment(config, tmp_path / "run", model=model, data=(x, y), progress=False)
    config = RunConfig(images=6, chunk_images=3, baselines=("deepfool", "ossa"), input_range=(0.0, 1.0))
    run_experiment(config, out, model=model, data=(x, y), resume=True, progress=False)
    b = load_run(out).baselines
    assert sorted(set(b["attack"])) == ["deepfool", "ossa"] and len(b) == 12
    assert (b["forward_passes"] >= 1).all() and b["backward_passes"].notna().all()
    ossa, deepfool = b[b["attack"] == "ossa"], b[b["attack"] == "deepfool"]
    assert deepfool["lambda_1"].isna().all() and ossa["lambda_1"].notna().all()
    images = load_run(out).images.set_index("image_index")
    xs = x[torch.as_tensor(images.index.to_numpy().copy())]
    expected = dict(zip(images.index, fisher_spectrum(model, xs, 1).values[:, 0].tolist()))
    got = dict(zip(ossa["image_index"], ossa["lambda_1"]))
    assert got == pytest.approx({i: expected[i] for i in got}, rel=1e-6)
    fooled = ossa["status"] == "ok"
    assert (ossa.loc[fooled, "lambda_1_adv"] > 0).all() and ossa.loc[~fooled, "lambda_1_adv"].isna().all()
