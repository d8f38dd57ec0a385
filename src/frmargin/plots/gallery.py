"""The gallery figure: per path, the input, the end point at the class change, the perturbation
amplified (its scale in the title) and the class probabilities along the path against the FR
length travelled.

Example:
    >>> plot_gallery(items, class_names, out / "gallery_cat.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from frmargin.plots import base
from frmargin.plots.base import OKABE_ITO, readable

#: the amplified perturbation is scaled so that its largest entry is this far from grey (0.5)
PERTURBATION_SPAN = 0.5


class GalleryPath(Protocol):
    """What a gallery row needs (``report.gallery.GalleryItem`` has it)."""

    @property
    def role(self) -> str: ...

    @property
    def source(self) -> int: ...

    @property
    def target(self) -> int: ...

    @property
    def first_hit(self) -> int: ...

    @property
    def fr_length(self) -> float: ...

    @property
    def l2(self) -> float: ...

    @property
    def x0(self) -> np.ndarray: ...

    @property
    def x_end(self) -> np.ndarray: ...

    @property
    def probs(self) -> np.ndarray: ...

    @property
    def travelled(self) -> np.ndarray: ...


def as_picture(x: np.ndarray) -> np.ndarray:
    """(H, W, 3) or (H, W) picture of an input: (3, H, W) and (1, H, W) as images, other shapes
    as a one-row strip; values clipped to [0, 1]."""
    x = np.asarray(x, float)
    if x.ndim == 3 and x.shape[0] == 3:
        x = x.transpose(1, 2, 0)
    elif x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    elif x.ndim != 2:
        x = x.reshape(1, -1)
    return np.clip(x, 0.0, 1.0)


def perturbation_picture(x0: np.ndarray, x_end: np.ndarray) -> tuple[np.ndarray, float]:
    """The perturbation x_end - x0 amplified around grey, and the amplification factor."""
    delta = np.asarray(x_end, float) - np.asarray(x0, float)
    size = float(np.abs(delta).max())
    scale = PERTURBATION_SPAN / size if size > 0 else 1.0
    return as_picture(0.5 + scale * delta), scale


@readable
def plot_gallery(items: Sequence[GalleryPath], class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """One row per path: input, end point, amplified perturbation, probabilities along the path."""
    names = list(class_names)
    fig = Figure(layout="constrained", figsize=(14.0, 3.2 * max(len(items), 1)))
    grid = fig.subplots(max(len(items), 1), 4, squeeze=False, width_ratios=(1, 1, 1, 2.4))
    for row, item in zip(grid, items):
        picture, scale = perturbation_picture(item.x0, item.x_end)
        hit = names[item.first_hit] if item.first_hit >= 0 else "none"
        panels = (
            (as_picture(item.x0), f"input: {names[item.source]}\n({item.role})"),
            (as_picture(item.x_end), f"end point: first hit {hit}"),
            (picture, f"perturbation x {scale:.3g}\nL2 {item.l2:.3g}"),
        )
        for ax, (image, label) in zip(row[:3], panels):
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(label, fontsize=11)
            ax.set_xticks([])
            ax.set_yticks([])
        _probabilities(row[3], item, names)
    if title:
        fig.suptitle(title)
    return base.save(fig, path)


def _probabilities(ax: Axes, item: GalleryPath, names: list[str]) -> None:
    lines = [(item.source, "source", OKABE_ITO[4], "-"), (item.target, "target", OKABE_ITO[5], "--")]
    if item.first_hit not in (item.source, item.target) and item.first_hit >= 0:
        lines.append((item.first_hit, "shield", OKABE_ITO[2], "-."))
    for c, role, colour, style in lines:
        ax.plot(
            item.travelled, item.probs[:, c], color=colour, linestyle=style, linewidth=2, label=f"{role}: {names[c]}"
        )
    ax.axvline(
        item.fr_length, color="black", linewidth=1, linestyle=":", label=f"class change, FR {item.fr_length:.3g}"
    )
    ax.set_ylim(0, 1)
    ax.set_xlabel("FR length travelled")
    ax.set_ylabel("probability")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=10, frameon=False)
