"""A run's work: the selected images and the model's prediction on them (``Selection``), the paths of
each chunk of images, tracing the chunks of this rank into parts of ``paths.parquet/``, and the
minimal-L2 baselines.

Shapes: N selected images, C classes, P paths.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..baselines import SPECTRAL_ATTACKS, min_l2_attack, spectral_scores
from ..data.dataset import Dataset
from ..geometry import margin_lower_bound
from ..paths import PathResult, trace_paths
from ..paths.box_margin import box_margin
from . import folder
from .box_estimate import candidate_paths
from .config import RunConfig
from .distributed import barrier
from .schema import path_table
from .targets import choose_targets, parse_targets, select_images

__all__ = ["Selection", "classify", "run_baselines", "trace_my_chunks"]

CLASSIFY_BATCH = 256  # images per forward pass when classifying the selection
BASELINE_CHUNK = 32  # images per baseline part


@dataclass(frozen=True)
class Selection:
    """The selected images on the run's device, with the model's prediction.

    Shapes: N selected images, C classes.
    """

    indices: np.ndarray  # (N,) dataset indices
    x: torch.Tensor  # (N, ...) images
    y: torch.Tensor  # (N,) labels
    probs: torch.Tensor  # (N, C) float64
    correct: torch.Tensor  # (N,) bool
    table: pd.DataFrame  # images.parquet


def classify(model: nn.Module, data: Dataset, config: RunConfig, device: torch.device, dtype: torch.dtype) -> Selection:
    sel = select_images(data.labels.numpy(), config.images, len(data.class_names), config.seed)
    x = data.images[torch.as_tensor(sel)].to(device=device, dtype=dtype)
    y = data.labels[torch.as_tensor(sel)].to(device)
    with torch.no_grad():
        logits = torch.cat([model(x[i : i + CLASSIFY_BATCH]) for i in range(0, len(sel), CLASSIFY_BATCH)])
    probs = torch.softmax(logits.to(torch.float64), -1)
    pred = probs.argmax(-1)
    correct = pred == y
    table = pd.DataFrame(
        {
            "image_index": sel,
            "test_index": data.test_index[torch.as_tensor(sel)].numpy(),
            "label": y.cpu().numpy(),
            "prediction": pred.cpu().numpy(),
            "correct": correct.cpu().numpy(),
            "confidence": probs.max(-1).values.cpu().numpy(),
            "lower_bound": margin_lower_bound(probs).cpu().numpy(),
        }
    )
    return Selection(indices=sel, x=x, y=y, probs=probs, correct=correct, table=table)


def _chunk_paths(
    selection: Selection, rows: torch.Tensor, config: RunConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rep, source, target, target_rank), each (P,), of the paths from the images ``rows``."""
    src = selection.probs[rows].argmax(-1)
    rule = parse_targets(config.targets or "all")
    idx = selection.indices[rows.cpu().numpy()]
    which, target, rank = choose_targets(rule, selection.probs[rows], src, idx, config.seed)
    return rows[which], src[which], target, rank


def _trace_chunk(model: nn.Module, selection: Selection, rows: torch.Tensor, config: RunConfig) -> pd.DataFrame:
    """Paths from each image in ``rows`` (indices into the selection) to its targets."""
    rep, source, target, rank = _chunk_paths(selection, rows, config)
    result = trace_paths(model, selection.x[rep], source, target, config.trace)
    frame = path_table(
        result,
        selection.probs[rep],
        source,
        target,
        ids={"image_index": selection.indices[rep.cpu().numpy()]},
        labels={"method": config.trace.method, "metric": config.trace.metric, "target_rank": rank.cpu().numpy()},
    )
    if config.trace.box is not None:
        frame["box_margin"] = _box_margins(model, selection.x[rep], source, result, frame, config)
    return frame


