"""dlib's face-recognition ResNet as an ONNX Runtime model, converted from the bundled ``.dat``.

``dlib_face_recognition_resnet_model_v1.dat`` is dlib's ``anet_type`` (dlib/examples/
dnn_face_recognition_ex.cpp, and dlib's Python ``face_recognition_model_v1``): a 29-conv ResNet on
150x150 RGB chips whose ``loss_metric`` output - the 128-D ``fc_no_bias`` result, *not*
re-normalized - is the face descriptor. We rebuild the same graph in ONNX so it runs batched in
ONNX Runtime, and check it against dlib in tests/test_resnet_port.py.

ONNX interface: input ``chips`` uint8 [N,150,150,3] RGB (exactly what ``dlib.get_face_chip``
returns, stacked); the graph casts, transposes to NCHW and applies dlib's ``input_rgb_image_sized``
normalization ``(v - avg) / 256`` itself. Output ``embeddings`` float32 [N,128].

Conversion notes (the dlib semantics that an off-the-shelf ResNet would get wrong):

* ``affine_`` (inference-time batch norm) follows every conv; it is folded into the conv weights.
* ``con_`` with stride 2 uses padding 0 (dlib's default), so the downsampling branches are
  floor-sized: e.g. 8x8 -> 3x3 through the conv but 4x4 through the 2x2 ``avg_pool`` shortcut.
* ``add_prev`` of tensors of different shape zero-pads the smaller one at the end of every axis
  (dlib ``tt::add``): the shortcut is padded with zero channels, the conv branch with zero
  rows/columns.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from regard.private_files import private_dir
from regard.vision.models import file_sha256

from regard.vision.dlib_dat import DlibNet, Layer, match_architecture, read_net

__all__ = [
    "OnnxFaceEmbedder",
    "OnnxGraph",
    "build_resnet_onnx",
    "cached_onnx",
    "default_cache_dir",
    "emit_layers",
    "make_session",
]

#: Bump when the generated graph changes, so cached ``.onnx`` files are rebuilt.
CONVERTER_VERSION = 1
OPSET = 17
CHIP_SIZE = 150
EMBEDDING_DIM = 128


# ----------------------------------------------------------------------------------------------
# The C++ network type, as the list of layers from the top (under the loss) down to the input.


def _block(n_filters: int, stride: int, sub: list[str]) -> list[str]:
    # block<N,BN,stride,SUBNET> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    del n_filters, stride  # checked against the file's own fields, not needed for matching
    return ["affine", "con", "relu", "affine", "con", *sub]


def _ares(n: int, sub: list[str]) -> list[str]:
    # relu<residual<block,N,affine,SUBNET>>, residual = add_prev1<block<N,BN,1,tag1<SUBNET>>>
    return ["relu", "add_prev1", *_block(n, 1, ["tag1", *sub])]


def _ares_down(n: int, sub: list[str]) -> list[str]:
    # residual_down = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>
    return ["relu", "add_prev2", "avg_pool", "skip1", "tag2", *_block(n, 2, ["tag1", *sub])]


def resnet_architecture() -> list[str]:
    """``anet_type`` from dnn_face_recognition_ex.cpp, outermost layer first (no loss/input)."""
    net = ["max_pool", "relu", "affine", "con"]
    net = _ares(32, _ares(32, _ares(32, net)))  # alevel4
    net = _ares(64, _ares(64, _ares(64, _ares_down(64, net))))  # alevel3
    net = _ares(128, _ares(128, _ares_down(128, net)))  # alevel2
    net = _ares(256, _ares(256, _ares_down(256, net)))  # alevel1
    net = _ares_down(256, net)  # alevel0
    return ["fc", "avg_pool", *net]


# ----------------------------------------------------------------------------------------------
# Generic dlib layers -> ONNX nodes (shared with the MMOD detector).


class OnnxGraph:
    """Accumulates nodes and initializers, tracking each NCHW tensor's static (C, H, W)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, int, int] | None] = {}
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, arr: np.ndarray, base: str = "c") -> str:
        name = self.name(base)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def op(
        self, op_type: str, inputs: list[str], shape: tuple[int, int, int] | None = None, **attrs: object
    ) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        self.shapes[out] = shape
        return out


