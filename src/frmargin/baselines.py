"""Euclidean (L2) minimal adversarial distances through foolbox, the baseline for FR margins.

One entry function, :func:`min_l2_attack`, with a string-keyed attack registry and keyword options:

- ``"deepfool"``: foolbox ``L2DeepFoolAttack`` (all-class linearization steps), then a bisection on
  the segment from ``x`` to the DeepFool point that removes the overshoot.
- ``"fmn"``: foolbox ``L2FMNAttack`` started from the DeepFool points, with two corrections of
  foolbox 3.3.4: the L2 projection onto the epsilon ball (upstream's ``project`` is a no-op, its
  factor is ``min(1, norms / norms)``), and a step size relative to each input's DeepFool distance.
- ``"best"``: the smaller of the two per input.

Every returned point is checked again here: the model's argmax at ``x_adv`` differs from ``y`` and
``x_adv`` lies in the box. An input the attack cannot fool gets distance ``inf`` and status
``"failed"``; an input already misclassified gets distance 0 and status ``"misclassified"``.
The attacks use no randomness, so results are deterministic.

Shapes: B inputs, S the input shape of one sample, C classes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .errors import FrmarginError, bad_argument

__all__ = ["ATTACKS", "DEFAULTS", "STATUSES", "MinL2Result", "min_l2_attack", "min_l2_distance"]

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
}


@dataclass(frozen=True)
class MinL2Result:
    """Minimal L2 adversarial points found for a batch.

    Attributes:
        distance: (B,) ``||x_adv - x||_2`` over all input dims, in input units, in the dtype of
            ``x``; 0 for ``"misclassified"``, ``inf`` for ``"failed"``.
        status: B strings, one of ``"ok"``, ``"failed"``, ``"misclassified"``.
        x_adv: (B, *S) the adversarial points; equal to ``x`` where status is not ``"ok"``.
        attack: the attack name.
    """

    distance: torch.Tensor
    status: list[str]
    x_adv: torch.Tensor
    attack: str

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

    The model returns logits (B, C); it is run in eval mode with its parameters frozen (both are
    restored afterwards), on the device of ``x``.

    Args:
        model: classifier (an ``nn.Module`` or any callable), ``model(x)`` gives (B, C) logits.
        x: (B, *S) floating inputs inside ``bounds``.
        y: (B,) integer labels in [0, C).
        attack: ``"deepfool"``, ``"fmn"`` or ``"best"``.
        batch_size: inputs attacked together.
        **options: ``bounds`` ((lo, hi), default (0, 1)), ``deepfool_steps``, ``overshoot``,
            ``candidates``, ``fmn_steps``, ``fmn_max_stepsize``, ``fmn_min_stepsize`` (both
            relative to each input's starting distance), ``fmn_gamma``, ``refine_steps``
            (see ``DEFAULTS``).

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
    if B == 0:
        return MinL2Result(distance, status, x_adv, attack)

    with _attack_mode(model):
        correct = _clean_check(model, x, y, opts["batch_size"])
        fmodel = _foolbox_model(model, opts["bounds"], x.device)
        for start in range(0, B, opts["batch_size"]):
            stop = min(start + opts["batch_size"], B)
            xb, yb, ok = x[start:stop], y[start:stop], correct[start:stop]
            if ok.any():
                idx = ok.nonzero().squeeze(1)
                cand = runner(fmodel, model, xb[idx], yb[idx], opts)
                cand, found = _verify(model, xb[idx], yb[idx], cand, opts["bounds"])
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
    return MinL2Result(distance, status, x_adv, attack)


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


# ---------------------------------------------------------------------------------------------
# attacks: each runner takes (fmodel, model, x, y, opts) on correctly classified inputs and
# returns candidate points (B, *S); verification happens in min_l2_attack.


def _run_deepfool(fmodel: Any, model: torch.nn.Module, x, y, opts) -> torch.Tensor:
    return _deepfool_points(fmodel, model, x, y, opts)[1]


def _run_fmn(fmodel: Any, model: torch.nn.Module, x, y, opts) -> torch.Tensor:
    return _fmn_from(fmodel, model, x, y, *_deepfool_points(fmodel, model, x, y, opts), opts)


def _run_best(fmodel: Any, model: torch.nn.Module, x, y, opts) -> torch.Tensor:
    raw, start = _deepfool_points(fmodel, model, x, y, opts)
    out = _fmn_from(fmodel, model, x, y, raw, start, opts)
    d_start = torch.where(_is_adv(model, start, y), _norms(start - x), math.inf)
    d_out = torch.where(_is_adv(model, out, y), _norms(out - x), math.inf)
    return torch.where(_kd(d_start < d_out, x.ndim), start, out)


ATTACKS: dict[str, Callable[..., torch.Tensor]] = {
    "deepfool": _run_deepfool,
    "fmn": _run_fmn,
    "best": _run_best,
}


def _deepfool_points(fmodel, model, x, y, opts) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw, refined): foolbox's DeepFool points (with overshoot) and their bisection refinement."""
    fb = _foolbox()
    attack = fb.attacks.L2DeepFoolAttack(
        steps=opts["deepfool_steps"], candidates=opts["candidates"], overshoot=opts["overshoot"]
    )
    raw = attack.run(fmodel, x, fb.criteria.Misclassification(y))
    return raw, _shrink(model, x, y, raw, opts)


