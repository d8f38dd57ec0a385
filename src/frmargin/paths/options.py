"""Options of ``trace_paths``: names, defaults, and the one validator every caller uses.

``resolve_options`` turns the options as given (``trace_paths`` keywords, a run configuration,
CLI flags) into a frozen ``TracerOptions`` or raises a ``FrmarginError`` naming the option as
the caller spells it (``spell``: ``max_steps`` in Python, ``--max-steps`` on the command line).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..errors import bad_argument
from ..solve import DAMPING_MODES

__all__ = [
    "ACCURACY_DEFAULTS",
    "DEFAULT_DAMPING",
    "DEFAULT_MAX_STEPS",
    "METHODS",
    "METRICS",
    "SOLVERS",
    "STATUSES",
    "UNTIL",
    "TracerOptions",
    "resolve_box",
    "resolve_options",
]

METHODS = ("converged", "paper")
METRICS = ("fisher", "euclidean")
UNTIL = ("first_flip", "target")
SOLVERS = ("exact", "cg")
STATUSES = ("ok", "budget", "stalled", "box_stationary", "nonfinite", "misclassified")

#: Accuracy options of the converged mode and their defaults.
ACCURACY_DEFAULTS = {
    "eta": 0.6,  # largest Fisher-Rao length of one step
    "logit_step": 4.0,  # first cap on a step's largest log-probability change (then adaptive)
    "rtol": 0.02,  # corrector and step-turn tolerance, relative to the step
    "atol": 1e-3,  # absolute FR tolerance of a corrected point (steps that barely move p)
    "max_corrector": 8,  # corrections per step (forward passes) before the step is shrunk
    "contraction": 0.7,  # a correction must shrink at least this much, else the step shrinks
    "root_tol": 2e-3,  # bracket width locating an unplanned class change, relative to the last step
    "overshoot": 0.01,  # the last step aims this fraction past the boundary
    "max_attempts": 6,  # step shrinks (by 4) before a path is declared stalled
    "cg_rtol": 1e-10,  # CG residual tolerance (paper mode, solver="cg")
    "cg_maxiter": None,  # CG iteration cap (default 4 C)
}
DEFAULT_DAMPING = {"converged": 1e-14, "paper": 1e-3}
DEFAULT_MAX_STEPS = {"converged": 200, "paper": 2000}

_POSITIVE = ("eta", "logit_step", "rtol", "atol", "root_tol", "overshoot", "cg_rtol", "contraction")
_COUNTS = ("max_corrector", "max_attempts")


def _python(name: str) -> str:
    return name


@dataclass(frozen=True)
class TracerOptions:
    """Resolved options of one ``trace_paths`` call (see its docstring)."""

    method: str
    metric: str
    until: str
    solver: str
    damping: float
    damping_mode: str
    max_steps: int
    box: tuple[float, float] | None
    eta: float
    logit_step: float
    rtol: float
    atol: float
    max_corrector: int
    contraction: float
    root_tol: float
    overshoot: float
    max_attempts: int
    cg_rtol: float
    cg_maxiter: int | None
    record: bool
    top_classes: int | None = None

    @property
    def stepper(self) -> str:
        """Key of the stepper in ``steppers.STEPPERS``: ``paper``, ``fisher``, ``fisher-box``
        (the Fisher metric in a box) or ``euclidean``."""
        if self.method == "paper":
            return "paper"
        return "fisher-box" if self.metric == "fisher" and self.box is not None else self.metric

    @property
    def until_target(self) -> bool:
        """Paths go on past the first class change until the target is the argmax."""
        return self.until == "target"


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")


def _count(value: object, least: int) -> bool:
    """An integer (not a bool: ``True`` is no step budget) of at least ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def resolve_box(
    box: object, x: torch.Tensor | None = None, spell: Callable[[str], str] = _python
) -> tuple[float, float] | None:
    """None, or the pair (lo, hi) as floats with lo < hi and, when x (P, *S) is given, every
    x inside.

    Example:
        >>> resolve_box([0, 1])
        (0.0, 1.0)
    """
    if box is None:
        return None
    try:
        lo, hi = (float(v) for v in box)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise bad_argument(spell("box"), box, "None or a pair (lo, hi)") from None
    if not lo < hi:
        raise bad_argument(spell("box"), box, "lo < hi")
    if x is not None and ((x < lo).any() or (x > hi).any()):
        raise bad_argument(
            "x", f"values in [{x.min().item():.4g}, {x.max().item():.4g}]", f"inputs inside box [{lo}, {hi}]"
        )
    return lo, hi


