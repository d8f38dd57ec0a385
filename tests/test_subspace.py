"""Paths traced in the coordinates u of a perturbation model: against pixels (a full orthonormal
basis), the Jacobians of J B against their dense form, the closed forms where K >= C - 1, the
exact references on affine models (K = 1: the line; K = 2: a grid), the early ends of flows
that cannot reach a class change, and the subspace margin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import all_pairs, assert_close, make_cnn, make_linear, make_mlp
from frmargin.errors import FrmarginError
from frmargin.geometry import margin_lower_bound, predicted_path
from frmargin.options import TraceOptions
from frmargin.paths import trace_paths
from frmargin.paths.state import PathState
from frmargin.paths.subspace import SubspaceNetwork
from frmargin.paths.subspace_margin import subspace_margin
from frmargin.perturbation.bases import build_subspace
from frmargin.perturbation.oracles import grid_margin, line_length, subspace_line_margin
from mirror import needs_mirror

#: the converged tracer's default accuracy: its corrector and step-turn tolerance ``rtol``
LENGTH_RTOL = TraceOptions().rtol
#: lower bounds hold to float rounding
LB_SLACK = 1e-9


def _lb_holds(res, model, x, source):
    p0 = torch.softmax(model(x).detach().to(torch.float64), -1)
    lb = margin_lower_bound(p0, source)
    ok = res.success
    assert bool((res.fr_length[ok] >= lb[ok] - LB_SLACK).all()), "a traced length below LB"


@pytest.mark.parametrize("metric", ["fisher", "euclidean"])
def test_full_orthonormal_basis_is_pixels(metric):
    """random:full is a rotation of the pixels: the natural-gradient flow and the plain gradient
    flow are invariant under it, so lengths, first hits and input-space ends are the pixels'."""
    model = make_mlp(D=6, C=5, seed=3)
    x = torch.rand(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    xs, s, t = all_pairs(model, x)
    a = trace_paths(model, xs, s, t, metric=metric)
    b = trace_paths(model, xs, s, t, metric=metric, perturbation="random:full")
    assert a.status == b.status
    assert torch.equal(a.first_hit, b.first_hit)
    assert_close(b.fr_length, a.fr_length, 1e-7, 1e-10, "FR length")
    assert_close(b.l2, a.l2, 1e-6, 1e-10, "L2 in input space")
    assert_close(b.x_end, a.x_end, 1e-6, 1e-9, "x_end in input space")
    assert b.u_norm is not None and b.u_end is not None and b.u_end.shape == (len(b), 6)
    assert_close(b.u_norm, b.l2, 1e-9, 1e-12, "|u| = |B u| for an orthonormal basis")
    assert a.u_norm is None and "u_norm" not in a.to_frame()


@pytest.mark.parametrize("spec", ["dct:1", "dct:3", "dct:full", "color"])
@pytest.mark.parametrize("route", ["forward", "reverse"])
def test_jacobian_rows_against_dense(spec, route):
    """Both routes give J B of the view, the reference row subtracted, against a dense float64
    Jacobian of u -> model(x0 + B u)."""
    model = make_cnn(in_ch=2, size=4, C=5, seed=1)
    x0 = torch.rand(3, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sub = build_subspace(spec, x0)
    state = PathState(
        torch.zeros(3, sub.k, dtype=torch.float64),
        torch.zeros(3, dtype=torch.long),
        torch.ones(3, dtype=torch.long),
        False,
    )
    net = SubspaceNetwork(model, state, sub, route=route)
    net.start(None)
    u = 0.1 * torch.randn(3, sub.k, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    rows = torch.arange(3)
    z, J = net.jacobian_rows(rows, u, 4)
    for i in range(3):
        one = rows[i : i + 1]
        dense = torch.autograd.functional.jacobian(lambda v, one=one: model(sub.embed(one, v[None]))[0], u[i])
        assert_close(J[i], dense - dense[4], 1e-10, 1e-12, f"J B of point {i} ({spec}, {route})")
        assert_close(z[i], model(sub.embed(rows[i : i + 1], u[i : i + 1]))[0], 1e-12, 1e-12, "logits")


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_closed_form_holds_with_k_at_least_c_minus_1(family):
    """K >= C - 1 directions and a full-rank J B: the natural-gradient flow in u is the simplex
    line again: shielding is the closed form's and lengths its, within the default accuracy."""
    if family == "mlp":
        model, x = (
            make_mlp(D=16, C=5, seed=5),
            torch.rand(5, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
        )
        spec = "random:6"
    else:
        model = make_cnn(in_ch=1, size=8, C=5, seed=2)
        x = torch.rand(5, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        spec = "dct:6"
    xs, s, t = all_pairs(model, x)
    res = trace_paths(model, xs, s, t, perturbation=spec)
    assert set(res.status) == {"ok"}
    p0 = torch.softmax(model(xs).to(torch.float64), -1)
    length, hit = predicted_path(p0, s, t)
    assert torch.equal(res.first_hit, hit), "first class hit = the closed form's"
    assert_close(res.fr_length, length, LENGTH_RTOL, 1e-6, "FR length against the closed form")
    _lb_holds(res, model, xs, s)


def _linear(C=5, D=6, seed=1):
    model = make_linear(D=D, C=C, seed=seed, scale=3.0)
    x0 = torch.rand(3, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return model, x0, model(x0).argmax(-1)


def test_k1_line_oracle():
    """K = 1 on z = W x + b: the flow runs along the line in the direction that lowers
    L = z_y - z_k; its length is the p-curve's up to the first class change (quadrature), its
    first hit the line's, and the subspace margin is the shorter of the line's two directions."""
    model, x0, y = _linear()
    C = 5
    for i in range(3):
        sub = build_subspace("random:1", x0[i : i + 1])
        b = sub.basis.reshape(-1)
        tg = torch.tensor([c for c in range(C) if c != int(y[i])])
        res = trace_paths(
            model, x0[i : i + 1].repeat(C - 1, 1), y[i].repeat(C - 1), tg, perturbation="random:1", eta=0.1
        )
        slope = model[0].weight @ b
        for j, k in enumerate(tg.tolist()):
            sign = 1.0 if slope[k] > slope[int(y[i])] else -1.0
            length, hit, _ = line_length(model, x0[i], sign * b, int(y[i]), t_max=200.0)
            assert res.status[j] == "ok" and int(res.first_hit[j]) == hit
            assert_close(res.fr_length[j], torch.tensor(length), 1e-3, 1e-6, f"image {i} target {k}: length")
        _lb_holds(res, model, x0[i : i + 1].repeat(C - 1, 1), y[i].repeat(C - 1))
        est = subspace_margin(model, sub, y[i : i + 1])
        oracle, _ = subspace_line_margin(model, x0[i], b, int(y[i]), t_max=200.0)
        assert_close(est.margin, torch.tensor([oracle]), 1e-4, 1e-7, f"image {i}: subspace margin")
        assert bool(est.margin >= est.lower_bound - LB_SLACK)


@pytest.mark.slow
def test_k2_grid_oracle():
    """K = 2: the subspace margin equals the shortest path on a fine grid of the plane within 1%."""
    model, x0, y = _linear()
    sub = build_subspace("random:2", x0)
    est = subspace_margin(model, sub, y)
    for i in range(3):
        oracle, _ = grid_margin(model, x0[i], sub.basis.reshape(2, -1), int(y[i]), radius=30.0, n=201)
        assert abs(float(est.margin[i]) - oracle) <= 0.01 * oracle, (float(est.margin[i]), oracle)
    assert bool((est.margin >= est.lower_bound - LB_SLACK).all())


def test_subspace_margin_is_lb_with_k_at_least_c_minus_1():
    """K >= C - 1 on an affine model (J B of full rank C - 1): every point of the simplex near
    p(x0) is reached in u, so the subspace margin is the softmax bound LB (within 1%), and
    never below it; with K = 1 it is above LB."""
    model, x0, y = _linear()
    est = subspace_margin(model, build_subspace("random:4", x0), y)
    assert bool((est.margin >= est.lower_bound - LB_SLACK).all())
    assert_close(est.margin, est.lower_bound, 1e-2, 0.0, "subspace margin against LB, K = C - 1")
    one = subspace_margin(model, build_subspace("random:1", x0), y)
    assert bool((one.margin > 1.01 * one.lower_bound).all())


class _Bowl(nn.Module):
    """z = (0, -(1 + (x_0 - 1)^2), -5): along x_0, L_1 = 1 + (x_0 - 1)^2 has its minimum 1 > 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x[:, 0]
        return torch.stack([torch.zeros_like(a), -(1 + (a - 1) ** 2), torch.full_like(a, -5.0)], -1)


class _Shelf(nn.Module):
    """z = (0, -(1 + exp(-x_0)), -5): L_1 = 1 + exp(-x_0) falls toward 1 as x_0 runs away."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x[:, 0]
        return torch.stack([torch.zeros_like(a), -(1 + torch.exp(-a)), torch.full_like(a, -5.0)], -1)


@pytest.fixture
def first_axis(tmp_path):
    np.save(tmp_path / "e0.npy", np.array([[1.0, 0.0]]))
    return f"basis:{tmp_path / 'e0.npy'}"


@pytest.mark.parametrize("model, status", [(_Bowl(), "subspace_stationary"), (_Shelf(), "subspace_runaway")])
def test_unreachable_target_ends_early(first_axis, model, status):
    """The oracle (the line itself) says class 1 cannot be reached: the path ends with the new
    status, well within the step budget, and no class change."""
    x = torch.zeros(1, 2, dtype=torch.float64)
    res = trace_paths(model.double().eval(), x, torch.tensor([0]), torch.tensor([1]), perturbation=first_axis)
    assert res.status == [status]
    assert int(res.steps[0]) < 40 and not bool(res.success[0])


@pytest.mark.parametrize("metric", ["fisher", "euclidean"])
def test_target_the_line_cannot_lower_is_stationary_at_once(first_axis, metric):
    """K = 1 on an affine model whose target logit moves with the source's along the line:
    L = z_y - z_k is constant in u, its gradient vanishes; the path ends before any step."""
    W = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    model = nn.Sequential(nn.Linear(2, 3)).double().eval()
    with torch.no_grad():
        model[0].weight.copy_(W)
        model[0].bias.copy_(torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64))
    x = torch.zeros(1, 2, dtype=torch.float64)
    # along e_0 both z_0 and z_1 grow at slope 1: the gap to class 1 never changes
    res = trace_paths(model, x, torch.tensor([0]), torch.tensor([1]), perturbation=first_axis, metric=metric)
    assert res.status == ["subspace_stationary"] and int(res.steps[0]) == 0


def test_a_flow_too_slow_for_the_budget_ends_creeping():
    """K = C - 1 on an affine model with tiny FR steps: every flow reaches its target given the
    steps (ok), and with a budget its pace cannot cover it ends ``subspace_creeping`` early,
    before the budget is spent, with no class change."""
    model, x0, y = _linear()
    t = (y + 1) % 5
    slow = {"perturbation": "random:4", "eta": 0.01, "logit_step": 0.05}
    done = trace_paths(model, x0, y, t, **slow, max_steps=2000)
    assert set(done.status) == {"ok"}
    cut = trace_paths(model, x0, y, t, **slow, max_steps=24)
    assert set(cut.status) == {"subspace_creeping"}, cut.status
    assert bool((cut.steps < 24).all()) and not bool(cut.success.any())


def test_batches_and_errors_before_tracing(tmp_path):
    """The split into batches changes results by float rounding only (K = C - 1: the flow is
    the simplex line; with fewer directions the flow is curved and the step control's choices
    can amplify rounding); a bad basis is refused before any step."""
    model = make_mlp(D=6, C=4, seed=2)
    x = torch.rand(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    xs, s, t = all_pairs(model, x)
    a = trace_paths(model, xs, s, t, perturbation="random:3")
    b = trace_paths(model, xs, s, t, perturbation="random:3", batch_size=1)
    assert a.status == b.status and len(a.status) == 9
    assert_close(b.fr_length, a.fr_length, 1e-10, 1e-12, "FR length, batch of 1 against 9")
    calls = []
    counting = nn.Sequential(model).eval()
    counting.register_forward_hook(lambda *args: calls.append(1))
    np.save(tmp_path / "bad.npy", np.ones((2, 5)))
    with pytest.raises(FrmarginError, match=r"argument 'perturbation'.*expected \(K, 6\)"):
        trace_paths(counting, xs, s, t, perturbation=f"basis:{tmp_path / 'bad.npy'}")
    assert not calls  # refused before the model ran


def test_record_is_in_u():
    model = make_mlp(D=6, C=4, seed=2)
    x = torch.rand(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    xs, s, t = all_pairs(model, x)
    res = trace_paths(model, xs, s, t, perturbation="dct:2", record=True, max_steps=5)
    assert res.trajectory is not None and all(tr.shape[1:] == (2,) for tr in res.trajectory)
    assert bool((res.trajectory[0][0] == 0).all())


@needs_mirror
@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "cnn-a-adv2"])
def test_dct64_closed_form_on_the_zoo(name):
    """dct:64 on two model families: natural-gradient shielding is the closed form's and the
    lengths are within the default accuracy: median relative error within a quarter of ``rtol``,
    each path within 2 ``rtol``. (A path that crosses many kinks of a ReLU network in 64
    low-frequency directions takes many short steps, each accepted within the absolute
    tolerance ``atol``: on cnn-a-adv2 one of nine paths takes 49 steps and ends 2.3% long.)"""
    from frmargin.data.load import load_dataset
    from frmargin.models.zoo import load_model

    model = load_model(name)
    data = load_dataset("cifar10-exact", progress=False)
    x, y = data.images[:6], data.labels[:6]
    with torch.no_grad():
        correct = model(x).argmax(-1) == y
    x = x[correct][:1]
    xs, s, t = all_pairs(model, x)
    res = trace_paths(model, xs, s, t, perturbation="dct:64")
    p0 = torch.softmax(model(xs).detach().to(torch.float64), -1)
    length, hit = predicted_path(p0, s, t)
    ok = res.success
    assert int(ok.sum()) >= 8
    assert torch.equal(res.first_hit[ok], hit[ok])
    rel = ((res.fr_length[ok] - length[ok]) / length[ok]).abs()
    assert float(rel.median()) <= LENGTH_RTOL / 4, f"{name}: median relative error {float(rel.median()):.3g}"
    assert_close(res.fr_length[ok], length[ok], 2 * LENGTH_RTOL, 1e-4, f"{name}: FR length against the closed form")
    _lb_holds(res, model, xs, s)
