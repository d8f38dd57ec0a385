"""The path table of ``frmargin.runs.schema``: columns, order, dtypes and ``shielded``.

A hand-made ``PathResult`` (no tracing): every value of the table is known in advance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from frmargin import analysis
from frmargin.geometry import margin_lower_bound, predicted_path
from frmargin.paths import PathResult
from frmargin.runs import schema

P, C = 4, 5


def _result() -> PathResult:
    def f(values):
        return torch.tensor(values, dtype=torch.float64)

    def i(values):
        return torch.tensor(values, dtype=torch.int64)

    return PathResult(
        fr_length=f([0.5, 0.7, 0.9, 1.1]),
        l2=f([0.1, 0.2, 0.3, 0.4]),
        linf=f([0.01, 0.02, 0.03, 0.04]),
        steps=i([3, 4, 200, 5]),
        jacobian_evals=i([4, 5, 201, 6]),
        forward_evals=i([9, 10, 400, 11]),
        matvecs=i([0, 0, 0, 0]),
        first_hit=i([1, 3, -1, 4]),
        success=torch.tensor([True, True, False, True]),
        x_end=torch.zeros(P, 2),
        status=["ok", "ok", "budget", "ok"],
        fr_length_target=f([np.nan] * P),
        visited=[[0, 1], [0, 3], [0], [0, 4]],
    )


def _inputs():
    gen = torch.Generator().manual_seed(0)
    p0 = torch.softmax(torch.randn(P, C, generator=gen, dtype=torch.float64) * 3, -1)
    source = p0.argmax(-1)
    target = (source + torch.tensor([1, 2, 3, 4])) % C
    return p0, source, target


def test_columns_in_the_documented_order():
    p0, source, target = _inputs()
    table = schema.path_table(_result(), p0, source, target, ids={"image_index": np.arange(P) + 10},
                              labels={"method": "converged", "metric": "fisher"})  # fmt: skip
    measured = list(_result().to_frame().columns)
    expected = ["image_index", "source", "target", "method", "metric", *measured, *schema.DERIVED_COLUMNS]
    assert list(table.columns) == expected
    assert table["image_index"].tolist() == [10, 11, 12, 13]
    assert set(table["method"]) == {"converged"} and set(table["metric"]) == {"fisher"}
    assert table["visited"].tolist() == ["0>1", "0>3", "0", "0>4"]


def test_derived_columns_are_the_closed_forms():
    p0, source, target = _inputs()
    table = schema.path_table(_result(), p0, source, target, ids={"point": np.arange(P)})
    length, hit = predicted_path(p0, source, target)
    np.testing.assert_array_equal(table["predicted_length"], length.numpy())
    np.testing.assert_array_equal(table["predicted_first_hit"], hit.numpy())
    np.testing.assert_array_equal(table["lower_bound"], margin_lower_bound(p0, source).numpy())
    np.testing.assert_array_equal(table["confidence"], p0.max(-1).values.numpy())
    assert table["shielded"].dtype == bool and table["source"].dtype == np.int64


def test_shielded_is_success_and_a_first_hit_other_than_the_target():
    p0, source, target = _inputs()
    result = _result()
    table = schema.path_table(result, p0, source, target, ids={"point": np.arange(P)})
    expected = result.success.numpy() & (result.first_hit.numpy() != target.numpy())
    np.testing.assert_array_equal(table["shielded"].to_numpy(), expected)
    assert table["shielded"].any() and not table["shielded"].all(), "the case should hold both kinds"


def test_shielded_of_a_failed_path_is_false():
    out = schema.shielded(np.array([False, True, True]), np.array([-1, 2, 4]), np.array([3, 2, 3]))
    assert out.tolist() == [False, False, True]


def test_reader_constants_match_the_analysis():
    # analysis keeps its own copy until the report restructure points it here
    assert schema.REQUIRED_PATH_COLUMNS == analysis.PATH_COLUMNS
    assert schema.CIFAR10_CLASSES == analysis.CIFAR10_CLASSES


def test_the_table_is_a_dataframe_with_one_row_per_path():
    p0, source, target = _inputs()
    table = schema.path_table(_result(), p0, source, target, ids={"point": np.arange(P)})
    assert isinstance(table, pd.DataFrame) and len(table) == P
    assert table.index.equals(pd.RangeIndex(P))
