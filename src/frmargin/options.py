"""``TraceOptions``: every option of path tracing, its default, its help and its checks, in one place.

``trace_paths(model, x, source, target, options, **overrides)``, ``RunConfig.trace``, ``frmargin
run`` and ``frmargin study`` all take this one frozen object; the command line's options are
generated from its fields (``frmargin.cli.options``). Constructing it checks every value and
raises a ``FrmarginError`` naming the option as the caller spells it: ``max_steps`` in Python,
``--max-steps`` on the command line (``spelled``).

Importing this module imports neither torch nor pandas.

Example:
    >>> opts = TraceOptions(metric="euclidean", eta=0.3)
    >>> opts.replace(max_steps=50).max_steps, opts.resolved_damping
    (50, 1e-14)
    >>> TraceOptions(max_steps=0)  # doctest: +SKIP
    FrmarginError: argument 'max_steps': got 0, expected an integer >= 1
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import bad_argument, did_you_mean
from .perturbation.spec import parse_perturbation

__all__ = [
    "ACCURACY_DEFAULTS",
    "ACCURACY_FIELDS",
    "DAMPING_MODES",
    "DEFAULT_DAMPING",
    "DEFAULT_MAX_STEPS",
    "L2_PRESET_SCALE",
    "METHODS",
    "METRICS",
    "PRESETS",
    "SOLVERS",
    "UNTIL",
    "TraceOptions",
    "cli_spelling",
    "parse_box",
    "parse_memory_budget",
    "spell",
    "spelled",
]

METHODS = ("converged", "paper")
METRICS = ("fisher", "euclidean")
UNTIL = ("first_flip", "target")
SOLVERS = ("exact", "cg")
DAMPING_MODES = ("absolute", "relative")
#: the damping and step budget of each method when ``damping`` / ``max_steps`` are None
DEFAULT_DAMPING = {"converged": 1e-14, "paper": 1e-3}
DEFAULT_MAX_STEPS = {"converged": 200, "paper": 2000}
#: accuracy presets: ``default``, or ``l2`` (an accurate L2 at the class change, with its error estimate)
PRESETS = ("default", "l2")
#: what a free natural-gradient path does when its flow stalls or creeps: ``damped`` (go on along a
#: damped natural gradient, status ``damped``; ``paths.damped``) or ``none`` (end stalled or at the budget)
CONTINUATIONS = ("damped", "none")
#: the ``l2`` preset's step caps relative to ``eta`` and ``logit_step`` (its default step budget
#: grows by the inverse); measured against the exact flow, ``benchmarks/bench_reference.py``
L2_PRESET_SCALE = 0.125

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30}

_SPELLING: ContextVar[Callable[[str], str]] = ContextVar("frmargin_option_spelling", default=lambda name: name)


def spell(name: str) -> str:
    """An option's name as the current caller writes it (``spelled`` sets how)."""
    return _SPELLING.get()(name)


def cli_spelling(name: str) -> str:
    """An option's name as the command line spells it: ``max_steps`` -> ``--max-steps``."""
    return "--" + name.replace("_", "-")


@contextmanager
def spelled(how: Callable[[str], str]) -> Iterator[None]:
    """Within the block, option errors name options as ``how`` spells them.

    Example:
        >>> with spelled(cli_spelling):
        ...     spell("max_steps")
        '--max-steps'
    """
    token = _SPELLING.set(how)
    try:
        yield
    finally:
        _SPELLING.reset(token)


