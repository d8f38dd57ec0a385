"""Events: the gap to the awaited class change, the tie on a simplex segment, regula falsi."""

from __future__ import annotations

import pytest
import torch

from conftest import make_linear
from frmargin.geometry import fisher_rao_distance
from frmargin.paths.events import event_gap, locate, tie
from frmargin.paths.state import Network, PathState

ROOT = 2e-3


def state_of(z, source, target, chasing=None, x=None):
    n = z.shape[0]
    st = PathState(torch.zeros(n, 2, dtype=torch.float64) if x is None else x, source, target, record=False)
    st.z = z
    if chasing is not None:
        st.chasing = chasing
    return st


def test_event_gap_changes_sign_at_the_awaited_event():
    z = torch.tensor([[2.0, 0.5, 1.0], [0.0, 1.0, 3.0], [1.0, 2.0, 0.5]], dtype=torch.float64)
    st = state_of(z, torch.tensor([0, 0, 1]), torch.tensor([1, 1, 2]))
    idx = torch.arange(3)
    assert event_gap(st, idx, z).tolist() == [1.0, -3.0, 1.0]
    st.chasing = torch.tensor([False, False, True])  # path 2 waits for its target (2) to lead
    assert event_gap(st, idx, z).tolist() == [1.0, -3.0, 1.5]


def test_tie_on_a_segment():
    pa = torch.tensor([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]], dtype=torch.float64)
    pb = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.4, 0.1]], dtype=torch.float64)
    st = state_of(torch.zeros(2, 3), torch.tensor([0, 0]), torch.tensor([1, 1]))
    t = tie(st, torch.arange(2), pa, pb)
    assert t[0].item() == pytest.approx(0.375, rel=1e-12)
    assert t[1].item() == 1.0, "no tie on the segment: clamped to its end"
    st.chasing[:] = True
    st.top = torch.tensor([1, 1])
    st.target = torch.tensor([2, 2])
    pb2 = torch.tensor([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], dtype=torch.float64)
    t2 = tie(st, torch.arange(2), pa, pb2)
    # class 2 (0.1 + 0.6 t) passes class 0 (0.6 - 0.5 t) at t = 5/11 and class 1 earlier
    assert t2[0].item() == pytest.approx(5 / 11, rel=1e-12)
    assert t2[1].item() == 1.0


def test_regula_falsi_brackets_the_change_within_root_tol():
    model = make_linear(4, 3, seed=1, scale=3.0)
    x0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        z0 = model(x0)
    y = z0.argmax(-1)
    st = state_of(z0, y, (y + 1) % 3, x=x0)
    net = Network(model, st)
    # walk each point along -grad of its gap until the class changes
    xb = x0.clone()
    for i in range(3):
        w = model[0].weight
        d = w[int((y[i] + 1) % 3)] - w[int(y[i])]
        s = 0.1
        while model(x0[i : i + 1] + s * d).argmax() == y[i]:
            s *= 1.5
        xb[i] = x0[i] + s * d
    with torch.no_grad():
        zb = model(xb)
    idx = torch.arange(3)
    za, xe, ze, t = locate(net, idx, x0, z0, xb, zb, ROOT)
    assert (event_gap(st, idx, za) >= 0).all(), "the unchanged side has changed"
    assert (event_gap(st, idx, ze) < 0).all(), "the changed side has not changed"
    assert torch.equal(model(xe).detach(), ze)
    pa, pe = torch.softmax(za, -1), torch.softmax(ze, -1)
    step = fisher_rao_distance(torch.softmax(z0, -1), torch.softmax(zb, -1))
    assert (fisher_rao_distance(pa, pe) <= ROOT * step).all(), "bracket wider than root_tol"
    assert ((t >= 0) & (t <= 1)).all()
    assert (st.forward_evals > 0).all(), "forward passes are charged to their paths"
