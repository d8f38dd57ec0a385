"""Euclidean (L2) minimal adversarial distances through foolbox, the baseline for FR margins.

One entry function, :func:`min_l2_attack`, with a string-keyed attack registry and keyword options:

- ``"deepfool"``: foolbox ``L2DeepFoolAttack`` (all-class linearization steps), then a bisection on
  the segment from ``x`` to the DeepFool point that removes the overshoot.
- ``"fmn"``: foolbox ``L2FMNAttack`` started from the DeepFool points, with two corrections of
  foolbox 3.3.4: the L2 projection onto the epsilon ball (upstream's ``project`` is a no-op, its
  factor is ``min(1, norms / norms)``), and a step size relative to each input's DeepFool distance.
- ``"best"``: the smaller of the two per input.
- ``"ossa"``, ``"tssa"``, ``"random"`` (``spectral``): the smallest budget along the top eigenvector
  of the data-space Fisher (one step, or two steps with the budget split 60% / 40%) or along a
  random direction, by a scan and bisection within ``bounds``. They seek the class change along a
  line, not the nearest one: their distances are upper bounds of the minimal L2 distance.

Each result counts the model evaluations per input (``forward_passes``, ``backward_passes``: rows
through the model and backward through its logits, the clean check included, the attack's share of
its batch averaged over the batch's attacked inputs).

Every returned point is checked again here: the model's argmax at ``x_adv`` differs from ``y`` and
``x_adv`` lies in the box. An input the attack cannot fool gets distance ``inf`` and status
``"failed"``; an input already misclassified gets distance 0 and status ``"misclassified"``.
The attacks use no randomness, so results are deterministic.

Shapes: B inputs, S the input shape of one sample, C classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import bad_argument
from ..validation import call_model, check_logits, check_model
from .common import PassCounter, clean_check, verify
from .foolbox_attacks import foolbox_model, run_best, run_deepfool, run_fmn
from .spectral import run_ossa, run_random, run_tssa

__all__ = ["ATTACKS", "DEFAULTS", "MINIMIZING", "STATUSES", "MinL2Result", "min_l2_attack", "min_l2_distance"]

STATUSES = ("ok", "failed", "misclassified")

# Defaults of the keyword options; every name here is a valid option of min_l2_attack.
DEFAULTS: dict[str, Any] = {
    "bounds": (0.0, 1.0),
    "batch_size": 64,
    "deepfool_steps": 100,  # foolbox default 50; DeepFool stops early once all are adversarial
    "overshoot": 0.02,  # removed afterwards by the bisection, so it only speeds up crossing
    "candidates": 10,  # top-k classes DeepFool linearizes (min(k, C))
    "fmn_steps": 100,
    "fmn_max_stepsize": 1.0,  # in units of the input's starting distance
    "fmn_min_stepsize": 0.01,  # idem, end of the cosine schedule
    "fmn_gamma": 0.05,  # initial relative epsilon update (foolbox default)
    "refine_steps": 20,  # bisection steps on the segment [x, x_adv]; 2^-20 relative precision
    "line_levels": 24,  # ossa, tssa, random: budgets scanned, ratio 2 below the box diameter
    "top_classes": None,  # ossa, tssa: the spectrum of the lumped view (fisher_spectrum's top_classes)
}


#: the attacks by the names users write: each runner takes (fmodel, model, x, y, opts) on correctly
#: classified inputs and returns candidate points (B, *S), verified by ``min_l2_attack``
ATTACKS: dict[str, Callable[..., torch.Tensor]] = {
    "deepfool": run_deepfool,
    "fmn": run_fmn,
    "best": run_best,
    "ossa": run_ossa,
    "tssa": run_tssa,
    "random": run_random,
}

#: the attacks that minimize the distance over all directions (the others search along one line)
MINIMIZING = ("deepfool", "fmn", "best")


@dataclass(frozen=True)
class MinL2Result:
    """Minimal L2 adversarial points found for a batch.

    Attributes:
        distance: (B,) ``||x_adv - x||_2`` over all input dims, in input units, in the dtype of
            ``x``; 0 for ``"misclassified"``, ``inf`` for ``"failed"``.
        status: B strings, one of ``"ok"``, ``"failed"``, ``"misclassified"``.
        x_adv: (B, *S) the adversarial points; equal to ``x`` where status is not ``"ok"``.
        attack: the attack name.
        forward_passes: (B,) float64 model evaluations per input (rows through the model).
        backward_passes: (B,) float64 backward passes per input (through its logits; a Jacobian
            of C rows counts C; those inside torch.func transforms, as the vmapped Jacobian rows
            on CUDA, are not seen).
    """

    distance: torch.Tensor
    status: list[str]
    x_adv: torch.Tensor
    attack: str
    forward_passes: torch.Tensor
    backward_passes: torch.Tensor

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}: {self.status.count(k)}" for k in dict.fromkeys(self.status))
        ok = self.distance[torch.isfinite(self.distance) & (self.distance > 0)]
        median = f"{ok.median().item():.4g}" if ok.numel() else "n/a"
        return f"MinL2Result({self.attack!r}, B={len(self.status)}, status {{{shown}}}, median distance {median})"


def min_l2_attack(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str = "deepfool",
    *,
    batch_size: int = DEFAULTS["batch_size"],
    **options: Any,
) -> MinL2Result:
    """Smallest L2 perturbation that changes the model's prediction away from ``y``.

    The model returns logits (B, C) and must be in eval mode (as for ``trace_paths``: a module in
    train mode is refused); its parameters are frozen during the attack and restored afterwards.
    It runs on the device of ``x``.

    Args:
        model: classifier (an ``nn.Module`` or any callable), ``model(x)`` gives (B, C) logits.
        x: (B, *S) floating inputs inside ``bounds``.
        y: (B,) integer labels in [0, C).
        attack: a name of ``ATTACKS``: ``"deepfool"``, ``"fmn"``, ``"best"``, ``"ossa"``,
            ``"tssa"`` or ``"random"``.
        batch_size: inputs attacked together.
        **options: ``bounds`` ((lo, hi), default (0, 1)), ``deepfool_steps``, ``overshoot``,
            ``candidates``, ``fmn_steps``, ``fmn_max_stepsize``, ``fmn_min_stepsize`` (both
            relative to each input's starting distance), ``fmn_gamma``, ``refine_steps``,
            ``line_levels``, ``top_classes`` (see ``DEFAULTS``).

    Returns:
        :class:`MinL2Result`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 3).double()
        >>> x = torch.full((2, 4), 0.5, dtype=torch.float64)
        >>> res = min_l2_attack(model, x, model(x).argmax(1), "fmn", bounds=(-10, 10))
        >>> res.status, res.distance.shape
        (['ok', 'ok'], torch.Size([2]))
    """
    runner = _get_runner(attack)
    opts = _check_options(options, batch_size)
    model, x, y = _check_inputs(model, x, y, opts["bounds"])
    B = x.shape[0]
    distance = torch.full((B,), math.inf, dtype=x.dtype, device=x.device)
    x_adv = x.clone()
    status = ["failed"] * B
    passes = torch.zeros(2, B, dtype=torch.float64)  # forward, backward per input
    if B == 0:
        return MinL2Result(distance, status, x_adv, attack, passes[0], passes[1])

    with _attack_mode(model):
        counted = PassCounter(model)
        correct = clean_check(counted, x, y, opts["batch_size"])
        passes[0] += 1.0
        fmodel = foolbox_model(counted, opts["bounds"], x.device)
        for start in range(0, B, opts["batch_size"]):
            stop = min(start + opts["batch_size"], B)
            xb, yb, ok = x[start:stop], y[start:stop], correct[start:stop]
            if ok.any():
                idx = ok.nonzero().squeeze(1)
                before = counted.counts()
                cand = runner(fmodel, counted, xb[idx], yb[idx], opts)
                cand, found = verify(counted, xb[idx], yb[idx], cand, opts["bounds"])
                passes[:, idx.cpu() + start] += ((counted.counts() - before) / len(idx))[:, None]
                d = (cand - xb[idx]).flatten(1).norm(dim=1)
                rows = idx + start
                found_rows = rows[found]
                x_adv[found_rows] = cand[found]
                distance[found_rows] = d[found]
                for r in found_rows.tolist():
                    status[r] = "ok"
            for r in (~ok).nonzero().squeeze(1).tolist():
                distance[start + r] = 0.0
                status[start + r] = "misclassified"
    return MinL2Result(distance, status, x_adv, attack, passes[0], passes[1])


def min_l2_distance(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    attack: str = "deepfool",
    **options: Any,
) -> torch.Tensor:
    """(B,) minimal L2 distances, ``min_l2_attack(...).distance``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Linear(4, 3).double()
        >>> x = torch.rand(5, 4, dtype=torch.float64)
        >>> min_l2_distance(model, x, model(x).argmax(1), bounds=(-10, 10)).shape
        torch.Size([5])
    """
    return min_l2_attack(model, x, y, attack, **options).distance


def _get_runner(attack: str) -> Callable[..., torch.Tensor]:
    if not isinstance(attack, str) or attack not in ATTACKS:
        raise bad_argument("attack", attack, f"one of {sorted(ATTACKS)}")
    return ATTACKS[attack]


def _check_options(options: dict[str, Any], batch_size: int) -> dict[str, Any]:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise bad_argument("options", unknown, f"names among {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **options, "batch_size": batch_size}
    for name in ("batch_size", "deepfool_steps", "candidates", "fmn_steps", "line_levels"):
        v = opts[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad_argument(name, v, "an integer >= 1")
    v = opts["refine_steps"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise bad_argument("refine_steps", v, "an integer >= 0")
    for name in ("overshoot", "fmn_max_stepsize", "fmn_min_stepsize", "fmn_gamma"):
        v = opts[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise bad_argument(name, v, "a finite number >= 0")
    v = opts["top_classes"]
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 2):
        raise bad_argument("top_classes", v, "an integer >= 2 or None")
    b = opts["bounds"]
    try:
        lo, hi = (float(v) for v in b)
    except (TypeError, ValueError):
        raise bad_argument("bounds", b, "a pair (lo, hi) of numbers") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise bad_argument("bounds", b, "finite lo < hi")
    opts["bounds"] = (lo, hi)
    return opts


class _CallableModel(torch.nn.Module):
    """A plain callable as a module (foolbox wants one); it has no parameters or mode."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _check_inputs(
    model: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor], x: object, y: object, bounds: tuple[float, float]
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    check_model(model)  # a module in train mode is refused as trace_paths refuses it
    if not isinstance(model, torch.nn.Module):  # any callable trace_paths accepts
        if not callable(model):
            raise bad_argument("model", type(model).__name__, "an nn.Module or callable returning logits")
        model = _CallableModel(model)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise bad_argument("x", got, "a floating torch.Tensor of shape (B, *S)")
    if x.ndim < 2:
        raise bad_argument("x", tuple(x.shape), "shape (B, *S) with a batch axis")
    if not torch.isfinite(x).all():
        raise bad_argument("x", f"{int((~torch.isfinite(x)).sum())} non-finite entries", "finite inputs")
    lo, hi = bounds
    if x.numel() and (x.min() < lo or x.max() > hi):
        got = f"values in [{x.min().item():.4g}, {x.max().item():.4g}]"
        raise bad_argument("x", got, f"values within bounds ({lo}, {hi})")
    y = torch.as_tensor(y, device=x.device)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise bad_argument("y", y.dtype, "integer class labels")
    if tuple(y.shape) != (x.shape[0],):
        raise bad_argument("y", tuple(y.shape), f"shape ({x.shape[0]},), one label per row of x")
    if x.shape[0]:
        check_logits(call_model(model, x[:1]), 1)  # same dtype/device, accepts x, logits not probabilities
    return model, x, y.long()


@contextmanager
def _attack_mode(model: torch.nn.Module) -> Iterator[None]:
    """Frozen parameters (foolbox's backward would fill their .grad), restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
