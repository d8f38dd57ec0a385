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

    monkeypatch.setattr(plots.base, "save", keep)
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


def _colorbar_ticks(fig: Figure) -> np.ndarray:
    bar = fig.axes[-1]
    return np.asarray(bar.get_yticks(), float)


def test_path_matrix_colour_bar_has_integer_ticks(drawn: list[Figure]):
    matrix = pd.DataFrame([[1.0, 0.0], [2.0, 1.0]], index=[0, 1], columns=[1, "none"])  # max 2: 0.5 steps by default
    plots.plot_path_matrix(matrix, NAMES[:2], Path("m.png"))
    ticks = _colorbar_ticks(drawn[0])
    assert ticks.size >= 2 and np.all(ticks == np.round(ticks))


def test_shielding_landscape_uses_a_fixed_percent_scale_or_says_there_is_nothing(drawn: list[Figure]):
    some = ("left", pd.DataFrame([[5.0, 0.0], [0.0, 0.0]], index=[2, 5], columns=[7, 1]))
    none = ("right", pd.DataFrame([[0.0], [0.0]], index=[2, 5], columns=[3]))
    plots.plot_shielding_landscape([some, none], NAMES, Path("l.png"))
    left, right = drawn[0].axes[:2]
    assert left.images[0].norm.vmin == 0 and left.images[0].norm.vmax == 100
    assert not right.images and "no shielded paths\nin this direction" in [t.get_text() for t in right.texts]
    plots.plot_shielding_landscape([("a", none[1]), ("b", none[1])], NAMES, Path("n.png"))
    assert len(drawn[1].axes) == 2  # no colour bar when nothing is drawn


def test_attack_effort_legend_is_outside_the_axes(drawn: list[Figure]):
    lengths = pd.DataFrame({"source": [0, 0, 1], "fr_length": [1.0, 2.0, 5.0]})
    plots.plot_attack_effort(lengths, NAMES[:2], Path("a.png"), [2.0, 1.0], pd.Series({0: 1.25, 1: 4.0}))
    fig = drawn[0]
    assert fig.axes[0].get_legend() is None and len(fig.legends) == 1
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert legend.y1 <= fig.axes[0].get_window_extent().y0  # below the axes, over no data


def test_top_path_matrix_keeps_the_largest_classes_and_sums_the_rest():
    matrix = pd.DataFrame(np.arange(1, 26, dtype=float).reshape(5, 5), index=range(5), columns=range(5))
    matrix["none"] = 1.0
    top = plots.top_path_matrix(matrix, 2)
    assert list(top.index) == [3, 4] and list(top.columns) == [3, 4, plots.OTHER_LABEL, "none"]
    np.testing.assert_array_equal(top[plots.OTHER_LABEL], matrix.loc[[3, 4], [0, 1, 2]].sum(axis=1))
    np.testing.assert_array_equal(top.sum(axis=1), matrix.loc[[3, 4]].sum(axis=1))  # no path lost


def test_gallery_draws_the_given_images_and_probabilities(drawn: list[Figure]):
    from types import SimpleNamespace

    x0 = np.full((3, 2, 2), 0.25)
    x_end = x0 + np.array([0.0, 0.01, -0.02]).reshape(3, 1, 1)
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.3, 0.4, 0.3]])
    item = SimpleNamespace(
        role="shielded",
        source=0,
        target=2,
        first_hit=1,
        fr_length=0.5,
        l2=0.04,
        x0=x0,
        x_end=x_end,
        probs=probs,
        travelled=np.array([0.0, 0.3, 0.6]),
    )
    plots.plot_gallery([item], NAMES[:3], Path("g.png"))
    axes = drawn[0].axes
    np.testing.assert_allclose(axes[0].images[0].get_array(), x0.transpose(1, 2, 0))
    picture = np.asarray(axes[2].images[0].get_array())
    np.testing.assert_allclose(picture[0, 0], 0.5 + 25.0 * np.array([0.0, 0.01, -0.02]))  # amplified x 25
    assert "x 25" in axes[2].get_title()
    lines = {line.get_label(): line.get_ydata() for line in axes[3].lines}
    np.testing.assert_array_equal(lines["shield: c1"], probs[:, 1])
    np.testing.assert_array_equal(lines["source: c0"], probs[:, 0])
