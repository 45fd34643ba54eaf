"""A float32 TFLite model as an ONNX graph: a minimal flatbuffer reader and an op-by-op converter.

Written for MobileFaceNet (``weights/mobilefacenet/``) with no dependency beyond numpy and onnx:
TFLite files are FlatBuffers with the schema of tensorflow/lite/schema/schema.fbs, and the few
tables a plain float CNN needs (Model, OperatorCode, SubGraph, Tensor, Buffer, Operator and the
options of the ops below) are read here directly from the wire format
(``_Table``: a table is an int32 offset back to its vtable, whose uint16 entries locate each field;
vectors and strings are a uint32 length followed by their elements).

Operators translated (anything else raises ``UnsupportedModelError``; quantized or non-float32
tensors too):

===================  ==========================================================================
TFLite               ONNX (activations kept in NCHW; TFLite's NHWC transposed once at the input)
===================  ==========================================================================
CONV_2D              Conv; weights OHWI -> OIHW; padding SAME/VALID as explicit ``pads``
DEPTHWISE_CONV_2D    Conv with ``group`` = input channels; weights 1HWC -> C1HW
ADD / SUB / MUL      Add / Sub / Mul; a constant operand of shape (C,) or (1,1,1,C) is reshaped to
                     (C,1,1) so it broadcasts over NCHW channels
RELU / RELU6 / ABS   Relu / Clip(0, 6) / Abs
RESHAPE              Transpose back to NHWC (TFLite's element order), Reshape with the batch axis
                     kept dynamic, and Transpose to NCHW again if the result has rank 4
fused activation     NONE, RELU, RELU6 (Relu / Clip after the op)
PReLU pattern        TOCO lowers TensorFlow's PReLU to ``relu(x) + c * (x - abs(x))``: RELU, ABS,
                     SUB, MUL by a per-channel constant, ADD (``find_prelus``). On NCHW tensors
                     that becomes ``Relu(x) + DWConv1x1(Relu(DWConv1x1(x, -1)), -2c)``: ops ONNX
                     Runtime keeps in its blocked NCHWc layout (elementwise ops with a
                     per-channel constant make it reorder the tensor twice per PReLU; its own
                     PRelu op is slower still). Bit-identical: for x < 0 both give ``2c * x``
                     (negation and scaling by 2 are exact), for x >= 0 both give x. 1.6x faster
                     at batch 1, 2.4x at batch 16 on this 2-core CPU. ``convert(...,
                     fuse_prelu=False)`` translates the five ops one by one instead
===================  ==========================================================================

Padding is computed exactly as TFLite's ``ComputePaddingHeightWidth``: ``SAME`` gives
``out = ceil(in / stride)`` and ``total = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)``
with ``total // 2`` before and the rest after; ``VALID`` pads nothing. The batch dimension of the
graph's input and output is made dynamic (the file's own is fixed), which is valid because every
op here works per sample.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from regard.errors import ModelError

__all__ = [
    "TfliteModel",
    "TfliteOperator",
    "TfliteTensor",
    "UnsupportedModelError",
    "convert",
    "find_prelus",
    "read_tflite",
]

OPSET = 17

# tensorflow/lite/schema/schema.fbs enums (the subset used here).
_BUILTIN = {0: "ADD", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 18: "MUL", 19: "RELU", 21: "RELU6",
            22: "RESHAPE", 41: "SUB", 101: "ABS"}
_TYPES = {0: ("FLOAT32", np.float32), 2: ("INT32", np.int32), 4: ("INT64", np.int64)}
_SAME, _VALID = 0, 1
_ACT_NONE, _ACT_RELU, _ACT_RELU6 = 0, 1, 3


class UnsupportedModelError(ModelError):
    """The TFLite file uses something this converter does not translate."""


# ----------------------------------------------------------------------------------------------
# FlatBuffers wire format


class _Table:
    """One FlatBuffers table at ``pos`` in ``buf``; fields are read by their schema index."""

    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self._vt = vtable
        self._vt_len = struct.unpack_from("<H", buf, vtable)[0]

    def _field(self, index: int) -> int:
        """Absolute position of field ``index``, or 0 when absent (the default applies)."""
        entry = 4 + 2 * index
        if entry >= self._vt_len:
            return 0
        off = struct.unpack_from("<H", self.buf, self._vt + entry)[0]
        return self.pos + off if off else 0

    def scalar(self, index: int, fmt: str, default: int | float = 0) -> int | float:
        p = self._field(index)
        return struct.unpack_from("<" + fmt, self.buf, p)[0] if p else default

    def _indirect(self, index: int) -> int:
        p = self._field(index)
        return p + struct.unpack_from("<I", self.buf, p)[0] if p else 0

    def table(self, index: int) -> _Table | None:
        p = self._indirect(index)
        return _Table(self.buf, p) if p else None

    def vector(self, index: int) -> tuple[int, int]:
        """(position of the first element, length); (0, 0) when absent."""
        p = self._indirect(index)
        if not p:
            return 0, 0
        return p + 4, struct.unpack_from("<I", self.buf, p)[0]

    def tables(self, index: int) -> list[_Table]:
        start, n = self.vector(index)
        out = []
        for i in range(n):
            p = start + 4 * i
            out.append(_Table(self.buf, p + struct.unpack_from("<I", self.buf, p)[0]))
        return out

    def array(self, index: int, dtype: type) -> np.ndarray:
        start, n = self.vector(index)
        return np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder("<"), count=n,
                             offset=start).copy() if n else np.zeros(0, dtype=dtype)

    def bytes(self, index: int) -> bytes:
        start, n = self.vector(index)
        return bytes(self.buf[start:start + n])

    def string(self, index: int) -> str:
        return self.bytes(index).decode("utf-8", "replace")


# ----------------------------------------------------------------------------------------------
# The model as plain Python objects


@dataclass
class TfliteTensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None  # the constant's value, None for activations


@dataclass
class TfliteOperator:
    op: str  # builtin operator name, e.g. "CONV_2D"
    inputs: list[int]  # tensor indices; -1 = optional input left out
    outputs: list[int]
    options: dict[str, object] = field(default_factory=dict)


@dataclass
class TfliteModel:
    tensors: list[TfliteTensor]
    operators: list[TfliteOperator]
    inputs: list[int]
    outputs: list[int]
    description: str


def _options(op: str, t: _Table | None) -> dict[str, object]:
    """The builtin options of the ops we translate (schema.fbs field order)."""

    def s(i: int, fmt: str, default: int = 0) -> int:
        return int(t.scalar(i, fmt, default)) if t is not None else default

    if op == "CONV_2D":
        return {"padding": s(0, "b"), "stride_w": s(1, "i"), "stride_h": s(2, "i"),
                "activation": s(3, "b"), "dilation_w": s(4, "i", 1), "dilation_h": s(5, "i", 1)}
    if op == "DEPTHWISE_CONV_2D":
        return {"padding": s(0, "b"), "stride_w": s(1, "i"), "stride_h": s(2, "i"),
                "depth_multiplier": s(3, "i"), "activation": s(4, "b"),
                "dilation_w": s(5, "i", 1), "dilation_h": s(6, "i", 1)}
    if op in ("ADD", "SUB", "MUL"):
        return {"activation": s(0, "b")}
    if op == "RESHAPE":
        return {"new_shape": [int(v) for v in t.array(0, np.int32)] if t is not None else None}
    return {}


def read_tflite(path: str | Path | bytes) -> TfliteModel:
    """Parse a single-subgraph TFLite file (float32 tensors, builtin ops)."""
    raw = path if isinstance(path, bytes) else Path(path).read_bytes()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise UnsupportedModelError("not a TFLite flatbuffer (no 'TFL3' identifier)")
    buf = memoryview(raw)
    model = _Table(buf, struct.unpack_from("<I", buf, 0)[0])
    codes = []
    for oc in model.tables(1):
        # builtin_code (int32, field 3) supersedes deprecated_builtin_code (int8, field 0) from
        # schema v3a; TFLite reads the larger of the two.
        codes.append(max(int(oc.scalar(0, "b")), int(oc.scalar(3, "i"))))
    subgraphs = model.tables(2)
    if len(subgraphs) != 1:
        raise UnsupportedModelError(f"expected one subgraph, found {len(subgraphs)}")
    buffers = model.tables(4)
    sg = subgraphs[0]
    tensors = []
    for i, t in enumerate(sg.tables(0)):
        type_code = int(t.scalar(1, "b"))
        if type_code not in _TYPES:
            raise UnsupportedModelError(f"tensor {i} has TFLite type {type_code}; only float32 "
                                        "(and int32/int64 shapes) are supported")
        q = t.table(4)
        if q is not None and (q.vector(2)[1] or q.vector(3)[1]):  # scale / zero_point
            raise UnsupportedModelError(f"tensor {i} is quantized; only float models convert")
        shape = tuple(int(v) for v in t.array(0, np.int32))
        type_name, dtype = _TYPES[type_code]
        data = None
        b = int(t.scalar(2, "I"))
        if 0 < b < len(buffers):
            payload = buffers[b].bytes(0)
            offset, size = int(buffers[b].scalar(1, "Q")), int(buffers[b].scalar(2, "Q"))
            if not payload and offset > 1:  # large models keep buffers after the flatbuffer
                payload = raw[offset:offset + size]
            if payload:
                data = np.frombuffer(payload, dtype=np.dtype(dtype).newbyteorder("<")).astype(
                    dtype).reshape(shape)
        tensors.append(TfliteTensor(i, t.string(3), shape, type_name, data))
    operators = []
    for o in sg.tables(3):
        code = codes[int(o.scalar(0, "I"))]
        if code not in _BUILTIN:
            raise UnsupportedModelError(f"TFLite builtin operator {code} is not translated")
        name = _BUILTIN[code]
        operators.append(TfliteOperator(
            name, [int(v) for v in o.array(1, np.int32)], [int(v) for v in o.array(2, np.int32)],
            _options(name, o.table(4))))
    return TfliteModel(tensors, operators, [int(v) for v in sg.array(1, np.int32)],
                       [int(v) for v in sg.array(2, np.int32)], model.string(3))


# ----------------------------------------------------------------------------------------------
# The PReLU pattern


@dataclass
class _Prelu:
    x: int  # the input tensor
    slope: np.ndarray  # (C,) = 2c
    parts: list[int]  # indices (into model.operators) of the RELU, ABS, SUB, MUL it replaces


def find_prelus(model: TfliteModel) -> dict[int, _Prelu]:
    """Each ``ADD(RELU(x), MUL(c, SUB(x, ABS(x))))`` on a rank-4 ``x`` with a per-channel constant
    ``c`` whose intermediate tensors feed nothing else, keyed by the ADD's operator index."""
    producer = {o.outputs[0]: i for i, o in enumerate(model.operators)}
    uses: dict[int, int] = {}
    for o in model.operators:
        for i in o.inputs:
            uses[i] = uses.get(i, 0) + 1
    for i in model.outputs:
        uses[i] = uses.get(i, 0) + 1
    t = model.tensors

    def made_by(tensor: int, op: str) -> int | None:
        i = producer.get(tensor)
        if i is None or uses.get(tensor) != 1:
            return None
        o = model.operators[i]
        ok = o.op == op and o.options.get("activation", _ACT_NONE) == _ACT_NONE
        return i if ok else None

    found: dict[int, _Prelu] = {}
    for k, add in enumerate(model.operators):
        if add.op != "ADD" or add.options["activation"] != _ACT_NONE:
            continue
        for r_t, m_t in (add.inputs, add.inputs[::-1]):
            relu, mul = made_by(r_t, "RELU"), made_by(m_t, "MUL")
            if relu is None or mul is None:
                continue
            x = model.operators[relu].inputs[0]
            consts = [i for i in model.operators[mul].inputs if t[i].data is not None]
            others = [i for i in model.operators[mul].inputs if t[i].data is None]
            if len(consts) != 1 or len(others) != 1 or len(t[x].shape) != 4:
                continue
            c = t[consts[0]].data.reshape(-1)
            if c.shape[0] != t[x].shape[3] or t[consts[0]].data.ndim not in (1, 4):
                continue
            sub = made_by(others[0], "SUB")
            if sub is None or model.operators[sub].inputs[0] != x:
                continue
            ab = made_by(model.operators[sub].inputs[1], "ABS")
            if ab is None or model.operators[ab].inputs[0] != x:
                continue
            found[k] = _Prelu(x, (2 * c).astype(np.float32), [relu, ab, sub, mul])
            break
    return found