def _fmn_from(fmodel, model, x, y, raw, refined, opts) -> torch.Tensor:
    """FMN started at the DeepFool points ``raw`` where they are adversarial, else from ``x``.

    Step sizes are relative to each input's refined DeepFool distance (to the box size for
    inputs started from ``x``). The refined points sit on the boundary to ~1e-6, so FMN starts
    from the overshooting ``raw`` ones and does its own bisection first.
    """
    fb = _foolbox()
    lo, hi = opts["bounds"]
    kwargs = dict(
        steps=opts["fmn_steps"],
        max_stepsize=opts["fmn_max_stepsize"],
        min_stepsize=opts["fmn_min_stepsize"],
        gamma=opts["fmn_gamma"],
    )
    out = refined.clone()
    started = _adversarial_subset(model, raw, y)
    if len(started):
        i = started
        scale = _norms(refined[i] - x[i]).clamp_min(torch.finfo(x.dtype).tiny)
        attack = _fixed_l2_fmn()(scale=scale, **kwargs)
        crit = fb.criteria.Misclassification(y[i])
        found = attack.run(fmodel, x[i], crit, starting_points=raw[i])
        out[i] = _shrink(model, x[i], y[i], found, opts)
    rest = torch.ones(len(y), dtype=torch.bool, device=x.device)
    rest[started] = False
    if rest.any():
        i = rest.nonzero().squeeze(1)
        scale = torch.full((len(i),), hi - lo, dtype=x.dtype, device=x.device)
        attack = _fixed_l2_fmn()(scale=scale, **kwargs)
        found = attack.run(fmodel, x[i], fb.criteria.Misclassification(y[i]))
        out[i] = _shrink(model, x[i], y[i], found, opts)
    return out


def _adversarial_subset(model, points, y) -> torch.Tensor:
    """Indices whose points are adversarial when evaluated together, exactly as FMN will check
    them (it asserts that every starting point is adversarial; results can depend on batch size)."""
    idx = torch.arange(len(y), device=y.device)
    while len(idx):
        adv = _is_adv(model, points[idx], y[idx])
        if adv.all():
            break
        idx = idx[adv]
    return idx


_FIXED_FMN: type | None = None