def _box_margins(
    model: nn.Module, x0: torch.Tensor, source: torch.Tensor, res: PathResult, frame: pd.DataFrame, config: RunConfig
) -> np.ndarray:
    """The in-box margin estimate (``paths.box_margin``) of the ok paths the run's ``box_margin``
    rule picks (``runs.box_estimate``), NaN elsewhere."""
    out = np.full(len(res), np.nan)
    columns = (frame[c].to_numpy() for c in ("image_index", "fr_length", "lower_bound"))
    image, traced, lower_bound = columns
    pick = candidate_paths(config.box_margin, image, frame["status"].to_numpy() == "ok", traced, lower_bound)
    if pick.any():
        rows = torch.as_tensor(np.flatnonzero(pick), device=x0.device)
        box = config.trace.box
        assert box is not None
        est = box_margin(model, x0[rows], source[rows], res.x_end[rows], res.fr_length[rows], box)
        out[pick] = est.length.detach().cpu().numpy()
    return out


def trace_my_chunks(
    model: nn.Module,
    selection: Selection,
    config: RunConfig,
    out: Path,
    rank: int,
    world: int,
    progress: bool,
    fp: str,
) -> tuple[int, float]:
    """Trace this rank's chunks that have no valid part; (paths traced, seconds spent tracing).

    A part that is unreadable, holds other images or other paths, or was written by another
    run (its fingerprint) is traced again and replaced.
    """
    good = torch.nonzero(selection.correct)[:, 0]
    chunks = [good[i : i + config.chunk_images] for i in range(0, len(good), config.chunk_images)]
    mine = [(cid, rows) for cid, rows in enumerate(chunks) if cid % world == rank]
    labels = {"method": config.trace.method, "metric": config.trace.metric}
    # the image of each path a chunk's part must hold (the target rule decides how many per image)
    expected = {cid: selection.indices[_chunk_paths(selection, rows, config)[0].cpu().numpy()] for cid, rows in mine}
    todo = [
        (cid, rows)
        for cid, rows in mine
        if not folder.part_is_valid(folder.path_part(out, cid), expected[cid], None, fp, labels)
    ]
    total = sum(len(v) for v in expected.values())
    done = total - sum(len(expected[cid]) for cid, _ in todo)
    bar = _progress_bar(total, done, progress and rank == 0)
    trace_seconds = 0.0
    for cid, rows in todo:
        t0 = time.time()
        frame = _trace_chunk(model, selection, rows, config)
        trace_seconds += time.time() - t0
        folder.write_parquet(frame, folder.path_part(out, cid), fingerprint=fp)
        if bar is not None:
            bar.update(len(frame))
    if bar is not None:
        bar.close()
    if rank == 0:  # parts beyond this run's chunks (another run's) would join the table
        folder.remove_extra_parts(out, len(chunks))
    return sum(len(expected[cid]) for cid, _ in todo), trace_seconds


def _progress_bar(total: int, done: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="path", desc="paths", dynamic_ncols=True)


def run_baselines(model: nn.Module, selection: Selection, config: RunConfig, out: Path, rank: int, world: int) -> None:
    """The minimal-L2 attacks of ``config.baselines`` on this rank's chunks of correct images: per
    image and attack its L2 distance, status and model evaluations, and with a spectral attack
    among the baselines the top eigenvalue of G_x at the image and at the attack's point."""
    if rank == 0:
        (out / folder.BASELINES_DIR).mkdir(exist_ok=True)
    barrier(world)
    good = torch.nonzero(selection.correct)[:, 0]
    chunks = [good[i : i + BASELINE_CHUNK] for i in range(0, len(good), BASELINE_CHUNK)]
    for attack in config.baselines:
        for cid, rows in enumerate(chunks):
            part = folder.baseline_part(out, attack, cid)
            if cid % world != rank or part.exists():
                continue
            bounds = (float(config.input_range[0]), float(config.input_range[1]))
            res = min_l2_attack(model, selection.x[rows], selection.y[rows], attack=attack, bounds=bounds)
            frame = pd.DataFrame(
                {
                    "image_index": selection.indices[rows.cpu().numpy()],
                    "attack": attack,
                    "l2": res.distance.cpu().numpy(),
                    "status": list(res.status),
                    "forward_passes": res.forward_passes.numpy(),
                    "backward_passes": res.backward_passes.numpy(),
                }
            )
            if any(a in SPECTRAL_ATTACKS for a in config.baselines):  # the top eigenvalue at x and at x_adv
                clean, adv = spectral_scores(model, selection.x[rows], res)
                frame["lambda_1"], frame["lambda_1_adv"] = clean.cpu().numpy(), adv.cpu().numpy()
            folder.write_parquet(frame, part)
