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
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from ..data.dataset import Dataset
from ..errors import FrmarginError
from . import folder, ownership
from .chunks import Selection, classify, run_baselines, trace_my_chunks
from .config import FINGERPRINT_VERSION, RunConfig, fingerprint
from .distributed import barrier, rank_and_world, sum_over_ranks
from .lock import LOCK_FILE, RunLock
from .preflight import apply_temperature, chance_warning, preflight, resolve_inputs
from .targets import selection_rule

__all__ = ["run_experiment"]

TARGET_RULES = (
    "all: every other class; top:K: the K most probable other classes at the start; random:K: K other "
    "classes drawn with (seed, image_index); LIST: the listed classes; target_rank = rank of the target "
    "among the other classes by the start probabilities (1 = most probable)"
)


# ------------------------------------------------------------------------------- processes


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("frmargin", "torch", "numpy", "pandas", "pyarrow", "foolbox"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


# ----------------------------------------------------------------------------- the selection


def _run_info(
    config: RunConfig,
    data: Dataset,
    model_identity: dict,
    selection: Selection,
    device: torch.device,
    world: int,
    warning: str | None,
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
        "method": config.trace.method,
        "metric": config.trace.metric,
        "until": config.trace.until,
        "box": config.trace.box,
        "input_range": [lo, hi],
        "attack_bounds": [lo, hi] if config.baselines else None,
        "chance_warning": warning,
        "seed": config.seed,
        "damping": config.trace.resolved_damping,
        "damping_mode": config.trace.damping_mode,
        "solver": config.trace.solver,
        "top_classes": config.trace.top_classes,
        "max_steps": config.trace.resolved_max_steps,
        "tracer_options": config.trace.all_accuracy(),
        "versions": _versions(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "world_size": world,
        "status": "running",
        "targets": config.targets,
        "targets_used": config.targets or "all",
        "target_rules": TARGET_RULES,
        "image_selection": selection_rule(config.images, len(data.class_names)),
        **_perturbation_entry(config, data),
    }


def _perturbation_entry(config: RunConfig, data: Dataset) -> dict:
    """run.json's ``perturbation`` entry (model, family, K, seed, basis hash); none for pixels."""
    if config.trace.perturbation == "pixels":
        return {}
    from ..perturbation.bases import describe

    return {"perturbation": describe(config.trace.perturbation, tuple(data.images.shape[1:]), config.seed)}


# ------------------------------------------------------------------------------ the session


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

    config.validate()
    out = Path(out)
    rank, world = rank_and_world()
    started = time.time()
    ownership.check_out_path(out)
    device = torch.device(config.device)
    dtype = getattr(torch, config.dtype)
    config, net, identity, dataset = resolve_inputs(config, model, data)  # names in-memory inputs
    # the many-class defaults (targets, top_classes) are filled in before the fingerprint is read
    config = config.with_class_defaults(len(dataset.class_names))
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
        barrier(world)
        net, temperature = apply_temperature(net, dataset, config, out, device)  # T != 1: logits / T
        selection = classify(net, dataset, config, device, dtype)
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
        barrier(world)
        traced, trace_seconds = trace_my_chunks(net, selection, config, out, rank, world, progress, fp)
        if config.baselines:
            run_baselines(net, selection, config, out, rank, world)
        traced, trace_seconds = sum_over_ranks(traced, trace_seconds, device, world)
        barrier(world)
        if rank == 0:
            _finalize(out, time.time() - started, traced, trace_seconds, world)
        barrier(world)
    finally:
        lock.release()
    return out