def _fixed_l2_fmn() -> type:
    """foolbox's L2FMNAttack with a working L2 projection and per-input step sizes."""
    global _FIXED_FMN
    if _FIXED_FMN is not None:
        return _FIXED_FMN
    fb = _foolbox()
    import eagerpy as ep
    from foolbox.devutils import atleast_kd, flatten

    class FixedL2FMN(fb.attacks.L2FMNAttack):  # type: ignore[name-defined]
        def __init__(self, *, scale: torch.Tensor, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.scale = scale  # (B,) step size unit per input

        def normalize(self, gradients):  # unit L2 gradient times the per-input scale
            unit = super().normalize(gradients)
            return unit * atleast_kd(ep.astensor(self.scale), unit.ndim)

        def project(self, x, x0, epsilon):  # onto the L2 ball of radius epsilon around x0
            delta = x - x0
            norms = ep.maximum(flatten(delta).norms.l2(axis=-1), 1e-12)
            factor = ep.minimum(1, epsilon / norms)
            return x0 + delta * atleast_kd(factor, x.ndim)

    _FIXED_FMN = FixedL2FMN
    return FixedL2FMN


# ---------------------------------------------------------------------------------------------
# helpers


def _shrink(model, x, y, x_adv, opts) -> torch.Tensor:
    """Bisection on t in [0, 1] for the smallest adversarial x + t (x_adv - x), per input.

    Inputs whose ``x_adv`` is not adversarial come back unchanged (verification rejects them).
    """
    lo_b, hi_b = opts["bounds"]
    adv = _is_adv(model, x_adv, y)
    lo = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    hi = torch.ones_like(lo)
    step = x_adv - x
    for _ in range(opts["refine_steps"]):
        mid = (lo + hi) / 2
        m_adv = _is_adv(model, (x + _kd(mid, x.ndim) * step).clamp(lo_b, hi_b), y)
        hi = torch.where(m_adv, mid, hi)
        lo = torch.where(m_adv, lo, mid)
    shrunk = (x + _kd(hi, x.ndim) * step).clamp(lo_b, hi_b)
    keep = _kd(~adv | (hi == 1), x.ndim)
    return torch.where(keep, x_adv, shrunk)


def _verify(model, x, y, cand, bounds) -> tuple[torch.Tensor, torch.Tensor]:
    """(cand, found): found[i] iff cand[i] is finite, inside the box and adversarial."""
    lo, hi = bounds
    flat = cand.flatten(1)
    inside = torch.isfinite(flat).all(1) & (flat >= lo).all(1) & (flat <= hi).all(1)
    safe = torch.where(_kd(inside, cand.ndim), cand, x)
    return safe, inside & _is_adv(model, safe, y)


@torch.no_grad()
def _is_adv(model, x, y) -> torch.Tensor:
    return model(x).argmax(1) != y


@torch.no_grad()
def _clean_check(model, x, y, batch_size) -> torch.Tensor:
    """(B,) bool: clean prediction equals the label; checks the logits shape and label range."""
    correct = []
    for start in range(0, x.shape[0], batch_size):
        logits = model(x[start : start + batch_size])
        n = min(batch_size, x.shape[0] - start)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != n:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise bad_argument("model", f"output {got}", f"logits of shape ({n}, C)")
        C = logits.shape[1]
        if C < 2:
            raise bad_argument("model", f"{C} output classes", "C >= 2")
        yb = y[start : start + batch_size]
        if ((yb < 0) | (yb >= C)).any():
            raise bad_argument("y", yb.tolist()[:10], f"class indices in [0, {C})")
        if not torch.isfinite(logits).all():
            raise bad_argument("model", "non-finite logits on x", "finite logits")
        correct.append(logits.argmax(1) == yb)
    return torch.cat(correct)


def _norms(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1)


def _kd(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def _get_runner(attack: str) -> Callable[..., torch.Tensor]:
    if not isinstance(attack, str) or attack not in ATTACKS:
        raise bad_argument("attack", attack, f"one of {sorted(ATTACKS)}")
    return ATTACKS[attack]


def _check_options(options: dict[str, Any], batch_size: int) -> dict[str, Any]:
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise bad_argument("options", unknown, f"names among {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **options, "batch_size": batch_size}
    for name in ("batch_size", "deepfool_steps", "candidates", "fmn_steps"):
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


def _check_inputs(model, x, y, bounds) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
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
    from .validation import call_model, check_logits

    if x.shape[0]:
        check_logits(call_model(model, x[:1]), 1)  # same dtype/device, accepts x, logits not probabilities
    return model, x, y.long()


@contextmanager
def _attack_mode(model: torch.nn.Module):
    """Eval mode and frozen parameters (foolbox's backward would fill their .grad)."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _foolbox_model(model, bounds, device) -> Any:
    return _foolbox().PyTorchModel(model, bounds=bounds, device=device)


def _foolbox() -> Any:
    """Import foolbox (the ``attacks`` extra), silencing its scipy deprecation warning."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="foolbox")
            warnings.filterwarnings("ignore", message=".*scipy.ndimage.filters.*")
            import foolbox
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise FrmarginError("the L2 baselines need foolbox: pip install 'frmargin[attacks]'") from err
    return foolbox
