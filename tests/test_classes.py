"""The class view: every class, or the top m and one class lumping the rest."""

from __future__ import annotations

import torch

from frmargin.paths.classes import FullView, LumpedView, class_view


def test_full_view_is_the_identity():
    z = torch.randn(3, 5, dtype=torch.float64)
    view = class_view(z, torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long), None)
    assert isinstance(view, FullView) and not view.lumped and view.size == 5
    idx = torch.arange(3)
    assert view.reduce(z, idx) is z
    top, k = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 0])
    assert view.classes(idx, top, k) == (top, k)
    assert isinstance(class_view(z, top, k, 4), FullView), "m = C - 1 lumps nothing"


def test_lumped_view_keeps_source_target_and_the_probability_of_the_rest():
    z = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]], dtype=torch.float64)
    source, target = torch.tensor([0, 5]), torch.tensor([5, 0])  # the targets are the least probable
    view = class_view(z, source, target, 3)
    assert isinstance(view, LumpedView) and view.lumped and view.size == 4
    idx = torch.arange(2)
    kept = view.keep
    for i in range(2):
        assert int(source[i]) in kept[i].tolist() and int(target[i]) in kept[i].tolist()
    top, k = view.classes(idx, source, target)
    assert torch.equal(kept.gather(1, top[:, None])[:, 0], source)
    assert torch.equal(kept.gather(1, k[:, None])[:, 0], target)
    p_full = torch.softmax(z, -1)
    p = view.probs(z, idx)
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(p[:, :3], p_full.gather(1, kept), atol=1e-15)
    rest = p_full.sum(-1) - p_full.gather(1, kept).sum(-1)
    assert torch.allclose(p[:, 3], rest, atol=1e-15)
    # rows are selected by gidx
    assert torch.equal(view.reduce(z[1:], torch.tensor([1])), view.reduce(z, idx)[1:])