def _check_choices(choices: Mapping[str, tuple[object, tuple[str, ...]]], spell: Callable[[str], str]) -> None:
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise bad_argument(spell(name), value, f"one of {allowed}")


def _accuracy(accuracy: Mapping[str, object], spell: Callable[[str], str]) -> dict[str, object]:
    unknown = set(accuracy) - set(ACCURACY_DEFAULTS)
    if unknown:
        raise bad_argument(
            "accuracy option", sorted(unknown), f"names among {sorted(spell(n) for n in ACCURACY_DEFAULTS)}"
        )
    opts = {**ACCURACY_DEFAULTS, **accuracy}
    for name in _POSITIVE:
        if not _positive(opts[name]):
            raise bad_argument(spell(name), opts[name], "a finite number > 0")
    for name in _COUNTS:
        if not _count(opts[name], 1):
            raise bad_argument(spell(name), opts[name], "an integer >= 1")
    return opts


def resolve_options(
    *,
    method: str = "converged",
    metric: str = "fisher",
    until: str = "first_flip",
    solver: str = "exact",
    damping: float | None = None,
    damping_mode: str = "relative",
    max_steps: int | None = None,
    box: object = None,
    record: bool = False,
    top_classes: int | None = None,
    accuracy: Mapping[str, object] | None = None,
    x: torch.Tensor | None = None,
    spell: Callable[[str], str] = _python,
) -> TracerOptions:
    """Check every option of ``trace_paths`` and fill in the defaults that depend on ``method``.

    Args:
        method, metric, until, solver, damping, damping_mode, max_steps, box, record,
            top_classes: as ``trace_paths`` takes them (None: the method's default).
        accuracy: accuracy options by name (see ``ACCURACY_DEFAULTS``); unknown names are refused.
        x: (P, *S) inputs; when given, the box must contain them.
        spell: how the caller writes an option name in messages (``lambda n: "--" +
            n.replace("_", "-")`` for a command line).

    Raises:
        FrmarginError: an option out of range, unknown or incompatible with another.

    Example:
        >>> resolve_options(method="paper").max_steps
        2000
        >>> resolve_options(max_steps=0, spell=lambda n: "--" + n.replace("_", "-"))  # doctest: +SKIP
        FrmarginError: argument '--max-steps': got 0, expected an integer >= 1
    """
    _check_choices(
        {
            "method": (method, METHODS),
            "metric": (metric, METRICS),
            "until": (until, UNTIL),
            "solver": (solver, SOLVERS),
            "damping_mode": (damping_mode, DAMPING_MODES),
        },
        spell,
    )
    opts = _accuracy(accuracy or {}, spell)
    if solver == "cg" and method != "paper":
        raise bad_argument(spell("solver"), solver, f"'exact' for {spell('method')}='converged' (CG serves paper mode)")
    damping = DEFAULT_DAMPING[method] if damping is None else damping
    max_steps = DEFAULT_MAX_STEPS[method] if max_steps is None else max_steps
    if not _count(max_steps, 1):
        raise bad_argument(spell("max_steps"), max_steps, "an integer >= 1")
    if not _positive(damping):
        raise bad_argument(spell("damping"), damping, "a finite number > 0")
    if top_classes is not None:
        name = spell("top_classes")
        if not _count(top_classes, 2):
            raise bad_argument(name, top_classes, "an integer >= 2 (the source and the target) or None")
        if until != "first_flip":
            raise bad_argument(
                name, top_classes, f"None with {spell('until')}='target' (the classes passed must be kept)"
            )
        if solver != "exact":
            raise bad_argument(name, top_classes, f"None with {spell('solver')}='cg' (CG uses every class)")
    return TracerOptions(
        method=method,
        metric=metric,
        until=until,
        solver=solver,
        damping=float(damping),
        damping_mode=damping_mode,
        max_steps=max_steps,
        box=resolve_box(box, x, spell),
        record=bool(record),
        top_classes=top_classes,
        **opts,  # type: ignore[arg-type]
    )
