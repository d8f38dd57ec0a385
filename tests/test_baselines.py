"""L2 baselines: exact minimal distances of linear classifiers, verified points on a CNN, statuses,
determinism, argument checks, and a pretrained ResNet-20 on the exact CIFAR-10 images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("foolbox")

from frmargin.baselines import ATTACKS, MINIMIZING, min_l2_attack, min_l2_distance
from frmargin.errors import FrmarginError
from mirror import REAL_MIRROR

MAX_EXCESS = 0.03  # attacks may return up to 3% above the exact minimal distance
BELOW_TOL = {torch.float64: 1e-9, torch.float32: 1e-4}  # relative: never below the exact minimum
WIDE_BOUNDS = (-100.0, 100.0)  # far from the inputs: the box is not active
DTYPES = [pytest.param(torch.float64, id="f64"), pytest.param(torch.float32, id="f32")]


# ----------------------------------------------------------------------------- cases


def linear_case(dtype: torch.dtype, seed: int = 0, D: int = 20, C: int = 5, B: int = 24):
    """z = W x + b with x ~ N(0, 1): model, x (B, D), y = the clean prediction."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(D, C).to(dtype).eval()
    with torch.no_grad():
        model.weight.copy_(torch.randn(C, D, generator=g, dtype=dtype))
        model.bias.copy_(torch.randn(C, generator=g, dtype=dtype))
    x = torch.randn(B, D, generator=g, dtype=dtype)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def exact_linear_distance(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) min over c != y of (z_y - z_c) / ||w_y - w_c||, in float64 (unbounded input space)."""
    W, b, x = model.weight.double().detach(), model.bias.double().detach(), x.double()
    z = x @ W.T + b
    gaps = z.gather(1, y[:, None]) - z  # (B, C)
    norms = (W[y][:, None, :] - W[None, :, :]).norm(dim=-1)  # (B, C)
    ratio = gaps / norms
    ratio[torch.arange(len(y)), y] = torch.inf
    return ratio.min(1).values


def small_cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 4 * 4, 10),
    ).eval()


def cnn_case(B: int = 16):
    model = small_cnn()
    x = torch.rand(B, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def assert_within(d: torch.Tensor, exact: torch.Tensor, below: float, above: float) -> None:
    """exact * (1 - below) <= d <= exact * (1 + above); reports the worst rows."""
    ratio = d.double() / exact
    bad = (ratio < 1 - below) | (ratio > 1 + above)
    if bad.any():
        idx = bad.nonzero().squeeze(1)[:5].tolist()
        rows = [(i, float(d[i]), float(exact[i]), float(ratio[i])) for i in idx]
        pytest.fail(
            f"{int(bad.sum())} distances outside [-{below}, +{above}] of exact; (row, got, exact, ratio): {rows}"
        )


def assert_verified(model, x, y, res, bounds=(0.0, 1.0)) -> None:
    ok = torch.tensor([s == "ok" for s in res.status])
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert (pred[ok] != y[ok]).all(), "a returned point is not adversarial"
    assert res.x_adv.min() >= bounds[0] and res.x_adv.max() <= bounds[1]
    true = (res.x_adv - x).flatten(1).norm(dim=1)
    assert torch.equal(res.distance[ok], true[ok])


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_exact_minimum(attack: str, dtype: torch.dtype) -> None:
    """The minimizing attacks find the exact minimum; the line attacks never go below it."""
    model, x, y = linear_case(dtype)
    res = min_l2_attack(model, x, y, attack, bounds=WIDE_BOUNDS)
    assert res.status == ["ok"] * len(y)
    assert res.attack == attack and res.distance.dtype == dtype and res.x_adv.shape == x.shape
    above = MAX_EXCESS if attack in MINIMIZING else float("inf")
    assert_within(res.distance, exact_linear_distance(model, x, y), BELOW_TOL[dtype], above)
    assert_verified(model, x, y, res, WIDE_BOUNDS)


def test_linear_deepfool_is_near_exact_in_float64() -> None:
    """One DeepFool step lands on the nearest hyperplane; the bisection removes the overshoot."""
    model, x, y = linear_case(torch.float64, seed=3)
    d = min_l2_distance(model, x, y, "deepfool", bounds=WIDE_BOUNDS)
    assert_within(d, exact_linear_distance(model, x, y), BELOW_TOL[torch.float64], 1e-5)


def test_box_that_blocks_the_boundary_gives_failed() -> None:
    """Class 1 can only win outside the box: status 'failed', distance inf, never a number."""
    model = torch.nn.Linear(2, 2).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64))
        model.bias.copy_(torch.tensor([2.0, 0.0], dtype=torch.float64))  # z1 > z0 needs x0 > 2
    x = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)
    for attack in sorted(ATTACKS):
        res = min_l2_attack(model, x, y, attack)
        assert res.status == ["failed", "failed"]
        assert torch.isinf(res.distance).all()
        assert torch.equal(res.x_adv, x)
    # with room in the box the same model is fooled at distance 2 - x0
    res = min_l2_attack(model, x, y, "deepfool", bounds=(0.0, 3.0))
    assert res.status == ["ok", "ok"]
    assert_within(res.distance, torch.tensor([1.5, 1.1], dtype=torch.float64), 1e-9, 1e-5)


class ConstantLogits(torch.nn.Module):
    """Logits that do not depend on x (zero gradients): no attack can succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias + 0.0 * x.flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_zero_gradient_model_gives_failed(attack: str) -> None:
    x = torch.rand(3, 4, generator=torch.Generator().manual_seed(0))
    res = min_l2_attack(ConstantLogits().eval(), x, torch.zeros(3, dtype=torch.long), attack)
    assert res.status == ["failed"] * 3
    assert torch.isinf(res.distance).all() and torch.equal(res.x_adv, x)


