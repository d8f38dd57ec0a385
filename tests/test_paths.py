"""trace_paths against closed forms, a brute-force ODE integration, and its own contracts.

The shared case is a tanh MLP with D = 48 >> C = 6 in float64 (a submersion), traced once per
module toward every non-source class; the other tests use small dedicated models.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import reference as ref
from conftest import all_pairs, assert_close, make_cnn, make_inputs, make_linear, make_logistic, make_mlp, predictions
from frmargin.errors import FrmarginError
from frmargin.geometry import margin_lower_bound, predicted_path
from frmargin.paths import ACCURACY_DEFAULTS, STATUSES, trace_paths
from frmargin.paths.box import projected_row_direction
from frmargin.paths.directions import descent_gradient, row_direction
from frmargin.paths.euclidean import LinearStep
from frmargin.paths.step_control import StepControl
from frmargin.paths.steppers import STEPPERS

BINARY = 1e-3  # traced vs 2 asin(sqrt p_y) - pi/2 (default accuracy)
MEDIAN = 1e-2  # median relative error vs the predicted NG path (default accuracy)
WORST = 5e-2  # largest relative error vs the predicted NG path (default accuracy)
HIT_SHARE = 0.95  # share of first hits that agree with the prediction
LB_SLACK = 1e-9  # a traced length may undershoot LB by rounding only
BATCH = 1e-6  # float64: one path alone vs inside a batch
ODE = 3e-3  # tight tracer vs RK4 on the ODE (submersion)
ODE_RANKDEF = 3e-2  # tight tracer vs RK4 where J is not a submersion (second-order chords)
ROOT = ACCURACY_DEFAULTS["root_tol"]  # x_end alone vs in a batch, relative to |x_end - x0|
LOOSE_ROOT = 0.3  # a bracket this wide (relative to the last step) must not cost accuracy
TIE = 1e-5  # ... median relative difference of lengths to a tightly located reference
CG_PAPER = 1e-8  # paper mode, CG vs exact solve, float64
TIGHT = dict(eta=0.1, rtol=1e-3)


def lower_bound(model, x, source):
    return margin_lower_bound(predictions(model, x)[0], source)


def assert_above_lb(res, model, x, source, what):
    lb = lower_bound(model, x, source)
    ok = torch.tensor([s == "ok" for s in res.status])
    slack = (res.fr_length - lb)[ok]
    assert slack.numel() > 0, f"{what}: no path finished"
    assert slack.min() >= -LB_SLACK, (
        f"{what}: traced length below LB by {-slack.min().item():.3g} at path {int(slack.argmin())}"
    )


# --------------------------------------------------------------------------- shared case


@pytest.fixture(scope="module")
def submersion():
    model = make_mlp(48, 6, 32, 2, seed=3, scale=2.0)
    x, s, t = all_pairs(model, make_inputs((48,), 8, seed=3))
    res = trace_paths(model, x, s, t, batch_size=64)
    return model, x, s, t, res


def test_submersion_matches_predicted_path(submersion):
    model, x, s, t, res = submersion
    assert res.status == ["ok"] * len(s), f"statuses {set(res.status)}"
    length, hit = predicted_path(predictions(model, x)[0], s, t)
    rel = ((res.fr_length - length) / length).abs()
    assert rel.median() < MEDIAN, f"median relative error {rel.median().item():.3g} vs the closed form"
    assert rel.max() < WORST, f"relative error {rel.max().item():.3g} at path {int(rel.argmax())} vs the closed form"
    share = (res.first_hit == hit).double().mean()
    assert share >= HIT_SHARE, f"first hit agrees on {share.item():.1%} of paths"
    assert res.success.all()
    assert_above_lb(res, model, x, s, "submersion")
    # the end point is past the boundary and the distances describe it
    z_end = model(res.x_end).detach()
    assert torch.equal(z_end.argmax(-1), res.first_hit), "x_end is not classified as first_hit"
    diff = (res.x_end - x).flatten(1)
    assert_close(res.l2, diff.norm(dim=-1), 1e-12, 0, "l2")
    assert_close(res.linf, diff.abs().amax(-1), 1e-12, 0, "linf")
    # the first Jacobian is shared by the paths that start at the same point
    assert (res.jacobian_evals > res.steps - 1).all() and (res.forward_evals >= res.steps).all()


def test_accuracy_target_controls_the_error(submersion):
    model, x, s, t, res = submersion
    length, _ = predicted_path(predictions(model, x)[0], s, t)
    tight = trace_paths(model, x, s, t, **TIGHT)
    err_default = ((res.fr_length - length) / length).abs()
    err_tight = ((tight.fr_length - length) / length).abs()
    assert err_tight.median() < 0.2 * err_default.median(), (
        f"median error {err_default.median().item():.3g} -> {err_tight.median().item():.3g} with eta=0.1, rtol=1e-3"
    )
    assert err_tight.max() < err_default.max()
    assert (tight.steps >= res.steps).all(), "tighter accuracy should not take fewer steps"


def test_length_ends_at_the_tie_not_at_the_bracket(submersion):
    """A class change found on the input-space chord (here Euclidean paths) ends the length at
    the tie inside the final bracket, so a loose ``root_tol`` (fewer forward passes) keeps
    lengths equal to a tightly located reference; ending at the bracket's far side would add
    up to the bracket's width (a median difference of ~3e-3 here)."""
    model, x, s, t, _ = submersion
    tight = trace_paths(model, x, s, t, metric="euclidean", root_tol=1e-7)
    loose = trace_paths(model, x, s, t, metric="euclidean", root_tol=LOOSE_ROOT)
    diff = ((loose.fr_length - tight.fr_length) / tight.fr_length).abs()
    assert diff.median() < TIE, f"median difference {diff.median().item():.3g} with root_tol={LOOSE_ROOT}"
    assert torch.equal(loose.first_hit, tight.first_hit)
    assert loose.forward_evals.sum() < tight.forward_evals.sum()
    assert_above_lb(loose, model, x, s, "loose root_tol")


