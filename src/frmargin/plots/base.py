"""Shared pieces of the figures: palette, font sizes, saving and cell annotation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

DPI = 120
SEQUENTIAL_CMAP = "viridis"
DIVERGING_CMAP = "PuOr"
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
MAX_POINTS_PER_CLASS = 400  # strip plots subsample beyond this, with a fixed seed
POINT_ALPHA = 0.35
NO_FLIP_LABEL = "no flip"
OTHER_LABEL = "other"
#: font sizes that stay readable when a figure is shown at the page's width (~1100 px)
READABLE = {
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 11,
    "figure.titlesize": 14,
}
ANNOTATION_SIZE = 10
_F = TypeVar("_F", bound=Callable[..., Path])


def readable(function: _F) -> _F:
    """Draw ``function``'s figure with the ``READABLE`` font sizes."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(READABLE):  # type: ignore[arg-type]
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def annotate(ax: Axes, values: np.ndarray, norm: Normalize, fmt: str, cmap_dark_low: bool = True) -> None:
    """Write each cell's value, white on dark cells and black on light ones."""
    for (i, j), value in np.ndenumerate(values):
        if not np.isfinite(value):
            continue
        level = norm(value)
        dark = level < 0.55 if cmap_dark_low else abs(level - 0.5) > 0.3
        ax.text(
            j,
            i,
            format(value, fmt),
            ha="center",
            va="center",
            fontsize=ANNOTATION_SIZE,
            color="white" if dark else "black",
        )
