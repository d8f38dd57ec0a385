"""A study's closed-form pass: a model's logits on every image of the data in one inference pass.

Where the logit Jacobian has rank C-1, an image's Fisher-Rao margin is a closed form of its
softmax output (the bound LB of ``geometry.margin_lower_bound``), and every traced run checks
this on its images. So the logits of all 10,000 official test images give each model's accuracy,
the distribution of its margins and their relation to confidence at the cost of one inference
pass (any temperature T divides the stored logits).

The folder (``DIR/<model>/closed-form``) holds ``logits.parquet/part-NNNNN.parquet`` (one part
per ``CHUNK`` images: ``image_index``, ``test_index``, ``label``, ``z0`` .. ``z{C-1}``) and
``closed_form.json`` (model, data, their content hashes, fingerprint, status, seconds). Under
``torchrun`` the parts are shared round-robin over the ranks; a part written by this pass (its
fingerprint) with the right images is kept on a rerun, so an interrupted pass resumes.

Example:
    >>> run_closed_form(RunConfig(model="resnet20"), Path("runs/study/resnet20/closed-form"), 0, 1)  # doctest: +SKIP
    >>> read_closed_form(Path("runs/study/resnet20/closed-form")).shape  # doctest: +SKIP
    (10000, 13)
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import FrmarginError
from . import folder
from .config import RunConfig, content_hash
from .distributed import barrier
from .preflight import preflight, resolve_inputs

__all__ = ["CHUNK", "INFO_FILE", "LOGITS_DIR", "closed_form_complete", "read_closed_form", "run_closed_form"]

LOGITS_DIR = "logits.parquet"
INFO_FILE = "closed_form.json"
CHUNK = 1000  # images per part
BATCH = 250  # images per forward pass (fixed: the logits do not depend on the number of ranks)


def options_fingerprint(config: RunConfig) -> str:
    """16 hex digits of what the pass depends on before anything is loaded."""
    payload = {k: getattr(config, k) for k in ("model", "data", "dtype", "weights", "normalize", "resize")}
    payload.update(chunk=CHUNK, batch=BATCH)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def closed_form_complete(config: RunConfig, out: Path) -> bool:
    """Whether ``out`` holds this pass, finished; FrmarginError when it holds another one."""
    path = Path(out) / INFO_FILE
    if not path.exists():
        return False
    info = folder.read_json(path)
    if info.get("options_fingerprint") != options_fingerprint(config):
        raise FrmarginError(
            f"option '--out': {out} holds another closed-form pass (fingerprint "
            f"{info.get('options_fingerprint')}, this study's {options_fingerprint(config)}); choose another folder"
        )
    return info.get("status") == "complete"


def _part(out: Path, chunk: int) -> Path:
    return Path(out) / LOGITS_DIR / f"part-{chunk:05d}.parquet"


def _part_is_valid(path: Path, rows: np.ndarray, fp: str) -> bool:
    if not path.exists():
        return False
    try:
        frame = pd.read_parquet(path, columns=["image_index"])
        recorded = folder.part_fingerprint(path)
    except Exception:  # truncated or not parquet: pyarrow raises several types
        return False
    return recorded == fp and np.array_equal(frame["image_index"].to_numpy(), rows)


def run_closed_form(config: RunConfig, out: Path, rank: int, world: int) -> Path:
    """Write (or resume) the closed-form pass of ``config.model`` on every image of ``config.data``."""
    started = time.time()
    out = Path(out)
    config, net, identity, data = resolve_inputs(config)
    device, dtype = torch.device(config.device), getattr(torch, config.dtype)
    net = net.to(device=device, dtype=dtype)
    n_classes = preflight(net, data, config, device, dtype, identity)
    data_identity = getattr(data, "identity", {})
    payload = {
        "options": options_fingerprint(config),
        "model": content_hash(identity),
        "data": content_hash(data_identity),
    }
    fp = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    if rank == 0:
        (out / LOGITS_DIR).mkdir(parents=True, exist_ok=True)
    barrier(world)
    n = len(data.labels)
    for cid, start in enumerate(range(0, n, CHUNK)):
        rows = np.arange(start, min(start + CHUNK, n))
        if cid % world != rank or _part_is_valid(_part(out, cid), rows, fp):
            continue
        with torch.no_grad():
            z = torch.cat(
                [
                    net(data.images[i : i + BATCH].to(device=device, dtype=dtype))
                    for i in range(start, rows[-1] + 1, BATCH)
                ]
            )
        frame = pd.DataFrame(z.float().cpu().numpy(), columns=[f"z{c}" for c in range(n_classes)])
        frame.insert(0, "label", data.labels[rows].numpy())
        frame.insert(0, "test_index", data.test_index[rows].numpy())
        frame.insert(0, "image_index", rows)
        folder.write_parquet(frame, _part(out, cid), fingerprint=fp)
    barrier(world)
    if rank == 0:
        info = {
            "kind": "closed-form",
            "model": config.model,
            "model_identity": identity,
            "data": data.name,
            "data_requested": config.data,
            "data_identity": data_identity,
            "class_names": list(data.class_names),
            "n_images": n,
            "options_fingerprint": options_fingerprint(config),
            "fingerprint": fp,
            "device": str(device),
            "world_size": world,
            "seconds": round(time.time() - started, 3),
            "status": "complete",
        }
        folder.write_json(info, out / INFO_FILE)
    barrier(world)
    return out


def read_closed_form(out: Path) -> pd.DataFrame:
    """The logits table of a finished pass (one row per image, in dataset order)."""
    info_path = Path(out) / INFO_FILE
    if not info_path.exists() or folder.read_json(info_path).get("status") != "complete":
        raise FrmarginError(f"argument 'study_dir': {str(out)!r} holds no finished closed-form pass")
    return pd.read_parquet(Path(out) / LOGITS_DIR).sort_values("image_index").reset_index(drop=True)
