"""The ``l2`` accuracy preset: its L2 at the class change against the exact flow of ReLU networks
(``frmargin.reference``), its error estimate, how it composes from the accuracy options, and
its checks.

Oracles: the exact flow (L2 exact to rounding) on two families (the test suite's trained digits
CNN, and a random CNN with batch norm, max-pool, leaky ReLU and a residual addition); a linear
softmax model, where every step size traces the exact path, so the error estimate is zero.
"""

from __future__ import annotations

import pytest
import torch

from conftest import all_pairs, make_linear
from frmargin import trace_paths
from frmargin.errors import FrmarginError
from frmargin.options import DEFAULT_MAX_STEPS, L2_PRESET_SCALE, TraceOptions
from frmargin.paths import l2_preset
from frmargin.paths.options import ResolvedOptions
from frmargin.reference import exact_flow
from frmargin.runs.config import RunConfig
from test_reference import relu_cnn

PRESET_MEDIAN = 0.03  # the preset's |relative L2 error| against the exact flow: median ...
PRESET_P90 = 0.10  # ... and p90 (measured: digits CNN 0.15% / 0.9%, random CNN 2.0% / 3.7%;
# the default's: 1.3% / 7.6% and 14% / 56%)
ESTIMATE_FACTOR = 4  # the median estimate and the median true error agree within this factor


def digits_case(n: int = 4):
    import digits

    model = digits.digit_cnn(0)
    x, y = digits.digits(4 * n + 8, seed=123)
    good = (model(x).argmax(-1) == y).nonzero()[:, 0][:n]
    X, s, t = all_pairs(model, x[good])
    return model, X, s, t


def cnn_case():
    model = relu_cnn()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    return (model, *all_pairs(model, x))


@pytest.fixture(scope="module", params=["digits", "random-cnn"])
def case(request):
    model, X, s, t = digits_case() if request.param == "digits" else cnn_case()
    ref = exact_flow(model, X, s, t, max_regions=3000)
    ok = torch.tensor([st == "ok" for st in ref.status])
    assert ok.sum() >= 8, ref.status
    return request.param, model, X, s, t, ref, ok


def relative_error(l2: torch.Tensor, ref, ok: torch.Tensor) -> torch.Tensor:
    return ((l2.double() - ref.l2) / ref.l2)[ok].abs()


def test_preset_l2_is_accurate_against_the_exact_flow(case):
    name, model, X, s, t, ref, ok = case
    default = trace_paths(model, X, s, t)
    preset = trace_paths(model, X, s, t, preset="l2")
    err, err_default = relative_error(preset.l2, ref, ok), relative_error(default.l2, ref, ok)
    assert err.median() <= PRESET_MEDIAN and err.quantile(0.9) <= PRESET_P90, (name, err.median(), err.quantile(0.9))
    assert err.median() < err_default.median(), (name, err.median(), err_default.median())
    # ... with the same FR lengths and first hits (the simplex side is accurate at every step size)
    assert torch.equal(preset.first_hit[ok], ref.first_hit[ok])
    fr = ((preset.fr_length - ref.fr_length).abs() / ref.fr_length)[ok]
    assert fr.median() < 1e-3 and fr.max() < 1e-2, fr
    # the estimate: finite on the paths both traces end ok, of the true error's size
    est = preset.l2_error[ok]
    assert torch.isfinite(est).all() and (est >= 0).all(), est
    ratio = est.median() / err.median().clamp_min(1e-12)
    assert 1 / ESTIMATE_FACTOR <= ratio <= ESTIMATE_FACTOR, (name, est.median(), err.median())
    assert default.l2_error is None