def test_batch_invariance(submersion):
    model, x, s, t, res = submersion
    pick = [0, 3, 13, 23, 38]  # among 40 paths traced in one chunk of 64
    alone = trace_paths(model, x[pick], s[pick], t[pick], batch_size=1)
    assert_close(alone.fr_length, res.fr_length[pick], BATCH, 0, "FR length alone vs in a batch")
    # x_end is located to root_tol (relative FR width of the last step), not to rounding
    root = ROOT * res.l2[pick].max().item()
    assert_close(alone.x_end, res.x_end[pick], 0, root, "x_end alone vs in a batch")
    assert torch.equal(alone.first_hit, res.first_hit[pick])
    assert torch.equal(alone.steps, res.steps[pick])


def test_determinism():
    model = make_mlp(24, 5, 16, 2, seed=7, scale=2.0)
    x, s, t = all_pairs(model, make_inputs((24,), 2, seed=7))
    a = trace_paths(model, x, s, t)
    b = trace_paths(model, x, s, t)
    for name in ("fr_length", "x_end", "steps", "first_hit", "forward_evals", "jacobian_evals"):
        assert torch.equal(getattr(a, name), getattr(b, name)), f"{name} differs between two identical calls"
    assert a.status == b.status and a.visited == b.visited


# --------------------------------------------------------------------------- exact answers


@pytest.mark.parametrize("D, scale", [(8, 3.0), (50, 6.0)], ids=["D8", "D50"])
def test_binary_logistic_margin(D, scale):
    model = make_logistic(D, seed=D, scale=scale)
    x = make_inputs((D,), 12, seed=D)
    p, y = predictions(model, x)
    res = trace_paths(model, x, y, 1 - y)
    assert res.status == ["ok"] * 12
    expected = 2 * torch.asin(p.max(-1).values.sqrt()) - math.pi / 2
    assert_close(res.fr_length, expected, BINARY, 0, f"binary margin, D={D}")
    assert torch.equal(res.first_hit, 1 - y)


