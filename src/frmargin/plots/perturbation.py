"""Figures of runs with a perturbation model: the subspace margin against the softmax-only bound
per image, which classes shield which, and the measured statistics against K across runs.
They draw what ``frmargin.analysis.perturbation`` gives them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from frmargin.plots import base
from frmargin.plots.base import OKABE_ITO, POINT_ALPHA, SEQUENTIAL_CMAP

__all__ = ["plot_against_k", "plot_shield_matrix", "plot_subspace_margins"]


@base.readable
def plot_subspace_margins(points: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Per image, the subspace margin against LB (``analysis.perturbation.margin_points``), y = x."""
    fig = Figure(layout="constrained", figsize=(6.5, 5.5))
    ax = fig.add_subplot()
    fin = points[np.isfinite(points["subspace_margin"])]
    if len(fin):
        ax.scatter(fin["lower_bound"], fin["subspace_margin"], s=14, color=OKABE_ITO[4], alpha=POINT_ALPHA + 0.3)
        top = float(max(fin["lower_bound"].max(), fin["subspace_margin"].max()))
        ax.plot([0, top], [0, top], color="0.4", lw=1, ls="--", label="margin = LB (the closed form)")
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, "no subspace margin in this run", ha="center", transform=ax.transAxes)
    ax.set_xlabel("LB: the unconstrained margin (softmax output only)")
    ax.set_ylabel("subspace margin (least FR length to the boundary in u)")
    ax.set_title(title or "Subspace margin per image")
    return base.save(fig, path)


@base.readable
def plot_shield_matrix(counts: pd.DataFrame, class_names: Sequence[str], path: Path) -> Path:
    """Heatmap of shielded paths: target (rows) by the class met first (columns), counts."""
    names = list(class_names)
    values = counts.to_numpy(float)
    fig = Figure(layout="constrained", figsize=(8.5, 7.0))
    ax = fig.add_subplot()
    if not values.sum() > 0:
        ax.text(0.5, 0.5, "no shielded paths", ha="center", va="center", transform=ax.transAxes, fontsize=14)
        ax.set_xticks([])
        ax.set_yticks([])
        return base.save(fig, path)
    norm = Normalize(vmin=0, vmax=max(values.max(), 1))
    image = ax.imshow(values, cmap=SEQUENTIAL_CMAP, norm=norm, aspect="auto")
    if values.size <= 30 * 30:
        base.annotate(ax, values, norm, ".0f")
    ax.set_xticks(range(len(counts.columns)), [names[int(c)] for c in counts.columns], rotation=45, ha="right")
    ax.set_yticks(range(len(counts.index)), [names[int(t)] for t in counts.index])
    ax.set_xlabel("shield: the class met first")
    ax.set_ylabel("target class")
    ax.set_title("Which classes stand in the way of which targets")
    fig.colorbar(image, ax=ax, label="shielded paths")
    return base.save(fig, path)


@base.readable
def plot_against_k(table: pd.DataFrame, columns: Sequence[tuple[str, str]], path: Path, title: str = "") -> Path:
    """One panel per (column, label) of ``table`` (rows: model, family, k, metric, with X_lo and
    X_hi intervals where present) against K on a log axis, one line per model and family."""
    fig = Figure(layout="constrained", figsize=(5.0 * len(columns), 4.6))
    axes = np.atleast_1d(fig.subplots(1, len(columns)))
    groups = list(table.groupby(["model", "family"], sort=True))
    for ax, (column, label) in zip(axes, columns):
        for i, ((model, family), rows) in enumerate(groups):
            rows = rows.sort_values("k")
            if column not in rows or not rows[column].notna().any():
                continue
            style = "-" if family == "dct" else ":"
            colour = OKABE_ITO[i % len(OKABE_ITO)]
            ax.plot(rows["k"], rows[column], style, marker="o", ms=4, color=colour, label=f"{model} {family}")
            if f"{column}_lo" in rows:
                ax.fill_between(rows["k"], rows[f"{column}_lo"], rows[f"{column}_hi"], color=colour, alpha=0.12, lw=0)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("K (directions)")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=9, loc="best")
    if title:
        fig.suptitle(title)
    return base.save(fig, path)
