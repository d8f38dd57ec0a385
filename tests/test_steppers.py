"""Steppers: the directions against their dense forms, and proposals that book nothing."""

from __future__ import annotations

import pytest
import torch

from conftest import all_pairs, assert_close, make_inputs, make_mlp
from frmargin.geometry import fisher_rao_distance
from frmargin.paths import METHODS, METRICS, resolve_options
from frmargin.paths.box import Box, projected_row_direction
from frmargin.paths.damped import DampedFree
from frmargin.paths.directions import FreeSpace, GradientDirection, RowDirection, descent_gradient, row_direction
from frmargin.paths.euclidean import LinearStep
from frmargin.paths.linalg import broyden_update, frozen
from frmargin.paths.paper import PaperStepper
from frmargin.paths.predictor_corrector import PredictorCorrector, StartLines
from frmargin.paths.step_control import StepControl
from frmargin.paths.steppers import STEPPERS, converged
from frmargin.paths.tracer import ChunkTracer
from frmargin.solve import fisher_weights
from mirror import needs_mirror

SECANT = 1e-12  # float64: the Broyden-updated J maps the move onto the logit change
DENSE = 1e-8  # float64: a direction vs its dense D x D solve
ROUTES = 1e-10  # float64: the vjp/jvp route vs the Jacobian rows


def tracer(**opts):
    model = make_mlp(6, 4, 16, 2, seed=7, scale=2.0)
    x, s, t = all_pairs(model, make_inputs((6,), 2, seed=7))
    return model, ChunkTracer(model, x, s, t, resolve_options(**opts))


def dense(model, x, source, target):
    """(G (P, D, D) with G = J^T M J, g = J^T a (P, D)) from the full Jacobian, float64."""
    J = torch.autograd.functional.jacobian(lambda xx: model(xx).sum(0), x).permute(1, 0, 2)
    p = torch.softmax(model(x).detach(), -1)
    G = J.transpose(-1, -2) @ fisher_weights(p) @ J
    a = torch.zeros_like(p)
    a.scatter_(1, source[:, None], 1.0)
    a.scatter_(1, target[:, None], -1.0)
    return G, (a[:, None, :] @ J)[:, 0], J


def test_registry_is_keyed_by_the_methods_users_write():
    assert {"converged": converged, "paper": PaperStepper} == STEPPERS
    assert set(METHODS) == set(STEPPERS)
    assert type(tracer(method="paper")[1].stepper) is PaperStepper


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("box", [None, (-5.0, 5.0)], ids=["free", "box"])
def test_converged_stepper_is_composed_from_its_parts(metric, box):
    """Fisher: rows solved by the projection (free space or the box, the same object the
    corrector binds with and the step control rescues with), the predictor-corrector, the start
    lines as its fallback round. Euclidean: the vjp/jvp direction and linear steps, nothing else."""
    stepper = tracer(metric=metric, box=box)[1].stepper
    assert type(stepper) is StepControl
    if metric == "euclidean":
        assert type(stepper.direction) is GradientDirection and type(stepper.attempt) is LinearStep
        assert stepper.fallback is None and stepper.projection is None
        return
    projection = stepper.projection
    assert type(projection) is (Box if box is not None else DampedFree if metric == "fisher" else FreeSpace)
    assert type(stepper.direction) is RowDirection and stepper.direction.projection is projection
    assert type(stepper.attempt) is PredictorCorrector and stepper.attempt.projection is projection
    assert type(stepper.fallback) is StartLines and stepper.attempt.lines is stepper.fallback


@pytest.mark.parametrize("mode, lam", [("absolute", 1e-3), ("absolute", 1.0)])
def test_natural_gradient_direction_solves_the_damped_dense_system(mode, lam):
    model, tr = tracer(damping_mode=mode, damping=lam)
    st, net = tr.state, tr.net
    idx = torch.arange(len(st))
    z, J = net.jacobian(idx, st.x)
    p = net.probs(z, idx)
    d = row_direction(tr.opts, J, p, descent_gradient(net, idx, p))
    G, g, _ = dense(model, st.x, st.source, st.target)
    lhs = (G @ d.v[:, :, None])[:, :, 0] + lam * d.v
    assert_close(lhs, -g, DENSE, DENSE * g.abs().max().item(), f"(G + lam I) v = -g, lam {lam}")
    # the logit velocity is J v, centred at the top class
    zdot = (J.to(torch.float64) @ d.v[:, :, None])[:, :, 0]
    zdot = zdot - zdot.gather(1, p.argmax(-1, keepdim=True))
    assert_close(d.zdot, zdot, DENSE, DENSE, "logit velocity")