def test_misclassified_inputs_get_distance_zero() -> None:
    model, x, y = linear_case(torch.float64, B=6)
    y = y.clone()
    y[[1, 4]] = (y[[1, 4]] + 1) % 5
    res = min_l2_attack(model, x, y, "fmn", bounds=WIDE_BOUNDS)
    assert res.status[1] == res.status[4] == "misclassified"
    assert res.distance[1] == res.distance[4] == 0
    assert torch.equal(res.x_adv[[1, 4]], x[[1, 4]])
    assert [s for i, s in enumerate(res.status) if i not in (1, 4)] == ["ok"] * 4


# ----------------------------------------------------------------------------- small CNN


@pytest.fixture(scope="module")
def cnn_results():
    model, x, y = cnn_case()
    return model, x, y, {a: min_l2_attack(model, x, y, a, batch_size=8) for a in sorted(ATTACKS)}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_cnn_points_adversarial_and_finite(cnn_results, attack: str) -> None:
    """Every point returned is adversarial and in the box; the minimizing attacks fool every input,
    a line attack most (a line can leave the box before it meets another class)."""
    model, x, y, results = cnn_results
    res = results[attack]
    ok = torch.tensor([s == "ok" for s in res.status])
    assert bool(ok.all()) if attack in MINIMIZING else int(ok.sum()) >= len(y) // 2, res.status
    assert set(res.status) <= {"ok", "failed"}
    assert torch.isfinite(res.distance[ok]).all() and (res.distance[ok] > 0).all()
    assert torch.isinf(res.distance[~ok]).all() and torch.equal(res.x_adv[~ok], x[~ok])
    assert_verified(model, x, y, res)


def test_cnn_fmn_improves_on_deepfool(cnn_results) -> None:
    """FMN starts at the DeepFool points: never worse, and strictly better on a non-linear model."""
    *_, results = cnn_results
    df, fmn, best = (results[a].distance for a in ("deepfool", "fmn", "best"))
    assert (fmn <= df * (1 + 1e-6)).all()
    assert (fmn / df).median() < 0.999
    assert torch.equal(best, torch.minimum(df, fmn))


def test_deterministic_and_batch_invariant() -> None:
    model, x, y = cnn_case(B=6)
    a = min_l2_attack(model, x, y, "fmn", batch_size=6)
    b = min_l2_attack(model, x, y, "fmn", batch_size=6)
    assert torch.equal(a.distance, b.distance) and torch.equal(a.x_adv, b.x_adv)
    model, x, y = linear_case(torch.float64, B=6)
    whole = min_l2_distance(model, x, y, "fmn", bounds=WIDE_BOUNDS, batch_size=6)
    single = min_l2_distance(model, x, y, "fmn", bounds=WIDE_BOUNDS, batch_size=1)
    torch.testing.assert_close(single, whole, rtol=1e-6, atol=0)


