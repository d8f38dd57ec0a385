"""A 2-D toy classifier with more classes than input dimensions, and a path-tracing demo.

In two input dimensions with C > 3 classes the logit Jacobian J (C x 2) has rank 2 < C - 1, so
the natural-gradient flow cannot move p along the straight simplex line of the exact flow (docs/method.md): which
class a path meets first is decided by the geometry of the decision regions, not by the softmax
output alone. The toy puts C - 1 Gaussian blobs on a ring around one central blob, so that the
central class is surrounded and paths between opposite ring classes must cross a neighbour.

Shapes: N training points, P paths, C classes, D = 2.

Example:
    >>> problem = make_toy_problem(n_classes=5, n_per_class=50)
    >>> problem.X.shape, problem.class_names[0]
    (torch.Size([250, 2]), 'center')
    >>> summary = run_toy_demo(Path("out"), n_points=3, epochs=150, progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib import patheffects
from matplotlib.artist import Artist
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import nn

from ..errors import bad_argument
from ..paths import PathResult, trace_paths
from ..plots import DPI, OKABE_ITO
from ..runs.schema import path_table

__all__ = ["TOY_TRACE_OPTIONS", "ToyProblem", "make_toy_problem", "run_toy_demo", "train_toy_model"]

RING_RADIUS = 2.5  # for up to 4 ring classes; grows with the ring so neighbours stay apart
BLOB_STD = 0.55
MAX_CLASSES = 8  # one Okabe-Ito colour per class
#: Okabe-Ito reordered so the first five classes avoid yellow (thin yellow lines vanish on white)
CLASS_COLOURS = tuple(OKABE_ITO[i] for i in (0, 1, 2, 4, 5, 6, 3, 7))
GRID = 200  # decision-region grid per axis
VIEW_PAD = 0.12  # view = data range plus this fraction on each side
REGION_ALPHA = 0.22
TRAIN_ALPHA = 0.12
#: per-metric options passed to ``trace_paths`` by the demo. The Euclidean tracer sizes a step by
#: its linear FR speed, which is ~sqrt(1 - p_y) where the toy is confident (p_y ~ 1 - 1e-6): the
#: first step overshoots by orders of magnitude and 6 halvings (the default ``max_attempts``)
#: cannot bring it back, so those paths stall at step 0. 40 halvings reach every start point.
TOY_TRACE_OPTIONS: dict[str, dict[str, Any]] = {
    "fisher": {"max_steps": 200},
    "euclidean": {"max_attempts": 40, "max_steps": 200},
}
CSV_NAME = "toy_paths.csv"
FIGURE_NAME = "toy_paths.png"


@dataclass(frozen=True)
class ToyProblem:
    """A labelled 2-D data set.

    Attributes:
        X: (N, 2) float32 inputs.
        y: (N,) int64 labels in [0, C).
        class_names: C names; class 0 is the central blob, 1.. C-1 the ring.
        centers: (C, 2) float32 blob centres.
    """

    X: torch.Tensor
    y: torch.Tensor
    class_names: tuple[str, ...]
    centers: torch.Tensor

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def make_toy_problem(n_classes: int = 5, n_per_class: int = 200, seed: int = 0) -> ToyProblem:
    """Gaussian blobs: one at the origin, ``n_classes - 1`` evenly spaced on a ring around it.

    Args:
        n_classes: C, 3 to 8 (C >= 4 makes the 2-D Jacobian rank-deficient, D < C - 1).
        n_per_class: points per class.
        seed: seed of the sampling generator (the global RNG is not touched).

    Returns:
        ToyProblem with N = C * n_per_class points, classes in blocks.

    Example:
        >>> make_toy_problem(4, 10).y.tolist()[:12]
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    """
    if not (isinstance(n_classes, int) and 3 <= n_classes <= MAX_CLASSES):
        raise bad_argument("n_classes", n_classes, f"an integer in [3, {MAX_CLASSES}]")
    if not (isinstance(n_per_class, int) and n_per_class >= 1):
        raise bad_argument("n_per_class", n_per_class, "an integer >= 1")
    gen = torch.Generator().manual_seed(int(seed))
    ring = n_classes - 1
    radius = RING_RADIUS * max(1.0, ring / 4)
    angles = torch.arange(ring, dtype=torch.float64) * (2 * math.pi / ring)
    centers = torch.cat([torch.zeros(1, 2, dtype=torch.float64), radius * torch.stack([angles.cos(), angles.sin()], 1)])
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    noise = BLOB_STD * torch.randn(y.numel(), 2, generator=gen, dtype=torch.float64)
    X = (centers[y] + noise).to(torch.float32)
    names = ("center", *(f"ring {i}" for i in range(1, n_classes)))
    return ToyProblem(X=X, y=y, class_names=names, centers=centers.to(torch.float32))


def train_toy_model(
    problem: ToyProblem, hidden: int = 64, epochs: int = 300, seed: int = 0, lr: float = 1e-2
) -> nn.Module:
    """Train a 2 -> hidden -> hidden -> C tanh MLP with full-batch Adam (smooth Jacobian).

    Deterministic given ``seed``: the initialization runs under a forked global RNG seeded with
    it and full-batch training draws no random numbers. Takes about a second per 100 epochs on
    one CPU core at the defaults.

    Returns:
        The model in eval mode with frozen parameters: (B, 2) float32 -> logits (B, C).

    Example:
        >>> model = train_toy_model(make_toy_problem(n_per_class=50), epochs=100)
        >>> model(torch.zeros(1, 2)).shape
        torch.Size([1, 5])
    """
    if not (isinstance(epochs, int) and epochs >= 1):
        raise bad_argument("epochs", epochs, "an integer >= 1")
    if not (isinstance(hidden, int) and hidden >= 1):
        raise bad_argument("hidden", hidden, "an integer >= 1")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = nn.Sequential(
            nn.Linear(2, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, problem.n_classes),
        )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    X, y = problem.X, problem.y
    model.train()
    for _ in range(epochs):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def _accuracy(model: nn.Module, problem: ToyProblem) -> float:
    with torch.no_grad():
        return float((model(problem.X).argmax(-1) == problem.y).double().mean())


def _pick_points(model: nn.Module, problem: ToyProblem, n_points: int, seed: int) -> torch.Tensor:
    """Indices of n_points correctly classified points, classes taken in turn (stratified)."""
    gen = torch.Generator().manual_seed(int(seed) + 1)
    with torch.no_grad():
        correct = model(problem.X).argmax(-1) == problem.y
    pools = []
    for c in range(problem.n_classes):
        members = (correct & (problem.y == c)).nonzero()[:, 0]
        pools.append(members[torch.randperm(members.numel(), generator=gen)].tolist())
    picked: list[int] = []
    depth = 0
    while len(picked) < n_points and any(depth < len(pool) for pool in pools):
        for pool in pools:
            if depth < len(pool) and len(picked) < n_points:
                picked.append(pool[depth])
        depth += 1
    return torch.tensor(picked, dtype=torch.int64)


#: the columns of toy_paths.csv, in order (the path table's, then start and end coordinates)
TOY_COLUMNS = (
    "point", "source", "target", "metric", "first_hit", "shielded", "fr_length", "l2", "status", "steps",
    "lower_bound", "predicted_first_hit", "predicted_length", "x0", "y0", "x_end", "y_end",
)  # fmt: skip


def _path_frame(
    res: PathResult,
    metric: str,
    point: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    x0: torch.Tensor,
    p0: torch.Tensor,
) -> pd.DataFrame:
    """The path table (``runs.schema``) restricted to the toy's columns, with coordinates;
    ``shielded`` is NA where the path did not change the class."""
    frame = path_table(res, p0, source, target, ids={"point": point.numpy()}, labels={"metric": metric})
    frame["shielded"] = frame["shielded"].astype("boolean").where(frame["success"].astype(bool), pd.NA)
    x_end = res.x_end.to(torch.float64).numpy()
    start = x0.to(torch.float64).numpy()
    frame = frame.assign(x0=start[:, 0], y0=start[:, 1], x_end=x_end[:, 0], y_end=x_end[:, 1])
    return frame[list(TOY_COLUMNS)]


def _rates(frame: pd.DataFrame) -> tuple[float, float]:
    """Shielding rate over successful paths, closed-form first-hit agreement over the flow's."""
    ok = frame[frame["first_hit"] >= 0]
    if ok.empty:
        return float("nan"), float("nan")
    shield = float((ok["first_hit"] != ok["target"]).mean())
    agree = float(ok[ok["status"] != "damped"].eval("first_hit == predicted_first_hit").mean())
    return shield, agree