def test_preset_is_the_finer_steps_plus_a_coarser_trace(monkeypatch):
    """Without refinement the preset traces with eta and logit_step scaled by L2_PRESET_SCALE
    (bit for bit the same as giving them), its estimate is the relative L2 difference from the
    trace at twice the steps, and its cost counters add both traces'."""
    monkeypatch.setattr(l2_preset, "L2_TARGET", float("inf"))
    model, X, s, t = digits_case(2)
    preset = trace_paths(model, X, s, t, preset="l2", eta=0.4)
    scale, steps = L2_PRESET_SCALE, DEFAULT_MAX_STEPS["converged"] * round(1 / L2_PRESET_SCALE)
    same = {"overshoot": 0.01 * scale}
    fine = trace_paths(model, X, s, t, eta=0.4 * scale, logit_step=4.0 * scale, max_steps=steps, **same)
    coarse = trace_paths(model, X, s, t, eta=0.8 * scale, logit_step=8.0 * scale, max_steps=steps // 2, **same)
    assert torch.equal(preset.l2, fine.l2) and torch.equal(preset.x_end, fine.x_end)
    assert torch.equal(preset.jacobian_evals, fine.jacobian_evals + coarse.jacobian_evals)
    assert torch.equal(preset.forward_evals, fine.forward_evals + coarse.forward_evals)
    expected = (fine.l2 - coarse.l2).abs() / fine.l2
    both = torch.tensor([a == b == "ok" for a, b in zip(fine.status, coarse.status)])
    both &= fine.first_hit == coarse.first_hit
    torch.testing.assert_close(preset.l2_error[both], expected[both].double(), rtol=1e-12, atol=0)
    assert torch.isnan(preset.l2_error[~both]).all()
    assert "l2_error" in preset.to_frame() and "l2_error" not in fine.to_frame()


def test_refinement_halves_the_steps_of_the_paths_that_need_it(monkeypatch):
    """Paths whose estimate exceeds L2_TARGET are traced again at half the steps, down to
    L2_FINEST: with a target of 0 every ok path ends at the finest steps, compared with the trace
    before it, and pays for the three traces; a path already within the target is not retraced."""
    monkeypatch.setattr(l2_preset, "L2_FINEST", L2_PRESET_SCALE / 2)
    model, X, s, t = digits_case(2)
    kept, target = trace_paths(model, X, s, t, preset="l2"), l2_preset.L2_TARGET
    monkeypatch.setattr(l2_preset, "L2_TARGET", 0.0)
    refined = trace_paths(model, X, s, t, preset="l2")
    steps = DEFAULT_MAX_STEPS["converged"] * round(1 / L2_PRESET_SCALE)
    at = {
        k: trace_paths(
            model,
            X,
            s,
            t,
            eta=0.6 * k,
            logit_step=4.0 * k,
            max_steps=round(steps * L2_PRESET_SCALE / k),
            overshoot=0.01 * L2_PRESET_SCALE,
        )
        for k in (L2_PRESET_SCALE / 2, L2_PRESET_SCALE, 2 * L2_PRESET_SCALE)
    }
    ok = torch.tensor([st == "ok" for st in at[L2_PRESET_SCALE].status])
    assert ok.sum() >= 4
    finest, fine = at[L2_PRESET_SCALE / 2], at[L2_PRESET_SCALE]
    torch.testing.assert_close(refined.l2[ok], finest.l2[ok], rtol=1e-6, atol=0)
    torch.testing.assert_close(
        refined.l2_error[ok], ((finest.l2 - fine.l2).abs() / finest.l2)[ok].double(), rtol=1e-5, atol=1e-9
    )
    cost = sum(r.jacobian_evals for r in at.values())
    torch.testing.assert_close(refined.jacobian_evals[ok], cost[ok], rtol=1e-6, atol=0)
    # with the real target, the paths within it keep the preset's first traces
    within = ok & (kept.l2_error <= target)
    assert within.any() and torch.equal(kept.l2[within], fine.l2[within])


def test_linear_model_estimate_is_tiny():
    """With a constant Jacobian every step size traces the exact path: the estimate measures only
    where the last step lands past the tie (within the preset's overshoot)."""
    model = make_linear(12, 5, seed=4, scale=3.0)
    x = torch.rand(3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X, s, t = all_pairs(model, x)
    res = trace_paths(model, X, s, t, preset="l2")
    assert res.status == ["ok"] * len(res) and res.l2_error.max() < 1e-3, res.l2_error


def test_resolved_options_of_the_preset():
    r = ResolvedOptions.of(TraceOptions(preset="l2", logit_step=2.0))
    assert (r.eta, r.logit_step, r.max_steps) == (0.6 * L2_PRESET_SCALE, 2.0 * L2_PRESET_SCALE, 1600)
    c = r.coarser()
    assert (c.eta, c.logit_step, c.max_steps, c.preset) == (2 * r.eta, 2 * r.logit_step, 800, "default")
    assert ResolvedOptions.of(TraceOptions(preset="l2", max_steps=50)).max_steps == 50
    assert ResolvedOptions.of(TraceOptions()).eta == 0.6


def test_preset_enters_a_runs_identity_only_when_set():
    default, preset = RunConfig(), RunConfig(trace=TraceOptions(preset="l2"))
    assert "preset" not in default.identity()["accuracy"]
    assert preset.identity()["accuracy"] == {"preset": "l2"}
    assert preset.fingerprint() != default.fingerprint()


@pytest.mark.parametrize(
    "kwargs, named",
    [({"preset": "fast"}, "preset"), ({"preset": "l2", "method": "paper"}, "preset")],
)
def test_bad_presets_are_named(kwargs, named):
    with pytest.raises(FrmarginError, match=named):
        TraceOptions(**kwargs)