def test_linear_multiclass_matches_predicted_path():
    model = make_linear(20, 4, seed=5, scale=3.0)
    x, s, t = all_pairs(model, make_inputs((20,), 5, seed=5))
    res = trace_paths(model, x, s, t, **TIGHT)
    length, hit = predicted_path(predictions(model, x)[0], s, t)
    assert_close(res.fr_length, length, 5e-3, 1e-6, "linear model, tight tracer vs closed form")
    assert torch.equal(res.first_hit, hit)


@pytest.mark.parametrize("D, C, tol", [(8, 3, ODE), (2, 3, ODE_RANKDEF)], ids=["submersion-D8", "rank-deficient-D2"])
def test_traced_length_matches_ode_integration(D, C, tol):
    model = make_mlp(D, C, 12, 2, seed=11, scale=2.0)
    x = make_inputs((D,), 1, seed=12)
    p, y = predictions(model, x)
    k = int(p[0].argsort()[0])  # the least likely class: longest path
    res = trace_paths(model, x, y, torch.tensor([k]), **TIGHT)
    length, hit, _ = ref.ode_path(model, x[0], int(y[0]), k, h=0.02)
    assert res.status == ["ok"]
    assert int(res.first_hit[0]) == hit, f"first hit {int(res.first_hit[0])}, ODE {hit}"
    assert_close(res.fr_length, torch.tensor([length], dtype=torch.float64), tol, 0, f"traced vs ODE, D={D}")


# --------------------------------------------------------------------------- modes


def test_paper_mode_descends_and_cg_agrees():
    model = make_mlp(16, 5, 24, 2, seed=2, scale=2.0)
    x, s, t = all_pairs(model, make_inputs((16,), 3, seed=2))
    res = trace_paths(model, x, s, t, method="paper", damping=10.0, record=True)
    assert res.status == ["ok"] * len(s) and res.success.all()
    assert (res.steps >= 2).any(), "damping 10 should give several steps"
    for i, traj in enumerate(res.trajectory):
        assert traj.shape[0] == int(res.steps[i]) + 1
        logp = torch.log_softmax(model(traj).detach(), -1)
        gap = logp[:, s[i]] - logp[:, t[i]]
        assert (gap.diff() < 0).all(), f"path {i}: the logit gap does not decrease: {gap.tolist()}"
        assert int(model(traj[-1:]).argmax()) != int(s[i]), f"path {i} ends without a class change"
    assert_above_lb(res, model, x, s, "paper mode")
    cg = trace_paths(model, x, s, t, method="paper", damping=10.0, solver="cg")
    assert torch.equal(cg.steps, res.steps) and torch.equal(cg.first_hit, res.first_hit)
    assert_close(cg.fr_length, res.fr_length, CG_PAPER, 0, "paper mode: CG vs exact length")
    assert (cg.matvecs > 0).all() and (cg.jacobian_evals == 0).all()


def test_euclidean_metric():
    model = make_mlp(16, 5, 24, 2, seed=2, scale=2.0)
    x, s, t = all_pairs(model, make_inputs((16,), 3, seed=2))
    res = trace_paths(model, x, s, t, metric="euclidean")
    assert res.status == ["ok"] * len(s)
    assert_above_lb(res, model, x, s, "euclidean metric")