def test_box_freezes_the_coordinates_pushed_outward():
    _model, tr = tracer(box=(-0.5, 0.5))
    st, net = tr.state, tr.net
    st.x = st.x.clamp(-0.5, 0.5)
    idx = torch.arange(len(st))
    z, J = net.jacobian(idx, st.x)
    p = net.probs(z, idx)
    free = row_direction(resolve_options(), J, p, descent_gradient(net, idx, p))
    boxed = projected_row_direction(tr.opts, st.x, J, p, descent_gradient(net, idx, p))
    pushed = frozen(st.x, free.v, (-0.5, 0.5))
    assert pushed.any() and (free.v[pushed] != 0).all(), "the case must push out of the box"
    # the projected direction (an active set; test_box checks it against the dense QP) is
    # feasible: nothing at a bound moves outward, and it holds coordinates the free one pushed
    assert not frozen(st.x, boxed.v, (-0.5, 0.5)).any(), "a coordinate moves out of the box"
    assert boxed.active is not None and (boxed.active & pushed).any()
    assert (boxed.v[boxed.active] == 0).all() and (boxed.v[~boxed.active] != 0).any()


@pytest.mark.parametrize("box", [None, (-3.0, 3.0)], ids=["free", "box"])
def test_euclidean_direction_from_vjp_and_jvp_matches_the_rows(box):
    _model, tr = tracer(metric="euclidean", box=box)
    st, net = tr.state, tr.net
    idx = torch.arange(len(st))
    ok, _z, p, d = tr.stepper.direction(idx, st.x)
    assert ok.all() and (st.matvecs == 1).all() and (st.jacobian_evals == 0).all()
    _, J = net.jacobian(idx, st.x)
    a = descent_gradient(net, idx, p)
    rows = row_direction(tr.opts, J, p, a) if box is None else projected_row_direction(tr.opts, st.x, J, p, a)
    assert_close(d.v, rows.v, ROUTES, ROUTES, "Euclidean v")
    assert_close(d.zdot, rows.zdot, ROUTES, ROUTES, "Euclidean logit velocity")


def booked(st):
    return [t.clone() for t in (st.x, st.z, st.length, st.steps, st.length_first)]


@pytest.mark.parametrize(
    "opts", [{}, {"metric": "euclidean"}, {"method": "paper"}], ids=["fisher", "euclidean", "paper"]
)
def test_proposals_book_nothing(opts):
    _, tr = tracer(**opts)
    before = booked(tr.state)
    steps = list(tr.stepper.propose(torch.arange(len(tr.state))))
    assert steps and sum(s.idx.numel() for s in steps) > 0
    for a, b in zip(before, booked(tr.state)):
        assert torch.equal(a.nan_to_num(-1), b.nan_to_num(-1)), "a proposal changed the booked state"
    for s in steps:
        assert torch.equal(s.x_old, tr.state.x[s.idx])
        # z_old comes from the step's own evaluation (a batch of another size: rounding only)
        assert_close(s.z_old, tr.state.z[s.idx], ROUTES, ROUTES, "logits at the start of a step")


def test_paper_step_has_unit_damped_length():
    model, tr = tracer(method="paper", damping_mode="absolute", damping=0.1)
    (step,) = tr.stepper.propose(torch.arange(len(tr.state)))
    G, _, _ = dense(model, step.x_old, tr.state.source[step.idx], tr.state.target[step.idx])
    delta = (step.x_new - step.x_old).to(torch.float64)
    norm = (delta[:, None, :] @ G @ delta[:, :, None])[:, 0, 0] + 0.1 * (delta * delta).sum(-1)
    assert_close(norm, torch.ones_like(norm), DENSE, 0, "delta^T (G + lam I) delta")


def test_converged_steps_respect_the_fr_step():
    _, tr = tracer(accuracy={"eta": 0.2})
    o = tr.opts
    for step in tr.stepper.propose(torch.arange(len(tr.state))):
        p_old = tr.net.probs(step.z_old, step.idx)
        p_new = tr.net.probs(step.z_new, step.idx)
        moved = fisher_rao_distance(p_old, p_new)
        assert step.fr_step is not None and (step.fr_step <= o.eta).all()
        assert (moved <= (1 + 2 * o.rtol) * step.fr_step + o.atol).all(), (moved / step.fr_step).max()