def _plot(
    model: nn.Module,
    problem: ToyProblem,
    frames: Mapping[str, pd.DataFrame],
    trajectories: Mapping[str, list[np.ndarray]],
    path: Path,
) -> Path:
    C = problem.n_classes
    colours = [CLASS_COLOURS[c % len(CLASS_COLOURS)] for c in range(C)]
    X = problem.X.numpy()
    # the view is the data's range: paths can run off to infinity where the tanh units saturate
    lo, hi = X.min(0), X.max(0)
    pad = VIEW_PAD * (hi - lo)
    lo, hi = lo - pad, hi + pad
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], GRID), np.linspace(lo[1], hi[1], GRID))
    grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=problem.X.dtype)
    with torch.no_grad():
        region = model(grid).argmax(-1).numpy().reshape(gx.shape)
    cmap = ListedColormap(colours)
    outline = [patheffects.withStroke(linewidth=2.8, foreground="white")]

    fig = Figure(figsize=(13.0, 6.2), layout="constrained")
    axes = fig.subplots(1, len(frames), sharex=True, sharey=True)
    for ax, (metric, frame) in zip(np.atleast_1d(axes), frames.items()):
        ax.contourf(gx, gy, region, levels=np.arange(C + 1) - 0.5, cmap=cmap, alpha=REGION_ALPHA)
        ax.contour(gx, gy, region, levels=np.arange(C) + 0.5, colors="0.45", linewidths=0.6)
        ax.scatter(
            X[:, 0],
            X[:, 1],
            s=4,
            c=[colours[int(c)] for c in problem.y],
            alpha=TRAIN_ALPHA,
            linewidths=0,
            rasterized=True,
        )
        n_out = 0
        for row, traj in zip(frame.itertuples(), trajectories[metric]):
            line = np.concatenate([traj, [[row.x_end, row.y_end]]])
            ax.plot(line[:, 0], line[:, 1], color=colours[row.target], lw=1.4, path_effects=outline, zorder=3)
            n_out += not (lo[0] <= row.x_end <= hi[0] and lo[1] <= row.y_end <= hi[1])
            if row.status not in ("ok", "damped"):  # no class change
                marker, face = "s", "none"
            elif row.first_hit == row.target:
                marker, face = "o", colours[row.target]
            else:
                marker, face = "X", colours[row.first_hit]
            ax.scatter(
                [row.x_end],
                [row.y_end],
                marker=marker,
                s=46,
                facecolors=face,
                edgecolors="black",
                linewidths=0.8,
                zorder=5,
            )
        starts = frame.drop_duplicates("point")
        ax.scatter(starts["x0"], starts["y0"], marker="o", s=30, c="black", zorder=6)
        shield, _ = _rates(frame)
        n_ok, n_damped = ((frame["status"] == name).sum() for name in ("ok", "damped"))
        label = {"fisher": "Fisher (natural-gradient) paths", "euclidean": "Euclidean (gradient) paths"}[metric]
        title = f"{label}: {100 * shield:.0f}% shielded\n{n_ok}/{len(frame)} paths ok"
        extra = (f", {n_damped} damped" if n_damped else "") + (f", {n_out} end outside the view" if n_out else "")
        ax.set_title(title + extra, fontsize=11)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.set_xlabel("input $x_1$")
    np.atleast_1d(axes)[0].set_ylabel("input $x_2$")
    handles: list[Artist] = [
        Patch(facecolor=colours[c], edgecolor="0.3", label=problem.class_names[c]) for c in range(C)
    ]
    handles += [
        Line2D([], [], color="0.3", lw=1.4, label="path (colour = target)"),
        Line2D([], [], ls="", marker="o", color="black", markersize=5, label="start point"),
        Line2D([], [], ls="", marker="o", mfc="0.7", mec="black", markersize=7, label="reached target"),
        Line2D(
            [], [], ls="", marker="X", mfc="0.7", mec="black", markersize=8, label="shielded (fill = first class hit)"
        ),
        Line2D([], [], ls="", marker="s", mfc="none", mec="black", markersize=7, label="stalled / out of budget"),
    ]
    fig.legend(handles=handles, loc="outside right center", title="class regions", fontsize=8)
    fig.suptitle(f"Paths toward every other class in a 2-D, {C}-class problem (D = 2 < C - 1 = {C - 1})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def run_toy_demo(
    out_dir: Path,
    n_points: int = 12,
    seed: int = 0,
    progress: bool = True,
    *,
    n_classes: int = 5,
    n_per_class: int = 200,
    epochs: int = 300,
    trace_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train the toy model, trace Fisher and Euclidean paths, write a CSV and a figure.

    From each of ``n_points`` correctly classified training points (classes in turn), one path
    toward every other class per metric, recorded. Writes ``toy_paths.csv`` (one row per path:
    point, source, target, metric, first_hit, shielded, fr_length, l2, status, steps,
    lower_bound, the closed-form predicted_first_hit / predicted_length of the exact flow, start
    and end coordinates) and ``toy_paths.png`` (Fisher | Euclidean panels over the decision
    regions).

    Args:
        out_dir: folder for the two files (created).
        n_points: start points; P = n_points * (C - 1) paths per metric.
        seed: data, initialization and point selection.
        progress: print stage timings to stderr.
        trace_options: per-metric keyword arguments for ``trace_paths``, merged over
            ``TOY_TRACE_OPTIONS``.

    Returns:
        dict with train_accuracy, paths (per metric), status counts, shielding_rate and
        closed_form_agreement (per metric, over successful paths), seconds and files.

    Example:
        >>> run_toy_demo(Path("toy"), n_points=3, epochs=150)["shielding_rate"]  # doctest: +SKIP
        {'fisher': 0.33, 'euclidean': 0.42}
    """
    if not (isinstance(n_points, int) and n_points >= 1):
        raise bad_argument("n_points", n_points, "an integer >= 1")
    unknown = set(trace_options or {}) - set(TOY_TRACE_OPTIONS)
    if unknown:
        raise bad_argument("trace_options", sorted(unknown), f"keys among {sorted(TOY_TRACE_OPTIONS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            print(f"[toy {time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    problem = make_toy_problem(n_classes, n_per_class, seed)
    model = train_toy_model(problem, epochs=epochs, seed=seed)
    accuracy = _accuracy(model, problem)
    say(f"trained: train accuracy {accuracy:.3f}")

    chosen = _pick_points(model, problem, n_points, seed)
    C = problem.n_classes
    others = torch.tensor([[k for k in range(C) if k != c] for c in range(C)])
    source = problem.y[chosen].repeat_interleave(C - 1)
    target = others[problem.y[chosen]].reshape(-1)
    point = torch.arange(chosen.numel()).repeat_interleave(C - 1)
    x0 = problem.X[chosen].repeat_interleave(C - 1, 0)
    with torch.no_grad():
        p0 = torch.softmax(model(x0).to(torch.float64), -1)

    frames: dict[str, pd.DataFrame] = {}
    trajectories: dict[str, list[np.ndarray]] = {}
    for metric, defaults in TOY_TRACE_OPTIONS.items():
        opts = {**defaults, **dict((trace_options or {}).get(metric, {}))}
        t0 = time.perf_counter()
        res = trace_paths(model, x0, source, target, metric=metric, record=True, **opts)
        frames[metric] = _path_frame(res, metric, point, source, target, x0, p0)
        trajectories[metric] = [t.to(torch.float64).numpy() for t in res.trajectory or []]
        say(f"{metric}: {len(res)} paths in {time.perf_counter() - t0:.1f}s, {dict(Counter(res.status))}")

    table = pd.concat(list(frames.values()), ignore_index=True)
    csv_path = out_dir / CSV_NAME
    table.to_csv(csv_path, index=False)
    fig_path = _plot(model, problem, frames, trajectories, out_dir / FIGURE_NAME)
    say(f"wrote {csv_path.name} and {fig_path.name}")
    rates = {m: _rates(f) for m, f in frames.items()}
    return {
        "train_accuracy": accuracy,
        "n_points": int(chosen.numel()),
        "paths": {m: len(f) for m, f in frames.items()},
        "status": {m: dict(Counter(f["status"])) for m, f in frames.items()},
        "shielding_rate": {m: r[0] for m, r in rates.items()},
        "closed_form_agreement": {m: r[1] for m, r in rates.items()},
        "seconds": time.perf_counter() - t_start,
        "files": {"csv": csv_path, "figure": fig_path},
    }
