"""Reader for dlib's ``.dat`` neural-network files, in pure Python.

Why this exists: Regard runs dlib's pretrained networks (the face-recognition ResNet and the MMOD
CNN face detector) in ONNX Runtime, which is several times faster than dlib's own CPU code and
batches across faces. The weights ship only as dlib ``.dat`` files inside the
``face_recognition_models`` wheel, so we read them directly instead of converting with a C++
toolchain or downloading a converted copy.

The format is dlib's ``serialize()`` output (dlib/serialize.h, dlib/dnn/core.h, tensor.h,
layers.h, input.h, loss.h):

* integers: one control byte (low nibble = number of value bytes, bit 0x80 = negative) followed by
  the magnitude in little-endian bytes;
* ``float``/``double``: *not* IEEE - dlib's ``float_details``, i.e. an int64 mantissa and an int16
  exponent, each written as an integer above (value = mantissa * 2**exponent; exponents
  32000/32001/32002 mean +inf/-inf/NaN);
* ``bool``: the character ``'1'`` or ``'0'``; strings: integer length + raw bytes;
* tensors: version int, then n, k, nr, nc, then (version 2) raw little-endian float32 values in
  NCHW order, or (version 1) one ``float_details`` per value; ``alias_tensor``: version, n, k, nr, nc.

A network is written top-down: ``add_loss_layer`` (version, loss details, subnetwork), then each
``add_layer`` writes its version *before* its subnetwork and its own layer details *after* it, so the
file holds all layer versions from the outermost layer inwards, then the input layer, then the
layer details from the innermost layer outwards. ``add_tag_layer`` and ``add_skip_layer`` write
only a version (1) and their subnetwork, so they are indistinguishable in the file and their tag
ids are not stored at all: the topology (which tag a skip or add_prev refers to) comes from the
C++ type of the network, which the caller supplies (see ``match_architecture``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DatFormatError",
    "DatReader",
    "DlibNet",
    "Layer",
    "TAG_OR_SKIP",
    "match_architecture",
    "read_net",
]


class DatFormatError(ValueError):
    """The bytes are not the dlib serialization this reader expects."""


_FLOAT_SPECIAL = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class DatReader:
    """Cursor over dlib serialization primitives."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = memoryview(data)
        self.pos = pos

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise DatFormatError(f"unexpected end of data at byte {self.pos} (wanted {n} bytes)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        """A signed or unsigned integer (``pack_int``); unsigned values never set bit 0x80."""
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8:
            raise DatFormatError(f"bad integer control byte 0x{ctrl:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def float(self) -> float:
        """A ``float``/``double`` in dlib's portable mantissa/exponent form."""
        if self.data[self.pos] & 0x70:
            # Pre-2013 dlib wrote ASCII numbers; no network file uses that format.
            raise DatFormatError(f"old ASCII float encoding at byte {self.pos} is not supported")
        mantissa = self.int()
        exponent = self.int()
        if exponent in _FLOAT_SPECIAL:
            return _FLOAT_SPECIAL[exponent]
        return math.ldexp(float(mantissa), exponent)

    def bool(self) -> bool:
        ch = bytes(self._take(1))
        if ch not in (b"0", b"1"):
            raise DatFormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def string(self) -> str:
        n = self.int()
        return bytes(self._take(n)).decode("latin-1")

    def peek_identifier(self) -> str | None:
        """The string at the cursor if it looks like a dlib version tag, else None; never moves."""
        saved = self.pos
        try:
            ctrl = self.data[self.pos]
            if ctrl & 0x80 or not 1 <= ctrl & 0x0F <= 2:
                return None
            n = self.int()
            if not 1 <= n <= 64 or self.pos + n > len(self.data):
                return None
            raw = bytes(self._take(n))
        except (DatFormatError, IndexError):
            return None
        finally:
            self.pos = saved
        ok = raw[:1].isalpha() and all(chr(c).isalnum() or chr(c) in "_<>" for c in raw)
        return raw.decode("ascii") if ok else None

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor`` as a float32 array of shape (n, k, nr, nc)."""
        version = self.int()
        shape = tuple(self.int() for _ in range(4))
        count = shape[0] * shape[1] * shape[2] * shape[3]
        if version == 2:
            raw = self._take(4 * count)
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        if version == 1:
            return np.array([self.float() for _ in range(count)], dtype=np.float32).reshape(shape)
        raise DatFormatError(f"unknown tensor version {version} at byte {self.pos}")

    def alias_tensor(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor`` (a view into a params tensor): just its shape."""
        version = self.int()
        if version != 1:
            raise DatFormatError(f"unknown alias_tensor version {version}")
        return (self.int(), self.int(), self.int(), self.int())


@dataclass
class Layer:
    """One layer's details: dlib's version tag (e.g. ``"con_4"``) and its decoded fields."""

    tag: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The layer family without the version suffix: con, affine, relu, fc, max_pool, ..."""
        return _KIND.get(self.tag, self.tag)


_KIND = {
    "con_4": "con",
    "con_5": "con",
    "affine_": "affine",
    "affine_2": "affine",
    "bn_con2": "affine",  # dlib's affine_ deserializer converts a stored bn_ layer
    "bn_fc2": "affine",
    "relu_": "relu",
    "max_pool_2": "max_pool",
    "avg_pool_2": "avg_pool",
    "fc_2": "fc",
    "add_prev_": "add_prev",
}

#: Placeholder for an ``add_tag_layer`` or ``add_skip_layer`` (identical in the file).
TAG_OR_SKIP = Layer("tag_or_skip")


@dataclass
class DlibNet:
    """A deserialized network. ``layers`` runs from the layer just below the loss down to the layer
    just above the input; tag and skip layers appear as ``TAG_OR_SKIP``."""

    loss: Layer
    input: Layer
    layers: list[Layer]


def _read_lr_multipliers(r: DatReader, f: dict[str, Any]) -> None:
    for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        f[name] = r.float()


def _read_layer(r: DatReader) -> Layer:
    tag = r.string()
    f: dict[str, Any] = {}
    if tag in ("con_4", "con_5"):
        params = r.tensor().reshape(-1)
        f["num_filters"] = r.int()
        f["nr"], f["nc"] = r.int(), r.int()
        f["stride_y"], f["stride_x"] = r.int(), r.int()
        f["padding_y"], f["padding_x"] = r.int(), r.int()
        filt = r.alias_tensor()
        bias = r.alias_tensor()
        _read_lr_multipliers(r, f)
        use_bias = r.bool() if tag == "con_5" else True
        nfilt = int(np.prod(filt))
        f["weights"] = params[:nfilt].reshape(filt)
        f["bias"] = params[nfilt : nfilt + int(np.prod(bias))].copy() if use_bias else None
    elif tag in ("affine_", "affine_2"):
        params = r.tensor().reshape(-1)
        g, b = r.alias_tensor(), r.alias_tensor()
        f["mode"] = r.int()  # 0 = CONV_MODE (per channel), 1 = FC_MODE (per element)
        if tag == "affine_2":
            f["disabled"] = r.bool()
        ng = int(np.prod(g))
        f["gamma"] = params[:ng].reshape(g[1:]).copy()
        f["beta"] = params[ng : ng + int(np.prod(b))].reshape(b[1:]).copy()
    elif tag in ("bn_con2", "bn_fc2"):
        params = r.tensor().reshape(-1)
        g, b = r.alias_tensor(), r.alias_tensor()
        r.tensor(), r.tensor()  # batch means / invstds of the last training step
        running_means = r.tensor().reshape(-1)
        running_vars = r.tensor().reshape(-1)
        r.int(), r.int()  # num_updates, running_stats_window_size
        _read_lr_multipliers(r, f)
        eps = r.float()
        ng = int(np.prod(g))
        gamma, beta = params[:ng], params[ng : ng + int(np.prod(b))]
        # Inference-time batch norm is the affine_ layer dlib builds from a bn_ (layers.h,
        # affine_(const bn_&): g = gamma / sqrt(var + eps), b = beta - g * mean), in float32.
        scale = gamma / np.sqrt(running_vars + np.float32(eps))
        f["mode"] = 0 if tag == "bn_con2" else 1
        f["gamma"] = scale.astype(np.float32).reshape(g[1:])
        f["beta"] = (beta - scale * running_means).astype(np.float32).reshape(b[1:])
        f["eps"] = eps
    elif tag == "relu_":
        pass
    elif tag in ("max_pool_2", "avg_pool_2"):
        f["nr"], f["nc"] = r.int(), r.int()
        f["stride_y"], f["stride_x"] = r.int(), r.int()
        f["padding_y"], f["padding_x"] = r.int(), r.int()
    elif tag == "fc_2":
        f["num_outputs"], f["num_inputs"] = r.int(), r.int()
        params = r.tensor().reshape(-1)
        w, b = r.alias_tensor(), r.alias_tensor()
        f["bias_mode"] = r.int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
        _read_lr_multipliers(r, f)
        nw = w[0] * w[1]
        f["weights"] = params[:nw].reshape(w[0], w[1]).copy()  # (num_inputs, num_outputs)
        f["bias"] = params[nw : nw + b[0] * b[1]].copy() if f["bias_mode"] == 0 else None
    elif tag == "add_prev_":
        pass
    else:
        raise DatFormatError(f"unsupported dlib layer {tag!r} at byte {r.pos}")
    return Layer(tag, f)


def _read_input(r: DatReader) -> Layer:
    tag = r.string()
    f: dict[str, Any] = {}
    rgb_inputs = ("input_rgb_image", "input_rgb_image_sized", "input_rgb_image_pyramid", "input_rgb_image_pyramid2")
    if tag in rgb_inputs:
        f["avg_red"], f["avg_green"], f["avg_blue"] = (np.float32(r.float()) for _ in range(3))
        if tag == "input_rgb_image_sized":
            f["nr"], f["nc"] = r.int(), r.int()
        elif tag == "input_rgb_image_pyramid2":
            f["pyramid_padding"], f["pyramid_outer_padding"] = r.int(), r.int()
    else:
        raise DatFormatError(f"unsupported dlib input layer {tag!r}")
    return Layer(tag, f)


def _read_mmod_options(r: DatReader) -> dict[str, Any]:
    """``mmod_options`` (dlib/dnn/loss.h), versions 1-4."""
    version = r.int()
    if not 1 <= version <= 4:
        raise DatFormatError(f"unsupported mmod_options version {version}")
    windows = []
    if version == 1:
        windows.append({"width": r.int(), "height": r.int(), "label": ""})
    else:
        for _ in range(r.int()):  # std::vector<detector_window_details>
            wv = r.int()
            w, h = r.int(), r.int()
            windows.append({"width": w, "height": h, "label": r.string() if wv >= 2 else ""})
    opts: dict[str, Any] = {"detector_windows": windows}
    opts["loss_per_false_alarm"] = r.float()
    opts["loss_per_missed_target"] = r.float()
    opts["truth_match_iou_threshold"] = r.float()
    opts["overlaps_nms"] = (r.float(), r.float())  # test_box_overlap: iou_thresh, percent_covered_thresh
    opts["overlaps_ignore"] = (r.float(), r.float())
    opts["assume_image_pyramid"] = True
    opts["use_bounding_box_regression"] = False
    if version >= 3:
        opts["assume_image_pyramid"] = bool(r._take(1)[0])  # uint8_t: one raw byte
    if version >= 4:
        opts["use_bounding_box_regression"] = r.bool()
        opts["bbr_lambda"] = r.float()
    return opts


def _read_loss(r: DatReader) -> Layer:
    tag = r.string()
    f: dict[str, Any] = {}
    if tag == "loss_metric_":
        pass
    elif tag == "loss_metric_2":
        f["margin"], f["dist_thresh"] = r.float(), r.float()
    elif tag == "loss_mmod_":
        f["options"] = _read_mmod_options(r)
    else:
        raise DatFormatError(f"unsupported dlib loss layer {tag!r}")
    return Layer(tag, f)


def read_net(path: str | Path) -> DlibNet:
    """Deserialize a ``net_type`` saved with ``serialize(file) << net``.

    Supports the layer types used by dlib's shipped face networks. ``add_layer`` version 2 and
    tag/skip version 1 are told apart by that version number (dlib has written add_layer v2
    since 2016); the whole file must be consumed, which catches any misparse.
    """
    r = DatReader(Path(path).read_bytes())
    if r.int() != 1:
        raise DatFormatError("not a dlib add_loss_layer (version 1) file")
    loss = _read_loss(r)
    versions: list[int] = []
    while True:
        name = r.peek_identifier()
        if name is not None and name.startswith("input"):
            break
        versions.append(r.int())
        if len(versions) > 10_000:
            raise DatFormatError("no input layer found")
    inp = _read_input(r)
    if not versions or versions[-1] not in (2, 3):
        raise DatFormatError("the input layer must sit directly under an add_layer (version 2/3)")
    inner = _read_layer(r)
    r.bool(), r.bool(), r.bool()  # setup called, gradient stale, output getters disabled
    r.tensor(), r.tensor(), r.tensor()  # x_grad, cached_output, grad_final
    if versions[-1] >= 3:
        r.int()  # sample_expansion_factor
    inner_to_outer = [inner]
    for v in reversed(versions[:-1]):
        if v == 1:
            inner_to_outer.append(TAG_OR_SKIP)
        elif v == 2:
            layer = _read_layer(r)
            r.bool(), r.bool(), r.bool()
            r.tensor(), r.tensor(), r.tensor()  # x_grad, cached_output, params_grad
            inner_to_outer.append(layer)
        else:
            raise DatFormatError(f"unsupported add_layer version {v}")
    if not r.at_end():
        raise DatFormatError(f"{len(r.data) - r.pos} trailing bytes after the network")
    return DlibNet(loss=loss, input=inp, layers=inner_to_outer[::-1])


def match_architecture(net: DlibNet, spec: list[str]) -> list[tuple[str, Layer]]:
    """Pair each parsed layer with its token from the C++ type, outermost first.

    ``spec`` lists the layers as the C++ ``net_type`` nests them, e.g. ``["fc", "relu",
    "add_prev1", "tag1", "con", "input"]`` without the loss and input. Tokens ``tagN``/``skipN`` must
    fall on ``TAG_OR_SKIP`` entries; ``add_prevN`` on add_prev layers; others on the layer kind.
    Raises ``DatFormatError`` on any mismatch, so a wrong spec cannot silently build a wrong graph.
    """
    if len(spec) != len(net.layers):
        raise DatFormatError(f"architecture has {len(spec)} layers, file has {len(net.layers)}")
    out = []
    for i, (token, layer) in enumerate(zip(spec, net.layers)):
        if token.startswith(("tag", "skip")):
            ok = layer is TAG_OR_SKIP
        elif token.startswith("add_prev"):
            ok = layer.kind == "add_prev"
        else:
            ok = layer.kind == token
        if not ok:
            raise DatFormatError(f"layer {i}: architecture says {token!r}, file has {layer.tag!r}")
        out.append((token, layer))
    return out
