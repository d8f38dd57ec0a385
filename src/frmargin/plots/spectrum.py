"""Figures of the Fisher spectrum section: success rate against the L2 budget per attack, and the top
eigenvalue lambda_1 against the FR margin, against minimal L2 and at adversarial points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from frmargin.plots import base
from frmargin.plots.base import OKABE_ITO, POINT_ALPHA, readable

#: a fixed colour per attack, so every figure and page agrees
ATTACK_COLOURS = {
    "ossa": OKABE_ITO[5],
    "tssa": OKABE_ITO[6],
    "deepfool": OKABE_ITO[4],
    "random": "#777777",
    "fmn": "#000000",
}


@readable
def plot_budget_curves(curves: pd.DataFrame, path: Path) -> Path:
    """% of attacked images fooled within each L2 budget, one line per attack (``analysis.budget_curves``)."""
    fig = Figure(layout="constrained", figsize=(8.0, 5.0))
    ax = fig.add_subplot()
    for i, (attack, rows) in enumerate(curves.groupby("attack", sort=False)):
        colour = ATTACK_COLOURS.get(str(attack), OKABE_ITO[i % len(OKABE_ITO)])
        style = "--" if attack == "fmn" else "-"
        n = int(rows["n"].iloc[0])
        ax.plot(rows["budget"], rows["success_pct"], style, color=colour, lw=2, label=f"{attack} (n={n})")
    ax.set_xscale("log")
    ax.set_ylim(-2, 102)
    ax.set_xlabel("L2 budget")
    ax.set_ylabel("% of attacked images fooled")
    ax.set_title("Success rate against the L2 budget (FMN: the minimal L2 found)", fontsize=12)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left")
    return base.save(fig, path)


@readable
def plot_spectral_scores(images: pd.DataFrame, path: Path, attack: str | None) -> Path:
    """Per image: lambda_1 against the FR margin, against the minimal L2 of ``attack``, and lambda_1 at
    the image against lambda_1 at each attack's point (``analysis.spectral_images``)."""
    fig = Figure(layout="constrained", figsize=(15.0, 4.8))
    ax_fr, ax_l2, ax_adv = fig.subplots(1, 3)
    lam = images["lambda_1"].to_numpy(float)
    ax_fr.scatter(images["fr_margin"], lam, s=10, color=OKABE_ITO[4], alpha=POINT_ALPHA + 0.2, linewidths=0)
    ax_fr.set_xlabel("per-image FR margin")
    ax_fr.set_ylabel("lambda_1 at the image")
    ax_fr.set_title("lambda_1 against the FR margin", fontsize=11)
    column = f"l2_{attack}"
    if attack is not None and column in images:
        finite = np.isfinite(images[column].to_numpy(float))
        colour = ATTACK_COLOURS.get(attack, OKABE_ITO[0])
        ax_l2.scatter(
            images.loc[finite, column], lam[finite], s=10, color=colour, alpha=POINT_ALPHA + 0.2, linewidths=0
        )
        ax_l2.set_xscale("log")
        ax_l2.xaxis.set_minor_formatter(NullFormatter())
    ax_l2.set_xlabel(f"minimal L2 ({attack or 'no attack'})")
    ax_l2.set_title("lambda_1 against the minimal L2", fontsize=11)
    adv_columns = [c for c in images.columns if c.startswith("lambda_1_adv_")]
    values = [lam[np.isfinite(lam) & (lam > 0)]]
    labels = ["clean images"]
    for c in adv_columns:
        v = images[c].to_numpy(float)
        values.append(v[np.isfinite(v) & (v > 0)])
        labels.append(f"at {c.removeprefix('lambda_1_adv_')} points")
    positive = np.concatenate([v for v in values if len(v)]) if any(len(v) for v in values) else np.array([1.0])
    bins = np.geomspace(positive.min(), positive.max() * 1.01, 40) if positive.min() < positive.max() else 10
    for i, (v, label) in enumerate(zip(values, labels)):
        attack_name = label.removeprefix("at ").removesuffix(" points")
        colour = OKABE_ITO[2] if i == 0 else ATTACK_COLOURS.get(attack_name, OKABE_ITO[i % len(OKABE_ITO)])
        ax_adv.hist(v, bins=bins, histtype="step", lw=2, color=colour, label=f"{label} (n={len(v)})")
    ax_adv.set_xscale("log")
    ax_adv.set_xlabel("lambda_1")
    ax_adv.set_ylabel("images")
    ax_adv.set_title("lambda_1 at clean images and at attack points", fontsize=11)
    ax_adv.legend(loc="upper left", fontsize=9)
    for ax in (ax_fr, ax_l2):
        ax.set_yscale("log")
    for ax in (ax_fr, ax_l2, ax_adv):
        ax.grid(alpha=0.3)
    fig.suptitle("The top eigenvalue of the data-space Fisher, per image")
    return base.save(fig, path)
