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
from . import folder, ownership
from .config import FINGERPRINT_VERSION, RunConfig, fingerprint
from .lock import LOCK_FILE, RunLock
from .schema import path_table
from .targets import choose_targets, parse_targets, select_images, selection_rule, with_class_defaults
from .temperature import apply_temperature

__all__ = ["resolve_data", "run_experiment", "select_images"]

CLASSIFY_BATCH = 256  # images per forward pass when classifying the selection
BASELINE_CHUNK = 32  # images per baseline part
TARGET_RULES = (
    "all: every other class; top:K: the K most probable other classes at the start; random:K: K other "
    "classes drawn with (seed, image_index); LIST: the listed classes; target_rank = rank of the target "
    "among the other classes by the start probabilities (1 = most probable)"
)


def resolve_data(name: str, resize: tuple[int, int] | None = None):
    """Load a dataset; ``auto`` = the official CIFAR-10 test split (tarball or lossless copy),
    else the JPEG copy (said in run.json and the report)."""
    from ..data import load_dataset

    try:
        return load_dataset(name, resize=resize)
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


def _run_info(
    config: RunConfig, data, model_identity: dict, selection: _Selection, device, world: int, warning: str | None
) -> dict:
    """run.json at the start: every configuration field once (the readers' ones at the top)."""
    correct = selection.correct
    lo, hi = (float(v) for v in config.input_range)
    return {
        "fingerprint": fingerprint(config, model_identity, getattr(data, "identity", {})),
        "fingerprint_version": FINGERPRINT_VERSION,
        "options_fingerprint": config.options_fingerprint(),
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
        "input_range": [lo, hi],
        "attack_bounds": [lo, hi] if config.baselines else None,
        "chance_warning": warning,
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
    frame = path_table(
        result,
        selection.probs[rep],
        source,
        target,
        ids={"image_index": selection.indices[rep.cpu().numpy()]},
        labels={"method": config.method, "metric": config.metric, "target_rank": rank.cpu().numpy()},
    )
    if config.box is not None:
        frame["box_margin"] = _box_margins(model, selection.x[rep], source, result, config.box)
    return frame


def _box_margins(model, x0, source, res, box) -> np.ndarray:
    """The in-box margin estimate (``paths.box_margin``) of each ok path, NaN elsewhere."""
    from ..paths.box_margin import box_margin

    out = np.full(len(res), np.nan)
    ok = torch.tensor([s == "ok" for s in res.status], device=x0.device)
    if ok.any():
        est = box_margin(model, x0[ok], source[ok], res.x_end[ok], res.fr_length[ok], box)
        out[ok.cpu().numpy()] = est.length.detach().cpu().numpy()
    return out


def _trace_my_chunks(model, selection, config, out, rank, world, progress, fp: str) -> tuple[int, float]:
    """Trace this rank's chunks that have no valid part; (paths traced, seconds spent tracing).

    A part that is unreadable, holds other images or other paths, or was written by another
    run (its fingerprint) is traced again and replaced.
    """
    good = torch.nonzero(selection.correct)[:, 0]
    chunks = [good[i : i + config.chunk_images] for i in range(0, len(good), config.chunk_images)]
    mine = [(cid, rows) for cid, rows in enumerate(chunks) if cid % world == rank]
    labels = {"method": config.method, "metric": config.metric}
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
            bounds = (float(config.input_range[0]), float(config.input_range[1]))
            res = min_l2_attack(model, selection.x[rows], selection.y[rows], attack=attack, bounds=bounds)
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
    """Mark run.json complete, with this session's figures added to the sessions and the timing."""
    final = folder.read_json(out / folder.RUN_FILE)
    paths = pd.read_parquet(out / folder.PATHS_DIR)
    sessions = list(final.get("sessions", []))
    session = {
        **(sessions.pop() if sessions and sessions[-1].get("status") == "running" else {}),
        "seconds": round(seconds, 3),
        "trace_seconds": round(trace_seconds, 3),
        "paths_traced": int(paths_traced),
        "world_size": world,
        "status": "complete",
        **_peak_memory(),
    }
    sessions = [*sessions, session]
    traced = sum(s.get("paths_traced", 0) for s in sessions)
    tracing = sum(s.get("trace_seconds", 0.0) for s in sessions)
    final.update(
        status="complete",
        n_paths=len(paths),
        sessions=sessions,
        timing={
            "total": round(sum(s.get("seconds", 0.0) for s in sessions), 3),
            "tracing": round(tracing, 3),
            "per_path": round(tracing / traced, 4) if traced else 0.0,
        },
        versions=_versions(),
    )
    folder.write_json(final, out / folder.RUN_FILE)


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FrmarginError(
            f"option '--out': cannot create the folder {str(out)!r} ({err.strerror or err}); choose a writable --out"
        ) from None


def run_experiment(
    config: RunConfig,
    out: Path,
    model: torch.nn.Module | None = None,
    data: object = None,
    *,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Run (or resume) a sweep into ``out``; returns ``out``.

    Args:
        config: the run's options; ``config.model``/``config.data`` are used unless ``model``/``data``
            are given.
        model: an ``nn.Module`` mapping (B, C, H, W) in ``config.input_range`` to logits (B, C), or
            None; recorded as ``python:<class>`` with a structural hash of its weights.
        data: a ``Dataset``, ``(images (N, C, H, W), labels (N,))`` tensors, or None; recorded as
            ``python`` with a structural hash. A resume refuses another module or other data.

    Before anything is written: every option is checked, and one forward pass on one image checks
    the input shape, the (B, C) logits, C against the labels and finite logits (see ``preflight``).
    The folder is then locked for the whole session (another run into it is refused), and a resume
    is refused when the options, the model's weights or the data differ from the recorded run.

    Example:
        >>> run_experiment(RunConfig(images=20), Path("runs/r20"))  # doctest: +SKIP
    """
    import sys

    from .preflight import chance_warning, preflight, resolve_inputs

    config.validate()
    out = Path(out)
    rank, world = _dist()
    started = time.time()
    ownership.check_out_path(out)
    device = torch.device(config.device)
    dtype = getattr(torch, config.dtype)
    config, net, identity, dataset = resolve_inputs(config, model, data)  # names in-memory inputs
    # the many-class defaults (targets, top_classes) are filled in before the fingerprint is read
    config = with_class_defaults(config, len(dataset.class_names))
    if rank == 0 and not (out / LOCK_FILE).exists():  # a held folder: the lock names its holder
        ownership.prepare_folder(out, config, resume, rank)
    net = net.to(device=device, dtype=dtype)
    n_classes = preflight(net, dataset, config, device, dtype, identity)  # the input checks, one forward pass
    data_identity = getattr(dataset, "identity", {})
    fp = fingerprint(config, identity, data_identity)
    lock = RunLock(out)
    if rank == 0:
        _make_folder(out)
        lock.acquire()
    try:
        if rank == 0:
            ownership.prepare_folder(out, config, resume, rank)  # again: another run may have started meanwhile
            ownership.check_contents(out, config, identity, data_identity)
        _barrier(world)
        net, temperature = apply_temperature(net, dataset, config, out, device)  # T != 1: logits / T
        selection = _classify(net, dataset, config, device, dtype)
        warning = chance_warning(float(selection.correct.double().mean()), n_classes, len(selection.indices))
        if warning is not None and rank == 0:
            print(f"frmargin: warning: {warning}", file=sys.stderr)
        if rank == 0:
            folder.write_parquet(selection.table, out / folder.IMAGES_FILE)
            folder.write_parquet(selection.table[~selection.table["correct"]], out / folder.MISCLASSIFIED_FILE)
            (out / folder.PATHS_DIR).mkdir(exist_ok=True)
            info = ownership.old_run_info(out)
            if info is None or info.get("fingerprint_version") != FINGERPRINT_VERSION:
                fresh = {**_run_info(config, dataset, identity, selection, device, world, warning), **temperature}
                info = (
                    fresh
                    if info is None
                    else {
                        **info,
                        **{k: fresh[k] for k in ("fingerprint", "fingerprint_version", "options_fingerprint")},
                    }
                )
            ownership.start_session(out, info, config, world)
        _barrier(world)
        traced, trace_seconds = _trace_my_chunks(net, selection, config, out, rank, world, progress, fp)
        if config.baselines:
            _run_baselines(net, selection, config, out, rank, world)
        traced, trace_seconds = _sum_over_ranks(traced, trace_seconds, device, world)
        _barrier(world)
        if rank == 0:
            _finalize(out, time.time() - started, traced, trace_seconds, world)
        _barrier(world)
    finally:
        lock.release()
    return out
