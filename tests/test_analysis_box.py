"""The per-class box table (hand-built paths, values worked out by hand) and the report's box
section."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from frmargin.analysis.box import box_table
from frmargin.report.box import box_section
from frmargin.report.document import Document, Table
from frmargin.report.result import analyze_box
from frmargin.runs.folder import Run


def paths() -> pd.DataFrame:
    # class 0: image 7 (LB 0.5; estimates 0.6, 0.9 -> margin 0.6), image 8 (LB 1.0; one ok path
    # without an estimate -> its traced 1.5; one budget path ignored); class 1: image 9, stationary
    return pd.DataFrame(
        {
            "source": [0, 0, 0, 0, 1],
            "image_index": [7, 7, 8, 8, 9],
            "target": [1, 2, 1, 2, 0],
            "status": ["ok", "ok", "ok", "budget", "box_stationary"],
            "success": [True, True, True, False, False],
            "fr_length": [0.7, 0.9, 1.5, 0.2, 0.4],
            "box_margin": [0.6, 0.9, float("nan"), float("nan"), float("nan")],
            "lower_bound": [0.5, 0.5, 1.0, 1.0, 0.3],
            "shielded": [False, True, False, False, False],
            "predicted_first_hit": [1, 1, 1, -1, 0],
            "bound_share": [0.5, 0.3, 0.1, 0.0, 1.0],
            "box_changes": [4, 2, 0, 0, 6],
        }
    )


def test_box_table_by_hand():
    t = box_table(paths(), ["a", "b"])
    a, b = t.loc["a"], t.loc["b"]
    assert a["n_paths"] == 4 and a["ok_pct"] == 75 and a["binds_pct"] == 50
    assert a["image_lb"] == pytest.approx(0.75)
    assert a["image_traced"] == pytest.approx((0.7 + 1.5) / 2)
    assert a["image_estimate"] == pytest.approx((0.6 + 1.5) / 2)
    assert a["raise_pct"] == pytest.approx(100 * ((0.6 / 0.5 - 1) + (1.5 / 1.0 - 1)) / 2)
    # successful paths of a: 3; shielded in the box: 1; predicted by the closed form: 1 (target 2)
    assert a["shielded_pct"] == pytest.approx(100 / 3) and a["free_shielded_pct"] == pytest.approx(100 / 3)
    assert b["stationary_pct"] == 100 and b["ok_pct"] == 0


def test_box_analysis_only_for_box_runs_with_box_statistics(tmp_path: Path):
    info = {"box": [0.0, 1.0], "class_names": ["a", "b"]}
    box = analyze_box(Run("r", tmp_path, info, paths(), None, None))
    assert box is not None and box.bounds == (0.0, 1.0)
    pd.testing.assert_frame_equal(box.table, box_table(paths(), ["a", "b"]))
    assert analyze_box(Run("r", tmp_path, {**info, "box": None}, paths(), None, None)) is None
    no_stats = paths().drop(columns=["bound_share"])
    assert analyze_box(Run("r", tmp_path, info, no_stats, None, None)) is None


def test_box_section_renders_the_analysed_table(tmp_path: Path):
    info = {"box": [0.0, 1.0], "class_names": ["a", "b"]}
    doc = Document("t")
    box_section(doc, analyze_box(Run("r", tmp_path, info, paths(), None, None)))
    free = Document("t")
    box_section(free, None)
    assert len(doc.blocks) > len(free.blocks) == 0
    tables = [b for b in doc.blocks if isinstance(b, Table)]
    assert tables[0].frame["class"].tolist() == ["a", "b"]
    assert tables[0].frame.loc[0, "image_lb"] == pytest.approx(0.75)
