"""Tests of frmargin.plots: figures draw exactly the tables they are given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from frmargin import analysis, plots
from hand_paths import hand_paths

NAMES = [f"c{i}" for i in range(10)]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Figures handed to the saver, instead of files."""
    figures: list[Figure] = []

    def keep(fig: Figure, path: Path) -> Path:
        figures.append(fig)
        return Path(path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_path_matrix_shows_the_given_counts(drawn: list[Figure]):
    matrix = analysis.path_matrix(hand_paths(), 10)
    plots.plot_path_matrix(matrix, NAMES, Path("m.png"))
    shown = drawn[0].axes[0].images[0].get_array()
    np.testing.assert_array_equal(np.asarray(shown), matrix.to_numpy(float))
    assert drawn[0].axes[0].get_xticklabels()[-1].get_text() == plots.NO_FLIP_LABEL


def test_shielding_landscape_shows_the_given_panels(drawn: list[Figure]):
    panels = [
        ("left", pd.DataFrame([[10.0, 20.0], [30.0, 40.0]], index=[2, 5], columns=[7, 1])),
        ("right", pd.DataFrame([[50.0], [60.0]], index=[2, 5], columns=[3])),
    ]
    plots.plot_shielding_landscape(panels, NAMES, Path("l.png"))
    left, right = drawn[0].axes[:2]
    np.testing.assert_array_equal(np.asarray(left.images[0].get_array()), [[10, 20], [30, 40]])
    np.testing.assert_array_equal(np.asarray(right.images[0].get_array()), [[50], [60]])
    assert [t.get_text() for t in left.get_xticklabels()] == ["c7", "c1"]
    assert [t.get_text() for t in left.get_yticklabels()] == ["c2", "c5"]
    assert left.get_title() == "left"


def test_attack_effort_draws_given_lengths_and_means(drawn: list[Figure]):
    lengths = pd.DataFrame({"source": [0, 0, 1], "fr_length": [1.0, 2.0, 5.0]})
    means = pd.Series({0: 1.25, 1: 4.0})
    plots.plot_attack_effort(lengths, NAMES[:2], Path("a.png"), [2.0, 1.0], means)
    ax = drawn[0].axes[0]
    points = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections[:-1]])
    assert sorted(points) == [1.0, 2.0, 5.0]
    diamonds = ax.collections[-1].get_offsets()
    np.testing.assert_array_equal(diamonds[:, 1], [4.0, 1.25])  # class 1 (rank 1) first
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c1", "c0"]


def test_closed_form_and_fr_vs_l2_draw_given_points(drawn: list[Figure]):
    points = pd.DataFrame({"predicted_length": [1.0, 2.0], "fr_length": [1.5, 2.5], "predicted_direct": [True, False]})
    bounds = pd.DataFrame({"lower_bound": [0.5], "fr_margin": [0.75]})
    plots.plot_closed_form(points, bounds, Path("c.png"))
    left, right = drawn[0].axes[:2]
    assert [tuple(c.get_offsets()[0]) for c in left.collections] == [(1.0, 1.5), (2.0, 2.5)]
    assert tuple(right.collections[0].get_offsets()[0]) == (0.5, 0.75)
    margins = pd.DataFrame({"image_index": [0, 1], "fr_margin": [1.0, 2.0], "margin_l2": [0.3, 0.6]})
    attack_l2 = pd.DataFrame({"fr_margin": [1.0, 2.0], "fmn": [0.2, np.inf]}, index=[0, 1])
    plots.plot_fr_vs_l2(margins, Path("f.png"), attack_l2)
    assert drawn[1].axes[1].collections[0].get_offsets().shape == (1, 2)  # the failed attack is omitted
    assert drawn[1].axes[1].get_legend().get_texts()[0].get_text() == "fmn (n=1)"


def test_empty_closed_form_points_say_so(drawn: list[Figure]):
    empty = analysis.closed_form_points(hand_paths())  # hand paths carry no predictions
    assert empty.empty
    plots.plot_closed_form(empty, pd.DataFrame({"lower_bound": [], "fr_margin": []}), Path("e.png"))
    texts = [t.get_text() for ax in drawn[0].axes for t in ax.texts]
    assert "no closed-form predictions in this run" in texts and "no lower bounds in this run" in texts


def test_figures_are_written(tmp_path: Path):
    page = plots.plot_path_matrix(analysis.path_matrix(hand_paths(), 10), NAMES, tmp_path / "sub" / "m.png")
    assert page.is_file() and page.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
