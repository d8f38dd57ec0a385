"""Distributions and scatter plots: attack effort, closed forms, FR versus L2, class bars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from frmargin.analysis import ranked_order
from frmargin.plots import base
from frmargin.plots.base import (
    MAX_POINTS_PER_CLASS,
    OKABE_ITO,
    POINT_ALPHA,
)
from frmargin.plots.base import readable as _readable


@_readable
def plot_attack_effort(
    lengths: pd.DataFrame,
    class_names: Sequence[str],
    path: Path,
    vuln_rank: Sequence[float] | None = None,
    margin_means: pd.Series | None = None,
    classes: Sequence[int] | None = None,
) -> Path:
    """Per-class distribution of traced FR lengths (box + points), most robust class first.

    ``classes`` restricts the figure to these class indices (e.g. the most robust and most
    fragile of a 1000-class run); the legend sits below the axes, outside the data.

    Boxes and points show ``lengths`` (columns ``source``, ``fr_length``: the successful paths,
    ``analysis.successful_paths``) per source class; a diamond marks ``margin_means`` (class ->
    mean per-image margin, ``analysis.class_means``) when given.
    """
    names = list(class_names)
    ok = lengths
    order = ranked_order(vuln_rank) if vuln_rank is not None else list(range(len(names)))
    if classes is not None:
        keep = set(int(c) for c in classes)
        order = [c for c in order if c in keep]
    data = [ok.loc[ok["source"] == c, "fr_length"].to_numpy(float) for c in order]
    fig = Figure(layout="constrained", figsize=(max(10.0, 0.5 * len(order)), 6.0))
    ax = fig.add_subplot()
    positions = np.arange(1, len(order) + 1)
    nonempty = [i for i, d in enumerate(data) if d.size]
    if nonempty:
        ax.boxplot(
            [data[i] for i in nonempty],
            positions=positions[nonempty],
            widths=0.55,
            showfliers=False,
            medianprops={"color": OKABE_ITO[5], "linewidth": 2},
            boxprops={"color": "#444444"},
            whiskerprops={"color": "#444444"},
        )
    _strip_points(ax, positions, data)
    if margin_means is not None:
        means = margin_means
        ax.scatter(
            positions,
            [means.get(c, np.nan) for c in order],
            marker="D",
            s=36,
            color=OKABE_ITO[0],
            edgecolor="black",
            zorder=3,
            label="mean per-image margin (min over targets)",
        )
    ax.set_xticks(positions, [names[c] for c in order], rotation=30, ha="right")
    ax.set_xlabel(
        "source class" + (" (ordered by vulnerability rank, most robust first)" if vuln_rank is not None else "")
    )
    ax.set_ylabel("FR length to the class change")
    ax.set_title("Attack effort in FR space (successful paths)")
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", ncols=2, frameon=False)
    return base.save(fig, path)


def _strip_points(ax: Axes, positions: np.ndarray, data: list[np.ndarray]) -> None:
    """Jittered points per box, subsampled beyond MAX_POINTS_PER_CLASS with a fixed seed."""
    rng = np.random.default_rng(0)
    for pos, values in zip(positions, data):
        if values.size > MAX_POINTS_PER_CLASS:
            values = rng.choice(values, MAX_POINTS_PER_CLASS, replace=False)
        jitter = rng.uniform(-0.2, 0.2, values.size)
        ax.scatter(
            pos + jitter,
            values,
            s=6,
            color=OKABE_ITO[4],
            alpha=POINT_ALPHA,
            linewidths=0,
            label="path" if pos == positions[0] else None,
        )


@_readable
def plot_closed_form(points: pd.DataFrame, bounds: pd.DataFrame, path: Path) -> Path:
    """Traced versus closed-form FR length (left) and per-image margin versus LB (right), y = x.

    ``points`` is ``analysis.closed_form_points`` (empty: no predictions), ``bounds``
    ``analysis.margin_bound_points``.
    """
    ok = points
    fig = Figure(layout="constrained", figsize=(11.0, 5.0))
    left, right = fig.subplots(1, 2)
    if len(ok):
        direct = ok["predicted_direct"].astype(bool)
        for mask, label, colour in (
            (direct, "predicted to reach its target", OKABE_ITO[4]),
            (~direct, "predicted shielded", OKABE_ITO[5]),
        ):
            left.scatter(
                ok.loc[mask, "predicted_length"],
                ok.loc[mask, "fr_length"],
                s=7,
                alpha=POINT_ALPHA + 0.15,
                color=colour,
                linewidths=0,
                label=label,
            )
        _identity(left, ok["predicted_length"], ok["fr_length"])
        left.legend(loc="upper left")
    else:
        left.text(0.5, 0.5, "no closed-form predictions in this run", ha="center", transform=left.transAxes)
    left.set_xlabel("closed-form NG length (exact flow)")
    left.set_ylabel("traced FR length")
    left.set_title("Traced vs closed-form length, per path", fontsize=10)
    im = bounds
    if len(im):
        right.scatter(
            im["lower_bound"],
            im["fr_margin"],
            s=10,
            color=OKABE_ITO[2],
            alpha=POINT_ALPHA + 0.25,
            linewidths=0,
            label="image",
        )
        _identity(right, im["lower_bound"], im["fr_margin"])
        right.legend(loc="upper left")
    else:
        right.text(0.5, 0.5, "no lower bounds in this run", ha="center", transform=right.transAxes)
    right.set_xlabel("simplex lower bound LB")
    right.set_ylabel("per-image margin (min over targets of traced length)")
    right.set_title("Per-image margin vs lower bound", fontsize=10)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle("Closed forms versus traced paths (points on y = x agree)")
    return base.save(fig, path)


def _identity(ax: Axes, x: pd.Series, y: pd.Series) -> None:
    values = np.concatenate([np.asarray(x, float), np.asarray(y, float)])
    values = values[np.isfinite(values)]
    if values.size:
        lo, hi = values.min(), values.max()
        ax.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=1, label="y = x")


@_readable
def plot_fr_vs_l2(image_margins_df: pd.DataFrame, path: Path, attack_l2: pd.DataFrame | None = None) -> Path:
    """Per-image FR margin against L2: at the flip of its shortest FR path, and the minimal L2 of
    each attack when ``attack_l2`` (``analysis.margins_with_attacks``) is given."""
    has_baselines = attack_l2 is not None
    fig = Figure(layout="constrained", figsize=(11.0 if has_baselines else 6.0, 5.0))
    grid = fig.subplots(1, 2 if has_baselines else 1)
    axes = list(grid.ravel()) if isinstance(grid, np.ndarray) else [grid]
    im = image_margins_df
    axes[0].scatter(im["fr_margin"], im["margin_l2"], s=9, color=OKABE_ITO[4], alpha=POINT_ALPHA + 0.2, linewidths=0)
    axes[0].set_xlabel("per-image FR margin")
    axes[0].set_ylabel("L2 of x_end - x0 at the flip (shortest FR path)")
    axes[0].set_title("FR margin vs L2 along the FR path", fontsize=10)
    if attack_l2 is not None:
        joined = attack_l2
        attacks = [c for c in joined.columns if c != "fr_margin"]
        for i, attack in enumerate(attacks):
            finite = np.isfinite(joined[attack])
            axes[1].scatter(
                joined.loc[finite, "fr_margin"],
                joined.loc[finite, attack],
                s=9,
                alpha=POINT_ALPHA + 0.2,
                linewidths=0,
                color=OKABE_ITO[i % len(OKABE_ITO)],
                label=f"{attack} (n={int(finite.sum())})",
            )
        axes[1].set_xlabel("per-image FR margin")
        axes[1].set_ylabel("minimal L2 distance found by the attack")
        axes[1].set_title("FR margin vs minimal-L2 attacks (failures omitted)", fontsize=10)
        axes[1].legend(loc="upper left")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("Fisher-Rao margins versus Euclidean distances, per image")
    return base.save(fig, path)


@_readable
def plot_class_comparison(
    tables: Mapping[str, pd.DataFrame], path: Path, column: str = "mean_fr_margin", label: str = "mean FR margin"
) -> Path:
    """Grouped bars of one ``class_table`` column per run, with its 95% interval when present."""
    labels = list(tables)
    first = tables[labels[0]]
    names = first["name"].tolist()
    width = 0.8 / len(labels)
    x = np.arange(len(names))
    fig = Figure(layout="constrained", figsize=(max(9.0, 0.9 * len(names)), 5.0))
    ax = fig.add_subplot()
    for i, run in enumerate(labels):
        table = tables[run].set_index("name").reindex(names)
        values = table[column].to_numpy(float)
        errors = None
        if f"{column}_lo" in table.columns:
            errors = np.vstack(
                [values - table[f"{column}_lo"].to_numpy(float), table[f"{column}_hi"].to_numpy(float) - values]
            )
            errors = np.where(np.isfinite(errors), np.maximum(errors, 0), 0)
        ax.bar(
            x + (i - (len(labels) - 1) / 2) * width,
            values,
            width,
            yerr=errors,
            capsize=2,
            color=OKABE_ITO[i % len(OKABE_ITO)],
            label=run,
        )
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_xlabel("source class")
    ax.set_ylabel(label)
    ax.set_title(f"{label} per class and run (bars: 95% cluster-bootstrap interval)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(len(labels), 4), frameon=False)
    return base.save(fig, path)
