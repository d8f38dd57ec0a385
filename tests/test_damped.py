"""The damped continuation (``paths.damped``): free natural-gradient paths whose flow stalls or
creeps go on along a damped natural gradient and end ``damped``; every other path is the pure
flow's, and ``continuation="none"`` is the pure flow."""

from __future__ import annotations

import pytest
import torch

from conftest import all_pairs, make_cnn, make_inputs
from frmargin import margin_lower_bound, trace_paths
from frmargin.analysis import closed_form_agreement
from frmargin.errors import FrmarginError
from frmargin.options import TraceOptions
from frmargin.paths import resolve_options
from frmargin.paths.damped import RESCUE_DAMPING, DampedFree
from frmargin.paths.directions import FreeSpace
from frmargin.paths.tracer import ChunkTracer
from mirror import needs_mirror


def test_short_paths_are_the_pure_flow_bit_for_bit():
    """Paths that end within a quarter of their step budget never see a damping: default and
    ``continuation="none"`` give the same paths, bit for bit, and none ends ``damped``."""
    model = make_cnn(in_ch=3, seed=3)
    x, s, t = all_pairs(model, make_inputs((3, 8, 8), n=3, seed=5))
    a = trace_paths(model, x, s, t)
    b = trace_paths(model, x, s, t, continuation="none")
    assert (b.steps < 50).all() and set(b.status) == {"ok"}, b.status
    assert a.status == b.status
    for name in ("fr_length", "l2", "steps", "jacobian_evals", "first_hit"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.x_end, b.x_end)


@pytest.mark.parametrize("max_steps, every", [(None, 50), (1000, 250), (2, 1)])
def test_damping_level_by_steps_and_rescues(max_steps, every):
    """The continuation's share of lam_max: none before a quarter of the step budget (50 of the
    default 200 steps), then 1e-4, 1e-3, 1e-2 (at most), and a stalled path's rescues count as
    levels too."""
    model = make_cnn(in_ch=3, seed=3)
    x, s, t = all_pairs(model, make_inputs((3, 8, 8), n=1, seed=5))
    tracer = ChunkTracer(model, x[:4], s[:4], t[:4], resolve_options(max_steps=max_steps))
    proj = tracer.stepper.projection  # type: ignore[attr-defined]
    assert isinstance(proj, DampedFree)
    idx = torch.arange(4)
    st = tracer.state
    st.steps[:] = torch.tensor([0, every - 1, every, 10 * every])
    expected = torch.tensor([0.0, 0.0, RESCUE_DAMPING, 100 * RESCUE_DAMPING], dtype=torch.float64)
    assert torch.allclose(proj.level(idx), expected)
    st.steps[:] = 0
    assert proj.rescue(idx[:2]).all() and proj.rescue(idx[:1]).all()
    assert not proj.rescue(idx[:1]).any()  # RESCUES = 2
    assert torch.allclose(proj.level(idx), torch.tensor([10 * RESCUE_DAMPING, RESCUE_DAMPING, 0, 0]).double())


def test_the_continuation_applies_to_free_fisher_paths_in_pixels_only():
    assert resolve_options().continuation == "damped"
    for opts in (
        {"continuation": "none"},
        {"box": (0.0, 1.0)},
        {"metric": "euclidean"},
        {"method": "paper"},
        {"perturbation": "dct:2"},
    ):
        assert resolve_options(**opts).continuation == "none", opts
        assert not TraceOptions(**opts).damped_continuation
    model = make_cnn(in_ch=3, seed=3)
    x, s, t = all_pairs(model, make_inputs((3, 8, 8), n=1, seed=5))
    proj = ChunkTracer(model, x, s, t, resolve_options(continuation="none")).stepper.projection  # type: ignore[attr-defined]
    assert type(proj) is FreeSpace


def test_a_bad_continuation_is_named():
    with pytest.raises(FrmarginError, match=r"continuation.*'lm'.*damped, none"):
        TraceOptions(continuation="lm")


def test_closed_form_agreement_leaves_damped_paths_out():
    import pandas as pd

    rows = {
        "source": [0, 0],
        "target": [1, 2],
        "image_index": [0, 0],
        "status": ["ok", "damped"],
        "success": [True, True],
        "fr_length": [1.0, 2.0],
        "predicted_length": [1.0, 1.0],
        "first_hit": [1, 2],
        "predicted_first_hit": [1, 2],
        "lower_bound": [0.5, 0.5],
        "l2": [1.0, 1.0],
    }
    agreement = closed_form_agreement(pd.DataFrame(rows)).set_index("quantity")
    assert agreement.loc["rel_error_median", "value"] == 0.0
    assert agreement.loc["rel_error_median", "n"] == 1


def _zoo_paths(name: str, paths: list[int]):
    """Paths of ``name``'s first 8 correctly classified official test images (of the first 16)
    to every other class, ascending (as ``benchmarks/bench_zoo_steps.py``): x, source, target."""
    import frmargin

    model = frmargin.load_model(name, progress=False).eval()
    ds = frmargin.load_dataset("cifar10-exact", progress=False)
    x, y = ds.images[:16], ds.labels[:16]
    with torch.no_grad():
        good = (model(x).argmax(-1) == y).nonzero()[:8, 0]
    x, y = x[good], y[good]
    image = torch.arange(8).repeat_interleave(9)
    target = torch.tensor([k for c in y.tolist() for k in range(10) if k != c])
    pick = torch.tensor(paths)
    return model, x[image][pick], y[image][pick], target[pick]


@pytest.mark.slow
@needs_mirror
@pytest.mark.parametrize(
    "name, paths",
    [
        # CNN-A (4/255): 5 paths stalled at their first step, 5 at the budget
        ("cnn-a-adv4", [12, 21, 23, 30, 39, 56, 62, 66, 67, 68]),
        # ResNet-2B (2/255): one path of 72 at the budget (traced alone, it ends ok: batch rounding)
        ("resnet2b-adv2", list(range(72))),
    ],
)
def test_paths_the_flow_cannot_finish_reach_the_change_damped(name, paths):
    """On two adversarially trained families, the paths whose pure flow ends ``stalled`` or at
    the budget reach the class change along the continuation: status ``damped``; every path
    changes class (at its end point, really), its FR length above the softmax bound, below pi."""
    model, x, source, target = _zoo_paths(name, paths)
    pure = trace_paths(model, x, source, target, continuation="none")
    failed = torch.tensor([st in ("stalled", "budget") for st in pure.status])
    assert failed.any() and set(pure.status) <= {"ok", "stalled", "budget"}, pure.status
    res = trace_paths(model, x, source, target)
    assert res.success.all() and set(res.status) <= {"ok", "damped"}, res.status
    assert all(res.status[i] == "damped" for i in failed.nonzero()[:, 0].tolist())
    with torch.no_grad():
        p0 = torch.softmax(model(x).double(), -1)
        end = model(res.x_end).argmax(-1)
    assert torch.equal(end, res.first_hit) and (end != source).all()
    lb = margin_lower_bound(p0, source)
    assert (res.fr_length >= lb * (1 - 1e-6)).all(), (res.fr_length, lb)
    assert (res.fr_length < torch.pi).all()
