"""The sweep: select images, trace a path to every other class, write results as they finish.

A run folder holds ``run.json`` (configuration, identities, accuracy, timing), ``images.parquet``
(every selected image with its prediction), ``paths.parquet/`` (one parquet part per chunk of
images, written atomically, so an interrupted run resumes without losing or redoing finished
work) and, with baselines, ``baselines.parquet/``. Under ``torchrun`` the chunks are shared
round-robin over ranks; each rank writes its own parts and rank 0 finalizes ``run.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .errors import AssetError, FrmarginError, bad_argument
from .geometry import margin_lower_bound, predicted_path
from .paths import ACCURACY_DEFAULTS, DEFAULT_DAMPING, DEFAULT_MAX_STEPS, METHODS, METRICS, UNTIL, trace_paths

__all__ = ["RunConfig", "resolve_data", "run_experiment", "select_images"]

RUN_FILE = "run.json"
IMAGES_FILE = "images.parquet"
PATHS_DIR = "paths.parquet"
BASELINES_DIR = "baselines.parquet"
#: configuration fields that change results (a resumed run must match them)
IDENTITY_FIELDS = (
    "model",
    "data",
    "images",
    "method",
    "metric",
    "until",
    "box",
    "seed",
    "damping",
    "damping_mode",
    "solver",
    "max_steps",
    "accuracy",
    "chunk_images",
    "dtype",
    "top_classes",
)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. ``data="auto"`` takes the official CIFAR-10 test split
    when it can be had and the JPEG copy otherwise (said in run.json and the report)."""

    model: str = "resnet20"
    data: str = "auto"
    images: int = 800
    method: str = "converged"
    metric: str = "fisher"
    until: str = "first_flip"
    box: tuple[float, float] | None = None
    batch_size: int = 64
    seed: int = 0
    damping: float | None = None
    damping_mode: str = "relative"
    solver: str = "exact"
    max_steps: int | None = None
    accuracy: dict = field(default_factory=dict)
    baselines: tuple[str, ...] = ()
    chunk_images: int = 4
    dtype: str = "float32"
    device: str = "cpu"
    top_classes: int | None = None

    def validate(self) -> None:
        """Raise FrmarginError naming the first bad option."""
        if not (isinstance(self.images, int) and self.images >= 1):
            raise bad_argument("images", self.images, "a positive number of images")
        for name in ("batch_size", "chunk_images"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise bad_argument(name.replace("_", "-"), value, "a positive integer")
        for name, allowed in (("method", METHODS), ("metric", METRICS), ("until", UNTIL)):
            if getattr(self, name) not in allowed:
                raise bad_argument(name, getattr(self, name), f"one of {', '.join(allowed)}")
        if self.dtype not in ("float32", "float64"):
            raise bad_argument("dtype", self.dtype, "float32 or float64")
        if self.top_classes is not None and not (isinstance(self.top_classes, int) and self.top_classes >= 2):
            raise bad_argument("top-classes", self.top_classes, "an integer >= 2 (source and target are always kept)")
        unknown = set(self.accuracy) - set(ACCURACY_DEFAULTS)
        if unknown:
            raise bad_argument("accuracy option", sorted(unknown), f"names among {sorted(ACCURACY_DEFAULTS)}")

    def identity(self) -> dict:
        d = asdict(self)
        # an option left at None is left out, so runs made before it existed keep their fingerprint
        return {k: d[k] for k in IDENTITY_FIELDS if not (k == "top_classes" and d[k] is None)}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_data(name: str):
    """Load a dataset; ``auto`` = official CIFAR-10 test split, else the JPEG copy."""
    from .data import load_dataset

    try:
        if name != "auto":
            return load_dataset(name)
        try:
            return load_dataset("cifar10")
        except AssetError:
            return load_dataset("cifar10-jpeg")
    except FrmarginError as err:  # name the CLI option, keep the loader's detail and class
        raise type(err)(f"option '--data': {err}") from None


def select_images(labels: np.ndarray, n: int, n_classes: int, seed: int) -> np.ndarray:
    """Stratified, deterministic selection: n / C images per class (the remainder to the first
    classes), drawn with ``seed``; returns sorted dataset indices."""
    per = [n // n_classes + (1 if c < n % n_classes else 0) for c in range(n_classes)]
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(n_classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per[c]:
            raise bad_argument(
                "images", n, f"at most {len(pool) * n_classes} for this dataset ({len(pool)} of class {c})"
            )
        chosen.append(rng.permutation(pool)[: per[c]])
    return np.sort(np.concatenate(chosen))


def _atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. ENOSPC half way: leave no partial file behind
        raise


def _atomic_write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=2, default=str))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("frmargin", "torch", "numpy", "pandas", "pyarrow", "foolbox"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
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
    run_file = out / RUN_FILE
    if run_file.exists():
        try:
            old = json.loads(run_file.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise FrmarginError(f"option '--out': {out} holds an unreadable {RUN_FILE} ({err})") from None
        if old.get("fingerprint") != config.fingerprint():
            raise FrmarginError(
                f"option '--out': {out} holds a different run (fingerprint {old.get('fingerprint')}, "
                f"this configuration {config.fingerprint()}); choose another folder"
            )
        if not resume:
            raise FrmarginError(f"option '--out': {out} already holds this run; pass --resume to continue it")
    elif any(out.glob("*")) and rank == 0 and not resume:
        raise FrmarginError(f"option '--out': {out} is not empty and holds no run; choose another folder")


def run_experiment(config: RunConfig, out: Path, *, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a sweep into ``out``; returns ``out``.

    Example:
        >>> run_experiment(RunConfig(images=20), Path("runs/r20"))  # doctest: +SKIP
    """
    from .models import load_model, model_info

    config.validate()
    out = Path(out)
    rank, world = _dist()
    if rank == 0:
        _prepare_folder(out, config, resume, rank)
        out.mkdir(parents=True, exist_ok=True)
    _barrier(world)
    started = time.time()
    dtype = getattr(torch, config.dtype)
    device = torch.device(config.device)
    model = load_model(config.model).to(device=device, dtype=dtype)
    try:
        info = model_info(config.model)
    except (KeyError, ValueError):
        info = {"name": config.model}
    data = resolve_data(config.data)
    C = len(data.class_names)
    sel = select_images(data.labels.numpy(), config.images, C, config.seed)
    x_all = data.images[torch.as_tensor(sel)].to(device=device, dtype=dtype)
    y_all = data.labels[torch.as_tensor(sel)].to(device)
    with torch.no_grad():
        logits = torch.cat([model(x_all[i : i + 256]) for i in range(0, len(sel), 256)])
    probs = torch.softmax(logits.to(torch.float64), -1)
    pred = probs.argmax(-1)
    correct = pred == y_all
    images = pd.DataFrame(
        {
            "image_index": sel,
            "test_index": data.test_index[torch.as_tensor(sel)].numpy(),
            "label": y_all.cpu().numpy(),
            "prediction": pred.cpu().numpy(),
            "correct": correct.cpu().numpy(),
            "confidence": probs.max(-1).values.cpu().numpy(),
            "lower_bound": margin_lower_bound(probs).cpu().numpy(),
        }
    )
    run_info = {
        "fingerprint": config.fingerprint(),
        "config": asdict(config),
        "model": config.model,
        "model_identity": info,
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
        "damping": DEFAULT_DAMPING[config.method] if config.damping is None else config.damping,
        "damping_mode": config.damping_mode,
        "solver": config.solver,
        "top_classes": config.top_classes,
        "max_steps": DEFAULT_MAX_STEPS[config.method] if config.max_steps is None else config.max_steps,
        "tracer_options": {**ACCURACY_DEFAULTS, **config.accuracy},
        "versions": _versions(),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "world_size": world,
        "status": "running",
    }
    if rank == 0:
        _atomic_write_parquet(images, out / IMAGES_FILE)
        _atomic_write_parquet(images[~images["correct"]], out / "misclassified.parquet")
        (out / PATHS_DIR).mkdir(exist_ok=True)
        if not (out / RUN_FILE).exists():
            _atomic_write_json(run_info, out / RUN_FILE)
    _barrier(world)

    good = torch.nonzero(correct)[:, 0]
    chunks = [good[i : i + config.chunk_images] for i in range(0, len(good), config.chunk_images)]
    mine = [(cid, rows) for cid, rows in enumerate(chunks) if cid % world == rank]
    todo = [(cid, rows) for cid, rows in mine if not (out / PATHS_DIR / f"part-{cid:05d}.parquet").exists()]
    total = sum(len(rows) for _, rows in mine) * (C - 1)
    done = total - sum(len(rows) for _, rows in todo) * (C - 1)
    bar = _progress_bar(total, done, progress and rank == 0)
    trace_seconds = 0.0
    for cid, rows in todo:
        t0 = time.time()
        frame = _trace_chunk(model, x_all, probs, sel, rows, C, config)
        trace_seconds += time.time() - t0
        _atomic_write_parquet(frame, out / PATHS_DIR / f"part-{cid:05d}.parquet")
        if bar is not None:
            bar.update(len(frame))
    if bar is not None:
        bar.close()
    if config.baselines:
        _run_baselines(model, x_all, y_all, sel, good, config, out, rank, world, progress)
    paths_here = sum(len(rows) for _, rows in todo) * (C - 1)
    if world > 1:  # every rank's work goes into run.json, not only rank 0's
        import torch.distributed as dist

        on = device if device.type == "cuda" else torch.device("cpu")
        n = torch.tensor([paths_here], dtype=torch.int64, device=on)
        s = torch.tensor([trace_seconds], dtype=torch.float64, device=on)
        dist.all_reduce(n, op=dist.ReduceOp.SUM)
        dist.all_reduce(s, op=dist.ReduceOp.MAX)  # wall-clock of the tracing phase
        paths_here, trace_seconds = int(n.item()), float(s.item())
    _barrier(world)
    if rank == 0:
        final = json.loads((out / RUN_FILE).read_text())
        paths = pd.read_parquet(out / PATHS_DIR)
        sessions = final.get("sessions", []) + [
            {
                "seconds": round(time.time() - started, 3),
                "trace_seconds": round(trace_seconds, 3),
                "paths_traced": int(paths_here),
                "world_size": world,
            }
        ]
        traced = sum(s["paths_traced"] for s in sessions)
        seconds = sum(s["trace_seconds"] for s in sessions)
        final.update(
            status="complete",
            n_paths=len(paths),
            sessions=sessions,
            timing={
                "total": round(sum(s["seconds"] for s in sessions), 3),
                "tracing": round(seconds, 3),
                "per_path": round(seconds / traced, 4) if traced else 0.0,
            },
            versions=_versions(),
        )
        _atomic_write_json(final, out / RUN_FILE)
    _barrier(world)
    return out


def _progress_bar(total: int, done: int, show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="path", desc="paths", dynamic_ncols=True)


def _trace_chunk(model, x_all, probs, sel, rows, C, config: RunConfig) -> pd.DataFrame:
    """Paths from each image in ``rows`` (indices into the selection) to every other class."""
    src = probs[rows].argmax(-1)
    targets = torch.stack([torch.tensor([c for c in range(C) if c != int(s)]) for s in src]).to(src.device)
    rep = rows.repeat_interleave(C - 1)
    source = src.repeat_interleave(C - 1)
    target = targets.reshape(-1)
    res = trace_paths(
        model,
        x_all[rep],
        source,
        target,
        method=config.method,
        metric=config.metric,
        damping=config.damping,
        damping_mode=config.damping_mode,
        solver=config.solver,
        max_steps=config.max_steps,
        until=config.until,
        box=config.box,
        batch_size=config.batch_size,
        top_classes=config.top_classes,
        **config.accuracy,
    )
    p0 = probs[rep]
    pred_len, pred_hit = predicted_path(p0, source, target)
    frame = res.to_frame()
    frame.insert(0, "image_index", sel[rep.cpu().numpy()])
    frame.insert(1, "source", source.cpu().numpy())
    frame.insert(2, "target", target.cpu().numpy())
    frame.insert(3, "method", config.method)
    frame.insert(4, "metric", config.metric)
    frame["shielded"] = frame["success"] & (frame["first_hit"] != frame["target"])
    frame["predicted_length"] = pred_len.cpu().numpy()
    frame["predicted_first_hit"] = pred_hit.cpu().numpy()
    frame["lower_bound"] = margin_lower_bound(p0, source).cpu().numpy()
    frame["confidence"] = p0.gather(1, source[:, None])[:, 0].cpu().numpy()
    if config.box is not None:
        frame["box_margin"] = _box_margins(model, x_all[rep], source, res, config.box)
    return frame


def _box_margins(model, x0, source, res, box) -> np.ndarray:
    """The in-box margin estimate (``paths.box_margin``) of each ok path, NaN elsewhere."""
    from .paths.box_margin import box_margin

    out = np.full(len(res), np.nan)
    ok = torch.tensor([s == "ok" for s in res.status], device=x0.device)
    if ok.any():
        est = box_margin(model, x0[ok], source[ok], res.x_end[ok], res.fr_length[ok], box)
        out[ok.cpu().numpy()] = est.length.cpu().numpy()
    return out


def _run_baselines(model, x_all, y_all, sel, good, config, out, rank, world, progress) -> None:
    from .baselines import min_l2_attack

    folder = out / BASELINES_DIR
    if rank == 0:
        folder.mkdir(exist_ok=True)
    _barrier(world)
    chunks = [good[i : i + 32] for i in range(0, len(good), 32)]
    for attack in config.baselines:
        for cid, rows in enumerate(chunks):
            if cid % world != rank:
                continue
            part = folder / f"part-{attack}-{cid:05d}.parquet"
            if part.exists():
                continue
            res = min_l2_attack(model, x_all[rows], y_all[rows], attack=attack, bounds=(0.0, 1.0))
            frame = pd.DataFrame(
                {
                    "image_index": sel[rows.cpu().numpy()],
                    "attack": attack,
                    "l2": res.distance.cpu().numpy(),
                    "status": list(res.status),
                }
            )
            _atomic_write_parquet(frame, part)
