"""The exact flow of piecewise-linear networks (``frmargin.reference``) against closed forms, the
tracer at very fine steps, its own tolerances, and the networks it must refuse.

Oracles: on a linear softmax model z = W x + b the flow is one region and its path has the
closed form x(s) = x0 + (U^T W)^+ U^T (log p(s) - log p0) (U: the centred basis), p(s) on the
simplex line; on every network its FR length is the line's closed form (``predicted_path``),
which holds only if x_end really is on the tie: that is checked by evaluating the model there.
Two families of ReLU networks (an MLP; a CNN with batch norm, max-pool and leaky ReLU) are
checked against the converged tracer at steps 1,000 times finer than its defaults.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import all_pairs, assert_close, make_inputs, make_linear, make_logistic, predictions
from frmargin import trace_paths
from frmargin.errors import FrmarginError
from frmargin.geometry import predicted_path
from frmargin.paths import simplex_line
from frmargin.reference import EXACT_STATUSES, NotPiecewiseLinear, crossings, exact_flow, regions, roots, sliding
from frmargin.reference.local import centred_basis

CLOSED = 1e-8  # FR length and path against the closed forms
TIE = 1e-9  # |p_y - p_hit| of the network at x_end
LINE = 1e-10  # the reference's self-check: the network's p against the line's
BATCH = 1e-10  # one path alone vs in a batch (relative L2)
HALVED = 1e-8  # L2 with one tolerance halved (relative)
FINE = dict(eta=5e-4, logit_step=1e-3, rtol=1e-4, max_steps=100_000)  # the tracer, ~1000x finer
FINE_L2 = 1e-2  # tracer at FINE vs the reference: median relative L2
FINE_L2_WORST = 3e-2  # ... and the worst path (a ReLU MLP path sliding along 22 boundaries: 1.6%)
FINE_END = 2e-2  # ... relative distance of the end points, median


def relu_mlp(D: int = 10, C: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(D, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, C)]
    return nn.Sequential(*layers).double().eval()


class ReluCNN(nn.Module):
    """1x8x8 -> conv, eval-mode batch norm, ReLU, 2x2 max-pool, conv, leaky ReLU (functional),
    a residual addition, linear."""

    def __init__(self, C: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, C)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.2, 0.2)
            self.bn.running_var.uniform_(0.5, 1.5)
            self.head.weight.mul_(3.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(F.relu(self.bn(self.conv1(x))))
        h = h + F.leaky_relu(self.conv2(h), 0.1)
        return self.head(h.flatten(1))


def relu_cnn(C: int = 4, seed: int = 0) -> nn.Module:
    return ReluCNN(C, seed).double().eval()


def paths(model: nn.Module, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first n (input, target) pairs of ``all_pairs``, spread over the inputs."""
    X, s, t = all_pairs(model, x)
    pick = torch.linspace(0, len(s) - 1, n).round().long()
    return X[pick], s[pick], t[pick]


@pytest.fixture(scope="module")
def mlp_case():
    model = relu_mlp()
    X, s, t = paths(model, torch.rand(4, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), 6)
    return model, X, s, t, exact_flow(model, X, s, t, valid=None)


@pytest.fixture(scope="module")
def cnn_case():
    model = relu_cnn()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    X, s, t = paths(model, x, 5)
    return model, X, s, t, exact_flow(model, X, s, t)


# --------------------------------------------------------------------------- closed forms


def linear_path(model: nn.Module, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor):
    """(x_end, hit, length) of the exact flow of a linear softmax model, in closed form."""
    W = model[0].weight.detach().to(torch.float64)
    p, _ = predictions(model, x)
    length, hit = predicted_path(p, source, target)
    rows = torch.arange(len(source))
    py, pk, ph = p[rows, source], p[rows, target], p[rows, hit]
    # the tie: p_y = p_k = (p_y + p_k) / 2 reached directly, else p_y = p_c (the shield)
    s_end = torch.where(hit == target, 0.5 * (py - pk), py - ph)
    q = p.clone()
    q[rows, source] -= s_end
    q[rows, target] += s_end
    U = centred_basis(p.shape[1])
    step = torch.linalg.pinv(U.T @ W) @ (U.T @ (q.log() - p.log()).T)
    return x + step.T, hit, length