# ----------------------------------------------------------------------------------------------
# Conversion


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite's SAME padding (before, after) along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _conv_out(size: int, kernel: int, stride: int, dilation: int, pads: tuple[int, int]) -> int:
    return (size + pads[0] + pads[1] - ((kernel - 1) * dilation + 1)) // stride + 1


class _Builder:
    def __init__(self, model: TfliteModel) -> None:
        self.m = model
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.names: dict[int, str] = {}  # TFLite tensor index -> ONNX name (NCHW if rank 4)
        self._n = 0

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, arr: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None, **attrs: object) -> str:
        out = out or self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def fused(self, op_type: str, inputs: list[str], act: int, out: str, **attrs: object) -> str:
        """``op_type`` followed by TFLite's fused activation ``act``, ending in ``out``."""
        if act == _ACT_NONE:
            return self.node(op_type, inputs, out, **attrs)
        y = self.node(op_type, inputs, **attrs)
        if act == _ACT_RELU:
            return self.node("Relu", [y], out)
        if act == _ACT_RELU6:
            return self.node("Clip", [y, self.const(np.float32(0), "zero"),
                                      self.const(np.float32(6), "six")], out)
        raise UnsupportedModelError(f"fused activation {act} is not translated")

    def operand(self, index: int, other_rank: int) -> str:
        """An ONNX name for TFLite tensor ``index`` used by an elementwise op whose other operand
        has rank ``other_rank``: constants are laid out for NCHW broadcasting."""
        if index in self.names:
            return self.names[index]
        t = self.m.tensors[index]
        if t.data is None:
            raise UnsupportedModelError(f"tensor {index} ({t.name}) is used before it is computed")
        value = t.data
        if other_rank == 4 and value.ndim >= 1 and value.size > 1:
            if value.ndim == 4:
                value = value.transpose(0, 3, 1, 2)
            elif value.ndim == 1:
                value = value.reshape(-1, 1, 1)
            else:
                raise UnsupportedModelError(f"cannot broadcast constant of shape {value.shape}")
        return self.const(value, "k")

    def convolution(self, op: TfliteOperator, out: str) -> str:
        t = self.m.tensors
        x_idx, w_idx = op.inputs[0], op.inputs[1]
        w = t[w_idx].data
        if w is None:
            raise UnsupportedModelError("convolution weights must be constant")
        _, in_h, in_w, in_c = t[x_idx].shape
        o = op.options
        if op.op == "CONV_2D":
            kernel_h, kernel_w = w.shape[1], w.shape[2]
            weights, group = w.transpose(0, 3, 1, 2), 1  # OHWI -> OIHW
            if w.shape[3] != in_c:
                raise UnsupportedModelError("grouped CONV_2D is not translated")
        else:
            kernel_h, kernel_w = w.shape[1], w.shape[2]
            weights, group = w.transpose(3, 0, 1, 2), in_c  # 1HW(C*M) -> (C*M)1HW
        out_c = weights.shape[0]
        bias = (t[op.inputs[2]].data if len(op.inputs) > 2 and op.inputs[2] >= 0
                else np.zeros(out_c, dtype=np.float32))
        if bias is None:
            raise UnsupportedModelError("convolution bias must be constant")
        sh, sw, dh, dw = o["stride_h"], o["stride_w"], o["dilation_h"], o["dilation_w"]
        if o["padding"] == _SAME:
            ph, pw = same_padding(in_h, kernel_h, sh, dh), same_padding(in_w, kernel_w, sw, dw)
        elif o["padding"] == _VALID:
            ph = pw = (0, 0)
        else:
            raise UnsupportedModelError(f"padding {o['padding']} is not translated")
        expect = (_conv_out(in_h, kernel_h, sh, dh, ph), _conv_out(in_w, kernel_w, sw, dw, pw))
        got = t[op.outputs[0]].shape[1:3]
        if tuple(got) != expect:
            raise UnsupportedModelError(f"{op.op} output {got} differs from computed {expect}")
        return self.fused(
            "Conv",
            [self.names[x_idx], self.const(weights.astype(np.float32), "w"),
             self.const(np.asarray(bias, dtype=np.float32), "b")],
            o["activation"], out,
            kernel_shape=[kernel_h, kernel_w], strides=[sh, sw], dilations=[dh, dw],
            pads=[ph[0], pw[0], ph[1], pw[1]], group=group,
        )

    def reshape(self, op: TfliteOperator, out: str) -> str:
        t = self.m.tensors
        src, dst = t[op.inputs[0]], t[op.outputs[0]]
        x = self.names[op.inputs[0]]
        if len(src.shape) == 4:
            x = self.node("Transpose", [x], perm=[0, 2, 3, 1])  # NCHW -> NHWC element order
        if dst.shape[0] != src.shape[0]:
            raise UnsupportedModelError("RESHAPE across the batch axis is not translated")
        target = np.array([0, *dst.shape[1:]], dtype=np.int64)  # 0: keep the (dynamic) batch
        if len(dst.shape) == 4:
            y = self.node("Reshape", [x, self.const(target, "shape")])
            return self.node("Transpose", [y], out, perm=[0, 3, 1, 2])
        return self.node("Reshape", [x, self.const(target, "shape")], out)

    def emit(self, op: TfliteOperator) -> None:
        t = self.m.tensors
        out_idx = op.outputs[0]
        out = self.fresh("t")
        rank = len(t[out_idx].shape)
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            self.convolution(op, out)
        elif op.op in ("ADD", "SUB", "MUL"):
            a, b = op.inputs
            self.fused(op.op.capitalize(), [self.operand(a, rank), self.operand(b, rank)],
                       int(op.options["activation"]), out)
        elif op.op == "RELU":
            self.node("Relu", [self.names[op.inputs[0]]], out)
        elif op.op == "RELU6":
            self.node("Clip", [self.names[op.inputs[0]], self.const(np.float32(0), "zero"),
                               self.const(np.float32(6), "six")], out)
        elif op.op == "ABS":
            self.node("Abs", [self.names[op.inputs[0]]], out)
        elif op.op == "RESHAPE":
            self.reshape(op, out)
        else:  # pragma: no cover - read_tflite admits only the ops above
            raise UnsupportedModelError(op.op)
        self.names[out_idx] = out

    def prelu(self, p: _Prelu, out_idx: int) -> None:
        """``Relu(x) + DWConv1x1(Relu(DWConv1x1(x, -1)), -slope)``, see the module docstring."""
        x = self.names[p.x]
        channels = len(p.slope)
        attrs = {"kernel_shape": [1, 1], "group": channels}
        minus_one = self.const(np.full((channels, 1, 1, 1), -1, np.float32), "neg")
        negated = self.fused("Conv", [x, minus_one], _ACT_RELU, self.fresh("t"), **attrs)
        scale = self.const((-p.slope).reshape(channels, 1, 1, 1).astype(np.float32), "slope")
        negative_part = self.node("Conv", [negated, scale], **attrs)
        positive_part = self.node("Relu", [x])
        out = self.fresh("t")
        self.node("Add", [positive_part, negative_part], out)
        self.names[out_idx] = out