def _option(default: Any, help: str, *, metavar: str | None = None, group: str = "tracing") -> Any:
    """A field of ``TraceOptions`` with its command-line help (``metavar``: how the value is written)."""
    return field(default=default, metadata={"help": help, "metavar": metavar, "group": group})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def parse_box(value: object) -> tuple[float, float] | None:
    """None, or (lo, hi) as floats with finite lo < hi, from a pair or the text ``"LO,HI"``
    (``"none"``: no box).

    Example:
        >>> parse_box("0,1"), parse_box([0, 0.5]), parse_box(None)
        ((0.0, 1.0), (0.0, 0.5), None)
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    parts: Any = value.split(",") if isinstance(value, str) else value
    try:
        lo, hi = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise bad_argument(spell("box"), value, "None or a pair LO,HI (e.g. 0,1)") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise bad_argument(spell("box"), value, "finite LO < HI")
    return lo, hi


def parse_memory_budget(value: int | str) -> int:
    """Bytes from an int or a size such as "4GB", "500MB", "1.5GiB" (decimal and binary units).

    Example:
        >>> parse_memory_budget("500MB"), parse_memory_budget("2GiB"), parse_memory_budget(1024)
        (500000000, 2147483648, 1024)
    """
    expected = "a positive size such as 4GB, 500MB, 2GiB or a number of bytes"
    name = spell("memory_budget")
    if isinstance(value, bool):
        raise bad_argument(name, value, expected)
    if isinstance(value, int):
        if value < 1:
            raise bad_argument(name, value, expected)
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgtib")
    unit = text[len(number) :]
    try:
        size = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise bad_argument(name, value, expected) from None
    if not size >= 1:
        raise bad_argument(name, value, expected)
    return int(size)


@dataclass(frozen=True)
class TraceOptions:
    """How paths are traced. Every field is an option of ``trace_paths``, of a run
    (``RunConfig.trace``) and of ``frmargin run`` / ``frmargin study`` (``--max-steps`` for
    ``max_steps``). Values are checked when the object is made; None means the method's default
    (``damping``, ``max_steps``) or "not used" (``box``, ``top_classes``, ``memory_budget``).

    The accuracy options (``ACCURACY_FIELDS``: ``preset``, ``eta`` to ``cg_maxiter``) tune the converged
    mode's step control and paper mode's CG solver; the method page of the documentation gives
    the mathematics of each.
    """

    method: str = _option("converged", "converged (accurate FR length) or paper (the paper's algorithm, sign fixed).")
    metric: str = _option("fisher", "fisher (natural gradient) or euclidean (plain gradient of the logit gap).")
    until: str = _option("first_flip", "first_flip, or target: go on past the first change until the target leads.")
    box: tuple[float, float] | None = _option(
        None, "Keep inputs in LO,HI (e.g. 0,1): the projected natural-gradient flow; none: no box.", metavar="LO,HI"
    )
    top_classes: int | None = _option(
        None,
        "Per path, keep the M classes most probable at its start and lump the rest into one "
        "(M + 1 Jacobian rows per step; runs default to 20 when C > 100, else every class).",
        metavar="M",
    )
    perturbation: str = _option(
        "pixels",
        "Perturbation model x = x0 + B u, paths traced in u: pixels (every input coordinate), dct:K "
        "(K lowest DCT frequencies), color (gain and offset per channel), random:K[:SEED] (orthonormal "
        "random directions) or basis:FILE.npy (an array (K, *input_shape)); K may be full.",
        metavar="MODEL",
    )
    solver: str = _option("exact", "exact (C Jacobian rows, C x C solve in float64) or cg (paper mode).")
    damping: float | None = _option(
        None, "Damping lam of (G + lam I) (default 1e-14 converged, 1e-3 paper).", metavar="LAM"
    )
    damping_mode: str = _option("relative", "relative (to the largest eigenvalue of G) or absolute.")
    max_steps: int | None = _option(None, "Step budget per path (default 200 converged, 2000 paper).", metavar="N")
    continuation: str = _option(
        "damped",
        "damped: a free natural-gradient path whose flow stalls, or has not changed class after a quarter of "
        "its step budget (50 steps by default), "
        "goes on along a damped natural gradient (status damped, a real path to the change but not the flow's); "
        "none: the pure flow (such paths end stalled or budget).",
    )
    preset: str = _option(
        "default",
        "default, or l2: steps and overshoot of 1/8 of eta, logit_step and overshoot (and 8x the default "
        "step budget) for an "
        "L2 at the class change within about a percent: each path is traced again at twice those steps "
        "to estimate its L2 error (the l2_error column), and at half the steps while the estimate "
        "exceeds 1%; several times the default's Jacobians.",
        group="accuracy",
    )
    eta: float = _option(0.6, "Largest Fisher-Rao length of one step.", group="accuracy")
    logit_step: float = _option(
        4.0, "First cap on a step's largest log-probability change (then adaptive).", group="accuracy"
    )
    rtol: float = _option(0.02, "Corrector and step-turn tolerance, relative to the step.", group="accuracy")
    atol: float = _option(
        1e-3, "Absolute FR tolerance of a corrected point (steps that barely move p).", group="accuracy"
    )
    max_corrector: int = _option(
        8, "Corrections per step (forward passes) before the step is shrunk.", group="accuracy"
    )
    contraction: float = _option(
        0.7, "A correction must shrink the residual at least this much, else the step shrinks.", group="accuracy"
    )
    root_tol: float = _option(
        2e-3, "Bracket width locating an unplanned class change, relative to the last step.", group="accuracy"
    )
    overshoot: float = _option(0.01, "The last step aims this fraction past the boundary.", group="accuracy")
    max_attempts: int = _option(6, "Step shrinks (by 4) before a path is declared stalled.", group="accuracy")
    cg_rtol: float = _option(1e-10, "CG residual tolerance (paper mode, --solver cg).", group="accuracy")
    cg_maxiter: int | None = _option(
        None, "CG iteration cap (paper mode, --solver cg; default 4 C).", metavar="N", group="accuracy"
    )
    batch_size: int = _option(
        64,
        "Paths traced together (bounds memory; changes float rounding, so runs record it).",
        group="execution",
    )
    memory_budget: str | None = _option(
        None,
        "Most memory one batch of paths may hold, e.g. 4GB, 500MB (default: a safe share of free memory).",
        metavar="SIZE",
        group="execution",
    )

    def __post_init__(self) -> None:
        for name, value in self._checked().items():
            object.__setattr__(self, name, value)

    def _checked(self) -> dict[str, Any]:
        """The normalized values of the fields that need it; FrmarginError on the first bad one."""
        for name, allowed in (
            ("method", METHODS),
            ("metric", METRICS),
            ("until", UNTIL),
            ("solver", SOLVERS),
            ("damping_mode", DAMPING_MODES),
            ("preset", PRESETS),
            ("continuation", CONTINUATIONS),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise bad_argument(spell(name), value, f"one of {', '.join(allowed)}{did_you_mean(value, allowed)}")
        out: dict[str, Any] = {}
        for name in ("eta", "logit_step", "rtol", "atol", "root_tol", "overshoot", "cg_rtol", "contraction"):
            if not _positive(getattr(self, name)):
                raise bad_argument(spell(name), getattr(self, name), "a finite number > 0")
            out[name] = float(getattr(self, name))
        for name in ("max_corrector", "max_attempts", "batch_size"):
            if not (_is_int(getattr(self, name)) and getattr(self, name) >= 1):
                raise bad_argument(spell(name), getattr(self, name), "an integer >= 1")
        for name in ("max_steps", "cg_maxiter"):
            value = getattr(self, name)
            if value is not None and not (_is_int(value) and value >= 1):
                raise bad_argument(spell(name), value, "an integer >= 1 or None (the default)")
        if self.solver == "cg" and self.method != "paper":
            raise bad_argument(
                spell("solver"), self.solver, f"'exact' for {spell('method')}='converged' (CG serves paper mode)"
            )
        if self.preset != "default" and self.method != "converged":
            raise bad_argument(
                spell("preset"),
                self.preset,
                f"'default' for {spell('method')}='{self.method}' (presets tune the converged tracer)",
            )
        if self.damping is not None:
            if not _positive(self.damping):
                raise bad_argument(spell("damping"), self.damping, "a finite number > 0")
            out["damping"] = float(self.damping)
        if self.top_classes is not None:
            name = spell("top_classes")
            if not (_is_int(self.top_classes) and self.top_classes >= 2):
                raise bad_argument(name, self.top_classes, "an integer >= 2 (the source and the target) or None")
            if self.until != "first_flip":
                raise bad_argument(
                    name, self.top_classes, f"None with {spell('until')}='target' (the classes passed must be kept)"
                )
            if self.solver != "exact":
                raise bad_argument(name, self.top_classes, f"None with {spell('solver')}='cg' (CG uses every class)")
        out["box"] = parse_box(self.box)
        out["perturbation"] = parse_perturbation(self.perturbation, spell("perturbation")).text
        if out["box"] is not None and out["perturbation"] != "pixels":
            raise bad_argument(
                spell("box"),
                self.box,
                f"none with {spell('perturbation')}={out['perturbation']}: the valid inputs are no box in u "
                "(runs report the share of inputs out of range instead)",
            )
        if self.memory_budget is not None:
            parse_memory_budget(self.memory_budget)
        return out

    @classmethod
    def build(cls, options: TraceOptions | None = None, /, **overrides: Any) -> TraceOptions:
        """``options`` (default: the defaults) with ``overrides`` by field name; an unknown name
        is refused with the closest known one.

        Example:
            >>> TraceOptions.build(None, eta=0.3).eta
            0.3
        """
        base = cls() if options is None else options
        if not isinstance(base, cls):
            raise bad_argument("options", type(base).__name__, "a TraceOptions or None")
        known = {f.name for f in fields(cls)}
        for name in overrides:
            if name not in known:
                raise bad_argument("option", name, f"a field of TraceOptions{did_you_mean(name, known)}")
        return replace(base, **overrides) if overrides else base

    def replace(self, **changes: Any) -> TraceOptions:
        """A copy with ``changes`` (checked as a new object)."""
        return TraceOptions.build(self, **changes)

    @property
    def resolved_damping(self) -> float:
        """The damping used: ``damping``, or the method's default."""
        return DEFAULT_DAMPING[self.method] if self.damping is None else self.damping

    @property
    def resolved_max_steps(self) -> int:
        """The step budget used: ``max_steps``, or the method's default (divided by the ``l2``
        preset's step scale under that preset)."""
        if self.max_steps is not None:
            return self.max_steps
        return DEFAULT_MAX_STEPS[self.method] * (round(1 / L2_PRESET_SCALE) if self.preset == "l2" else 1)

    @property
    def damped_continuation(self) -> bool:
        """Whether the damped continuation applies: asked for (``continuation``) and the paths are
        free natural-gradient paths of the converged tracer in pixels (the box has its own damping
        and rescue, a perturbation model its reachability checks, Euclidean steps no solve)."""
        return (
            self.continuation == "damped"
            and self.method == "converged"
            and self.metric == "fisher"
            and self.box is None
            and self.perturbation == "pixels"
        )

    def accuracy(self) -> dict[str, Any]:
        """The accuracy options that differ from their defaults, by name (a run's identity)."""
        return {n: getattr(self, n) for n in ACCURACY_FIELDS if getattr(self, n) != ACCURACY_DEFAULTS[n]}

    def all_accuracy(self) -> dict[str, Any]:
        """Every accuracy option with its value."""
        return {n: getattr(self, n) for n in ACCURACY_FIELDS}

    def as_dict(self) -> dict[str, Any]:
        """Every field by name (``box`` as a list, as JSON stores it)."""
        d = asdict(self)
        if d["box"] is not None:
            d["box"] = list(d["box"])
        return d

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TraceOptions:
        """Options from a mapping that may hold other keys (a stored run configuration): known
        fields are taken, and an ``accuracy`` mapping is spread into its fields."""
        known = {f.name for f in fields(cls)}
        taken = {k: v for k, v in values.items() if k in known}
        taken.update({k: v for k, v in dict(values.get("accuracy") or {}).items() if k in known})
        return cls.build(None, **taken)


#: the accuracy options (step control of the converged mode, CG of paper mode)
ACCURACY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TraceOptions) if f.metadata["group"] == "accuracy")
#: their defaults
ACCURACY_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(TraceOptions) if f.name in ACCURACY_FIELDS}
