"""The sweep: select images, trace a path to every other class, write results as they finish.

Paths are traced in chunks of ``chunk_images`` correctly classified images; each chunk becomes one
part of ``paths.parquet/`` when it finishes, so an interrupted run resumes without losing or
redoing finished work. Under ``torchrun`` the chunks are shared round-robin over ranks; each rank
writes its own parts and rank 0 finalizes ``run.json``. What the files are called and how they
are written is ``folder``'s business; the columns of the path table are ``schema``'s.

Example:
    >>> run_experiment(RunConfig(images=20), Path("runs/r20"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import FrmarginError
from ..geometry import margin_lower_bound
from ..paths import trace_paths
from . import folder
from .config import RunConfig
from .schema import path_table
from .targets import choose_targets, parse_targets, select_images, selection_rule, with_class_defaults

__all__ = ["resolve_data", "run_experiment", "select_images"]

CLASSIFY_BATCH = 256  # images per forward pass when classifying the selection
BASELINE_CHUNK = 32  # images per baseline part
TARGET_RULES = (
    "all: every other class; top:K: the K most probable other classes at the start; random:K: K other "
    "classes drawn with (seed, image_index); LIST: the listed classes; target_rank = rank of the target "
    "among the other classes by the start probabilities (1 = most probable)"
)


def resolve_data(name: str):
    """Load a dataset; ``auto`` = the official CIFAR-10 test split (tarball or lossless copy),
    else the JPEG copy (said in run.json and the report)."""
    from ..data import load_dataset

    try:
        return load_dataset(name)
    except FrmarginError as err:  # name the CLI option, keep the loader's detail and class
        raise type(err)(f"option '--data': {err}") from None


# ------------------------------------------------------------------------------- processes


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("frmargin", "torch", "numpy", "pandas", "pyarrow", "foolbox"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def _dist() -> tuple[int, int]:
    """(rank, world size) under torchrun, with a process group for barriers."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _prepare_folder(out: Path, config: RunConfig, resume: bool, rank: int) -> None:
    """Refuse a folder holding another run, this run without ``resume``, or other files."""
    run_file = out / folder.RUN_FILE
    if run_file.exists():
        try:
            old = folder.read_json(run_file)
        except (OSError, json.JSONDecodeError) as err:
            raise FrmarginError(f"option '--out': {out} holds an unreadable {folder.RUN_FILE} ({err})") from None
        if old.get("fingerprint") != config.fingerprint():
            raise FrmarginError(
                f"option '--out': {out} holds a different run (fingerprint {old.get('fingerprint')}, "
                f"this configuration {config.fingerprint()}); choose another folder"
            )
        if not resume:
            raise FrmarginError(f"option '--out': {out} already holds this run; pass --resume to continue it")
    elif any(out.glob("*")) and rank == 0 and not resume:
        raise FrmarginError(f"option '--out': {out} is not empty and holds no run; choose another folder")


# ----------------------------------------------------------------------------- the selection


@dataclass(frozen=True)
class _Selection:
    """The selected images on the run's device, with the model's prediction.

    Shapes: N selected images, C classes.
    """

    indices: np.ndarray  # (N,) dataset indices
    x: torch.Tensor  # (N, ...) images
    y: torch.Tensor  # (N,) labels
    probs: torch.Tensor  # (N, C) float64
    correct: torch.Tensor  # (N,) bool
    table: pd.DataFrame  # images.parquet


def _classify(model, data, config: RunConfig, device: torch.device, dtype: torch.dtype) -> _Selection:
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
    return _Selection(indices=sel, x=x, y=y, probs=probs, correct=correct, table=table)


