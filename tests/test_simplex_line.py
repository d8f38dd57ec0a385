"""Straight lines on the simplex: steps at a chosen FR distance, ties, overtakes, segment lengths."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import assert_close
from frmargin.geometry import fisher_rao_distance
from frmargin.paths.simplex_line import MIN_BEYOND, SimplexLine, segment_length

STEP = 1e-4  # relative precision of a step search (LOG_SPAN / GRID^GRID_ROUNDS ~ 1e-5 in t)
EXACT = 1e-12
ARCCOS = 1e-6  # sum of 32 chords, each from arccos near 1 (precision ~ sqrt(eps) per chord)


def line(p, d):
    return SimplexLine(torch.tensor([p], dtype=torch.float64), torch.tensor([d], dtype=torch.float64))


def test_points_stay_on_the_simplex_and_start_at_p():
    ln = line([0.6, 0.3, 0.1], [-0.5, 0.4, 0.1])
    t = torch.tensor([0.0, 0.5, 1.19], dtype=torch.float64)[None].expand(1, 3)
    q = ln.at(t)
    assert q.shape == (1, 3, 3)
    assert (q >= 0).all() and torch.allclose(q.sum(-1), torch.ones(1, 3, dtype=torch.float64))
    assert_close(ln.at(torch.zeros(1, dtype=torch.float64)), ln.p, EXACT, EXACT, "the line at t = 0")
    assert float(ln.t_max[0]) == pytest.approx(0.6 / 0.5, rel=1e-8)


@pytest.mark.parametrize("fr", [1e-3, 0.1, 0.5])
def test_step_reaches_the_fisher_rao_distance(fr):
    ln = line([0.6, 0.3, 0.1], [-0.5, 0.4, 0.1])
    inf = torch.tensor([math.inf], dtype=torch.float64)
    t = ln.step(torch.tensor([fr], dtype=torch.float64), inf)
    assert_close(ln.distance(t), torch.tensor([fr]), STEP, 0, f"FR distance of a step of {fr}")


def test_step_obeys_the_log_probability_cap():
    ln = line([0.6, 0.3, 0.1], [-0.5, 0.4, 0.1])
    t = ln.step(torch.tensor([10.0], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64))
    q = ln.at(t)
    change = (q.log() - ln.p.log()).abs().amax(-1)
    assert_close(change, torch.tensor([0.2]), STEP, 0, "largest log-probability change")


def test_crossing_and_overtake_are_ties():
    # p0 falls, p1 rises: tie of 0 and 1 at 0.6 - 0.4 t = 0.3 + 0.4 t, t = 0.375
    ln = line([0.6, 0.3, 0.1], [-0.4, 0.4, 0.0])
    assert float(ln.crossing(torch.tensor([0]))[0]) == pytest.approx(0.375, rel=1e-12)
    assert float(ln.overtake(torch.tensor([1]))[0]) == pytest.approx(0.375, rel=1e-12)
    assert math.isinf(float(ln.overtake(torch.tensor([2]))[0])), "class 2 never moves"
    # class 2 must pass both: 0.1 + 0.3 t >= 0.6 - 0.5 t (t = 0.625) and >= 0.3 + 0.2 t (t = 2)
    ln2 = line([0.6, 0.3, 0.1], [-0.5, 0.2, 0.3])
    assert float(ln2.overtake(torch.tensor([2]))[0]) == pytest.approx(2.0, rel=1e-12)
    assert float(ln2.crossing(torch.tensor([0]))[0]) == pytest.approx(min(0.3 / 0.7, 0.5 / 0.8), rel=1e-12)


def test_beyond_aims_past_the_boundary():
    ln = line([0.6, 0.3, 0.1], [-0.4, 0.4, 0.0])
    t_star = ln.crossing(torch.tensor([0]))
    t = ln.beyond(t_star, 0.01)
    d_star, d = ln.distance(t_star), ln.distance(t)
    assert float(t[0]) > float(t_star[0])
    want = torch.maximum(1.01 * d_star, d_star + MIN_BEYOND)
    assert_close(d, want, STEP, 0, "distance of the point beyond the tie")


def test_segment_length_converges_from_above_the_chord():
    pa = torch.tensor([[0.97, 0.02, 0.01], [0.5, 0.5, 0.0]], dtype=torch.float64)
    pb = torch.tensor([[0.01, 0.02, 0.97], [0.0, 0.5, 0.5]], dtype=torch.float64)
    chord = fisher_rao_distance(pa, pb)
    assert_close(segment_length(pa, pb, pieces=1), chord, EXACT, EXACT, "one piece is the chord")
    coarse, fine, finest = (segment_length(pa, pb, n) for n in (32, 256, 2048))
    assert (coarse >= chord).all() and (coarse <= fine).all() and (fine <= finest).all()
    assert_close(coarse, finest, 1e-3, 0, "32 pieces vs 2048")


def test_binary_segment_length_is_the_closed_form():
    # on two classes the segment is the whole simplex: d = 2 |asin sqrt(pa) - asin sqrt(pb)|
    pa = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    pb = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    exact = 2 * abs(math.asin(math.sqrt(0.9)) - math.asin(math.sqrt(0.3)))
    assert_close(segment_length(pa, pb), torch.tensor([exact]), ARCCOS, 0, "binary segment")


def test_anchored_line_projects_onto_the_start_line():
    from frmargin.paths.simplex_line import anchored_line

    p0 = torch.tensor([[0.5, 0.2, 0.2, 0.1]], dtype=torch.float64)
    top, k = torch.tensor([0]), torch.tensor([3])
    # moved along the line (p_top down 0.1, p_k up 0.1) and drifted (0.01 from class 1 to 2)
    p = torch.tensor([[0.4, 0.19, 0.21, 0.2]], dtype=torch.float64)
    pdot = torch.tensor([[-2.0, 0.0, 0.0, 2.0]], dtype=torch.float64)
    ln, on = anchored_line(p, pdot, p0, top, k)
    assert bool(on[0])
    want = torch.tensor([[0.4, 0.2, 0.2, 0.2]], dtype=torch.float64)
    assert_close(ln.p, want, EXACT, EXACT, "projection of p onto the start line")
    assert_close(ln.d, pdot, EXACT, EXACT, "direction of the anchored line")
    # not the flow's direction, or not allowed: the line through p along pdot
    turned = torch.tensor([[-2.0, 0.5, 0.0, 1.5]], dtype=torch.float64)
    for args in ((p, turned, p0, top, k), (p, pdot, p0, top, k, torch.tensor([False]))):
        ln, on = anchored_line(*args)
        assert not bool(on[0])
        assert torch.equal(ln.p, p) and torch.equal(ln.d, args[1])
