"""``frmargin study``: one run folder per model, temperature and metric, on the same images.

Everything is validated before any tracing starts (model names against the catalog, duplicates,
metrics, temperatures, baselines, and every run's configuration and folder). Then each run goes
to ``DIR/<model>[-T<temp>]/<metric>`` through ``run_experiment`` with resume: a finished run is
skipped, an interrupted one continued. ``DIR/study.json`` records the plan and the progress of
every run. The baselines (model-dependent, not metric-dependent) run with the first metric only.

Example:
    >>> plan = StudyPlan(models=("cnn-a-adv2", "resnet20-b"), images=10)
    >>> run_study(plan, Path("runs/study"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..errors import FrmarginError, bad_argument
from ..options import ACCURACY_FIELDS, METRICS, TraceOptions
from . import folder
from .config import ATTACK_NAMES, RunConfig, check_temperature_option

__all__ = [
    "STUDY_FILE",
    "StudyPlan",
    "StudyRun",
    "known_models",
    "parse_list",
    "parse_temperatures",
    "read_study",
    "run_study",
    "study_runs",
]

STUDY_FILE = "study.json"
BASELINE_NAMES = ATTACK_NAMES


def known_models() -> dict[str, dict]:
    """The zoo's models: name -> {family, training, architecture} (what the verdicts group by)."""
    from ..models.registry import MODELS

    return {
        s.name: {"family": s.family, "training": s.training, "architecture": s.architecture} for s in MODELS.values()
    }


def parse_list(text: str, option: str) -> tuple[str, ...]:
    """Comma-separated names (blanks stripped); FrmarginError on an empty item or list."""
    items = tuple(t.strip() for t in str(text).split(","))
    if not text or not str(text).strip() or any(not t for t in items):
        raise FrmarginError(f"option '--{option}': got {text!r}, expected a comma-separated list of names")
    return items


def parse_temperatures(text: str) -> tuple[float | str, ...]:
    """``"1,auto"`` -> (1.0, "auto"); FrmarginError naming ``--temperature`` on a bad item."""
    out: list[float | str] = []
    for item in parse_list(text, "temperature"):
        try:
            out.append(check_temperature_option(item if item == "auto" else float(item)))
        except (FrmarginError, ValueError):
            raise FrmarginError(
                f"option '--temperature': got {item!r}, expected a number > 0 or 'auto' (comma-separated)"
            ) from None
    return tuple(out)


def temperature_label(t: float | str) -> str:
    """``auto`` or the number in shortest form (``2``, ``1.5``)."""
    return "auto" if t == "auto" else f"{float(t):g}"


@dataclass(frozen=True)
class StudyPlan:
    """What a study runs: every model x temperature x metric, on the same stratified images."""

    models: tuple[str, ...]
    images: int
    metrics: tuple[str, ...] = ("fisher",)
    baselines: tuple[str, ...] = ()
    temperatures: tuple[float | str, ...] = (1.0,)
    data: str = "auto"
    seed: int = 0
    chunk_images: int = 4
    dtype: str = "float32"
    device: str = "cpu"
    #: how every run traces (its ``metric`` is set per run from ``metrics``)
    trace: TraceOptions = field(default_factory=TraceOptions)

    def as_dict(self) -> dict:
        """JSON-friendly plan (study.json)."""
        return json.loads(json.dumps(asdict(self), default=str))

    def fingerprint(self) -> str:
        """16 hex digits identifying the plan's results (device, batch size and memory budget left
        out; tracing options enter only where they differ from their defaults)."""
        d = {k: v for k, v in self.as_dict().items() if k not in ("device", "trace")}
        d["accuracy"] = self.trace.accuracy()
        defaults = TraceOptions()
        changed = {
            f.name: getattr(self.trace, f.name)
            for f in fields(TraceOptions)
            if f.name not in (*ACCURACY_FIELDS, "metric", "batch_size", "memory_budget")
            and getattr(self.trace, f.name) != getattr(defaults, f.name)
        }
        if changed:
            d["trace"] = changed
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: its model, temperature, metric, configuration and folder."""

    model: str
    temperature: float | str
    metric: str
    config: RunConfig
    folder: Path

    def entry(self, status: str) -> dict:
        """The run's entry in study.json."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "metric": self.metric,
            "folder": str(self.folder),
            "fingerprint": self.config.fingerprint(),
            "status": status,
        }