def convert(model: TfliteModel, input_name: str = "input", output_name: str = "output",
            graph_name: str = "tflite", fuse_prelu: bool = True) -> onnx.ModelProto:
    """The ONNX equivalent of ``model``: one float32 NHWC input with a dynamic batch, the single
    output with a dynamic batch, both in TFLite's layout. ``fuse_prelu``: translate the PReLU
    pattern as a whole (see the module docstring)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedModelError("expected one input and one output")
    b = _Builder(model)
    x_t = model.tensors[model.inputs[0]]
    if len(x_t.shape) != 4:
        raise UnsupportedModelError("expected an NHWC image input")
    b.names[x_t.index] = b.node("Transpose", [input_name], perm=[0, 3, 1, 2])
    prelus = find_prelus(model) if fuse_prelu else {}
    skip = {i for p in prelus.values() for i in p.parts}
    for k, op in enumerate(model.operators):
        if k in prelus:
            b.prelu(prelus[k], op.outputs[0])
        elif k not in skip:
            b.emit(op)
    y_t = model.tensors[model.outputs[0]]
    y = b.names[y_t.index]
    if len(y_t.shape) == 4:
        y = b.node("Transpose", [y], perm=[0, 2, 3, 1])
    b.node("Identity", [y], output_name)
    graph = helper.make_graph(
        b.nodes, graph_name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *x_t.shape[1:]])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", *y_t.shape[1:]])],
        b.inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="regard")
    onnx_model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(onnx_model)
    return onnx_model