def test_linear_model_is_the_closed_form():
    model = make_linear(12, 5, seed=4, scale=3.0)
    X, s, t = all_pairs(model, make_inputs((12,), 3, seed=4))
    res = exact_flow(model, X, s, t, valid=None)
    x_end, hit, length = linear_path(model, X, s, t)
    assert res.status == ["ok"] * len(s)
    assert (res.regions == 1).all(), "a linear model has one region"
    assert torch.equal(res.first_hit, hit)
    assert (hit != t).any() and (hit == t).any(), "the case should hold direct and shielded paths"
    assert_close(res.fr_length, length, CLOSED, 0, "FR length vs the closed form")
    assert_close(res.x_end, x_end, CLOSED, CLOSED, "end point vs the closed form")
    assert_close(res.l2, (x_end - X).norm(dim=-1), CLOSED, 0, "L2 vs the closed form")


def test_linear_model_path_is_the_closed_form_everywhere():
    """Every point of the exact path (recorded profile end) of a linear model, and the path of
    a ReLU network whose units never switch (biases far above its inputs' reach)."""
    model = make_linear(12, 5, seed=6, scale=3.0)
    relu = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5)).double().eval()
    with torch.no_grad():
        relu[0].bias.fill_(1e3)
        W = model[0].weight @ torch.linalg.pinv(relu[0].weight)
        relu[2].weight.copy_(W)
        relu[2].bias.copy_(model[0].bias - W @ relu[0].bias)
    x = make_inputs((12,), 2, seed=6)
    X, s, t = all_pairs(model, x)
    assert_close(relu(X), model(X), 1e-9, 1e-9, "the ReLU network is the linear model")
    x_end, hit, length = linear_path(model, X, s, t)
    for net in (model, relu):
        res = exact_flow(net, X, s, t, valid=None, record=True)
        assert (res.regions == 1).all()
        assert torch.equal(res.first_hit, hit)
        assert_close(res.x_end, x_end, CLOSED, CLOSED, f"{type(net[-1]).__name__} network's end point")
        assert res.profile is not None and all(pr.shape == (2, 2) for pr in res.profile)
        assert_close(
            torch.stack([pr[-1] for pr in res.profile]), torch.stack([length, res.l2], 1), CLOSED, 0, "profile"
        )


def test_binary_margin_is_the_closed_form():
    model = make_logistic(8, seed=3, scale=3.0)
    x = make_inputs((8,), 6, seed=3)
    p, y = predictions(model, x)
    res = exact_flow(model, x, y, 1 - y, valid=None)
    expected = 2 * torch.asin(p.max(-1).values.sqrt()) - math.pi / 2
    assert_close(res.fr_length, expected, CLOSED, 0, "binary margin")


@pytest.mark.parametrize("case", ["mlp_case", "cnn_case"])
def test_relu_networks_end_on_the_closed_form_tie(case, request):
    model, X, s, t, res = request.getfixturevalue(case)
    assert res.status == ["ok"] * len(s), res.status
    assert (res.regions > 4).sum() >= len(s) // 2, f"{case}: the paths should cross regions ({res.regions.tolist()})"
    length, hit = predicted_path(predictions(model, X)[0], s, t)
    assert_close(res.fr_length, length, CLOSED, 0, f"{case}: FR length vs the closed form")
    assert torch.equal(res.first_hit, hit)
    with torch.no_grad():
        p = torch.softmax(model(res.x_end), -1)
    rows = torch.arange(len(s))
    assert (p[rows, s] - p[rows, hit]).abs().max() < TIE, f"{case}: x_end is not on the tie (by the model)"
    assert res.line_error.max() < LINE, f"{case}: the network left the simplex line"


# --------------------------------------------------------------------------- the tracer


@pytest.mark.parametrize("case", ["mlp_case", pytest.param("cnn_case", marks=pytest.mark.slow)])
def test_fine_traces_converge_to_the_reference(case, request, monkeypatch):
    """The tracer at very fine steps follows the exact path: L2 and end point close, the error
    smaller than at 4x coarser steps. The tracer's end point lies past the tie by at least
    ``MIN_BEYOND`` in FR length (7% of the L2 of a path of FR length 0.0014): made negligible here."""
    monkeypatch.setattr(simplex_line, "MIN_BEYOND", 1e-9)
    model, X, s, t, res = request.getfixturevalue(case)
    fine = trace_paths(model, X, s, t, **FINE)
    assert fine.status == ["ok"] * len(s), fine.status
    rel = ((fine.l2 - res.l2) / res.l2).abs()
    assert rel.median() < FINE_L2 and rel.max() < FINE_L2_WORST, f"{case}: L2 rel. errors {rel.tolist()}"
    end = (fine.x_end - res.x_end).flatten(1).norm(dim=-1) / res.l2
    assert end.median() < FINE_END, f"{case}: end points differ by {end.tolist()} (relative to L2)"
    assert torch.equal(fine.first_hit, res.first_hit)
    coarse = trace_paths(model, X, s, t, **(FINE | dict(eta=2e-3, logit_step=4e-3)))
    rel_coarse = ((coarse.l2 - res.l2) / res.l2).abs()
    assert rel.mean() < rel_coarse.mean(), f"{case}: no convergence {rel.mean():.3g} vs {rel_coarse.mean():.3g}"


