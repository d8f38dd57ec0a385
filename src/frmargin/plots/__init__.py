"""Figures of a run: DataFrames in, PNG files out; they draw what they are given.

Figures are drawn on ``matplotlib.figure.Figure`` objects rendered by the Agg canvas, so no
pyplot state or interactive backend is touched. Heatmaps use viridis (sequential) or PuOr
(diverging), categories the Okabe-Ito palette; all are colour-blind safe. Every function takes
tables made by ``frmargin.analysis`` and an output path and returns the path; none computes a
statistic.

Example:
    >>> plot_path_matrix(path_matrix(paths, 10), class_names, out / "path_matrix.png")
"""

from frmargin.analysis import ranked_order
from frmargin.plots.base import DPI, NO_FLIP_LABEL, OKABE_ITO, OTHER_LABEL, READABLE, SEQUENTIAL_CMAP
from frmargin.plots.distributions import plot_attack_effort, plot_class_comparison, plot_closed_form, plot_fr_vs_l2
from frmargin.plots.gallery import plot_gallery
from frmargin.plots.heatmaps import plot_matrix_difference, plot_path_matrix, plot_shielding_landscape, top_path_matrix
from frmargin.plots.spectrum import ATTACK_COLOURS, plot_budget_curves, plot_spectral_scores

__all__ = [
    "ATTACK_COLOURS",
    "DPI",
    "NO_FLIP_LABEL",
    "OKABE_ITO",
    "OTHER_LABEL",
    "READABLE",
    "SEQUENTIAL_CMAP",
    "plot_attack_effort",
    "plot_budget_curves",
    "plot_class_comparison",
    "plot_closed_form",
    "plot_fr_vs_l2",
    "plot_gallery",
    "plot_matrix_difference",
    "plot_path_matrix",
    "plot_shielding_landscape",
    "plot_spectral_scores",
    "ranked_order",
    "top_path_matrix",
]
