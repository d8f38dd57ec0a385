"""The gallery: what a few paths did to their images, re-traced from the run's own configuration.

The run folder stores no end points or probabilities along the paths, so the report re-traces a
handful of selected paths with ``record=True``: model, data and tracer options are rebuilt from
run.json (``RunConfig.from_run_info``, ``models.load_model``, the run's data); each re-traced
path is checked against its stored ``fr_length`` and ``first_hit``. The result is cached in the
run folder (``runs.folder.GALLERY_FILE``) under the keys of the selected paths, so a second
report does not trace again. A run whose model cannot be rebuilt (a user's own model) gets a
gallery that says so; the rest of the report is unaffected.

Example:
    >>> items = gallery_items(run, select_gallery_paths(run.paths, classes=[0, 3]))
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from frmargin.runs.folder import GALLERY_FILE, Run

if TYPE_CHECKING:
    import torch

#: a re-traced path reproduces the stored one when its FR length agrees to this relative tolerance
REPRODUCE_RTOL = 1e-3
#: at most this many classes get a gallery row group (the most robust and most fragile)
MAX_GALLERY_CLASSES = 6

#: rebuild(run.json) -> (model, images): the model in eval mode and a function from image
#: indices (image_index of images.parquet) to the (n, *S) input tensor
Rebuild = Callable[[dict], tuple[Callable, Callable[[np.ndarray], "torch.Tensor"]]]


@dataclass(frozen=True)
class GalleryItem:
    """One re-traced path.

    Attributes:
        key: (image_index, target) of the path.
        role: why it was chosen ("smallest margin", "median margin", "shielded").
        source, target, first_hit: classes of the re-traced path.
        fr_length, l2: of the re-traced path; stored_fr_length, stored_first_hit: from the table.
        x0, x_end: (*S) input and end point at the class change.
        probs: (n, C) class probabilities at the recorded points; travelled: (n,) FR length
            travelled to each point (chord sum of the FR distances between recorded points).
    """

    key: tuple[int, int]
    role: str
    source: int
    target: int
    first_hit: int
    fr_length: float
    l2: float
    stored_fr_length: float
    stored_first_hit: int
    x0: np.ndarray
    x_end: np.ndarray
    probs: np.ndarray
    travelled: np.ndarray

    @property
    def reproduces(self) -> bool:
        """Whether the re-traced path has the stored first hit and FR length."""
        return self.first_hit == self.stored_first_hit and bool(
            np.isclose(self.fr_length, self.stored_fr_length, rtol=REPRODUCE_RTOL, atol=0)
        )


def select_gallery_paths(paths: pd.DataFrame, classes: Sequence[int]) -> pd.DataFrame:
    """Per class: the successful path of smallest FR length, the image of median margin's
    shortest path, and the shortest shielded path if any. Columns: image_index, source, target,
    fr_length, first_hit, role."""
    ok = paths[paths["success"].astype(bool) & np.isfinite(paths["fr_length"])]
    rows = []
    for c in classes:
        mine = ok[ok["source"] == c]
        if mine.empty:
            continue
        shortest = mine.loc[mine.groupby("image_index")["fr_length"].idxmin()].sort_values(
            ["fr_length", "image_index"], kind="stable"
        )
        chosen = [(shortest.iloc[0], "smallest margin"), (shortest.iloc[(len(shortest) - 1) // 2], "median margin")]
        shielded = mine[mine["shielded"].astype(bool)].sort_values(["fr_length", "image_index"], kind="stable")
        if len(shielded):
            chosen.append((shielded.iloc[0], "shielded"))
        seen: set[tuple[int, int]] = set()
        for row, role in chosen:
            key = (int(row["image_index"]), int(row["target"]))
            if key not in seen:
                seen.add(key)
                rows.append(
                    {**{k: row[k] for k in ("image_index", "source", "target", "fr_length", "first_hit")}, "role": role}
                )
    return pd.DataFrame(rows, columns=["image_index", "source", "target", "fr_length", "first_hit", "role"])


def rebuild_from_registry(info: dict) -> tuple[Callable, Callable[[np.ndarray], torch.Tensor]]:
    """The run's model and data, as run.json records them: the model as the run traced it (its
    weights, normalization, output reading and temperature; ``runs.preflight.load_run_model``)."""
    import torch

    from frmargin.runs.config import RunConfig
    from frmargin.runs.preflight import load_run_model, resolve_data
    from frmargin.temperature import Temperature

    config = RunConfig.from_run_info(info)
    dtype = getattr(torch, config.dtype)
    model = load_run_model(config, len(info.get("class_names") or []) or None)[0].to(dtype=dtype).eval()
    temperature = float(info.get("temperature") or 1.0)
    if temperature != 1.0:
        model = Temperature(model, temperature)
    data = resolve_data(info.get("data") or config.data)
    return model, lambda index: data.images[torch.as_tensor(np.array(index))].to(dtype)


def _fr_travelled(probs: np.ndarray) -> np.ndarray:
    """(n,) cumulative FR distance 2 arccos(sum sqrt(p q)) between consecutive rows of (n, C)."""
    overlap = np.clip(np.sqrt(probs[1:] * probs[:-1]).sum(-1), 0.0, 1.0)
    return np.concatenate([[0.0], np.cumsum(2 * np.arccos(overlap))])


def _in_input_space(points: torch.Tensor, x0: torch.Tensor, options: Any) -> torch.Tensor:
    """A recorded trajectory (n, *S) in x, from its points in u with a perturbation model."""
    if options.perturbation == "pixels":
        return points.to(x0.dtype)
    import torch

    from frmargin.perturbation.bases import build_subspace

    subspace = build_subspace(options.perturbation, x0)
    rows = torch.zeros(points.shape[0], dtype=torch.long, device=x0.device)
    return subspace.embed(rows, points.to(x0.dtype))


def retrace(run: Run, selected: pd.DataFrame, rebuild: Rebuild) -> list[GalleryItem]:
    """Re-trace ``selected`` paths with the run's configuration and ``record=True``."""
    import torch

    from frmargin.paths import trace_paths
    from frmargin.runs.config import RunConfig
    from frmargin.runs.perturbed import run_trace_options

    model, images = rebuild(run.info)
    options = run_trace_options(RunConfig.from_run_info(run.info))
    x0 = images(selected["image_index"].to_numpy())
    source = torch.as_tensor(np.array(selected["source"], dtype=np.int64))
    target = torch.as_tensor(np.array(selected["target"], dtype=np.int64))
    result = trace_paths(model, x0, source, target, options, record=True)
    assert result.trajectory is not None
    items = []
    for i, row in enumerate(selected.itertuples(index=False)):
        points = torch.cat(
            [x0[i : i + 1], _in_input_space(result.trajectory[i], x0[i : i + 1], options), result.x_end[i : i + 1]]
        )
        with torch.no_grad():
            probs = torch.softmax(model(points).double(), -1).cpu().numpy()
        items.append(
            GalleryItem(
                key=(int(row.image_index), int(row.target)),
                role=str(row.role),
                source=int(row.source),
                target=int(row.target),
                first_hit=int(result.first_hit[i]),
                fr_length=float(result.fr_length[i]),
                l2=float(result.l2[i]),
                stored_fr_length=float(row.fr_length),
                stored_first_hit=int(row.first_hit),
                x0=x0[i].double().cpu().numpy(),
                x_end=result.x_end[i].double().cpu().numpy(),
                probs=probs,
                travelled=_fr_travelled(probs),
            )
        )
    return items