def test_batch_invariance(cnn_case):
    model, X, s, t, res = cnn_case
    alone = exact_flow(model, X[2:3], s[2:3], t[2:3])
    assert_close(alone.l2, res.l2[2:3], BATCH, 0, "one path alone vs in a batch")
    assert alone.regions.tolist() == res.regions[2:3].tolist()


@pytest.mark.parametrize("case", ["mlp_case", "cnn_case"])
def test_held_gradients_follow_the_crossings(case, request):
    """The held slacks' gradients, kept between regions by rank-one updates at each crossing,
    equal the ones evaluated afresh wherever the walk uses them (batch of two: rows differ)."""
    from frmargin.reference.linearize import PiecewiseLinear

    model, X, s, t, res = request.getfixturevalue(case)
    walk = regions.RegionWalk(PiecewiseLinear(model, X[:1]), X[:2], s[:2], t[:2], None, 10_000, False)
    kept = walk._held
    reused = 0

    def checked(i, r, loc):
        nonlocal reused
        reused += sum(j in walk.held_grads[i] for j in walk.held[i])
        gx, go = kept(i, r, loc)
        fx, fo = loc.held(r, walk.held[i])
        assert_close(gx, fx, 1e-10, 1e-12, f"held slacks {walk.held[i]} of path {i}: gradients")
        assert_close(go, fo, 1e-10, 1e-12, f"held slacks {walk.held[i]} of path {i}: by the outputs")
        return gx, go

    walk._held = checked
    walk.run()
    assert walk.status == res.status[:2] and walk.regions.tolist() == res.regions[:2].tolist()
    assert reused > 20, reused


def test_float32_model_is_read_in_float64(mlp_case):
    _, X, s, t, res = mlp_case
    single = exact_flow(relu_mlp().float(), X.float(), s, t, valid=None)
    assert single.x_end.dtype == torch.float64
    # the float32 copy's weights and inputs are the float64 ones rounded: close, not equal
    assert_close(single.l2, res.l2, 1e-3, 0, "float32 model vs float64")


# --------------------------------------------------------------------------- its tolerances

TOLERANCES = [
    (regions, "ROUNDING"),
    (roots, "PRUNE_MARGIN"),
    (roots, "AT_ZERO"),
    (roots, "FLAT"),
    (crossings, "SIMULTANEOUS"),
    (sliding, "RATE_TOL"),
    (sliding, "MAX_CONDITION"),
    (sliding, "GRAM_CONDITION"),
]


@pytest.mark.parametrize("module, name", TOLERANCES, ids=[n for _, n in TOLERANCES])
def test_l2_is_stable_under_halving_a_tolerance(module, name, mlp_case, monkeypatch):
    model, X, s, t, res = mlp_case
    monkeypatch.setattr(module, name, getattr(module, name) / 2)
    for other in (regions, crossings):  # the constants imported by name
        if hasattr(other, name) and other is not module:
            monkeypatch.setattr(other, name, getattr(module, name))
    # the two paths with the most regions and slides (63 and 51 regions, 22 and 17 slides)
    halved = exact_flow(model, X[:2], s[:2], t[:2], valid=None)
    assert halved.status == res.status[:2]
    assert_close(halved.l2, res.l2[:2], HALVED, 0, f"L2 with {name} halved")
    assert_close(halved.fr_length, res.fr_length[:2], HALVED, 0, f"FR length with {name} halved")


# --------------------------------------------------------------------------- what it refuses


class Functional(nn.Module):
    def __init__(self, act) -> None:
        super().__init__()
        self.lin, self.act, self.out = nn.Linear(6, 8), act, nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.lin(x)))


