"""Import a TFLite classifier as a float32 PyTorch module with dequantized weights.

This module reads the file into a ``TFLiteGraph`` (plain data); ``tflite_net.TFLiteNet`` runs it.
The subgraph's operators are walked in file order and each becomes one small module; the forward
pass replays the same graph on (B, C, H, W) activations (TFLite's NHWC tensors, transposed). Supported
operators: CONV_2D (OHWI weights), DEPTHWISE_CONV_2D (1HWC weights, any channel multiplier), ADD,
AVERAGE_POOL_2D, RESHAPE and SOFTMAX (a SOFTMAX that produces the graph output is dropped, so the
module returns logits). Padding is TensorFlow's "SAME" (total = max((ceil(H/s) - 1) s + k_eff - H, 0),
the extra pixel at the bottom/right) or "VALID"; fused activations NONE, RELU, RELU_N1_TO_1, RELU6.

Quantized weights (uint8/int8, per-tensor or per-channel scale and zero point) and int32 biases are
dequantized, real = scale * (q - zero_point), and the graph runs in float32: activations are NOT
re-quantized and not clamped to their quantized ranges. The result is the dequantized float version
of an 8-bit model; it is differentiable and close to, but not the same function as, integer TFLite
execution.

Parsing needs the optional ``tflite`` package (``pip install frmargin[imagenet]``); a converted graph
is plain data (``TFLiteGraph.to_dict``) that loads with ``torch.load(..., weights_only=True)``.

Example:
    >>> graph = read_tflite(open("model.tflite", "rb").read())  # doctest: +SKIP
    >>> net = TFLiteNet(graph).eval()  # doctest: +SKIP (frmargin.models.tflite_net)
    >>> net(torch.rand(1, 3, 224, 224) * 2 - 1).shape  # doctest: +SKIP
    torch.Size([1, 1001])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import AssetError

__all__ = ["SUPPORTED_OPS", "OpSpec", "TFLiteGraph", "read_tflite", "same_padding"]

SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX")
GRAPH_FORMAT = 1  # version of ``TFLiteGraph.to_dict``; bump when the plan or parameter names change
_ACTIVATIONS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}
_PADDINGS = {0: "same", 1: "valid"}
_INT_TYPES = {2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8, 7: np.int16}
_FLOAT_TYPES = {0: np.float32, 10: np.float64}


@dataclass(frozen=True)
class OpSpec:
    """One operator of the plan: ``kind`` (a TFLite builtin name), tensor indices and attributes."""

    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TFLiteGraph:
    """A parsed subgraph: the plan, float32 parameters by module key, the graph input quantization.

    Attributes:
        ops: operators in execution order (a dropped final SOFTMAX is not among them).
        inputs, outputs: graph tensor indices.
        state: parameter name (``layers.<i>.weight`` etc.) -> float32 tensor in PyTorch layout.
        input_quant: (scale, zero_point) of the graph input, or None for a float input.
        input_shape: the file's input shape, NHWC (batch usually 1).
        notes: what the import changed (dropped softmax, dequantized tensors).
    """

    ops: tuple[OpSpec, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    state: dict[str, torch.Tensor]
    input_quant: tuple[float, int] | None
    input_shape: tuple[int, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain data (lists, numbers, strings, tensors) for ``torch.save``; see ``from_dict``."""
        return {
            "format": GRAPH_FORMAT,
            "ops": [
                {"kind": o.kind, "inputs": list(o.inputs), "outputs": list(o.outputs), "attrs": o.attrs}
                for o in self.ops
            ],
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "state": dict(self.state),
            "input_quant": None if self.input_quant is None else list(self.input_quant),
            "input_shape": list(self.input_shape),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> TFLiteGraph:
        """Inverse of ``to_dict``.

        Raises:
            AssetError: another format version or missing entries.
        """
        if not isinstance(d, dict) or d.get("format") != GRAPH_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise AssetError(f"converted TFLite graph: got format {got!r}, expected {GRAPH_FORMAT}")
        ops = tuple(OpSpec(o["kind"], tuple(o["inputs"]), tuple(o["outputs"]), dict(o["attrs"])) for o in d["ops"])
        q = d["input_quant"]
        return cls(
            ops=ops,
            inputs=tuple(d["inputs"]),
            outputs=tuple(d["outputs"]),
            state=dict(d["state"]),
            input_quant=None if q is None else (float(q[0]), int(q[1])),
            input_shape=tuple(d["input_shape"]),
            notes=tuple(d["notes"]),
        )


# ----------------------------------------------------------------------------- parsing


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one spatial axis: (before, after), the extra pixel after.

    Example:
        >>> same_padding(224, 3, 2)
        (0, 1)
        >>> same_padding(7, 3, 1)
        (1, 1)
    """
    k_eff = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return total // 2, total - total // 2


class _Reader:
    """Access to one subgraph of a parsed flatbuffer: tensors as numpy, options as objects."""

    def __init__(self, data: bytes, origin: str) -> None:
        try:
            import tflite
        except ImportError as e:
            raise AssetError(
                "reading a .tflite file needs the 'tflite' package: pip install 'frmargin[imagenet]' (or tflite)"
            ) from e
        self.tfl = tflite
        self.origin = origin
        self.data = data
        try:
            self.model = tflite.Model.GetRootAsModel(data, 0)
            n = self.model.SubgraphsLength()
        except Exception as e:
            raise AssetError(f"file {origin!r}: cannot be parsed as TFLite ({type(e).__name__}: {e})") from e
        if n != 1:
            raise AssetError(f"file {origin!r}: got {n} subgraphs, expected exactly 1")
        self.graph = self.model.Subgraphs(0)

    def op_name(self, op: Any) -> str:
        code = self.model.OperatorCodes(op.OpcodeIndex())
        number = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # the deprecated int8 field
        from tflite.utils import BUILTIN_OPCODE2NAME

        return BUILTIN_OPCODE2NAME.get(number, f"builtin {number}")

    def options(self, op: Any, cls_name: str) -> Any:
        table = op.BuiltinOptions()
        if table is None:
            return None
        opts = getattr(self.tfl, cls_name)()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(int(v) for v in self.graph.Tensors(index).ShapeAsNumpy())

    def quant(self, index: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        q = self.graph.Tensors(index).Quantization()
        if q is None or q.ScaleLength() == 0:
            return None
        zp = q.ZeroPointAsNumpy() if q.ZeroPointLength() else np.zeros(q.ScaleLength(), np.int64)
        return q.ScaleAsNumpy().astype(np.float64), np.asarray(zp, np.int64), int(q.QuantizedDimension())

    def constant(self, index: int) -> np.ndarray | None:
        """The dequantized float64 value of a constant tensor, or None for an activation."""
        t = self.graph.Tensors(index)
        buf = self.model.Buffers(t.Buffer())
        if buf.DataLength():
            raw = buf.DataAsNumpy().tobytes()
        elif buf.Offset() > 1:  # large models keep tensor data after the flatbuffer
            raw = self.data[buf.Offset() : buf.Offset() + buf.Size()]
        else:
            return None
        name = t.Name().decode(errors="replace")
        dtype = _INT_TYPES.get(t.Type()) or _FLOAT_TYPES.get(t.Type())
        if dtype is None:
            raise AssetError(f"file {self.origin!r}: tensor {name!r} has unsupported type code {t.Type()}")
        shape = self.shape(index)
        value = np.frombuffer(raw, dtype=dtype)
        if value.size != int(np.prod(shape)):
            raise AssetError(f"file {self.origin!r}: tensor {name!r} holds {value.size} values, shape {shape}")
        value = value.reshape(shape).astype(np.float64)
        q = self.quant(index) if t.Type() in _INT_TYPES else None
        if q is not None:
            scale, zp, axis = q
            view = [1] * value.ndim
            if scale.size > 1:
                view[axis] = scale.size
            value = scale.reshape(view) * (value - zp.reshape(view))
        return value


def _act(code: int, kind: str, origin: str) -> str | None:
    if code not in _ACTIVATIONS:
        raise AssetError(
            f"file {origin!r}: {kind} has fused activation code {code}, expected one of {sorted(_ACTIVATIONS)}"
        )
    return _ACTIVATIONS[code]


def read_tflite(data: bytes, origin: str = "<bytes>") -> TFLiteGraph:
    """Parse a TFLite flatbuffer (one subgraph, the op set of ``SUPPORTED_OPS``) into a ``TFLiteGraph``.

    Raises:
        AssetError: not a TFLite file, several subgraphs, or an unsupported operator, layout,
            activation or tensor type (the message names the operator and the value).

    Example:
        >>> graph = read_tflite(Path("mobilenet.tflite").read_bytes())  # doctest: +SKIP
        >>> [o.kind for o in graph.ops][:2]  # doctest: +SKIP
        ['CONV_2D', 'DEPTHWISE_CONV_2D']
    """
    r = _Reader(data, origin)
    g = r.graph
    ops: list[OpSpec] = []
    state: dict[str, torch.Tensor] = {}
    outputs = tuple(int(i) for i in g.OutputsAsNumpy())
    notes = ["weights dequantized to float32: real = scale * (q - zero_point); activations not re-quantized"]
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        kind = r.op_name(op)
        ins = tuple(int(v) for v in op.InputsAsNumpy())
        outs = tuple(int(v) for v in op.OutputsAsNumpy())
        key = f"layers.{len(ops)}"
        attrs: dict = {}
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = kind == "DEPTHWISE_CONV_2D"
            o = r.options(op, "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions")
            w = r.constant(ins[1])
            if w is None or w.ndim != 4:
                raise AssetError(f"file {origin!r}: operator {i} ({kind}) has no constant 4-D weight")
            if depthwise:  # 1HWC, C = in_channels * multiplier -> (C, 1, H, W), groups = in_channels
                if w.shape[0] != 1:
                    raise AssetError(f"file {origin!r}: operator {i} ({kind}) weight {w.shape}, expected 1HWC")
                weight = w[0].transpose(2, 0, 1)[:, None]
                groups = r.shape(ins[0])[3]
            else:  # OHWI -> OIHW
                weight = w.transpose(0, 3, 1, 2)
                groups = 1
            b = r.constant(ins[2]) if len(ins) > 2 and ins[2] >= 0 else None
            state[key + ".weight"] = torch.tensor(weight, dtype=torch.float32)
            state[key + ".bias"] = torch.tensor(np.zeros(weight.shape[0]) if b is None else b, dtype=torch.float32)
            attrs = {
                "stride": [o.StrideH(), o.StrideW()],
                "dilation": [o.DilationHFactor(), o.DilationWFactor()],
                "padding": _PADDINGS.get(o.Padding(), f"code {o.Padding()}"),
                "activation": _act(o.FusedActivationFunction(), kind, origin),
                "groups": int(groups),
                "weight_shape": list(weight.shape),
            }
            ins = ins[:1]
        elif kind == "ADD":
            if any(r.constant(t) is not None for t in ins):
                raise AssetError(
                    f"file {origin!r}: operator {i} (ADD) has a constant operand, expected two activations"
                )
            o = r.options(op, "AddOptions")
            attrs = {"activation": _act(o.FusedActivationFunction() if o else 0, kind, origin)}
        elif kind == "AVERAGE_POOL_2D":
            o = r.options(op, "Pool2DOptions")
            attrs = {
                "filter": [o.FilterHeight(), o.FilterWidth()],
                "stride": [o.StrideH(), o.StrideW()],
                "padding": _PADDINGS.get(o.Padding(), f"code {o.Padding()}"),
                "activation": _act(o.FusedActivationFunction(), kind, origin),
            }
        elif kind == "RESHAPE":
            shape_in, shape_out = r.shape(ins[0]), r.shape(outs[0])
            if not shape_in or not shape_out or shape_in[0] != shape_out[0]:
                raise AssetError(
                    f"file {origin!r}: operator {i} (RESHAPE) {shape_in} -> {shape_out} changes the batch axis"
                )
            attrs = {"shape": list(shape_out[1:])}
            ins = ins[:1]
        elif kind == "SOFTMAX":
            o = r.options(op, "SoftmaxOptions")
            attrs = {"beta": float(o.Beta()) if o else 1.0}
        else:
            raise AssetError(f"file {origin!r}: operator {i} is {kind}, expected one of {', '.join(SUPPORTED_OPS)}")
        if attrs.get("padding") not in (None, "same", "valid"):
            raise AssetError(
                f"file {origin!r}: operator {i} ({kind}) has padding {attrs['padding']}, expected SAME or VALID"
            )
        ops.append(OpSpec(kind, ins, outs, attrs))
    if ops and ops[-1].kind == "SOFTMAX" and len(outputs) == 1 and ops[-1].outputs == outputs:
        outputs = (ops.pop().inputs[0],)
        notes.append("final SOFTMAX dropped: the module returns logits")
    inputs = tuple(int(i) for i in g.InputsAsNumpy())
    if len(inputs) != 1:
        raise AssetError(f"file {origin!r}: got {len(inputs)} graph inputs, expected 1")
    q = r.quant(inputs[0])
    input_quant = None if q is None else (float(q[0][0]), int(q[1][0]))
    return TFLiteGraph(tuple(ops), inputs, outputs, state, input_quant, r.shape(inputs[0]), tuple(notes))