def test_broyden_update_is_a_secant_update():
    gen = torch.Generator().manual_seed(0)
    J = torch.randn(3, 4, 7, generator=gen, dtype=torch.float64)
    K = J @ J.transpose(-1, -2)
    J0, K0 = J.clone(), K.clone()
    rows = torch.tensor([0, 2])
    dx = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    dx[:, 5] = 0.0  # a coordinate frozen by a box: its column must not change
    dz = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    broyden_update(J, K, torch.tensor([True, False, True]), dx, dz)
    dx, dz = dx[rows], dz[rows]
    assert_close((J[rows] @ dx[:, :, None])[:, :, 0], dz, SECANT, SECANT, "J dx after the update")
    assert_close(K, J @ J.transpose(-1, -2), SECANT, SECANT, "K = J J^T after the update")
    assert torch.equal(J[1], J0[1]) and torch.equal(K[1], K0[1]), "a row outside `rows` changed"
    assert torch.equal(J[:, :, 5], J0[:, :, 5]), "a column the move did not touch changed"
    # least change: J moves only along dx (any vector orthogonal to dx is mapped as before)
    u = torch.randn(2, 7, generator=gen, dtype=torch.float64)
    u = u - (u * dx).sum(-1, keepdim=True) / (dx * dx).sum(-1, keepdim=True) * dx
    assert_close((J[rows] @ u[:, :, None]), (J0[rows] @ u[:, :, None]), SECANT, SECANT, "J on the complement of dx")


def test_logit_step_scale_is_a_trust_region_for_fisher_steps():
    from frmargin.paths import step_control as cv

    theta = torch.tensor([0.05, 0.5, 0.9, 0.5, 0.5, 3.0, 1e10, 3.0, 3.0], dtype=torch.float64)
    fast, medium, slow = cv.FAST_CORRECTIONS, cv.FAST_CORRECTIONS + 1, cv.SLOW_CORRECTIONS + 1
    corr = torch.tensor([1, 1, 3, medium, slow, 1, fast, medium, slow])
    got = cv.logit_step_scale(theta, corr)
    # a piecewise-linear network misses by ~theta at every step size: the corrector's effort
    # decides; a large miss shrinks only a step the corrector did not manage quickly (a fast
    # one's miss, even 1e10 over a vanishing predicted change, never ratchets the step down)
    by_theta = max(cv.THETA_TARGET / 3.0, 0.3)
    want = torch.tensor(
        [cv.GROW, cv.GROW, cv.GROW, 1.0, cv.SLOW_SHRINK, cv.GROW, cv.GROW, by_theta, min(by_theta, cv.SLOW_SHRINK)],
        dtype=torch.float64,
    )
    assert_close(got, want, 1e-12, 0, "logit step factors")
    # Euclidean steps (no corrector) aim the miss at THETA_TARGET
    eu = cv.logit_step_scale(theta, None)
    assert_close(eu, (cv.THETA_TARGET / theta).clamp(0.3, 2.0), 1e-12, 0, "Euclidean factors")


