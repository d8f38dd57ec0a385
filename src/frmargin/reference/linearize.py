"""A piecewise-linear network read through its torch calls, with its activation pattern exposed.

``PiecewiseLinear(model, x)`` runs a float64 copy of ``model`` under a ``TorchFunctionMode`` that
catches every piecewise-linear call (ReLU, leaky ReLU, absolute value, 2-D max-pool: the
``switches``) and lets the affine calls pass (linear and convolution layers, eval-mode batch
norm, additions, average pooling, flatten, reshapes, padding). It can then evaluate the network
*with a given activation pattern*: an affine map of x, equal to the network wherever that pattern
is x's own, together with the slacks that say how far x is from leaving it.

Anything else is refused with one ``NotPiecewiseLinear`` error that names the module (smooth
activations, layer or group norm, batch norm in training mode, softmax inside the network), and
every network is checked once: the pattern-fixed evaluation must reproduce the model's logits and
be affine (zero second difference along a random direction).

Shapes: N samples, C classes, *S the input shape, S_total the network's slacks per sample.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import FrmarginError
from .switches import Hinge, MaxPool, Switch

__all__ = ["TREATED", "NotPiecewiseLinear", "PiecewiseLinear"]

#: what the exact reference can read, in words (the error message lists it)
TREATED = (
    "ReLU, leaky ReLU, absolute value, 2-D max-pool, linear and convolution layers, eval-mode batch norm, "
    "additions, average pooling, flatten and reshapes"
)
#: the pattern-fixed network must reproduce the model's logits to this (relative to their size) ...
CONSISTENCY = 1e-11
#: ... and have a second difference below this (relative) along a random direction
AFFINITY = 1e-9

_SMOOTH_MODULES: tuple[type[nn.Module], ...] = (
    nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Hardswish,
    nn.Hardsigmoid, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.LayerNorm,
    nn.GroupNorm, nn.LocalResponseNorm, nn.MultiheadAttention, nn.RNNBase, nn.Hardtanh, nn.PReLU, nn.GLU,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.MaxPool1d, nn.MaxPool3d, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.InstanceNorm3d, nn.Threshold, nn.RReLU, nn.Softshrink, nn.Hardshrink,
)  # fmt: skip
_SMOOTH_CALLS: dict[Callable[..., Any], str] = {
    f: name
    for name, fs in {
        "tanh": (torch.tanh, torch.Tensor.tanh, F.tanh),
        "sigmoid": (torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid),
        "GELU": (F.gelu,),
        "SiLU": (F.silu,),
        "Mish": (F.mish,),
        "ELU": (F.elu, F.selu, F.celu),
        "softplus": (F.softplus,),
        "hardswish": (F.hardswish, F.hardsigmoid),
        "softmax": (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.Tensor.softmax),
        "exp": (torch.exp, torch.Tensor.exp),
        "log": (torch.log, torch.Tensor.log),
        "layer norm": (F.layer_norm, F.group_norm, F.instance_norm, F.normalize),
        "clamp (not supported)": (torch.clamp, torch.Tensor.clamp, F.hardtanh, F.relu6, torch.clamp_min),
        "max over a dimension (not supported)": (torch.max, torch.Tensor.max, torch.amax, torch.maximum),
        "min (not supported)": (torch.min, torch.Tensor.min, torch.amin, torch.minimum),
        "sqrt": (torch.sqrt, torch.Tensor.sqrt, torch.rsqrt),
        "pow": (torch.pow, torch.Tensor.pow, torch.Tensor.__pow__),
    }.items()
    for f in fs
}
_RELU = (F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_)
_LEAKY = (F.leaky_relu, torch._C._nn.leaky_relu)
_ABS = (torch.abs, torch.Tensor.abs, torch.absolute)
_MAXPOOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


class NotPiecewiseLinear(FrmarginError):
    """The network is not piecewise linear in a form the exact reference can read."""


def _pair(v: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def _maxpool(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Switch]:
    bound = dict(zip(_MAXPOOL_ARGS, args)) | kwargs
    h, kernel = bound["input"], _pair(bound["kernel_size"])
    stride = _pair(bound.get("stride") or kernel)
    if bound.get("ceil_mode") or bound.get("return_indices") or h.ndim != 4:
        raise NotPiecewiseLinear(
            f"max_pool2d with ceil_mode, return_indices or a {h.ndim}-D input is not supported; "
            f"the exact reference treats {TREATED}"
        )
    return h, MaxPool(kernel, stride, _pair(bound.get("padding", 0)), _pair(bound.get("dilation", 1)))


def classify(func: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[torch.Tensor, Switch] | None:
    """The input and switch of a piecewise-linear call, None for any other call; raises
    ``NotPiecewiseLinear`` for a known smooth (or unsupported) one."""
    if func in _RELU:
        return args[0], Hinge(0.0)
    if func in _LEAKY:
        slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
        return args[0], Hinge(float(slope), kind="leaky ReLU")
    if func in _ABS:
        return args[0], Hinge(-1.0, kind="abs")
    if func is F.max_pool2d:
        return _maxpool(args, kwargs)
    if func is F.batch_norm and (kwargs.get("training") or (len(args) > 5 and args[5])):
        raise NotPiecewiseLinear("batch norm in training mode depends on the batch; call model.eval() first")
    if func in _SMOOTH_CALLS:
        raise NotPiecewiseLinear(f"calls {_SMOOTH_CALLS[func]} ({getattr(func, '__name__', func)})")
    return None


class _Mode(TorchFunctionMode):
    """Runs the network with its switches caught: recording their patterns (``patterns`` None)
    or applying given ones; collects the slacks when asked."""

    def __init__(
        self, net: PiecewiseLinear, patterns: list[torch.Tensor] | None, slacks: bool, outputs: list | None = None
    ) -> None:
        super().__init__()
        self.net, self.patterns, self.want_slacks, self.outputs = net, patterns, slacks, outputs
        self.recorded: list[torch.Tensor] = []
        self.slacks: list[torch.Tensor] = []
        self.calls = 0

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        found = classify(func, args, kwargs)
        if found is None:
            return func(*args, **kwargs)
        h, switch = found
        i = self.calls
        self.calls += 1
        switch = self.net.register(i, switch)
        pattern = switch.record(h) if self.patterns is None else self.patterns[i]
        if self.patterns is None:
            self.recorded.append(pattern)
        if self.want_slacks:
            self.slacks.append(switch.slack(h, pattern))
        out = switch.apply(h, pattern)
        if self.outputs is not None:
            self.outputs.append(out)
        return out


class PiecewiseLinear:
    """A float64 copy of ``model`` whose activation patterns can be read and fixed.

    Attributes:
        model: the float64 copy (eval mode).
        switches: the piecewise-linear calls of one forward pass, in order.
        offsets: where each switch's slacks start in the concatenated slacks (len + 1 entries).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
        if isinstance(model, torch.jit.ScriptModule):
            raise NotPiecewiseLinear(
                f"a TorchScript model cannot be read call by call; the exact reference treats {TREATED} in eager modules"
            )
        if isinstance(model, nn.Module):
            _refuse_modules(model)
        self.model = copy.deepcopy(model).double().eval() if isinstance(model, nn.Module) else model
        if isinstance(self.model, nn.Module):
            self.model.requires_grad_(False)
        self.switches: list[Switch] = []
        self.offsets: list[int] = [0]
        self._check(x[:1].detach().to(torch.float64))

    def register(self, i: int, switch: Switch) -> Switch:
        """The switch of call ``i``: the first pass defines it, later passes must match it."""
        if i < len(self.switches):
            if type(self.switches[i]) is not type(switch):
                raise NotPiecewiseLinear(f"its piecewise-linear calls change from one pass to the next (call {i})")
            return self.switches[i]
        self.switches.append(switch)
        return switch

    def record(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (N, C) and the activation pattern of x (N, *S) float64."""
        mode = _Mode(self, None, False)
        with torch.no_grad(), mode:
            z = self.model(x)
        return z, mode.recorded

    def evaluate(
        self, x: torch.Tensor, patterns: list[torch.Tensor], slacks: bool = True, outputs: list | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (N, C) and slacks (N, S_total) of the network with its pattern fixed to
        ``patterns`` (differentiable in x: an affine map); the switches' outputs are appended to
        ``outputs`` when it is a list."""
        mode = _Mode(self, patterns, slacks, outputs)
        with mode:
            z = self.model(x)
        if mode.calls != len(self.switches):
            raise NotPiecewiseLinear(
                f"its forward pass made {mode.calls} piecewise-linear calls, before {len(self.switches)}"
            )
        if not slacks:
            return z, None
        if len(self.offsets) == 1:
            for s in mode.slacks:
                self.offsets.append(self.offsets[-1] + s.shape[1])
        return z, torch.cat(mode.slacks, 1) if mode.slacks else torch.zeros(
            x.shape[0], 0, dtype=x.dtype, device=x.device
        )

    def locate(self, index: int) -> tuple[int, int]:
        """(switch, slack index within it) of a slack index of the concatenated slacks."""
        lo, hi = 0, len(self.switches)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.offsets[mid] <= index:
                lo = mid
            else:
                hi = mid
        return lo, index - self.offsets[lo]

    def _check(self, x: torch.Tensor) -> None:
        with _named_errors(self.model):
            z_record, patterns = self.record(x)
        with torch.no_grad():
            z_model = self.model(x)
            z_fixed, _ = self.evaluate(x, patterns)
            scale = z_model.abs().max().clamp_min(1.0)
            if not (
                (z_record - z_model).abs().max() <= CONSISTENCY * scale
                and (z_fixed - z_model).abs().max() <= CONSISTENCY * scale
            ):
                raise NotPiecewiseLinear(
                    "read call by call, it does not reproduce its own logits (an in-place or unsupported operation?); "
                    f"the exact reference treats {TREATED}"
                )
            gen = torch.Generator().manual_seed(0)
            u = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            u = u * (x.norm() / u.norm()).clamp_min(1.0)
            plus, minus = self.evaluate(x + u, patterns, False)[0], self.evaluate(x - u, patterns, False)[0]
            second = (plus + minus - 2 * z_fixed).abs().max()
            if not second <= AFFINITY * (plus - z_fixed).abs().max().clamp_min(scale):
                raise NotPiecewiseLinear(
                    f"with its activation pattern fixed it is not affine (second difference {float(second):.3g}); "
                    f"the exact reference treats {TREATED}"
                )


def _refuse_modules(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, _SMOOTH_MODULES):
            raise NotPiecewiseLinear(
                f"module {name!r} ({type(module).__name__}) is not piecewise linear; the exact reference treats {TREATED}"
            )
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise NotPiecewiseLinear(
                f"module {name!r} ({type(module).__name__}) is in training mode; call model.eval() first"
            )


@contextmanager
def _named_errors(model: Callable[..., Any]) -> Iterator[None]:
    """``NotPiecewiseLinear`` raised inside the block names the innermost module running."""
    stack: list[str] = []
    handles = []

    def enter(label: str) -> Callable[..., None]:
        return lambda module, args: stack.append(label)

    def leave(module: nn.Module, args: Any, out: Any) -> None:
        stack.pop()

    if isinstance(model, nn.Module):
        for name, module in model.named_modules():
            handles.append(
                module.register_forward_pre_hook(enter(f"{name or 'the model'!r} ({type(module).__name__})"))
            )
            handles.append(module.register_forward_hook(leave))
    try:
        yield
    except NotPiecewiseLinear as err:
        where = f"module {stack[-1]} " if stack else "the network "
        raise NotPiecewiseLinear(
            f"{where}{err}; the exact reference treats {TREATED}" if "treats" not in str(err) else f"{where}{err}"
        ) from None
    finally:
        for h in handles:
            h.remove()