@pytest.mark.parametrize("box", [None, (0.0, 1.0)], ids=["free", "box"])
def test_euclidean_direction_from_vjp_and_jvp_matches_the_jacobian_rows(box, monkeypatch):
    """Euclidean steps take the gradient and its logit velocity from one vjp and one jvp; the
    same paths traced with the C Jacobian rows (the Fisher steps' route, metric euclidean)
    must agree to rounding in float64, with and without frozen box coordinates."""
    model = make_mlp(16, 5, 24, 2, seed=4, scale=3.0)
    x0 = torch.rand(3, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x, s, t = all_pairs(model, x0)
    fast = trace_paths(model, x, s, t, metric="euclidean", box=box)
    assert (fast.jacobian_evals == 0).all() and (fast.matvecs == fast.steps).all()

    def with_rows(net, opts):
        """The Euclidean steps with the direction from the Jacobian rows instead."""

        def rows(idx, xx):
            z, J = net.jacobian(idx, xx)
            p = net.probs(z, idx)
            a = descent_gradient(net, idx, p)
            d = row_direction(opts, J, p, a) if box is None else projected_row_direction(opts, xx, J, p, a)
            return torch.ones(idx.shape[0], dtype=torch.bool), z, p, d

        return StepControl(net, opts, rows, LinearStep(net, opts))

    monkeypatch.setitem(STEPPERS, "converged", with_rows)
    rows = trace_paths(model, x, s, t, metric="euclidean", box=box)
    assert (rows.jacobian_evals > 0).all(), "the Jacobian-rows stepper was not used"
    assert fast.status == rows.status and torch.equal(fast.first_hit, rows.first_hit)
    assert torch.equal(fast.steps, rows.steps)
    assert_close(fast.fr_length, rows.fr_length, BATCH, 0, "Euclidean FR length, vjp/jvp vs Jacobian rows")
    assert_close(fast.x_end, rows.x_end, BATCH, BATCH, "Euclidean x_end, vjp/jvp vs Jacobian rows")
    if box is not None:
        assert ((fast.x_end == 0) | (fast.x_end == 1)).any(), "the box was never active: the case tests nothing"


def test_until_target_on_direct_paths():
    model = make_mlp(16, 3, 16, 2, seed=6, scale=2.0)
    x, s, t = all_pairs(model, make_inputs((16,), 4, seed=6))
    direct = predicted_path(predictions(model, x)[0], s, t)[1] == t
    assert direct.sum() >= 4
    x, s, t = x[direct], s[direct], t[direct]
    res = trace_paths(model, x, s, t, until="target", record=True)
    assert res.status == ["ok"] * len(s), res.status
    for i in range(len(s)):
        assert res.visited[i][-1] == int(t[i]), f"path {i}: visited {res.visited[i]}, target {int(t[i])}"
        assert int(model(res.trajectory[i][-1:]).argmax()) == int(t[i]), f"path {i} does not end at its target"
    assert (res.fr_length_target >= res.fr_length - 1e-12).all()
    assert_above_lb(res, model, x, s, "until=target")


def test_until_target_reaches_target_on_a_shielded_path():
    """Fails with the current tracer: after a shield c takes over, descending log p_c - log p_k
    hands the argmax back to the source and the two alternate; the path stalls at the tie
    p_y = p_c (here 24 flips, then no progress) and runs out of budget."""
    model = make_mlp(16, 5, 24, 2, seed=2, scale=2.0)
    x = make_inputs((16,), 4, seed=2)[:1]  # p = (.15, .30, .40, .12, .03), source 2, target 0
    p, y = predictions(model, x)
    k = torch.tensor([0])
    assert int(predicted_path(p, y, k)[1][0]) == 1, "the case must be shielded (by class 1)"
    res = trace_paths(model, x, y, k, until="target", max_steps=60)
    assert res.status == ["ok"], f"status {res.status}, visited {res.visited[0][:12]}..."
    assert res.visited[0][-1] == 0


def test_box_keeps_points_inside():
    model = make_mlp(16, 5, 24, 2, seed=4, scale=3.0)
    x0 = torch.rand(4, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, s, t = all_pairs(model, x0)
    res = trace_paths(model, x, s, t, box=(0.0, 1.0), record=True)
    assert res.status == ["ok"] * len(s)
    assert res.x_end.min() >= 0.0 and res.x_end.max() <= 1.0, "x_end left the box"
    for traj in res.trajectory:
        assert traj.min() >= 0.0 and traj.max() <= 1.0, "a path point left the box"
    assert ((res.x_end == 0) | (res.x_end == 1)).any(), "the box was never active: the case tests nothing"
    assert_above_lb(res, model, x, s, "box")


@pytest.mark.timeout(60)
def test_rank_deficient_inputs_terminate():
    model = make_mlp(2, 5, 16, 2, seed=5, scale=2.0)
    x, s, t = all_pairs(model, make_inputs((2,), 4, seed=5))
    res = trace_paths(model, x, s, t)
    assert set(res.status) <= set(STATUSES) - {"misclassified"}
    assert (res.steps <= 200).all()
    assert_above_lb(res, model, x, s, "2-D inputs")


def test_top_classes_keep_the_closed_form(monkeypatch):
    """12 classes, D = 60: with the 4 most probable classes kept and the rest lumped, the flow
    of the coarse model moves p along the same line (its Fisher information has the same
    form), so lengths match the closed form as closely as with every class, and the first
    hits agree; the Jacobian rows fall from 12 to 5 per step."""
    import frmargin.paths.state as state

    model = make_mlp(60, 12, 32, 2, seed=13, scale=2.5)
    x, s, t = all_pairs(model, make_inputs((60,), 3, seed=13))
    length, hit = predicted_path(predictions(model, x)[0], s, t)
    full = trace_paths(model, x, s, t)
    rows: list[int] = []
    jacobian = state.logits_and_jacobian

    def counting(*args, **kwargs):
        z, J = jacobian(*args, **kwargs)
        rows.append(J.shape[1])
        return z, J

    monkeypatch.setattr(state, "logits_and_jacobian", counting)
    lumped = trace_paths(model, x, s, t, top_classes=4)
    assert rows and set(rows) == {5}, f"Jacobian rows per evaluation: {sorted(set(rows))}"
    assert lumped.status == ["ok"] * len(s), set(lumped.status)
    err_full = ((full.fr_length - length) / length).abs()
    err = ((lumped.fr_length - length) / length).abs()
    assert err.median() < MEDIAN and err.max() < WORST, f"median {err.median().item():.3g}, max {err.max().item():.3g}"
    assert err.median() < 3 * err_full.median() + 1e-4, (
        f"{err.median().item():.3g} vs every class {err_full.median().item():.3g}"
    )
    share = (lumped.first_hit == hit).double().mean()
    assert share >= HIT_SHARE, f"first hit agrees on {share.item():.1%} of paths"
    z_end = model(lumped.x_end).detach()
    assert torch.equal(z_end.argmax(-1), lumped.first_hit), "x_end is not classified as first_hit"
    assert_above_lb(lumped, model, x, s, "top_classes=4")


def test_top_classes_where_the_lumped_rest_outweighs_the_source():
    """40 classes and a model of low confidence (p_y 0.08-0.21): with 4 classes kept, the
    lumped rest holds 0.6-0.73 of the probability, more than the source. A tie with the rest is
    no class change: aimed at it (at t = 0 on every step), each step crept by the overshoot
    (MobileNetV2 images with p_y 0.16-0.38: 199 Jacobians per path, all at the budget). The
    paths follow the coarse flow's line to the closed form's length and first hit, within the
    accuracy of the full view."""
    model = make_mlp(60, 40, 32, 2, seed=13, scale=1.0)
    x0 = make_inputs((60,), 4, seed=13)
    p, y = predictions(model, x0)
    top = p.argsort(-1, descending=True)[:, 1:4]  # targets among the kept classes (m = 4)
    x, s, t = x0.repeat_interleave(3, 0), y.repeat_interleave(3), top.reshape(-1)
    kept = p.sort(-1, descending=True).values[:, :4]
    assert (1 - kept.sum(-1) > kept[:, 0]).all(), "the lumped rest does not outweigh the source: no subject"
    length, hit = predicted_path(predictions(model, x)[0], s, t)
    res = trace_paths(model, x, s, t, top_classes=4)
    assert res.status == ["ok"] * len(s), res.status
    assert float(res.jacobian_evals.max()) < 30, res.jacobian_evals
    err = ((res.fr_length - length) / length).abs()
    assert err.median() < MEDIAN and err.max() < WORST, f"median {err.median().item():.3g}, max {err.max().item():.3g}"
    share = (res.first_hit == hit).double().mean()
    assert share >= HIT_SHARE, f"first hit agrees on {share.item():.1%} of paths"
    assert_above_lb(res, model, x, s, "top_classes=4, rest > p_y")


def test_top_classes_share_the_start_rows_of_one_image(monkeypatch):
    """The paths of one image to targets among its kept classes keep the same classes: their
    rows at the shared start are evaluated once (charged a share to each), and every path is
    traced as it is alone."""
    import frmargin.paths.state as state

    model = make_mlp(60, 12, 32, 2, seed=13, scale=2.5)
    x0 = make_inputs((60,), 2, seed=13)
    p, y = predictions(model, x0)
    top = p.argsort(-1, descending=True)[:, 1:4]  # the 3 most probable other classes: kept with m = 4
    x = x0.repeat_interleave(3, 0)
    s, t = y.repeat_interleave(3), top.reshape(-1)
    batches: list[int] = []
    jacobian = state.logits_and_jacobian

    def counting(*args, **kwargs):
        batches.append(args[1].shape[0])
        return jacobian(*args, **kwargs)

    monkeypatch.setattr(state, "logits_and_jacobian", counting)
    together = trace_paths(model, x, s, t, top_classes=4)
    assert batches[0] == 2, f"start rows evaluated for {batches[0]} points, expected one per image"
    alone = [trace_paths(model, x[i : i + 1], s[i : i + 1], t[i : i + 1], top_classes=4) for i in range(6)]
    assert together.status == ["ok"] * 6 and all(r.status == ["ok"] for r in alone)
    for name in ("fr_length", "l2", "x_end"):
        assert_close(getattr(together, name), torch.cat([getattr(r, name) for r in alone]), 1e-9, 0, name)
    assert torch.equal(together.first_hit, torch.cat([r.first_hit for r in alone]))
    shared = together.jacobian_evals - torch.cat([r.jacobian_evals for r in alone])
    assert torch.allclose(shared, torch.full_like(shared, 1 / 3 - 1)), shared


@pytest.mark.parametrize(
    "kwargs",
    [dict(top_classes=1), dict(top_classes=3, until="target"), dict(top_classes=3, method="paper", solver="cg")],
    ids=["one", "until-target", "cg"],
)
def test_top_classes_refused_where_it_cannot_work(kwargs):
    model, x, y, t = _valid()
    with pytest.raises(ValueError, match="argument 'top_classes'"):
        trace_paths(model, x, y, t, **kwargs)


# --------------------------------------------------------------------------- statuses


def test_budget_status_keeps_partial_measurements(submersion):
    model, x, s, t, full = submersion
    one = [i for i in range(len(s)) if int(full.steps[i]) == 1][:3]
    many = [i for i in range(len(s)) if int(full.steps[i]) >= 3][:3]
    pick = one + many
    res = trace_paths(model, x[pick], s[pick], t[pick], max_steps=1)
    assert res.status == ["ok"] * 3 + ["budget"] * 3, res.status
    assert_close(res.fr_length[:3], full.fr_length[one], BATCH, 0, "one-step paths under max_steps=1")
    assert torch.equal(res.first_hit[:3], full.first_hit[one])
    b = slice(3, 6)
    assert (res.steps[b] == 1).all() and (~res.success[b]).all() and (res.first_hit[b] == -1).all()
    assert (res.fr_length[b] > 0).all() and (res.fr_length[b] < full.fr_length[many]).all()
    assert (res.l2[b] > 0).all() and torch.isfinite(res.x_end[b]).all()
    assert torch.isnan(res.fr_length_target).all()


class NaNWhere(nn.Module):
    """Logits of ``inner``, NaN where x[:, 0] > 5."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner(x)
        return torch.where(x[:, :1] > 5, torch.full_like(z, float("nan")), z)


def test_nonfinite_and_misclassified_statuses():
    inner = make_mlp(12, 4, 16, 2, seed=8, scale=2.0)
    model = NaNWhere(inner).eval()
    x = make_inputs((12,), 5, seed=8)
    x[:, 0] = x[:, 0].clamp(max=1.0)
    _p, y = predictions(inner, x)
    t = (y + 1) % 4
    x[2, 0] = 10.0  # NaN logits at the start
    s = y.clone()
    s[3] = (y[3] + 2) % 4  # misclassified start
    res = trace_paths(model, x, s, t)
    assert res.status[2] == "nonfinite" and res.status[3] == "misclassified", res.status
    others = [0, 1, 4]
    assert [res.status[i] for i in others] == ["ok"] * 3
    assert (~res.success[[2, 3]]).all() and (res.first_hit[[2, 3]] == -1).all()
    assert (res.fr_length[[2, 3]] == 0).all()
    alone = trace_paths(inner, x[others], s[others], t[others])
    assert_close(res.fr_length[others], alone.fr_length, BATCH, 0, "healthy paths next to failing ones")


def test_path_into_nan_region_is_nonfinite():
    """Logistic paths move straight along w = (1, 1, 0, 0) to w.x = 7: from (4, 0) the path
    passes x_0 = 5, where the logits are NaN; from (0, 4) it does not."""
    inner = make_logistic(4, seed=9, scale=1.0)
    with torch.no_grad():
        inner.lin.weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0]]))
        inner.lin.bias.fill_(-7.0)
    model = NaNWhere(inner).eval()
    x = torch.tensor([[4.0, 0, 0, 0], [0, 4.0, 0, 0]], dtype=torch.float64)
    _p, y = predictions(inner, x)
    res = trace_paths(model, x, y, 1 - y)
    assert res.status == ["nonfinite", "ok"], res.status


# --------------------------------------------------------------------------- validation


def _valid():
    model = make_mlp(8, 3, 8, 1, seed=10)
    x = torch.rand(4, 8, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    _, y = predictions(model, x)
    return model, x, y, (y + 1) % 3


def _softmax_model():
    return nn.Sequential(make_mlp(8, 3, 8, 1, seed=10), nn.Softmax(-1)).eval()


def _train_model():
    return make_mlp(8, 3, 8, 1, seed=10).train()


def _nan_x(x):
    x = x.clone()
    x[1, 2] = float("nan")
    return x


INVALID = [  # id, argument named in the message, change to the valid call
    ("nonfinite-x", "x", lambda a: {**a, "x": _nan_x(a["x"])}),
    ("integer-x", "x", lambda a: {**a, "x": (a["x"] * 255).long()}),
    ("empty-batch", "x", lambda a: {**a, "x": a["x"][:0], "source": a["source"][:0], "target": a["target"][:0]}),
    ("target-equals-source", "target", lambda a: {**a, "target": a["source"]}),
    ("source-out-of-range", "source", lambda a: {**a, "source": a["source"] + 3}),
    ("target-negative", "target", lambda a: {**a, "target": a["target"] - 5}),
    ("source-length", "source", lambda a: {**a, "source": a["source"][:3]}),
    ("target-length", "target", lambda a: {**a, "target": torch.cat([a["target"], a["target"]])}),
    ("softmax-model", "model", lambda a: {**a, "model": _softmax_model()}),
    ("train-mode", "model", lambda a: {**a, "model": _train_model()}),
    ("method", "method", lambda a: {**a, "method": "newton"}),
    ("metric", "metric", lambda a: {**a, "metric": "l2"}),
    ("until", "until", lambda a: {**a, "until": "forever"}),
    ("solver", "solver", lambda a: {**a, "solver": "lu"}),
    ("unknown-option", "option", lambda a: {**a, "etta": 0.1}),
    ("x-outside-box", "x", lambda a: {**a, "x": a["x"] + 1.5, "box": (0.0, 1.0)}),
    ("box-order", "box", lambda a: {**a, "box": (1.0, 0.0)}),
    ("max-steps", "max_steps", lambda a: {**a, "max_steps": 0}),
    ("damping", "damping", lambda a: {**a, "damping": -1.0}),
]


@pytest.mark.parametrize("change, argument", [(c, a) for _, a, c in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_arguments_name_the_argument(change, argument):
    model, x, y, t = _valid()
    kwargs = change({"model": model, "x": x, "source": y, "target": t})
    with pytest.raises(ValueError, match=f"argument '{argument}'"):
        trace_paths(kwargs.pop("model"), kwargs.pop("x"), kwargs.pop("source"), kwargs.pop("target"), **kwargs)
    assert issubclass(FrmarginError, ValueError)


@pytest.mark.parametrize(
    "family, kwargs",
    [
        ("mlp", {}),
        ("mlp", {"metric": "euclidean"}),
        ("mlp", {"top_classes": 3}),
        ("mlp", {"method": "paper"}),
        ("cnn", {}),
        ("cnn", {"box": (-1.0, 1.0)}),
    ],
)
def test_reference_row_jacobian_keeps_the_paths(family, kwargs, monkeypatch):
    """The tracer's Jacobian rows minus the view's last row (``REFERENCE_ROW``: V - 1 backward
    passes per evaluation instead of V) trace the same paths as the full rows, in float64:
    same statuses, first hits and step counts, lengths and end points equal to rounding; on an
    MLP and a CNN, for the Fisher flow, lumped classes, paper mode and a box. The Euclidean
    flow evaluates no Jacobian rows (a vjp and a jvp per step) and is unchanged bit for bit."""
    import frmargin.paths.state as state

    if family == "mlp":
        model, shape, C = make_mlp(20, 6, 24, 2, seed=21, scale=2.0), (20,), 6
    else:
        model, shape, C = make_cnn(1, 8, 5, seed=22), (1, 8, 8), 5
    V = kwargs.get("top_classes", C - 1) + 1
    x, s, t = all_pairs(model, make_inputs(shape, 3, seed=21).clamp(-1.0, 1.0))
    backward: list[int] = []
    jacobian = state.logits_and_jacobian

    def counting(*args, **kw):
        z, J = jacobian(*args, **kw)
        assert J.shape[1] == V
        backward.append(V - (kw.get("reference") is not None))
        return z, J

    monkeypatch.setattr(state, "logits_and_jacobian", counting)
    monkeypatch.setattr(state, "REFERENCE_ROW", False)
    full = trace_paths(model, x, s, t, **kwargs)
    rows_full = sum(backward)
    backward.clear()
    monkeypatch.setattr(state, "REFERENCE_ROW", True)
    short = trace_paths(model, x, s, t, **kwargs)
    assert sum(backward) * V == rows_full * (V - 1)
    assert short.status == full.status and "ok" in full.status, set(full.status)
    assert torch.equal(short.first_hit, full.first_hit)
    assert torch.equal(short.steps, full.steps)
    if kwargs.get("metric") == "euclidean":
        assert rows_full == 0
        assert torch.equal(short.fr_length, full.fr_length) and torch.equal(short.x_end, full.x_end)
        return
    assert rows_full > 0
    if "box" in kwargs:
        assert (full.box_changes > 0).all(), "the box held no coordinate"
    assert_close(short.fr_length, full.fr_length, 1e-9, 1e-12, f"{family} {kwargs}: FR length")
    assert_close(short.x_end, full.x_end, 1e-7, 1e-9, f"{family} {kwargs}: x_end")
