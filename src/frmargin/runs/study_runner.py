"""Running a study (``frmargin study``): check the plan, own the folder, run or resume every run.

Everything is validated before any model is loaded. Rank 0 then checks the folder (a study
folder of this plan, or a new one), locks it (``DIR/.lock``: one study at a time; a lock left by
a killed process is taken over) and finds which runs are finished; that decision, or the error,
goes to every rank, so every rank fails alike or runs the same runs. Each run goes to its folder
(``runs.study.study_runs``): a traced run through ``run_experiment`` with resume (under
``torchrun`` its chunks are shared over the ranks, each rank checking and writing its own parts),
the closed-form pass through ``runs.closed_form``. ``DIR/study.json`` records the plan and the
status of every run. Rerunning the same command resumes; a finished run is skipped.

Example:
    >>> run_study(StudyPlan(models=("cnn-a-adv2", "resnet20-b"), images=10), Path("runs/study"))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import FrmarginError
from . import folder
from .closed_form import closed_form_complete, run_closed_form
from .distributed import broadcast_object, rank_and_world
from .lock import RunLock
from .ownership import traced_pure_flow
from .study import STUDY_FILE, StudyPlan, StudyRun, known_models, study_runs, validate_plan
from .study_progress import StudyProgress

__all__ = ["pending_runs", "read_study", "run_finished", "run_study"]


def run_finished(run: StudyRun) -> bool:
    """The run's folder holds this run, complete; FrmarginError when it holds another run."""
    if not run.traces:
        return closed_form_complete(run.config, run.folder)
    info = folder.read_run_info(run.folder)
    if info is None:
        return False
    # run.json's options fingerprint (batch size included; the full fingerprint adds the contents,
    # which run_experiment checks); runs written before it existed carry the options-only one
    key, mine = (
        ("options_fingerprint", run.config.options_fingerprint())
        if "options_fingerprint" in info
        else ("fingerprint", run.config.fingerprint())
    )
    if info.get(key) != mine:
        if traced_pure_flow(info, run.config):
            raise FrmarginError(
                f"option '--continuation': {run.folder} holds this study's run traced with the pure flow, "
                "expected --continuation none to resume the study (or choose another --out)"
            )
        raise FrmarginError(
            f"option '--out': {run.folder} holds a different run (fingerprint {info.get(key)}, "
            f"this study's {mine}); choose another folder"
        )
    return info.get("status") == "complete"


def read_study(out: Path) -> dict:
    """study.json of the study folder ``out``; FrmarginError when there is none."""
    path = Path(out) / STUDY_FILE
    if not path.exists():
        raise FrmarginError(f"argument 'study_dir': {str(out)!r} has no {STUDY_FILE}, expected a study folder")
    return folder.read_json(path)


def pending_runs(study: dict) -> list[str]:
    """``KEY/KIND`` of every run of a study.json that is not finished."""
    return [
        f"{Path(e['folder']).parent.name}/{Path(e['folder']).name}"
        for e in study["runs"]
        if e.get("status") != "complete"
    ]


def _check_folder(plan: StudyPlan, out: Path) -> None:
    path = Path(out) / STUDY_FILE
    if path.exists():
        old = folder.read_json(path)
        recorded = old.get("fingerprint")
        if recorded in plan.fingerprints():
            return
        if recorded == replace(plan, trace=plan.trace.replace(continuation="none")).fingerprint():
            raise FrmarginError(
                f"option '--continuation': {out} holds this study traced with the pure flow, "
                "expected --continuation none to resume it (or choose another --out)"
            )
        raise FrmarginError(
            f"option '--out': {out} holds a different study (plan {recorded}, "
            f"this plan {plan.fingerprint()}); choose another folder"
        )
    elif Path(out).exists() and any(p.name != ".lock" for p in Path(out).iterdir()):
        raise FrmarginError(f"option '--out': {out} is not empty and holds no study; choose another folder")


def _write_progress(plan: StudyPlan, out: Path, runs: list[StudyRun], status: dict[int, str], catalog: dict) -> None:
    done = all(s == "complete" for s in status.values())
    study = {
        "fingerprint": plan.fingerprint(),
        "plan": plan.as_dict(),
        "catalog": {m: catalog[m] for m in plan.models},
        "runs": [r.entry(status[i]) for i, r in enumerate(runs)],
        "status": "complete" if done else "running",
    }
    folder.write_json(study, Path(out) / STUDY_FILE)


def _start(plan: StudyPlan, out: Path, runs: list[StudyRun], catalog: dict, lock: RunLock) -> dict[int, str]:
    """Rank 0: check and lock the folder, and find the finished runs (written to study.json)."""
    _check_folder(plan, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FrmarginError(f"option '--out': cannot create the folder {str(out)!r} ({err.strerror or err})") from None
    lock.acquire()
    status = {i: "complete" if run_finished(r) else "pending" for i, r in enumerate(runs)}
    _write_progress(plan, out, runs, status, catalog)
    return status


def run_study(
    plan: StudyPlan,
    out: Path,
    *,
    catalog: dict[str, dict] | None = None,
    progress: bool = False,
    spell: Callable[[str], str] | None = None,
) -> list[StudyRun]:
    """Validate ``plan``, then run (or resume) every run of it into ``out``; returns the runs.

    ``catalog`` maps known model names to their family and training (default: the zoo);
    ``spell`` spells option names in errors (e.g. ``cli_spelling``); ``progress`` shows one
    display for the whole study (rank 0).
    """
    from .experiment import run_experiment

    catalog = known_models() if catalog is None else catalog
    validate_plan(plan, catalog, spell)
    out = Path(out)
    runs = study_runs(plan, out)
    rank, world = rank_and_world()
    lock = RunLock(out)
    status: dict[int, str] = {}
    message: str | None = None
    error: FrmarginError | None = None
    if rank == 0:
        try:
            status = _start(plan, out, runs, catalog, lock)
        except FrmarginError as err:
            error = err
    decided = broadcast_object((status, None if error is None else str(error)), world)
    status, message = decided  # type: ignore[misc]
    if message is not None:
        raise error if error is not None else FrmarginError(message)
    try:
        with StudyProgress(runs, show=progress and rank == 0) as display:
            for i, run in enumerate(runs):
                if status[i] == "complete":
                    continue
                display.stage(f"{run.key}/{run.kind}", tracing=run.traces)
                if rank == 0:
                    status[i] = "running"
                    _write_progress(plan, out, runs, status, catalog)
                started = time.time()
                if run.traces:
                    run_experiment(run.config, run.folder, resume=True, progress=False)
                else:
                    run_closed_form(run.config, run.folder, rank, world)
                if rank == 0:
                    status[i] = "complete"
                    _write_progress(plan, out, runs, status, catalog)
                    if progress:
                        display.note(f"frmargin study: {run.key}/{run.kind} done in {time.time() - started:.0f} s")
    finally:
        lock.release()
    return runs