def test_model_state_is_restored() -> None:
    model, x, y = cnn_case(B=4)
    min_l2_attack(model, x, y, "fmn")
    assert not model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


@pytest.mark.parametrize("call", [min_l2_attack, min_l2_distance])
def test_a_model_in_train_mode_is_refused_as_trace_paths_refuses_it(call) -> None:
    """Results would depend on batch statistics: refused before any attack, naming the argument."""
    model, x, y = cnn_case(B=4)
    model.train()
    with pytest.raises(FrmarginError, match=r"argument 'model'.*train mode.*eval mode"):
        call(model, x, y, "fmn")
    assert model.training, "the refusal leaves the model as it was"


def test_empty_batch() -> None:
    model, x, y = linear_case(torch.float64, B=1)
    res = min_l2_attack(model, x[:0], y[:0])
    assert res.distance.shape == (0,) and res.status == [] and res.x_adv.shape == (0, 20)


# ----------------------------------------------------------------------------- bad arguments


def _bad_cases():
    model, x, y = linear_case(torch.float32, B=4)
    x_nan = x.clone()
    x_nan[0, 0] = float("nan")
    return {
        "non-finite x": (dict(x=x_nan), "'x'"),
        "x outside bounds": (dict(x=x * 1000), "'x'"),
        "integer x": (dict(x=x.long()), "'x'"),
        "y shape": (dict(y=y[:3]), "'y'"),
        "y out of range": (dict(y=torch.tensor([0, 1, 2, 5])), "'y'"),
        "negative y": (dict(y=torch.tensor([0, -1, 2, 3])), "'y'"),
        "float y": (dict(y=y.float()), "'y'"),
        "unknown attack": (dict(attack="cw"), "'attack'"),
        "unknown option": (dict(steps=5), "'options'"),
        "bad bounds": (dict(bounds=(1.0, -1.0)), "'bounds'"),
        "bad batch_size": (dict(batch_size=0), "'batch_size'"),
        "bad steps": (dict(deepfool_steps=-1), "'deepfool_steps'"),
        "not a model": (dict(model="resnet20"), "'model'"),  # any callable is a model (as for trace_paths)
    }, (model, x, y)


@pytest.mark.parametrize("case", list(_bad_cases()[0]))
def test_bad_argument_raises(case: str) -> None:
    cases, (model, x, y) = _bad_cases()
    change, name = cases[case]
    kwargs = dict(model=model, x=x, y=y, attack="deepfool", bounds=WIDE_BOUNDS)
    kwargs.update(change)
    with pytest.raises(FrmarginError, match=name) as info:
        min_l2_attack(**kwargs)
    assert isinstance(info.value, ValueError) and "expected" in str(info.value)


# ----------------------------------------------------------------------------- pretrained


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_MIRROR / "weights").is_dir(), reason="shared asset mirror absent")
def test_resnet20_cifar10_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = pytest.importorskip("frmargin.models")
    data = pytest.importorskip("frmargin.data")
    if not hasattr(models, "load_model") or not hasattr(data, "load_dataset"):
        pytest.skip("frmargin.models.load_model or frmargin.data.load_dataset not available")
    monkeypatch.setenv("FRMARGIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FRMARGIN_MIRROR", str(REAL_MIRROR))
    model = models.load_model("resnet20", progress=False)
    ds = data.load_dataset("cifar10-exact", progress=False)
    x, y = ds.images[:20], ds.labels[:20]
    res = min_l2_attack(model, x, y, "deepfool")
    ok = torch.tensor([s == "ok" for s in res.status])
    correct = torch.tensor([s != "misclassified" for s in res.status])
    assert correct.sum() >= 16  # resnet20 is ~92% accurate here
    assert torch.equal(ok, correct), res.status  # every correctly classified image is fooled
    assert torch.isfinite(res.distance[ok]).all()
    assert 0.01 < res.distance[ok].median() < 2.0
    assert_verified(model, x, y, res)


def test_run_configuration_names_every_attack() -> None:
    """``RunConfig`` and ``frmargin study`` accept exactly the registered attacks."""
    from frmargin.runs.config import ATTACK_NAMES
    from frmargin.runs.study import BASELINE_NAMES

    assert set(ATTACK_NAMES) == set(ATTACKS) == set(BASELINE_NAMES)
    assert set(MINIMIZING) < set(ATTACKS)