_SCALARS = ("source", "target", "first_hit", "fr_length", "l2", "stored_fr_length", "stored_first_hit")


def save_items(items: Sequence[GalleryItem], path: Path) -> None:
    """Write ``items`` to one .npz file (ragged arrays under per-item keys), atomically."""
    arrays: dict[str, np.ndarray] = {
        "meta": np.array(json.dumps([{"key": list(it.key), "role": it.role} for it in items]))
    }
    for i, it in enumerate(items):
        arrays[f"scalars_{i}"] = np.array([float(getattr(it, name)) for name in _SCALARS])
        for name in ("x0", "x_end", "probs", "travelled"):
            arrays[f"{name}_{i}"] = getattr(it, name)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(str(tmp), **dict[str, Any](arrays))
    tmp.replace(path)


def load_items(path: Path) -> list[GalleryItem]:
    """The items ``save_items`` wrote."""
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        items = []
        for i, entry in enumerate(meta):
            scalars = dict(zip(_SCALARS, data[f"scalars_{i}"].tolist()))
            items.append(
                GalleryItem(
                    key=(int(entry["key"][0]), int(entry["key"][1])),
                    role=str(entry["role"]),
                    source=int(scalars["source"]),
                    target=int(scalars["target"]),
                    first_hit=int(scalars["first_hit"]),
                    fr_length=float(scalars["fr_length"]),
                    l2=float(scalars["l2"]),
                    stored_fr_length=float(scalars["stored_fr_length"]),
                    stored_first_hit=int(scalars["stored_first_hit"]),
                    x0=data[f"x0_{i}"],
                    x_end=data[f"x_end_{i}"],
                    probs=data[f"probs_{i}"],
                    travelled=data[f"travelled_{i}"],
                )
            )
    return items


def gallery_items(run: Run, selected: pd.DataFrame, rebuild: Rebuild = rebuild_from_registry) -> list[GalleryItem]:
    """The selected paths re-traced, from the run folder's cache when it holds exactly them."""
    cache = run.directory / GALLERY_FILE
    keys = [(int(a), int(b)) for a, b in zip(selected["image_index"], selected["target"])]
    if cache.exists():
        try:
            items = load_items(cache)
        except (OSError, ValueError, KeyError):
            items = []
        if [it.key for it in items] == keys:
            return items
    items = retrace(run, selected, rebuild)
    with contextlib.suppress(OSError):  # a read-only run folder: the gallery is drawn, not cached
        save_items(items, cache)
    return items