def test_fisher_steps_aim_on_the_start_line():
    """After an accepted step the next step's target keeps every class but top and target at
    its start value, although the accepted point drifted (a ReLU network, float32)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.ReLU(), torch.nn.Linear(24, 5)).eval()
    with torch.no_grad():
        model[2].weight *= 8  # confident predictions: the paths need several steps
    x = torch.randn(2, 12)
    y = model(x).argmax(-1)
    tr = ChunkTracer(model, x, y, (y + 1) % 5, resolve_options(accuracy={"eta": 0.05, "logit_step": 0.5}))
    p0 = tr.net.probs(tr.state.z, torch.arange(2))
    for step in tr.stepper.propose(torch.arange(2)):
        tr.accept(step)
    st = tr.state
    live = st.active.nonzero()[:, 0]
    assert live.numel() > 0
    stepper = tr.stepper
    s = stepper.start(live)
    assert s is not None
    aim = stepper.attempt.aim(s, st.fr_step[s.idx], st.logit_step[s.idx], False)
    p_target = aim[0].exp()
    others = torch.ones_like(p_target, dtype=torch.bool)
    others[torch.arange(len(s.idx)), st.source[s.idx]] = False
    others[torch.arange(len(s.idx)), st.target[s.idx]] = False
    drift = (s.p - p0[s.idx])[others].abs().max()
    assert drift > 1e-8, "the accepted point did not drift: the test checks nothing"
    err = (p_target - p0[s.idx])[others].abs().max()
    assert err < 1e-12, f"target off the start line by {float(err):.3g} (the point drifted {float(drift):.3g})"


@needs_mirror
def test_long_steps_do_not_jump_onto_a_negligible_class():
    """ResNet-20, official test images whose targets start at p ~ 1e-11: a long step on which a
    third class jumps from p ~ 1e-8 to ~0.4 looked converged in the metric of the step's start
    and made a false shield (first hit bird, FR lengths 1.74-1.96 where the flow's is pi/2).
    Every accepted step now lands near its target, measured: the paths follow the flow."""
    import frmargin
    from frmargin.geometry import predicted_path
    from frmargin.paths import trace_paths

    model = frmargin.load_model("resnet20")
    data = frmargin.load_dataset("cifar10")
    cases = [(2113, 0, 1), (2113, 0, 9), (445, 7, 1)]
    x = torch.stack([data.images[i] for i, _, _ in cases])
    s, t = torch.tensor([c[1] for c in cases]), torch.tensor([c[2] for c in cases])
    with torch.no_grad():
        p = torch.softmax(model(x).double(), -1)
    assert (p.argmax(-1) == s).all() and (p[torch.arange(3), t] < 1e-9).all()
    res = trace_paths(model, x, s, t)
    length, hit = predicted_path(p, s, t)
    assert res.status == ["ok"] * 3 and torch.equal(hit, t)
    assert torch.equal(res.first_hit, t), res.first_hit
    assert_close(res.fr_length, length, 2e-3, 0, "FR length of the flow")


@needs_mirror
def test_a_path_that_needed_the_fallback_stops_pulling_back_its_drift(monkeypatch):
    """ResNet-20 (b), official image 7 (frog, p 1 - 1e-6) toward class 9 (p 5e-8): one of its
    steps needs the fallback round. Before the fix, on cnn-a-adv2, after such a step the
    anchored round failed on every later step (a drift the network cannot pull back): 191 of
    200 steps came from the fallback round, 397 Jacobians, the path ended at the budget at
    FR 1.12. A path that fell back once stops aiming at the start line: every later attempt
    aims off it (9 Jacobians; aimed at the start line again, 15), and the path ends at the
    closed form's first hit and length.

    (The earlier subject, cnn-a-adv2 image 1 toward class 5, was chaotic: ``ok`` on one CPU,
    ``budget`` on another with the same torch; with the Levenberg-Marquardt corrector it no
    longer needs the fallback round. This one ends alike alone and among 72 paths, at one and
    two threads.)"""
    import frmargin
    from frmargin.geometry import predicted_path
    from frmargin.paths import trace_paths

    try:
        model = frmargin.load_model("resnet20-b", progress=False)
    except Exception:
        pytest.skip("resnet20-b not in the mirror")
    data = frmargin.load_dataset("cifar10", progress=False)
    x, s, t = data.images[7:8], torch.tensor([6]), torch.tensor([9])
    with torch.no_grad():
        p = torch.softmax(model(x).double(), -1)
    assert int(p.argmax()) == 6 and float(p[0, 9]) < 1e-6
    log: list[tuple[bool, bool, bool]] = []  # per attempt: fallback round, aimed at the start line, accepted
    attempt = PredictorCorrector.__call__

    def logged(self, start, h, hz, retry):
        a = attempt(self, start, h, hz, retry)
        log.append((retry, bool(self.lines.anchored[0]), bool(a.good[0])))
        return a

    monkeypatch.setattr(PredictorCorrector, "__call__", logged)
    res = trace_paths(model, x, s, t)
    fell_back = [i for i, (fb, _, good) in enumerate(log) if fb and good]
    assert fell_back, "no step of this path needed the fallback round: the test lost its subject"
    later = log[fell_back[0] + 1 :]
    assert later and not any(anchored for _, anchored, _ in later), (
        "a path that fell back aimed at the start line again"
    )
    assert float(res.jacobian_evals[0]) < 12
    length, hit = predicted_path(p, s, t)
    assert res.status == ["ok"]
    assert torch.equal(res.first_hit, hit)
    assert_close(res.fr_length, length, 2e-3, 0, "FR length of the flow")


@needs_mirror
def test_levenberg_marquardt_corrections_carry_stiff_first_steps(monkeypatch):
    """CNN-A (PGD-trained, eps 4/255), official images 1 (8 -> 5) and 10 (0 -> 5): K = J J^T is
    so ill-conditioned there (eigenvalues 7e-4 to 7e2) that the minimum-norm correction moves x
    ~2 in L2 for a step of 0.008 FR and misses its target by 15x the step; every correction
    diverged at every step size and both paths stalled at their first step. Damped corrections
    from the best point (LM_START, then LM_LEVELS levels growing by LM_GROW, times the largest
    eigenvalue) stay where the network is near-linear: both paths end at the closed form's
    first hit and length.

    The tolerance on the length is 5e-3: these paths creep (steps of ~0.005 FR, each landing
    within the absolute tolerance ``atol`` = 1e-3 of its target), and the sideways misses add
    length."""
    import frmargin
    from frmargin.geometry import predicted_path
    from frmargin.paths import correction, trace_paths

    try:
        model = frmargin.load_model("cnn-a-adv4", progress=False)
    except Exception:
        pytest.skip("cnn-a-adv4 not in the mirror")
    data = frmargin.load_dataset("cifar10", progress=False)
    x = data.images[[1, 10]]
    s, t = torch.tensor([8, 0]), torch.tensor([5, 5])
    with torch.no_grad():
        p = torch.softmax(model(x).double(), -1)
    assert torch.equal(p.argmax(-1), s)
    length, hit = predicted_path(p, s, t)
    for i in range(2):  # one path at a time: where a creeping path ends depends on its batch's rounding
        res = trace_paths(model, x[i : i + 1], s[i : i + 1], t[i : i + 1], continuation="none")
        assert res.status == ["ok"], (i, res.status)
        assert int(res.first_hit[0]) == int(hit[i])
        assert_close(res.fr_length, length[i : i + 1], 5e-3, 0, f"FR length of path {i}")
    # the subject: without the damped corrections both paths stall at their first step
    monkeypatch.setattr(correction, "LM_LEVELS", 0)
    res = trace_paths(model, x, s, t, continuation="none")
    assert res.status == ["stalled", "stalled"], res.status


@needs_mirror
def test_a_first_step_that_stalls_gets_no_fallback_round(monkeypatch):
    """A path's first step starts on its line, so the fallback round would retry the first
    round's line from its sizes: cnn-a-adv4, official image 1 toward class 5, without the
    damped corrections, stalls at its first step after ``max_attempts`` attempts, not twice as
    many (it had spent 6 more attempts of 8 forward passes repeating the first round's misses)."""
    import frmargin
    from frmargin.paths import ACCURACY_DEFAULTS, correction, trace_paths

    try:
        model = frmargin.load_model("cnn-a-adv4", progress=False)
    except Exception:
        pytest.skip("cnn-a-adv4 not in the mirror")
    data = frmargin.load_dataset("cifar10", progress=False)
    monkeypatch.setattr(correction, "LM_LEVELS", 0)
    rounds: list[bool] = []  # per attempt: in the fallback round
    attempt = PredictorCorrector.__call__

    def logged(self, start, h, hz, retry):
        rounds.append(retry)
        return attempt(self, start, h, hz, retry)

    monkeypatch.setattr(PredictorCorrector, "__call__", logged)
    res = trace_paths(model, data.images[1:2], torch.tensor([8]), torch.tensor([5]), continuation="none")
    assert res.status == ["stalled"] and int(res.steps[0]) == 0, (res.status, res.steps)
    assert len(rounds) == ACCURACY_DEFAULTS["max_attempts"] and not any(rounds), rounds


@needs_mirror
def test_tiny_margins_between_near_tied_classes_end_at_the_closed_form():
    """cnn-a-adv4, official image 0 (cat at p 0.211, the next two at 0.209 and 0.203): its 9 paths
    are 0.003-0.035 FR long. The length ends where the last segment meets the boundary, so the
    last step's landing miss is an error of the margin itself; with the last step's floor at the
    full ``atol`` the relative errors were 1-20% (median 3%), at FINAL_ATOL x atol they are
    under 2% (median 0.2%)."""
    import frmargin
    from frmargin.geometry import predicted_path
    from frmargin.paths import trace_paths

    try:
        model = frmargin.load_model("cnn-a-adv4", progress=False)
    except Exception:
        pytest.skip("cnn-a-adv4 not in the mirror")
    data = frmargin.load_dataset("cifar10", progress=False)
    x = data.images[0:1].repeat(9, 1, 1, 1)
    s, t = torch.full((9,), 3), torch.tensor([c for c in range(10) if c != 3])
    with torch.no_grad():
        p = torch.softmax(model(x).double(), -1)
    length, hit = predicted_path(p, s, t)
    assert float(length.max()) < 0.05, "the margins are not tiny: the test lost its subject"
    res = trace_paths(model, x, s, t)
    assert res.status == ["ok"] * 9 and torch.equal(res.first_hit, hit)
    err = ((res.fr_length - length) / length).abs()
    assert err.max() < 0.03 and err.median() < 0.005, err