def _run_info(config: RunConfig, data, model_identity: dict, selection: _Selection, device, world: int) -> dict:
    """run.json at the start: every configuration field once (the readers' ones at the top)."""
    correct = selection.correct
    return {
        "fingerprint": config.fingerprint(),
        "config": config.run_json_entries(),
        "model": config.model,
        "model_identity": model_identity,
        "data": data.name,
        "data_requested": config.data,
        "data_source": data.source,
        "data_caveat": getattr(data, "caveat", None),
        "data_identity": getattr(data, "identity", {}),
        "class_names": list(data.class_names),
        "images": config.images,
        "n_correct": int(correct.sum()),
        "accuracy": float(correct.double().mean()),
        "method": config.method,
        "metric": config.metric,
        "until": config.until,
        "box": config.box,
        "seed": config.seed,
        "damping": config.resolved_damping(),
        "damping_mode": config.damping_mode,
        "solver": config.solver,
        "top_classes": config.top_classes,
        "max_steps": config.resolved_max_steps(),
        "tracer_options": config.tracer_options(),
        "versions": _versions(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "world_size": world,
        "status": "running",
        "targets": config.targets,
        "targets_used": config.targets or "all",
        "target_rules": TARGET_RULES,
        "image_selection": selection_rule(config.images, len(data.class_names)),
    }


# --------------------------------------------------------------------------------- tracing


def _chunk_paths(selection: _Selection, rows: torch.Tensor, config: RunConfig):
    """(rep, source, target, target_rank), each (P,), of the paths from the images ``rows``."""
    src = selection.probs[rows].argmax(-1)
    rule = parse_targets(config.targets or "all")
    idx = selection.indices[rows.cpu().numpy()]
    which, target, rank = choose_targets(rule, selection.probs[rows], src, idx, config.seed)
    return rows[which], src[which], target, rank


def _trace_chunk(model, selection: _Selection, rows: torch.Tensor, config: RunConfig) -> pd.DataFrame:
    """Paths from each image in ``rows`` (indices into the selection) to its targets."""
    rep, source, target, rank = _chunk_paths(selection, rows, config)
    result = trace_paths(model, selection.x[rep], source, target, **config.trace_kwargs())
    return path_table(
        result,
        selection.probs[rep],
        source,
        target,
        ids={"image_index": selection.indices[rep.cpu().numpy()]},
        labels={"method": config.method, "metric": config.metric, "target_rank": rank.cpu().numpy()},
    )


def _trace_my_chunks(model, selection, config, out, rank, world, progress) -> tuple[int, float]:
    """Trace this rank's unfinished chunks; (paths traced, seconds spent tracing)."""
    good = torch.nonzero(selection.correct)[:, 0]
    chunks = [good[i : i + config.chunk_images] for i in range(0, len(good), config.chunk_images)]
    mine = [(cid, rows) for cid, rows in enumerate(chunks) if cid % world == rank]
    todo = [(cid, rows) for cid, rows in mine if not folder.path_part(out, cid).exists()]
    count = {cid: len(_chunk_paths(selection, rows, config)[0]) for cid, rows in mine}
    total = sum(count.values())
    done = total - sum(count[cid] for cid, _ in todo)
    bar = _progress_bar(total, done, progress and rank == 0)
    trace_seconds = 0.0
    for cid, rows in todo:
        t0 = time.time()
        frame = _trace_chunk(model, selection, rows, config)
        trace_seconds += time.time() - t0
        folder.write_parquet(frame, folder.path_part(out, cid))
        if bar is not None:
            bar.update(len(frame))
    if bar is not None:
        bar.close()
    return sum(count[cid] for cid, _ in todo), trace_seconds


def _progress_bar(total: int, done: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="path", desc="paths", dynamic_ncols=True)


def _run_baselines(model, selection: _Selection, config: RunConfig, out: Path, rank: int, world: int) -> None:
    from ..baselines import min_l2_attack

    if rank == 0:
        (out / folder.BASELINES_DIR).mkdir(exist_ok=True)
    _barrier(world)
    good = torch.nonzero(selection.correct)[:, 0]
    chunks = [good[i : i + BASELINE_CHUNK] for i in range(0, len(good), BASELINE_CHUNK)]
    for attack in config.baselines:
        for cid, rows in enumerate(chunks):
            part = folder.baseline_part(out, attack, cid)
            if cid % world != rank or part.exists():
                continue
            res = min_l2_attack(model, selection.x[rows], selection.y[rows], attack=attack, bounds=(0.0, 1.0))
            frame = pd.DataFrame(
                {
                    "image_index": selection.indices[rows.cpu().numpy()],
                    "attack": attack,
                    "l2": res.distance.cpu().numpy(),
                    "status": list(res.status),
                }
            )
            folder.write_parquet(frame, part)


# ------------------------------------------------------------------------------ the session


def _sum_over_ranks(paths_traced: int, trace_seconds: float, device, world: int) -> tuple[int, float]:
    """Every rank's work goes into run.json, not only rank 0's (tracing time: the slowest rank)."""
    if world <= 1:
        return paths_traced, trace_seconds
    import torch.distributed as dist

    on = device if device.type == "cuda" else torch.device("cpu")
    n = torch.tensor([paths_traced], dtype=torch.int64, device=on)
    s = torch.tensor([trace_seconds], dtype=torch.float64, device=on)
    dist.all_reduce(n, op=dist.ReduceOp.SUM)
    dist.all_reduce(s, op=dist.ReduceOp.MAX)  # wall-clock of the tracing phase
    return int(n.item()), float(s.item())


def _peak_memory() -> dict:
    """Peak resident memory of this process (MB), and of the GPU when one was used."""
    import resource

    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        peak["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def _finalize(out: Path, seconds: float, paths_traced: int, trace_seconds: float, world: int) -> None:
    """Mark run.json complete, with this session added to the sessions and the timing."""
    final = folder.read_json(out / folder.RUN_FILE)
    paths = pd.read_parquet(out / folder.PATHS_DIR)
    session = {
        "seconds": round(seconds, 3),
        "trace_seconds": round(trace_seconds, 3),
        "paths_traced": int(paths_traced),
        "world_size": world,
        **_peak_memory(),
    }
    sessions = [*final.get("sessions", []), session]
    traced = sum(s["paths_traced"] for s in sessions)
    tracing = sum(s["trace_seconds"] for s in sessions)
    final.update(
        status="complete",
        n_paths=len(paths),
        sessions=sessions,
        timing={
            "total": round(sum(s["seconds"] for s in sessions), 3),
            "tracing": round(tracing, 3),
            "per_path": round(tracing / traced, 4) if traced else 0.0,
        },
        versions=_versions(),
    )
    folder.write_json(final, out / folder.RUN_FILE)


def run_experiment(config: RunConfig, out: Path, *, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a sweep into ``out``; returns ``out``.

    Example:
        >>> run_experiment(RunConfig(images=20), Path("runs/r20"))  # doctest: +SKIP
    """
    from ..models import load_model, model_info

    config.validate()
    out = Path(out)
    rank, world = _dist()
    started = time.time()
    device = torch.device(config.device)
    model = load_model(config.model).to(device=device, dtype=getattr(torch, config.dtype))
    try:
        identity = model_info(config.model)
    except (KeyError, ValueError):
        identity = {"name": config.model}
    data = resolve_data(config.data)
    # the many-class defaults (targets, top_classes) are filled in before the fingerprint is read
    config = with_class_defaults(config, len(data.class_names))
    if rank == 0:
        _prepare_folder(out, config, resume, rank)
        out.mkdir(parents=True, exist_ok=True)
    _barrier(world)
    selection = _classify(model, data, config, device, getattr(torch, config.dtype))
    if rank == 0:
        folder.write_parquet(selection.table, out / folder.IMAGES_FILE)
        folder.write_parquet(selection.table[~selection.table["correct"]], out / folder.MISCLASSIFIED_FILE)
        (out / folder.PATHS_DIR).mkdir(exist_ok=True)
        if not (out / folder.RUN_FILE).exists():
            folder.write_json(_run_info(config, data, identity, selection, device, world), out / folder.RUN_FILE)
    _barrier(world)
    traced, trace_seconds = _trace_my_chunks(model, selection, config, out, rank, world, progress)
    if config.baselines:
        _run_baselines(model, selection, config, out, rank, world)
    traced, trace_seconds = _sum_over_ranks(traced, trace_seconds, device, world)
    _barrier(world)
    if rank == 0:
        _finalize(out, time.time() - started, traced, trace_seconds, world)
    _barrier(world)
    return out
