"""``RunConfig``: everything that defines a run, its identity and fingerprint, and its checks.

Importing this module imports neither torch nor pandas: the tracer's option names are read from
``frmargin.paths`` only when a configuration is validated or resolved.

Example:
    >>> config = RunConfig(images=20, data="cifar10-exact")
    >>> config.validate()
    >>> len(config.fingerprint())
    16
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import bad_argument

__all__ = ["IDENTITY_FIELDS", "TOP_LEVEL_FIELDS", "RunConfig", "check_tracer_options"]

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
    "targets",
)
#: identity fields left out while None, so that runs made before they existed keep their fingerprint
OPTIONAL_IDENTITY_FIELDS = ("top_classes", "targets")
#: fields that run.json stores verbatim at its top level (the readers' keys); the other fields go
#: into its ``config`` entry, so that every field is stored once
TOP_LEVEL_FIELDS = (
    "model",
    "images",
    "method",
    "metric",
    "until",
    "box",
    "seed",
    "damping_mode",
    "solver",
    "top_classes",
    "targets",
)
#: ``data`` is stored at the top level as ``data_requested`` (``data`` there is the dataset loaded)
REQUESTED_DATA_KEY = "data_requested"
DTYPES = ("float32", "float64")


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
    #: target rule (runs/targets.py); None: ``all`` when C <= 10, ``top:9`` otherwise
    targets: str | None = None
    #: bytes of Jacobian rows one batch may hold, e.g. "4GB" (paths.api); None: a safe share of memory
    memory_budget: str | None = None

    def validate(self) -> None:
        """Raise FrmarginError naming the first bad option."""
        if not (isinstance(self.images, int) and self.images >= 1):
            raise bad_argument("images", self.images, "a positive number of images")
        for name in ("batch_size", "chunk_images"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise bad_argument(name.replace("_", "-"), value, "a positive integer")
        check_tracer_options(self)
        if self.targets is not None:
            from .targets import parse_targets

            parse_targets(self.targets)
        if self.memory_budget is not None:
            from ..paths.api import parse_memory_budget

            parse_memory_budget(self.memory_budget)

    def identity(self) -> dict:
        """The fields that change results, as a dict (``top_classes``, ``targets`` only when set)."""
        d = asdict(self)
        # an option left at None is left out, so runs made before it existed keep their fingerprint
        return {k: d[k] for k in IDENTITY_FIELDS if not (k in OPTIONAL_IDENTITY_FIELDS and d[k] is None)}

    def fingerprint(self) -> str:
        """16 hex digits of the SHA-256 of the identity: equal fingerprints, same results."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    def resolved_damping(self) -> float:
        """The damping the tracer uses (its per-method default when ``damping`` is None)."""
        from ..paths import DEFAULT_DAMPING

        return DEFAULT_DAMPING[self.method] if self.damping is None else self.damping

    def resolved_max_steps(self) -> int:
        """The step budget the tracer uses (its per-method default when ``max_steps`` is None)."""
        from ..paths import DEFAULT_MAX_STEPS

        return DEFAULT_MAX_STEPS[self.method] if self.max_steps is None else self.max_steps

    def tracer_options(self) -> dict:
        """Every accuracy option of the tracer: its defaults, overridden by ``accuracy``."""
        from ..paths import ACCURACY_DEFAULTS

        return {**ACCURACY_DEFAULTS, **self.accuracy}

    def trace_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``trace_paths`` for this run's paths."""
        return {
            "method": self.method,
            "metric": self.metric,
            "damping": self.damping,
            "damping_mode": self.damping_mode,
            "solver": self.solver,
            "max_steps": self.max_steps,
            "until": self.until,
            "box": self.box,
            "batch_size": self.batch_size,
            "top_classes": self.top_classes,
            "memory_budget": self.memory_budget,
            **self.accuracy,
        }

    def run_json_entries(self) -> dict:
        """The ``config`` entry of run.json: the fields not stored at its top level."""
        stored_elsewhere = {*TOP_LEVEL_FIELDS, "data"}
        return {k: v for k, v in asdict(self).items() if k not in stored_elsewhere}

    @classmethod
    def from_run_info(cls, info: Mapping[str, Any]) -> RunConfig:
        """The configuration recorded in a run.json, old (full ``config``) or new (split) layout.

        Example:
            >>> config = RunConfig(images=20)
            >>> info = {"fingerprint": config.fingerprint(), "config": {"images": 20}}
            >>> RunConfig.from_run_info(info) == config
            True
        """
        stored = dict(info.get("config") or {})
        for name in TOP_LEVEL_FIELDS:
            if name not in stored and name in info:
                stored[name] = info[name]
        if "data" not in stored and REQUESTED_DATA_KEY in info:
            stored["data"] = info[REQUESTED_DATA_KEY]
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in stored.items() if k in known}
        if values.get("box") is not None:
            values["box"] = tuple(values["box"])
        if "baselines" in values:
            values["baselines"] = tuple(values["baselines"])
        return cls(**values)


def check_tracer_options(config: RunConfig) -> None:
    """Raise FrmarginError naming the first bad tracer option of ``config`` (before any work).

    The one place where a run's tracer options are checked: the names the CLI uses first, then
    everything ``trace_paths`` itself checks (accuracy option names and values, solver, damping).
    """
    from .. import paths

    for name, allowed in (("method", paths.METHODS), ("metric", paths.METRICS), ("until", paths.UNTIL)):
        if getattr(config, name) not in allowed:
            raise bad_argument(name, getattr(config, name), f"one of {', '.join(allowed)}")
    if config.dtype not in DTYPES:
        raise bad_argument("dtype", config.dtype, "float32 or float64")
    top = config.top_classes
    if top is not None and not (isinstance(top, int) and top >= 2):
        raise bad_argument("top-classes", top, "an integer >= 2 (source and target are always kept)")
    # the tracer's own validator: the same checks as trace_paths, before anything is written
    from ..paths.options import resolve_options

    resolve_options(
        method=config.method,
        metric=config.metric,
        until=config.until,
        solver=config.solver,
        damping=config.damping,
        damping_mode=config.damping_mode,
        max_steps=config.max_steps,
        box=config.box,
        top_classes=config.top_classes,
        accuracy=dict(config.accuracy),
    )