def _pool_out(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


def _zero_pad_to(g: OnnxGraph, x: str, target: tuple[int, int, int]) -> str:
    shape = g.shapes[x]
    assert shape is not None
    extra = [t - s for t, s in zip(target, shape)]
    if not any(extra):
        return x
    pads = np.array([0, 0, 0, 0, 0, *extra], dtype=np.int64)
    return g.op("Pad", [x, g.const(pads, "pads")], target, mode="constant")


def emit_layers(g: OnnxGraph, layers: list[tuple[str, Layer]], x: str) -> str:
    """Append ONNX nodes computing ``layers`` (outermost first, as from ``match_architecture``)
    on the NCHW float tensor ``x`` (whose shape must be in ``g.shapes``, or None if dynamic);
    returns the output tensor name."""
    tags: dict[str, str] = {}
    seq = layers[::-1]  # evaluate from the input upwards
    i = 0
    while i < len(seq):
        token, layer = seq[i]
        f = layer.fields
        shape = g.shapes[x]
        if token == "con":
            w = f["weights"].astype(np.float64)
            b = f["bias"].astype(np.float64) if f["bias"] is not None else np.zeros(w.shape[0])
            if i + 1 < len(seq) and seq[i + 1][0] == "affine" and seq[i + 1][1].fields["mode"] == 0:
                aff = seq[i + 1][1].fields
                gamma = aff["gamma"].reshape(-1).astype(np.float64)
                w = w * gamma[:, None, None, None]
                b = b * gamma + aff["beta"].reshape(-1)
                i += 1
            sy, sx, py, px = f["stride_y"], f["stride_x"], f["padding_y"], f["padding_x"]
            out_shape = None
            if shape is not None:
                oh, ow = _pool_out(shape[1], w.shape[2], sy, py), _pool_out(shape[2], w.shape[3], sx, px)
                out_shape = (w.shape[0], oh, ow)
            x = g.op(
                "Conv",
                [x, g.const(w.astype(np.float32), "w"), g.const(b.astype(np.float32), "b")],
                out_shape,
                kernel_shape=list(w.shape[2:]),
                strides=[sy, sx],
                pads=[py, px, py, px],
            )
        elif token == "affine":
            gamma, beta = f["gamma"], f["beta"]
            if f["mode"] == 0:
                gamma, beta = gamma.reshape(1, -1, 1, 1), beta.reshape(1, -1, 1, 1)
            else:
                gamma, beta = gamma[None], beta[None]
            x = g.op("Mul", [x, g.const(gamma.astype(np.float32), "gamma")], shape)
            x = g.op("Add", [x, g.const(beta.astype(np.float32), "beta")], shape)
        elif token == "relu":
            x = g.op("Relu", [x], shape)
        elif token in ("max_pool", "avg_pool"):
            if f["nr"] == 0 and f["nc"] == 0:
                op = "GlobalMaxPool" if token == "max_pool" else "GlobalAveragePool"
                x = g.op(op, [x], None if shape is None else (shape[0], 1, 1))
            else:
                sy, sx, py, px = f["stride_y"], f["stride_x"], f["padding_y"], f["padding_x"]
                out_shape = None
                if shape is not None:
                    oh, ow = _pool_out(shape[1], f["nr"], sy, py), _pool_out(shape[2], f["nc"], sx, px)
                    out_shape = (shape[0], oh, ow)
                x = g.op(
                    "MaxPool" if token == "max_pool" else "AveragePool",
                    [x],
                    out_shape,
                    kernel_shape=[f["nr"], f["nc"]],
                    strides=[sy, sx],
                    pads=[py, px, py, px],
                )
        elif token.startswith("tag"):
            tags[token[3:]] = x
        elif token.startswith("skip"):
            x = tags[token[4:]]
        elif token.startswith("add_prev"):
            other = tags[token[8:]]
            s1, s2 = g.shapes[x], g.shapes[other]
            if s1 is None or s2 is None:
                if s1 != s2:
                    raise ValueError("add_prev of dynamically shaped tensors needs equal shapes")
                x = g.op("Add", [x, other], s1)
            else:
                target = (max(s1[0], s2[0]), max(s1[1], s2[1]), max(s1[2], s2[2]))
                x = g.op("Add", [_zero_pad_to(g, x, target), _zero_pad_to(g, other, target)], target)
        elif token == "fc":
            x = g.op("Flatten", [x], None, axis=1)
            x = g.op("MatMul", [x, g.const(f["weights"].astype(np.float32), "fc_w")], None)
            if f["bias"] is not None:
                x = g.op("Add", [x, g.const(f["bias"].astype(np.float32), "fc_b")], None)
        else:
            raise ValueError(f"no ONNX translation for dlib layer {token!r}")
        i += 1
    return x


def nhwc_uint8_to_dlib_input(g: OnnxGraph, x: str, inp: Layer, hw: tuple[int, int] | None) -> str:
    """uint8 NHWC RGB -> dlib's float NCHW input tensor ``(v - avg) / 256``."""
    x = g.op("Cast", [x], None, to=TensorProto.FLOAT)
    shape = None if hw is None else (3, hw[0], hw[1])
    x = g.op("Transpose", [x], shape, perm=[0, 3, 1, 2])
    f = inp.fields
    mean = np.array([f["avg_red"], f["avg_green"], f["avg_blue"]], dtype=np.float32).reshape(1, 3, 1, 1)
    x = g.op("Sub", [x, g.const(mean, "mean")], shape)
    # dlib divides by 256.0; multiplying by 2**-8 is bit-identical.
    return g.op("Mul", [x, g.const(np.array(1 / 256, dtype=np.float32), "scale")], shape)


# ----------------------------------------------------------------------------------------------


def build_resnet_onnx(dat_path: str | Path) -> bytes:
    """Convert ``dlib_face_recognition_resnet_model_v1.dat`` into a serialized ONNX model."""
    net: DlibNet = read_net(dat_path)
    if not net.loss.tag.startswith("loss_metric") or net.input.tag != "input_rgb_image_sized":
        raise ValueError(
            f"{dat_path} is not dlib's face recognition network ({net.loss.tag}, {net.input.tag})"
        )
    size = (net.input.fields["nr"], net.input.fields["nc"])
    layers = match_architecture(net, resnet_architecture())
    g = OnnxGraph()
    x = nhwc_uint8_to_dlib_input(g, "chips", net.input, size)
    y = emit_layers(g, layers, x)
    g.nodes.append(helper.make_node("Identity", [y], ["embeddings"]))
    out_dim = layers[0][1].fields["num_outputs"]
    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_v1",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["N", size[0], size[1], 3])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", out_dim])],
        g.initializers,
    )
    opset = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(graph, opset_imports=opset, producer_name="regard")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model.SerializeToString()


