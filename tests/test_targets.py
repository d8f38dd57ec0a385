"""Target rules, the many-class defaults and the image selection for C > N (runs/targets.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frmargin.errors import FrmarginError
from frmargin.options import TraceOptions
from frmargin.runs.config import RunConfig
from frmargin.runs.targets import (
    DEFAULT_TOP_CLASSES,
    TargetRule,
    choose_targets,
    parse_targets,
    select_images,
)


def _probs(n: int, C: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.softmax(2 * torch.randn(n, C, generator=gen, dtype=torch.float64), -1)


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("all", TargetRule("all")),
        ("top:9", TargetRule("top", 9)),
        (" Random:3 ", TargetRule("random", 3)),
        ("7,3,5,3", TargetRule("list", classes=(3, 5, 7))),
    ],
)
def test_parse_targets(spec, rule):
    assert parse_targets(spec) == rule


@pytest.mark.parametrize("spec", ["", "top", "top:0", "top:-1", "top:x", "best:3", "1,a", "3;4", "1,,2"])
def test_parse_targets_refuses_bad_values_naming_the_option(spec):
    with pytest.raises(FrmarginError, match=r"'targets'.*expected all, top:K"):
        parse_targets(spec)


def test_top_k_are_the_k_most_probable_other_classes_with_their_ranks():
    p = _probs(6, 30)
    src = p.argmax(-1)
    row, target, rank = choose_targets(parse_targets("top:4"), p, src, np.arange(6), seed=0)
    assert row.tolist() == [i for i in range(6) for _ in range(4)]
    for i in range(6):
        others = [c for c in np.argsort(-p[i].numpy(), kind="stable") if c != int(src[i])]
        got = target[row == i].tolist()
        assert got == [int(c) for c in others[:4]], f"image {i}"
        assert rank[row == i].tolist() == [1, 2, 3, 4]


def test_all_gives_every_other_class_with_brute_force_ranks():
    p = _probs(3, 7, seed=1)
    src = p.argmax(-1)
    row, target, rank = choose_targets(parse_targets("all"), p, src, np.arange(3), seed=0)
    assert len(row) == 3 * 6
    for r, t, k in zip(row.tolist(), target.tolist(), rank.tolist()):
        assert t != int(src[r])
        # rank = 1 + number of other classes more probable than the target
        more = sum(1 for c in range(7) if c not in (t, int(src[r])) and p[r, c] > p[r, t])
        assert k == 1 + more


def test_random_k_is_seeded_per_image_and_independent_of_the_other_images():
    p = _probs(5, 50, seed=2)
    src = p.argmax(-1)
    idx = np.array([10, 11, 12, 13, 14])
    rule = parse_targets("random:6")
    row, target, _ = choose_targets(rule, p, src, idx, seed=3)
    again = choose_targets(rule, p, src, idx, seed=3)[1]
    assert torch.equal(target, again), "same seed, same targets"
    alone = choose_targets(rule, p[2:3], src[2:3], idx[2:3], seed=3)[1]
    assert torch.equal(alone, target[row == 2]), "a chunk of one image draws the same targets"
    other_seed = choose_targets(rule, p, src, idx, seed=4)[1]
    assert not torch.equal(other_seed, target)
    for i in range(5):
        t = target[row == i]
        assert len(set(t.tolist())) == 6 and int(src[i]) not in t.tolist()


def test_list_skips_the_source():
    p = _probs(4, 10, seed=3)
    src = p.argmax(-1)
    listed = sorted({int(src[0]), (int(src[0]) + 1) % 10, (int(src[0]) + 2) % 10})
    row, target, _ = choose_targets(parse_targets(",".join(map(str, listed))), p, src, np.arange(4), seed=0)
    assert target[row == 0].tolist() == [c for c in listed if c != int(src[0])]
    for i in range(4):
        assert int(src[i]) not in target[row == i].tolist()


def test_with_class_defaults():
    ten = RunConfig().with_class_defaults(10)
    assert (ten.targets, ten.trace.top_classes) == (None, None)
    assert ten.fingerprint() == RunConfig().fingerprint(), "ten-class fingerprints do not change"
    hundred = RunConfig().with_class_defaults(100)
    assert (hundred.targets, hundred.trace.top_classes) == ("top:9", None)
    many = RunConfig().with_class_defaults(1000)
    assert (many.targets, many.trace.top_classes) == ("top:9", DEFAULT_TOP_CLASSES)
    assert "targets" in many.identity() and "top_classes" in many.identity()
    assert many.fingerprint() != RunConfig().fingerprint()
    given = RunConfig(targets="random:3", trace=TraceOptions(top_classes=5)).with_class_defaults(1000)
    assert (given.targets, given.trace.top_classes) == ("random:3", 5)
    with pytest.raises(FrmarginError, match=r"'targets'.*K <= 9"):
        RunConfig(targets="top:10").with_class_defaults(10)
    with pytest.raises(FrmarginError, match=r"'targets'.*class indices in 0..9"):
        RunConfig(targets="1,12").with_class_defaults(10)


def test_run_config_validates_targets_and_memory_budget_before_work():
    with pytest.raises(FrmarginError, match="'targets'"):
        RunConfig(targets="top:zero").validate()
    with pytest.raises(FrmarginError, match="'memory_budget'"):
        RunConfig(trace=TraceOptions(memory_budget="lots"))
    RunConfig(targets="top:3", trace=TraceOptions(memory_budget="2GB")).validate()
    assert "memory_budget" not in RunConfig(trace=TraceOptions(memory_budget="2GB")).identity(), (
        "splitting does not change results"
    )


def test_selection_for_more_classes_than_images_draws_the_classes_by_seed():
    labels = np.repeat(np.arange(1000), 2)
    a = select_images(labels, 20, 1000, seed=0)
    assert len(a) == 20 and len(set(labels[a].tolist())) == 20, "one image of each of 20 classes"
    assert labels[a].max() >= 20, "not simply the first 20 classes"
    assert np.array_equal(select_images(labels, 20, 1000, seed=0), a)
    assert not np.array_equal(select_images(labels, 20, 1000, seed=1), a)
