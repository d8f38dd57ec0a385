"""``trace_paths(..., memory_budget=...)``: batches shrink to fit, results do not change, and a
path that cannot fit is a clear error."""

from __future__ import annotations

import pytest

from conftest import all_pairs, assert_close, make_cnn, make_inputs, make_mlp
from frmargin.errors import FrmarginError
from frmargin.options import cli_spelling, parse_memory_budget, spelled
from frmargin.paths import api, trace_paths
from frmargin.paths.api import paths_per_batch

SPLIT_RTOL = 1e-9  # float64: a batch of 1 and a batch of all give the same numbers up to rounding
# jacobian_evals is left out: a shared start point is charged its share among the paths of a batch
FIELDS = ("fr_length", "l2", "linf", "steps", "first_hit", "forward_evals")


@pytest.mark.parametrize(
    ("value", "expected"), [("500MB", 5 * 10**8), ("4GB", 4 * 10**9), ("2GiB", 2**31), ("1.5kb", 1500), (64, 64)]
)
def test_parse_memory_budget(value, expected):
    assert parse_memory_budget(value) == expected


@pytest.mark.parametrize("value", ["lots", "-1GB", "0", 0, "4XB", True])
def test_parse_memory_budget_refuses_bad_values(value):
    with pytest.raises(FrmarginError, match=r"'memory_budget'.*expected a positive size"):
        parse_memory_budget(value)
    with pytest.raises(FrmarginError, match=r"'--memory-budget'.*expected a positive size"), spelled(cli_spelling):
        parse_memory_budget(value)


def _per_path_bytes(model, x, V):
    D = x[0].numel()
    return V * D * (x.element_size() + 8) + api._activation_bytes(model, x[:1])


def test_batch_size_follows_the_budget_and_the_kept_classes():
    model = make_mlp(D=16, C=12)
    x = make_inputs((16,), 4)
    need = _per_path_bytes(model, x, 12)
    assert paths_per_batch(model, x, None, 12, 64, 3 * need + 1) == 3
    assert paths_per_batch(model, x, None, 12, 2, 3 * need + 1) == 2, "never above batch_size"
    lumped = _per_path_bytes(model, x, 5)
    assert paths_per_batch(model, x, 4, 12, 64, 3 * lumped) == 3, "top_classes=4: 5 rows per path"
    with pytest.raises(FrmarginError, match=r"--memory-budget.*one path needs .*the budget is"):
        paths_per_batch(model, x, None, 12, 64, need - 1)


@pytest.mark.parametrize("family", ["mlp", "cnn"])
@pytest.mark.parametrize("top_classes", [None, 3])
def test_splitting_batches_does_not_change_results(family, top_classes, monkeypatch):
    if family == "mlp":
        model, x = make_mlp(D=10, C=7, seed=3), make_inputs((10,), 3, seed=3)
    else:
        model, x = make_cnn(C=7, seed=4), make_inputs((1, 8, 8), 3, seed=4)
    xs, src, tgt = all_pairs(model, x)
    sizes: list[int] = []
    real = api.ChunkTracer

    def spy(model_, x_, *args):
        sizes.append(x_.shape[0])
        return real(model_, x_, *args)

    monkeypatch.setattr(api, "ChunkTracer", spy)
    whole = trace_paths(model, xs, src, tgt, top_classes=top_classes)
    assert sizes == [len(xs)]
    sizes.clear()
    V = 7 if top_classes is None else top_classes + 1
    one = trace_paths(model, xs, src, tgt, top_classes=top_classes, memory_budget=_per_path_bytes(model, xs, V))
    assert sizes == [1] * len(xs), "a budget of one path: batches of one"
    assert one.status == whole.status
    for name in FIELDS:
        a, e = getattr(one, name), getattr(whole, name)
        assert_close(a.double(), e.double(), rtol=SPLIT_RTOL, atol=1e-12, what=f"{family} {name}")


def test_trace_paths_refuses_a_budget_below_one_path_before_tracing():
    model = make_mlp(D=16, C=5)
    x = make_inputs((16,), 2)
    xs, src, tgt = all_pairs(model, x)
    with pytest.raises(FrmarginError, match=r"--memory-budget.*5 Jacobian rows of 16 values"):
        trace_paths(model, xs, src, tgt, memory_budget="1kB")