def cached_onnx(
    dat_path: Path,
    cache_dir: Path,
    build: Callable[[Path], bytes],
    stem: str,
    version: int = CONVERTER_VERSION,
) -> Path | bytes:
    """The converted model's path under ``cache_dir``, built once per ``.dat`` content (SHA-256)
    and converter version. Falls back to returning the bytes when the cache is not writable."""
    target = cache_dir / f"{stem}-v{version}-{file_sha256(dat_path)[:32]}.onnx"
    if target.is_file():
        return target
    data = build(dat_path)
    tmp = None
    try:
        private_dir(cache_dir)  # 0700 like every folder Regard creates under its home
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{stem}-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)  # atomic: concurrent builders each write a complete file
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return data
    return target


def make_session(model: Path | bytes, intra_op_threads: int | None) -> ort.InferenceSession:
    """A CPU InferenceSession (``run`` is thread-safe); ``intra_op_threads`` None = ORT default."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        opts.intra_op_num_threads = intra_op_threads
    # No busy-waiting between runs: spinning ORT threads starve the detector's OpenMP threads on
    # the same cores (measured on LFW, one process, 2 cores: 21 -> 37 images/s).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def default_cache_dir() -> Path:
    from regard.config import regard_home

    return regard_home() / "models"


class OnnxFaceEmbedder:
    """128-D dlib face descriptors computed by ONNX Runtime.

    Thread-safe (``InferenceSession.run`` is); ``embed`` runs all given chips in batches of at most
    ``max_batch``.
    """

    def __init__(
        self,
        dat_path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        intra_op_threads: int | None = None,
        max_batch: int = 32,
    ) -> None:
        if dat_path is None:
            from regard.vision.models import model_path

            dat_path = model_path("dlib_face_recognition_resnet_model_v1.dat")
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        model = cached_onnx(Path(dat_path), cache, build_resnet_onnx, "dlib_face_resnet")
        self.model_path = model if isinstance(model, Path) else None
        self._session = make_session(model, intra_op_threads)
        self.max_batch = max_batch

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """uint8 RGB chips (N,150,150,3) from ``dlib.get_face_chip(img, shape, 150, 0.25)`` ->
        float32 (N,128) descriptors, equal to dlib's ``compute_face_descriptor`` to ~1e-6."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.dtype != np.uint8 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(
                f"expected uint8 chips of shape (N,{CHIP_SIZE},{CHIP_SIZE},3), got {chips.dtype} {chips.shape}"
            )
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        chips = np.ascontiguousarray(chips)
        out = [
            self._session.run(["embeddings"], {"chips": chips[i : i + self.max_batch]})[0]
            for i in range(0, len(chips), self.max_batch)
        ]
        return out[0] if len(out) == 1 else np.concatenate(out)
