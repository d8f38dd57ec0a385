"""``frmargin study``: the plan of a study across models, and its runs.

A study runs every model on the same stratified images. Per model (``study_runs``, in order):

- ``closed-form``: the model's logits on every image of the data (the 10,000 official test
  images of CIFAR-10), one inference pass: accuracy, the closed-form margin of each image and its
  top-two log-odds (``runs.closed_form``);
- ``fisher``: natural-gradient paths at each temperature (the baselines, e.g. FMN, with the
  first);
- ``euclidean``: plain-gradient paths, once, at the first temperature (a temperature rescales the
  Euclidean direction until the first class change, so only the step control would differ);
- ``box``: natural-gradient paths kept inside ``trace.box`` at the first temperature, with the
  in-box margin estimate on the paths ``box_margin`` picks (``runs.box_estimate``).

A run kind is a name in ``RUN_KINDS`` with a folder ``DIR/<model>[-T<temp>]/<kind>``; a new kind
(e.g. a perturbation model) is one more entry in ``study_runs``. Everything is validated before
any model is loaded (``validate_plan``); ``runs.study_runner.run_study`` runs the plan.

Example:
    >>> plan = StudyPlan(models=("cnn-a-adv2", "resnet20-b"), images=10)
    >>> [r.kind for r in study_runs(plan, Path("runs/study"))][:2]
    ['closed-form', 'closed-form']
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..errors import FrmarginError, bad_argument
from ..options import ACCURACY_FIELDS, METRICS, TraceOptions, spelled
from ..options import spell as option_name
from .box_estimate import parse_box_margin
from .config import ATTACK_NAMES, RunConfig, check_temperature_option

__all__ = [
    "CLOSED_FORM",
    "DEFAULT_BOX_MARGIN",
    "RUN_KINDS",
    "STUDY_FILE",
    "StudyPlan",
    "StudyRun",
    "known_models",
    "parse_list",
    "parse_temperatures",
    "study_runs",
    "temperature_label",
    "validate_plan",
]

STUDY_FILE = "study.json"
BASELINE_NAMES = ATTACK_NAMES
CLOSED_FORM = "closed-form"
#: the kinds of run a study makes, in the order of a model's runs
RUN_KINDS = (CLOSED_FORM, "fisher", "euclidean", "box")
#: the study's in-box estimate: the paths within 5% of their image's shortest (``runs.box_estimate``)
DEFAULT_BOX_MARGIN = "candidates:1.05"
#: plan fields that enter its fingerprint only when set (the fields of a study's first layout always do)
LATER_FIELDS = ("box_margin", "closed_form")


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
    """What a study runs: per model the runs of ``study_runs``, on the same stratified images."""

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
    #: how every run traces (``metric`` set per run; ``box`` only in the box run, which it adds)
    trace: TraceOptions = field(default_factory=TraceOptions)
    #: which paths of the box run get the in-box margin estimate (``runs.box_estimate``)
    box_margin: str = DEFAULT_BOX_MARGIN
    #: the closed-form pass over every image of the data, per model
    closed_form: bool = True

    def as_dict(self) -> dict:
        """JSON-friendly plan (study.json)."""
        return json.loads(json.dumps(asdict(self), default=str))

    def fingerprint(self) -> str:
        """16 hex digits identifying the plan's results (device, batch size and memory budget left
        out; tracing options, and the plan's fields in ``LATER_FIELDS``, enter only where they
        differ from their defaults, so a field added later keeps existing studies resumable)."""
        later = {f.name: f.default for f in fields(self) if f.name in LATER_FIELDS}
        d = {
            k: v
            for k, v in self.as_dict().items()
            if k not in ("device", "trace") and not (k in later and getattr(self, k) == later[k])
        }
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

    def fingerprints(self) -> set[str]:
        """The fingerprints of study folders this plan continues: its own and, for a plan that
        traces the pure flow (``continuation="none"``), that of a folder made before the
        continuation option existed (its plan recorded none; its natural-gradient runs traced the
        pure flow). Each run's own fingerprint still decides what is finished."""
        out = {self.fingerprint()}
        if self.trace.continuation == "none":
            default = TraceOptions().continuation
            out.add(replace(self, trace=self.trace.replace(continuation=default)).fingerprint())
        return out


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: its model, temperature, kind, configuration and folder.

    ``metric`` is the tracing metric (``fisher`` for the box run; ``-`` for the closed form).
    """

    model: str
    temperature: float | str
    kind: str
    metric: str
    config: RunConfig
    folder: Path

    @property
    def key(self) -> str:
        """``<model>`` or ``<model>-T<temperature>``: the folder above the run's."""
        return self.folder.parent.name

    @property
    def traces(self) -> bool:
        """Whether the run traces paths (every kind but the closed form)."""
        return self.kind != CLOSED_FORM

    def entry(self, status: str) -> dict:
        """The run's entry in study.json."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "kind": self.kind,
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


def validate_plan(plan: StudyPlan, catalog: dict[str, dict], spell: Callable[[str], str] | None = None) -> None:
    """Raise FrmarginError naming the first bad option of ``plan`` (nothing is loaded or traced):
    models, metrics, temperatures, baselines, images, and every run's configuration (a box
    outside the input range, the box margin rule, ...), spelled with ``spell`` (e.g. ``--box``)."""
    _unique(list(plan.models), "models", list(catalog))
    _unique(list(plan.metrics), "metrics", list(METRICS))
    _unique([temperature_label(t) for t in plan.temperatures], "temperature")
    for t in plan.temperatures:
        check_temperature_option(t)
    if plan.baselines:
        _unique(list(plan.baselines), "baselines", BASELINE_NAMES)
    with spelled(spell or str):
        if not (isinstance(plan.images, int) and plan.images >= 1):
            raise bad_argument(option_name("images"), plan.images, "a positive number of images")
        parse_box_margin(plan.box_margin)
    for run in study_runs(plan, Path(".")):
        run.config.validate(spell=spell)


def study_runs(plan: StudyPlan, out: Path) -> list[StudyRun]:
    """Every run of ``plan``: the closed-form pass of every model first (minutes; it counts the
    study's paths), then model by model its traced runs, so a stopped study leaves whole models."""
    base = RunConfig(
        data=plan.data,
        images=plan.images,
        seed=plan.seed,
        trace=plan.trace.replace(box=None),
        chunk_images=plan.chunk_images,
        dtype=plan.dtype,
        device=plan.device,
    )
    first_t = plan.temperatures[0]
    closed, traced = [], []
    for model in plan.models:
        folder = Path(out) / _key(model, first_t)
        if plan.closed_form:
            config = replace(base, model=model)
            closed.append(StudyRun(model, 1.0, CLOSED_FORM, "-", config, Path(out) / model / CLOSED_FORM))
        first = True
        for t in plan.temperatures:
            for metric in plan.metrics:
                if metric == "euclidean" and t != first_t:
                    continue  # a temperature does not change Euclidean paths (beyond the step control)
                config = replace(base, model=model, trace=base.trace.replace(metric=metric), temperature=t,
                                 baselines=tuple(plan.baselines) if first else ())  # fmt: skip
                traced.append(StudyRun(model, t, metric, metric, config, Path(out) / _key(model, t) / metric))
                first = False
        if plan.trace.box is not None:
            config = replace(base, model=model, trace=plan.trace.replace(metric="fisher"), temperature=first_t,
                             box_margin=plan.box_margin)  # fmt: skip
            traced.append(StudyRun(model, first_t, "box", "fisher", config, folder / "box"))
    return closed + traced


def _key(model: str, t: float | str) -> str:
    return model if t == 1.0 else f"{model}-T{temperature_label(t)}"