def _unique(values: Sequence, option: str, allowed: Sequence | None = None) -> None:
    if not values:
        raise FrmarginError(f"option '--{option}': got an empty list, expected at least one name")
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise FrmarginError(f"option '--{option}': got {seen[0]!r} twice, expected each name once")
    if allowed is not None:
        bad = [v for v in values if v not in allowed]
        if bad:
            raise FrmarginError(f"option '--{option}': got {bad[0]!r}, expected one of {', '.join(map(str, allowed))}")


def validate_plan(plan: StudyPlan, catalog: dict[str, dict]) -> None:
    """Raise FrmarginError naming the first bad option of ``plan`` (nothing is loaded or traced)."""
    _unique(list(plan.models), "models", list(catalog))
    _unique(list(plan.metrics), "metrics", list(METRICS))
    _unique([temperature_label(t) for t in plan.temperatures], "temperature")
    for t in plan.temperatures:
        check_temperature_option(t)
    if plan.baselines:
        _unique(list(plan.baselines), "baselines", BASELINE_NAMES)
    if not (isinstance(plan.images, int) and plan.images >= 1):
        raise bad_argument("images", plan.images, "a positive number of images")


def study_runs(plan: StudyPlan, out: Path) -> list[StudyRun]:
    """Every run of ``plan``, in order (model, then temperature, then metric)."""
    base = RunConfig(
        data=plan.data,
        images=plan.images,
        seed=plan.seed,
        trace=plan.trace,
        chunk_images=plan.chunk_images,
        dtype=plan.dtype,
        device=plan.device,
    )
    runs = []
    for model in plan.models:
        for t in plan.temperatures:
            name = model if t == 1.0 else f"{model}-T{temperature_label(t)}"
            for i, metric in enumerate(plan.metrics):
                config = replace(
                    base,
                    model=model,
                    trace=plan.trace.replace(metric=metric),
                    temperature=t,
                    baselines=tuple(plan.baselines) if i == 0 else (),
                )
                runs.append(StudyRun(model, t, metric, config, Path(out) / name / metric))
    return runs


def _finished(run: StudyRun) -> bool:
    """The run's folder holds this run, complete; FrmarginError when it holds another run."""
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


def _check_folder(plan: StudyPlan, out: Path) -> None:
    path = Path(out) / STUDY_FILE
    if path.exists():
        old = folder.read_json(path)
        if old.get("fingerprint") != plan.fingerprint():
            raise FrmarginError(
                f"option '--out': {out} holds a different study (plan {old.get('fingerprint')}, "
                f"this plan {plan.fingerprint()}); choose another folder"
            )
    elif Path(out).exists() and any(Path(out).iterdir()):
        raise FrmarginError(f"option '--out': {out} is not empty and holds no study; choose another folder")


def _write_progress(
    plan: StudyPlan, out: Path, runs: list[StudyRun], status: dict[int, str], catalog: dict[str, dict]
) -> None:
    done = all(s == "complete" for s in status.values())
    study = {
        "fingerprint": plan.fingerprint(),
        "plan": plan.as_dict(),
        "catalog": {m: catalog[m] for m in plan.models},
        "runs": [r.entry(status[i]) for i, r in enumerate(runs)],
        "status": "complete" if done else "running",
    }
    folder.write_json(study, Path(out) / STUDY_FILE)


def run_study(
    plan: StudyPlan, out: Path, *, catalog: dict[str, dict] | None = None, progress: bool = False
) -> list[StudyRun]:
    """Validate ``plan``, then run (or resume) every run of it into ``out``; returns the runs.

    ``catalog`` maps known model names to their family and training (default: the zoo).
    """
    from .experiment import run_experiment

    catalog = known_models() if catalog is None else catalog
    validate_plan(plan, catalog)
    out = Path(out)
    runs = study_runs(plan, out)
    for run in runs:
        run.config.validate()
    _check_folder(plan, out)
    status = {i: "complete" if _finished(r) else "pending" for i, r in enumerate(runs)}
    out.mkdir(parents=True, exist_ok=True)
    _write_progress(plan, out, runs, status, catalog)
    for i, run in enumerate(runs):
        if status[i] == "complete":
            continue
        run.folder.mkdir(parents=True, exist_ok=True)
        status[i] = "running"
        _write_progress(plan, out, runs, status, catalog)
        run_experiment(run.config, run.folder, resume=True, progress=progress)
        status[i] = "complete"
        _write_progress(plan, out, runs, status, catalog)
    return runs
