"""Input checks shared by the public API. Each raises a ``FrmarginError`` (a ValueError)
naming the argument, what was received and what was expected."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .errors import FrmarginError, bad_argument

__all__ = [
    "call_model",
    "check_box",
    "check_classes",
    "check_images",
    "check_logits",
    "check_model",
]


def check_images(x: object, name: str = "x") -> torch.Tensor:
    """A non-empty, finite, floating-point (B, *S) tensor."""
    if not isinstance(x, torch.Tensor):
        raise bad_argument(name, type(x).__name__, "a torch.Tensor of shape (B, *input_shape)")
    if not x.is_floating_point():
        raise bad_argument(
            name, f"dtype {x.dtype}", "a floating-point tensor (convert integer images, e.g. x.float() / 255)"
        )
    if x.ndim < 2:
        raise bad_argument(name, f"shape {tuple(x.shape)}", "shape (B, *input_shape) with a batch axis")
    if x.shape[0] == 0:
        raise bad_argument(name, "an empty batch (B = 0)", "at least one input")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x.reshape(x.shape[0], -1))).any(-1).sum())
        raise bad_argument(name, f"{bad} input(s) with NaN or inf", "finite values")
    return x


def check_classes(c: object, n: int, num_classes: int | None, name: str) -> torch.Tensor:
    """(n,) int64 class indices in [0, num_classes)."""
    t = torch.as_tensor(c)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise bad_argument(name, f"dtype {t.dtype}", "integer class indices")
    t = t.reshape(-1).long()
    if t.numel() != n:
        raise bad_argument(name, f"{t.numel()} entries", f"{n}, one per row of x")
    if num_classes is not None and ((t < 0) | (t >= num_classes)).any():
        bad = t[(t < 0) | (t >= num_classes)].tolist()[:5]
        raise bad_argument(name, f"class indices {bad}", f"indices in [0, {num_classes})")
    return t


def check_box(box: object, x: torch.Tensor) -> tuple[float, float] | None:
    """None, or (lo, hi) with lo < hi and every x inside."""
    if box is None:
        return None
    try:
        lo, hi = (float(v) for v in box)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise bad_argument("box", box, "None or a pair (lo, hi)") from None
    if not lo < hi:
        raise bad_argument("box", box, "lo < hi")
    if (x < lo).any() or (x > hi).any():
        raise bad_argument(
            "x", f"values in [{x.min().item():.4g}, {x.max().item():.4g}]", f"inputs inside box [{lo}, {hi}]"
        )
    return lo, hi


def check_model(model: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Refuse a module in train mode: batch norm and dropout would make results batch-dependent."""
    if isinstance(model, nn.Module):
        training = [n or type(model).__name__ for n, m in model.named_modules() if m.training]
        if training:
            raise bad_argument(
                "model", f"a module in train mode ({', '.join(training[:3])})", "eval mode: call model.eval()"
            )
    elif not callable(model):
        raise bad_argument("model", type(model).__name__, "an nn.Module or callable returning logits")


def check_logits(z: object, batch: int) -> torch.Tensor:
    """(B, C) logits; refuse outputs that look like probabilities."""
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != batch or z.shape[1] < 2:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        hint = "" if isinstance(z, torch.Tensor) else " (frmargin.models.logits_of(model) reads them from outputs)"
        raise bad_argument("model", f"output {shape}", f"logits of shape ({batch}, C) with C >= 2{hint}")
    zz = z.detach().to(torch.float64)
    # in [0, 1], rows summing to 1, and not just 0/1 entries (one-hot logits are plausible logits)
    in_unit = bool(torch.isfinite(zz).all() and (zz >= 0).all() and (zz <= 1).all())
    in_unit = in_unit and bool(((zz > 0) & (zz < 1)).any())
    if in_unit and torch.allclose(zz.sum(-1), torch.ones_like(zz[:, 0]), atol=1e-4):
        raise bad_argument(
            "model", "outputs that are probabilities (in [0, 1], rows sum to 1)", "logits: drop the final softmax"
        )
    return z


def _first_tensor(model: object) -> torch.Tensor | None:
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            if t.is_floating_point():
                return t
    return None


def call_model(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, check_determinism: bool = True
) -> torch.Tensor:
    """``model(x)`` (no gradient) after checking that the model can take x: the same dtype and
    device as its parameters, and a forward pass that works and repeats (dropout that is always
    on, e.g. ``F.dropout(training=True)``, would make every path random).

    Raises:
        FrmarginError: naming ``x`` and ``model``, with both dtypes/devices or the model's error.
    """
    ref = _first_tensor(model)
    if ref is not None and ref.dtype != x.dtype:
        raise bad_argument(
            "x",
            f"dtype {x.dtype} with a model whose parameters are {ref.dtype}",
            f"the same dtype: x.to({ref.dtype}) or model.to({x.dtype})",
        )
    if ref is not None and ref.device != x.device:
        raise bad_argument(
            "x",
            f"device {x.device} with a model on {ref.device}",
            f"the same device: x.to('{ref.device}') or model.to('{x.device}')",
        )
    try:
        with torch.no_grad():
            z = model(x)
            repeats = [model(x), model(x)] if check_determinism else []  # two: a random mask may repeat once
    except FrmarginError:  # the model's own refusal (e.g. ``logits_of`` on an unreadable output)
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise bad_argument(
            "x",
            f"shape {tuple(x.shape)}, dtype {x.dtype}",
            f"inputs the model accepts, batched and channels "
            f"first as (B, C, H, W) for image models (the model raised {type(error).__name__}: {first[:160]})",
        ) from None
    if isinstance(z, torch.Tensor) and z.is_floating_point() and not bool(torch.isfinite(z).all()):
        bad = int((~torch.isfinite(z)).sum())
        raise bad_argument(
            "model", f"non-finite output ({bad} of {z.numel()} entries NaN or inf) on x", "finite logits on every input"
        )
    # a tolerance: GPU kernels may differ in the last bits between calls; dropout differs by O(z)
    same = [
        isinstance(r, torch.Tensor) and r.shape == z.shape and torch.allclose(r, z, rtol=1e-4, atol=1e-5)
        for r in repeats
    ]
    if isinstance(z, torch.Tensor) and repeats and not all(same):
        raise bad_argument(
            "model",
            "outputs that change between identical calls (dropout or noise always on?)",
            "a deterministic model: no functional dropout with training=True",
        )
    return z