@pytest.mark.parametrize(
    "model, named",
    [
        (nn.Sequential(nn.Linear(6, 8), nn.SiLU(), nn.Linear(8, 3)), "SiLU"),
        (nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3)), "GELU"),
        (nn.Sequential(nn.Linear(6, 8), nn.Softplus(), nn.Linear(8, 3)), "Softplus"),
        (Functional(F.silu), "SiLU"),
        (Functional(F.gelu), "GELU"),
        (Functional(torch.tanh), "tanh"),
        (Functional(F.softplus), "softplus"),
    ],
    ids=["SiLU", "GELU", "Softplus", "F.silu", "F.gelu", "torch.tanh", "F.softplus"],
)
def test_smooth_networks_are_refused_with_one_clear_error(model, named):
    x = torch.rand(2, 6)
    y = model(x).argmax(-1)
    with pytest.raises(NotPiecewiseLinear) as err:
        exact_flow(model, x, y, (y + 1) % 3)
    text = str(err.value)
    assert named in text, f"the message should name {named}: {text}"
    assert "treats ReLU" in text, f"the message should say what is treated: {text}"
    assert isinstance(err.value, FrmarginError)


def test_batch_norm_in_training_mode_is_refused():
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()
    with pytest.raises(NotPiecewiseLinear, match="training mode"):
        exact_flow(model, torch.rand(2, 6), torch.tensor([0, 0]), torch.tensor([1, 2]))


@pytest.mark.parametrize(
    "kwargs, named",
    [
        (dict(target=torch.tensor([0, 1])), "target"),
        (dict(source=torch.tensor([0])), "source"),
        (dict(max_regions=0), "max_regions"),
        (dict(valid=(1.0, 0.0)), "valid"),
    ],
)
def test_bad_arguments_are_named(kwargs, named):
    model = relu_mlp(6, 3)
    args = dict(
        model=model, x=torch.rand(2, 6, dtype=torch.float64), source=torch.tensor([0, 1]), target=torch.tensor([1, 2])
    )
    with pytest.raises(FrmarginError, match=named):
        exact_flow(**(args | kwargs))


def test_statuses_are_declared(mlp_case):
    model, X, s, t, _ = mlp_case
    wrong = (s + 1) % 4
    out = exact_flow(model, X[:2], wrong[:2], (wrong[:2] + 1) % 4, valid=None)
    assert set(out.status) <= set(EXACT_STATUSES)
    assert out.status == ["misclassified"] * 2
    budget = exact_flow(model, X[:1], s[:1], t[:1], valid=None, max_regions=2)
    assert budget.status == ["max_regions"] and budget.first_hit.tolist() == [-1]


# --------------------------------------------------------------------------- events at rounding


def test_tangent_slacks():
    """A slack at zero whose slope is zero (f = a A + b B with b = a p_k / p_y) is convex and
    never returns to zero where a < 0, concave and crosses at once where a > 0; a release whose
    rate is zero and rising happens at once."""
    py, pk, T = (torch.tensor([v], dtype=torch.float64) for v in (0.6, 0.2, 0.3))
    zero = torch.zeros(1, 1, dtype=torch.float64)
    for a, expected in ((-1.0, math.inf), (1.0, 0.0)):
        a_t = torch.full((1, 1), a, dtype=torch.float64)
        assert float(roots.first_roots(zero, a_t, a_t * pk / py, py, pk, T)) == expected
    assert sliding.release_time(-1.0, -1.0 * 0.2 / 0.6, 0.6, 0.2, 0.5) == 0.0
    assert sliding.release_time(1.0, 1.0 * 0.2 / 0.6, 0.6, 0.2, 0.5) == math.inf


def test_trained_digits_cnn_paths_end_ok():
    """A third family, trained: the test suite's digits CNN, whose path toward its third class
    touches a boundary tangentially (it held and released one unit forever before)."""
    import digits

    model = digits.digit_cnn(0)
    x, y = digits.digits(12, seed=123)
    good = model(x).argmax(-1) == y
    x, y = x[good][:1], y[good][:1]
    order = torch.softmax(model(x), -1).argsort(-1, descending=True)[0]
    X, s, t = x.expand(2, -1, -1, -1), y.expand(2), order[1:3]
    res = exact_flow(model, X, s, t, max_regions=500)
    assert res.status == ["ok", "ok"], res.status
    length, hit = predicted_path(predictions(model, X)[0], s, t)
    assert_close(res.fr_length, length, CLOSED, 0, "digits CNN: FR length vs the closed form")
    assert torch.equal(res.first_hit, hit)
    assert res.line_error.max() < LINE
