"""Heatmaps of counts and shares: path matrix, shielding landscape, matrix differences."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from frmargin.plots import base
from frmargin.plots.base import (
    DIVERGING_CMAP,
    NO_FLIP_LABEL,
    OTHER_LABEL,
    SEQUENTIAL_CMAP,
)
from frmargin.plots.base import annotate as _annotate
from frmargin.plots.base import readable as _readable


def top_path_matrix(matrix: pd.DataFrame, max_classes: int) -> pd.DataFrame:
    """The ``max_classes`` sources with the most paths and first hits hit most often; the other
    first hits summed in an ``"other"`` column (``"none"`` kept). The matrix itself when small."""
    hits = [c for c in matrix.columns if c != "none"]
    if len(matrix.index) <= max_classes and len(hits) <= max_classes:
        return matrix
    rows = matrix.sum(axis=1).sort_values(ascending=False, kind="stable").index[:max_classes]
    sub = matrix.loc[sorted(rows)]
    top = sub[hits].sum(axis=0).sort_values(ascending=False, kind="stable").index[:max_classes]
    out = sub[sorted(top)].copy()
    out[OTHER_LABEL] = sub[[c for c in hits if c not in set(top)]].sum(axis=1)
    if "none" in sub.columns:
        out["none"] = sub["none"]
    return out


def _column_label(column: object, names: list[str]) -> str:
    if column == "none":
        return NO_FLIP_LABEL
    if column == OTHER_LABEL:
        return OTHER_LABEL
    return names[int(column)]  # type: ignore[call-overload]


@_readable
def plot_path_matrix(
    matrix: pd.DataFrame, class_names: Sequence[str], path: Path, max_classes: int | None = None
) -> Path:
    """Heatmap of path counts: source class (rows) by first class hit (columns), annotated.

    ``matrix`` is ``analysis.path_matrix(...)``; a ``"none"`` column is labelled "no flip". With
    more than ``max_classes`` classes only the top classes are drawn (see ``top_path_matrix``).
    The colour bar has integer ticks (counts).
    """
    names = list(class_names)
    full = len(matrix.index)
    if max_classes is not None:
        matrix = top_path_matrix(matrix, max_classes)
    labels = [_column_label(c, names) for c in matrix.columns]
    values = matrix.to_numpy(float)
    fig = Figure(layout="constrained", figsize=(10.0, 8.0))
    ax = fig.add_subplot()
    norm = Normalize(vmin=0, vmax=max(values.max(), 1))
    image = ax.imshow(values, cmap=SEQUENTIAL_CMAP, norm=norm, aspect="auto")
    if values.size <= 30 * 30:
        _annotate(ax, values, norm, ".0f")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(matrix.index)), [names[int(s)] for s in matrix.index])
    ax.set_xlabel("first class hit after the class change")
    ax.set_ylabel("source class (true = predicted label)")
    title = "Path matrix: where each path first leaves its class"
    if len(matrix.index) < full:
        title += f"\n(top {len(matrix.index)} of {full} source classes by paths; first hits likewise)"
    ax.set_title(title)
    bar = fig.colorbar(image, ax=ax, label="number of paths")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    return base.save(fig, path)


@_readable
def plot_shielding_landscape(
    panels: Sequence[tuple[str, pd.DataFrame]],
    class_names: Sequence[str],
    path: Path,
    max_classes: int | None = None,
) -> Path:
    """Shield x target heatmaps, one per panel of ``analysis.landscape_panels`` (title, shares).

    Entry (c, t) of a panel: % of successful paths from the panel's sources toward t whose first
    hit is the shield c, rows and columns in the panel's order; panels share a fixed 0-100% scale.
    A panel without any shielded path says so instead of drawing a grid of zeros. With more than
    ``max_classes`` rows or columns, the shields and targets with the largest shares are drawn.
    """
    names = list(class_names)
    norm = Normalize(vmin=0, vmax=100)
    fig = Figure(layout="constrained", figsize=(13.0, 6.5))
    axes = fig.subplots(1, 2)
    image = None
    for ax, (title, frame) in zip(axes, panels):
        if max_classes is not None:
            frame = _top_shares(frame, max_classes)
        values = frame.to_numpy(float)
        targets, order = [int(t) for t in frame.columns], [int(c) for c in frame.index]
        if not values.size or not np.nansum(values) > 0:
            ax.text(
                0.5,
                0.5,
                "no shielded paths\nin this direction",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=14,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title)
            continue
        image = ax.imshow(values, cmap=SEQUENTIAL_CMAP, norm=norm, aspect="auto")
        if values.size <= 30 * 30:
            _annotate(ax, values, norm, ".0f")
        ax.set_xticks(range(len(targets)), [names[t] for t in targets], rotation=45, ha="right")
        ax.set_yticks(range(len(order)), [names[c] for c in order])
        ax.set_xlabel("target class")
        ax.set_ylabel("shield (first class hit), most robust first")
        ax.set_title(title)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="% of successful paths toward the target")
    fig.suptitle("Shielding landscape (robust = top half of our vulnerability ranking)")
    return base.save(fig, path)


def _top_shares(frame: pd.DataFrame, max_classes: int) -> pd.DataFrame:
    """The ``max_classes`` shields (rows) and targets (columns) with the largest total share."""
    if len(frame.index) <= max_classes and len(frame.columns) <= max_classes:
        return frame
    rows = frame.sum(axis=1).sort_values(ascending=False, kind="stable").index[:max_classes]
    columns = frame.sum(axis=0).sort_values(ascending=False, kind="stable").index[:max_classes]
    return frame.loc[[r for r in frame.index if r in set(rows)], [c for c in frame.columns if c in set(columns)]]


@_readable
def plot_matrix_difference(
    diff: pd.DataFrame, class_names: Sequence[str], path: Path, title: str = "Path matrix: Euclidean minus Fisher"
) -> Path:
    """Diverging heatmap of a path-matrix difference (e.g. ``MetricComparison.matrix_diff``)."""
    names = list(class_names)
    values = diff.to_numpy(float)
    limit = max(np.abs(values).max(), 1.0)
    norm = Normalize(vmin=-limit, vmax=limit)
    fig = Figure(layout="constrained", figsize=(8.0, 6.5))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap=DIVERGING_CMAP, norm=norm, aspect="auto")
    _annotate(ax, values, norm, ".0f", cmap_dark_low=False)
    labels = [NO_FLIP_LABEL if c == "none" else names[int(c)] for c in diff.columns]
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(diff.index)), [names[int(s)] for s in diff.index])
    ax.set_xlabel("first class hit after the class change")
    ax.set_ylabel("source class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="difference in number of paths")
    return base.save(fig, path)
