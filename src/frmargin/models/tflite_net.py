"""``TFLiteNet``: a ``TFLiteGraph`` (``tflite``) replayed as a float32 PyTorch module, one small
module per operator, on (B, C, H, W) activations, with TensorFlow padding and fused activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import AssetError
from .tflite import SUPPORTED_OPS, TFLiteGraph, same_padding

__all__ = ["TFLiteNet"]


def _activate(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return x
    if activation == "relu":
        return F.relu(x)
    if activation == "relu6":
        return F.hardtanh(x, 0.0, 6.0)
    return F.hardtanh(x, -1.0, 1.0)  # relu_n1_to_1


def _pad(x: torch.Tensor, padding: str, kernel: list[int], stride: list[int], dilation: list[int]) -> torch.Tensor:
    if padding == "valid":
        return x
    top, bottom = same_padding(x.shape[-2], kernel[0], stride[0], dilation[0])
    left, right = same_padding(x.shape[-1], kernel[1], stride[1], dilation[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom))


class _Conv(nn.Module):
    """CONV_2D or DEPTHWISE_CONV_2D with TF padding and fused activation on (B, C, H, W)."""

    def __init__(self, attrs: dict) -> None:
        super().__init__()
        shape = attrs["weight_shape"]
        self.weight = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(shape[0]))
        self.stride, self.dilation = list(attrs["stride"]), list(attrs["dilation"])
        self.padding, self.activation, self.groups = attrs["padding"], attrs["activation"], attrs["groups"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _pad(x, self.padding, list(self.weight.shape[2:]), self.stride, self.dilation)
        y = F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return _activate(y, self.activation)


class _Add(nn.Module):
    def __init__(self, attrs: dict) -> None:
        super().__init__()
        self.activation = attrs["activation"]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _activate(a + b, self.activation)


class _AvgPool(nn.Module):
    """TF average pooling: with SAME padding the padded cells do not count in the mean."""

    def __init__(self, attrs: dict) -> None:
        super().__init__()
        self.filter, self.stride = list(attrs["filter"]), list(attrs["stride"])
        self.padding, self.activation = attrs["padding"], attrs["activation"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = _pad(x, self.padding, self.filter, self.stride, [1, 1])
        y = F.avg_pool2d(padded, self.filter, self.stride)
        if padded.shape != x.shape:
            ones = _pad(torch.ones_like(x[:1, :1]), self.padding, self.filter, self.stride, [1, 1])
            y = y / F.avg_pool2d(ones, self.filter, self.stride)
        return _activate(y, self.activation)


class _Reshape(nn.Module):
    """RESHAPE with TFLite (NHWC) element order; 4-D results go back to (B, C, H, W)."""

    def __init__(self, attrs: dict) -> None:
        super().__init__()
        self.shape = list(attrs["shape"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = x.permute(0, 2, 3, 1)
        y = x.reshape(x.shape[0], *self.shape)
        return y.permute(0, 3, 1, 2) if y.ndim == 4 else y


class _Softmax(nn.Module):
    def __init__(self, attrs: dict) -> None:
        super().__init__()
        self.beta = float(attrs["beta"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.beta * x, 1 if x.ndim == 4 else -1)  # TFLite's last axis is the channel


class TFLiteNet(nn.Module):
    """The graph of a ``TFLiteGraph`` as a module: (B, C, H, W) real-valued input -> graph output.

    The input is the graph's real (dequantized) input in NCHW layout, e.g. (pixel - 128) / 128 for
    a uint8 input with scale 1/128 and zero point 128; the output is (B, K) for a rank-2 graph
    output. Parameters are created from the plan and loaded from ``graph.state``.

    Example:
        >>> net = TFLiteNet(read_tflite(data)).eval()  # doctest: +SKIP
    """

    def __init__(self, graph: TFLiteGraph) -> None:
        super().__init__()
        self.plan = [(o.kind, list(o.inputs), list(o.outputs)) for o in graph.ops]
        layers: list[nn.Module] = []
        for i, o in enumerate(graph.ops):
            if o.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                layers.append(_Conv(o.attrs))
            elif o.kind == "ADD":
                layers.append(_Add(o.attrs))
            elif o.kind == "AVERAGE_POOL_2D":
                layers.append(_AvgPool(o.attrs))
            elif o.kind == "RESHAPE":
                layers.append(_Reshape(o.attrs))
            elif o.kind == "SOFTMAX":
                layers.append(_Softmax(o.attrs))
            else:
                raise AssetError(f"converted TFLite graph: operator {i} is {o.kind}, expected one of {SUPPORTED_OPS}")
        self.layers = nn.ModuleList(layers)
        self.input_index, self.output_index = graph.inputs[0], graph.outputs[0]
        last_use: dict[int, int] = {}
        for i, (_, ins, _) in enumerate(self.plan):
            for t in ins:
                last_use[t] = i
        self.free_after = [
            [t for t in ins if last_use[t] == i and t != self.output_index] for i, (_, ins, _) in enumerate(self.plan)
        ]
        self.load_state_dict(graph.state, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        env = {self.input_index: x}
        for i, (layer, (_, ins, outs)) in enumerate(zip(self.layers, self.plan)):
            env[outs[0]] = layer(*(env[t] for t in ins))
            for t in self.free_after[i]:
                env.pop(t, None)
        return env[self.output_index]
