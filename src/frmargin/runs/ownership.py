"""Who owns a run folder and whether a session may continue it: the checks before anything is
written (options, then the model's and the data's contents) and the sessions recorded in run.json
(the input checks are ``preflight``'s).

Example:
    >>> prepare_folder(Path("runs/r20"), RunConfig(images=20), resume=False, rank=0)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

from ..errors import FrmarginError
from . import folder
from .config import RunConfig, resume_mismatch
from .lock import LOCK_FILE
from .provenance import code_change, source_version

__all__ = ["check_contents", "old_run_info", "prepare_folder", "start_session"]


def check_out_path(out: Path) -> None:
    """Refuse an ``--out`` that is a file (checked first: before the model and data are loaded)."""
    if out.exists() and not out.is_dir():
        raise FrmarginError(f"option '--out': {str(out)!r} is a file, expected a folder; choose another --out")


def prepare_folder(out: Path, config: RunConfig, resume: bool, rank: int) -> None:
    """Refuse a folder holding another run, this run without ``resume``, or other files (the
    options only: the model and data contents are compared once they are loaded)."""
    check_out_path(out)
    old = old_run_info(out)
    if old is not None:
        reason = resume_mismatch(old, config, None, None)
        if reason is not None:
            if traced_pure_flow(old, config):
                raise FrmarginError(
                    f"option '--continuation': {str(out)!r} holds this run traced with the pure flow, "
                    "expected --continuation none to resume it (or choose another --out)"
                )
            raise FrmarginError(f"option '--out': {str(out)!r} holds a different run ({reason}); choose another folder")
        if not resume:
            raise FrmarginError(f"option '--out': {str(out)!r} already holds this run; pass --resume to continue it")
    elif out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()) and rank == 0 and not resume:
        raise FrmarginError(f"option '--out': {str(out)!r} is not empty and holds no run; choose another folder")


def traced_pure_flow(old: dict, config: RunConfig) -> bool:
    """Whether the recorded run is this one traced without the damped continuation (a run
    folder written before it existed, or with --continuation none)."""
    if not config.trace.damped_continuation:
        return False
    pure = replace(config, trace=replace(config.trace, continuation="none"))
    return resume_mismatch(old, pure, None, None) is None


def old_run_info(out: Path) -> dict | None:
    run_file = out / folder.RUN_FILE
    if not run_file.exists():
        return None
    try:
        old = folder.read_json(run_file)
    except (OSError, json.JSONDecodeError) as err:
        raise FrmarginError(
            f"option '--out': {str(out)!r} holds an unreadable {folder.RUN_FILE} ({err}); choose another folder"
        ) from None
    if not isinstance(old, dict):
        raise FrmarginError(
            f"option '--out': {str(run_file)!r} holds a JSON {type(old).__name__}, expected the object "
            "written by frmargin run; choose another folder"
        )
    return old


def check_contents(out: Path, config: RunConfig, model_identity: dict, data_identity: dict) -> None:
    """Refuse to resume when the model's weights or the data differ from the recorded ones."""
    old = old_run_info(out)
    if old is None:
        return
    reason = resume_mismatch(old, config, model_identity, data_identity)
    if reason is not None:
        raise FrmarginError(
            f"option '--out': {str(out)!r} holds a run made with {reason}; resuming would mix two runs, "
            "choose another folder"
        )


def start_session(out: Path, info: dict, config: RunConfig, world: int) -> None:
    """Record this session in run.json before any tracing (a killed session stays recorded)."""
    sessions = [
        {**s, "status": "killed"} if s.get("status") == "running" else s for s in info.get("sessions", [])
    ]  # we hold the lock, so a session still marked running was interrupted
    code = source_version()
    earlier = code_change(sessions, code)
    if earlier is not None:
        print(
            f"frmargin: warning: {out} was traced so far by frmargin {earlier}; this session runs {code}: "
            "its parts come from other code (rerun into a new --out for results of one version)",
            file=sys.stderr,
        )
    sessions.append(
        {
            "started": round(time.time(), 3),
            "pid": os.getpid(),
            "host": platform.node(),
            "world_size": world,
            "batch_size": config.trace.batch_size,
            "frmargin": code,
            "status": "running",
        }
    )
    recorded = dict(info.get("config") or {})
    baselines = [
        *recorded.get("baselines", []),
        *(b for b in config.baselines if b not in recorded.get("baselines", [])),
    ]
    info.update(sessions=sessions, status="running", config={**recorded, "baselines": baselines})
    folder.write_json(info, out / folder.RUN_FILE)
