"""The loop: budget, booking proposed steps, length chaining and class changes, driven by
stand-in steppers registered in ``STEPPERS`` on a binary logistic model, where the length to
the boundary is 2 |asin sqrt(p_y) - pi/4| (the simplex is one straight segment)."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import assert_close, make_logistic
from frmargin.geometry import fisher_rao_distance
from frmargin.paths import STATUSES, resolve_options, trace_paths
from frmargin.paths.step_types import Step, Stepper
from frmargin.paths.steppers import STEPPERS
from frmargin.paths.tracer import ChunkTracer

ARCCOS = 1e-6  # a sum of chords from arccos near 1
ROOT = 2e-3


class Nudge(Stepper):
    """Moves every path by ``scale`` times the unit direction toward the other class."""

    scale = 1.0
    planned = False

    def propose(self, idx):
        st = self.net.state
        w = self.net.model.lin.weight[0].detach()
        sign = torch.where(st.source[idx] == 1, -1.0, 1.0).to(w.dtype)
        x_new = st.x[idx] + self.scale * sign[:, None] * w / w.norm()
        z_new = self.net.forward(idx, x_new)
        planned = torch.full_like(idx, self.planned, dtype=torch.bool)
        yield Step(idx, st.x[idx], st.z[idx], x_new, z_new, None, planned)


def case(n=3):
    model = make_logistic(5, seed=2, scale=2.0)
    x = torch.randn(n, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        y = model(x).argmax(-1)
    return model, x, y, 1 - y


def closed_form(model, x, y):
    with torch.no_grad():
        p = torch.softmax(model(x), -1).gather(1, y[:, None])[:, 0]
    return 2 * (torch.asin(p.sqrt()) - math.pi / 4).abs()


def with_stepper(monkeypatch, cls):
    monkeypatch.setitem(STEPPERS, "converged", cls)


def test_budget_stops_and_keeps_the_chained_length(monkeypatch):
    class Tiny(Nudge):
        scale = 1e-3

        def length(self, pa, pb):
            return fisher_rao_distance(pa, pb)

    with_stepper(monkeypatch, Tiny)
    model, x, y, k = case()
    tr = ChunkTracer(model, x, y, k, resolve_options(max_steps=4, record=True))
    st = tr.run()
    assert st.status == ["budget"] * 3 and (st.steps == 4).all()
    assert st.trajectory is not None and all(len(t) == 5 for t in st.trajectory)
    chords = torch.zeros(3, dtype=torch.float64)
    for i, points in enumerate(st.trajectory):
        p = torch.softmax(model(torch.stack(points)).detach(), -1)
        chords[i] = fisher_rao_distance(p[:-1], p[1:]).sum()
    assert_close(st.length, chords, 1e-12, 1e-15, "length chained over the booked steps")
    assert st.length_first.isnan().all() and (st.first_hit == -1).all() and not st.success.any()


@pytest.mark.parametrize("planned", [False, True], ids=["located", "planned"])
def test_length_ends_at_the_boundary_inside_a_long_step(monkeypatch, planned):
    class Jump(Nudge):
        scale = 50.0

    Jump.planned = planned
    with_stepper(monkeypatch, Jump)
    model, x, y, k = case()
    res = trace_paths(model, x, y, k)
    assert res.status == ["ok"] * 3 and (res.steps == 1).all() and torch.equal(res.first_hit, k)
    assert_close(res.fr_length, closed_form(model, x, y), ARCCOS, 0, "length to the boundary")
    if planned:
        assert (res.forward_evals == 2).all(), "a planned crossing needs no regula falsi"
        assert_close(res.l2, torch.full((3,), 50.0, dtype=torch.float64), 1e-12, 0, "x_end is the step's end")
    else:
        assert (res.forward_evals > 2).all(), "an unplanned crossing is located by regula falsi"
        with torch.no_grad():
            p_end = torch.softmax(model(res.x_end), -1)
        past = fisher_rao_distance(p_end, torch.full_like(p_end, 0.5))
        # the changed side of the last bracket: within root_tol of the step (<= pi) past the tie
        # (or exactly on it: regula falsi can land on the tie, as it does on some CPUs)
        assert (past >= 0).all() and (past <= ROOT * math.pi).all(), past


def test_every_path_comes_back_with_a_final_status(monkeypatch):
    class Stuck(Nudge):
        def propose(self, idx):
            self.net.state.finish(idx[:1], "stalled")
            yield from super().propose(idx[1:])

    Stuck.scale = 50.0
    with_stepper(monkeypatch, Stuck)
    model, x, y, _k = case()
    y_bad = y.clone()
    y_bad[2] = 1 - y[2]
    res = trace_paths(model, x, y_bad, 1 - y_bad)
    assert res.status == ["stalled", "ok", "misclassified"]
    assert set(res.status) <= set(STATUSES)
    assert res.success.tolist() == [False, True, False]
