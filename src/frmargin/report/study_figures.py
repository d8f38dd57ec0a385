"""Figures of the study report: margin distributions and shielding across models (draw only).

Example:
    >>> margin_distributions({"resnet20": np.array([1.4, 1.5])}, Path("margins.png"))
    PosixPath('margins.png')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["margin_distributions", "shielding_bars"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def margin_distributions(margins: Mapping[str, np.ndarray], path: Path) -> Path:
    """Box plots of per-image FR margins, one per run (runs without margins are left out)."""
    plt = _pyplot()
    items = [(k, np.asarray(v, float)) for k, v in margins.items() if len(v)]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(items) + 2), 4))
    if items:
        ax.boxplot([v for _, v in items], showmeans=True)
        ax.set_xticks(range(1, len(items) + 1), [k for k, _ in items], rotation=40, ha="right")
    ax.axhline(np.pi / 2, color="grey", lw=0.8, ls="--", label="pi/2")
    ax.set_ylabel("per-image FR margin")
    ax.set_title("FR margins across models (mean: triangle)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def shielding_bars(table: pd.DataFrame, path: Path) -> Path:
    """Bars of shielded % per run with 95% intervals: columns ``run``, and for each metric ``m`` in
    (ng, euclid) the columns ``m_shielded_pct``, ``m_shielded_pct_lo``, ``m_shielded_pct_hi``;
    ``ng_predicted_shielded_pct`` as markers."""
    plt = _pyplot()
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(table) + 2), 4))
    for offset, (prefix, label) in zip((-0.2, 0.2), (("ng", "natural gradient"), ("euclid", "Euclidean"))):
        col = f"{prefix}_shielded_pct"
        if col not in table or not np.isfinite(table[col].to_numpy(float)).any():
            continue
        value = table[col].to_numpy(float)
        err = np.vstack([value - table[f"{col}_lo"].to_numpy(float), table[f"{col}_hi"].to_numpy(float) - value])
        ax.bar(x + offset, value, 0.4, yerr=np.nan_to_num(err), capsize=3, label=label)
    if "ng_predicted_shielded_pct" in table:
        ax.plot(x - 0.2, table["ng_predicted_shielded_pct"].to_numpy(float), "k_", ms=14, label="closed form (NG)")
    ax.set_xticks(x, table["run"].tolist(), rotation=40, ha="right")
    ax.set_ylabel("shielded % of successful paths")
    ax.set_title("Shielding across models (95% intervals)")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
