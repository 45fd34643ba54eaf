"""dlib's MMOD CNN face detector with its network in ONNX Runtime and its pre/post-processing in numpy.

``mmod_human_face_detector.dat`` is the ``net_type`` of dlib's ``cnn_face_detection_model_v1``
(tools/python/src/cnn_face_detector.cpp)::

    loss_mmod<con<1,9,9,1,1, rcon5<rcon5<rcon5< downsampler<
        input_rgb_image_pyramid<pyramid_down<6>> >>>>>>

``downsampler`` is three stride-2 5x5 convs (16, 32, 32 filters), ``rcon5`` a 5x5 conv with 45
filters, each followed by batch norm (stored as ``bn_con``, run as dlib's ``affine``) and ReLU.

What this module reproduces from dlib (versions 19.22+, the current input layer):

* ``input_rgb_image_pyramid::to_tensor``: the image, normalized as ``(v - avg) / 256``, is placed
  in one zero-filled tensor together with all its ``pyramid_down<6>`` levels (each 5/6 of the
  previous, down to 5 rows), tiled by ``compute_tiled_image_pyramid_details`` with padding 10 and
  outer padding 11. Each level is resized from the previous one with dlib's float bilinear
  ``resize_image`` (the SSE path: float32 sample positions accumulated 4 columns at a time, with a
  scalar tail), replicated here bit for bit.
* ``loss_mmod_::to_label``: every output position scoring above ``adjust_threshold`` (0) becomes
  an 80x80 detector window centred on the position mapped back through the convs, mapped from the
  tile it falls in to image coordinates (``tiled_pyramid_to_image``), rounded to an integer
  rectangle, then greedy non-max suppression with dlib's ``test_box_overlap`` (intersection over
  the *bounding box* of both rectangles) using the thresholds stored in the file.
* The Python wrapper's ``upsample_num_times``: ``pyramid_up`` with ``pyramid_down<2>`` before, and
  ``rect_down`` after.

Running the pyramid levels through the network one at a time would *not* be equivalent: the
network's receptive field (189 px) is far wider than the 10 px gaps between tiles, and the stride-8
output grid's phase depends on where each tile sits, so scores change. We run the tiled tensor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from regard.vision.dlib_dat import DlibNet, Layer, match_architecture, read_net
from regard.vision.dlib_resnet_onnx import (
    OPSET,
    OnnxGraph,
    cached_onnx,
    default_cache_dir,
    emit_layers,
    make_session,
)

__all__ = ["MmodOnnxDetector", "build_mmod_onnx", "tiled_pyramid", "resize_bilinear"]

CONVERTER_VERSION = 1
PYRAMID_N = 6  # pyramid_down<6>: each level is 5/6 the size of the previous one
MIN_LEVEL_HEIGHT = 5

Rect = tuple[int, int, int, int]  # dlib rectangle: left, top, right, bottom (inclusive)
Box = tuple[float, float, float, float, float]  # left, top, right, bottom (exclusive), score


def mmod_architecture() -> list[str]:
    """``net_type`` of cnn_face_detector.cpp, outermost layer first (no loss/input)."""
    rcon5 = ["relu", "affine", "con"]
    downsampler = ["relu", "affine", "con"] * 3
    return ["con", *rcon5, *rcon5, *rcon5, *downsampler]


def build_mmod_onnx(dat_path: str | Path) -> bytes:
    """Convert ``mmod_human_face_detector.dat`` into an ONNX model: input ``image`` float32
    [N,3,H,W] (the normalized tiled pyramid), output ``scores`` float32 [N,1,H',W']."""
    net = read_net(dat_path)
    if net.loss.tag != "loss_mmod_":
        raise ValueError(f"{dat_path} is not a dlib MMOD network ({net.loss.tag})")
    layers = match_architecture(net, mmod_architecture())
    g = OnnxGraph()
    g.shapes["image"] = None
    y = emit_layers(g, layers, "image")
    g.nodes.append(helper.make_node("Identity", [y], ["scores"]))
    k = len(net.loss.fields["options"]["detector_windows"])
    graph = helper.make_graph(
        g.nodes,
        "dlib_mmod_human_face_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k, "h", "w"])],
        g.initializers,
    )
    opset = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(graph, opset_imports=opset, producer_name="regard")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ----------------------------------------------------------------------------------------------
# dlib's bilinear resize_image (dlib/image_transforms/interpolation.h)


def _scalar_weights(
    x0: float, scale: float, n: int, in_n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``x0 + scale, x0 + 2*scale, ...`` accumulated in double as dlib's scalar loops do."""
    x = np.cumsum(np.concatenate([[x0 + scale], np.full(n - 1, scale)])) if n else np.zeros(0)
    left = np.floor(x).astype(np.int64)
    right = np.minimum(left + 1, in_n - 1)
    return left, right, x - left


def _simd_columns(scale: float, out_n: int, in_n: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """dlib's SSE column loop: float32 lane positions advanced by 4*scale per group of 4 columns,
    truncated to ints; it stops at the first group whose last lane would read past the input.
    Returns (number of SIMD columns, left, right, lr_frac as float32)."""
    groups = out_n // 4 + 2
    x = -4 * scale
    lanes = np.array([x, x + scale, x + 2 * scale, x + 3 * scale], dtype=np.float32)
    steps = np.full((groups, 4), np.float32(4 * scale), dtype=np.float32)
    pos = np.add.accumulate(np.vstack([lanes[None], steps]), axis=0, dtype=np.float32)[1:]
    left = pos.astype(np.int32).astype(np.int64)  # _mm_cvttps_epi32: truncation
    ok = left[:, 3] + 1 < in_n
    n_groups = int(np.argmin(ok)) if not ok.all() else groups
    n_simd = min(4 * n_groups, out_n) if n_groups else 0
    pos, left = pos.reshape(-1)[:n_simd], left.reshape(-1)[:n_simd]
    return n_simd, left, left + 1, (pos - left.astype(np.float32)).astype(np.float32)


def resize_bilinear(src: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """dlib ``resize_image(float image, float image)`` on each channel of a (C,h,w) float32 array,
    bit for bit (checked against ``dlib.resize_image`` in tests/test_mmod_port.py)."""
    c, in_h, in_w = src.shape
    out = np.empty((c, out_h, out_w), dtype=np.float32)
    if out_h == 0 or out_w == 0 or in_h == 0 or in_w == 0:
        return out
    xs = (in_w - 1) / max(out_w - 1, 1)
    ys = (in_h - 1) / max(out_h - 1, 1)
    top, bottom, tb = _scalar_weights(-ys, ys, out_h, in_h)
    n, sl, sr, lr = _simd_columns(xs, out_w, in_w)
    # SIMD part, float32 throughout: ((tlf*tl + trf*tr) + blf*bl) + brf*br, with the four weights
    # rounded products of the row and column fractions.
    itb, tb32 = (1 - tb).astype(np.float32), tb.astype(np.float32)
    ilr = np.float32(1) - lr
    w_tl, w_tr = np.multiply.outer(itb, ilr), np.multiply.outer(itb, lr)
    w_bl, w_br = np.multiply.outer(tb32, ilr), np.multiply.outer(tb32, lr)
    tmp = np.empty((out_h, n), dtype=np.float32)
    for ch in range(c):
        rt, rb = src[ch][top], src[ch][bottom]
        o = out[ch, :, :n]
        np.take(rt, sl, axis=1, out=tmp)
        np.multiply(w_tl, tmp, out=o)
        for rows, idx, w in ((rt, sr, w_tr), (rb, sl, w_bl), (rb, sr, w_br)):
            np.take(rows, idx, axis=1, out=tmp)
            tmp *= w
            o += tmp
    if n < out_w:
        # scalar tail: x restarts at -xs + n*xs (double); lr_frac is a float; outer blend in double
        tl_, tr_, lr_t = _scalar_weights(-xs + n * xs, xs, out_w - n, in_w)
        lr32 = lr_t.astype(np.float32)[None]
        ilr32 = np.float32(1) - lr32
        tbd = tb[:, None]
        for ch in range(c):
            rt, rb = src[ch][top], src[ch][bottom]
            upper = (ilr32 * rt[:, tl_] + lr32 * rt[:, tr_]).astype(np.float64)
            lower = (ilr32 * rb[:, tl_] + lr32 * rb[:, tr_]).astype(np.float64)
            out[ch, :, n:] = ((1 - tbd) * upper + tbd * lower).astype(np.float32)
    return out


def resize_bilinear_rgb(src: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """dlib ``resize_image(rgb image, rgb image)``: the same sampling, truncated to uint8."""
    in_h, in_w, _ = src.shape
    xs = (in_w - 1) / max(out_w - 1, 1)
    ys = (in_h - 1) / max(out_h - 1, 1)
    top, bottom, tb = _scalar_weights(-ys, ys, out_h, in_h)
    n_simd, sl, sr, slr = _simd_columns(xs, out_w, in_w)
    img = src.astype(np.float32)
    rt, rb = img[top], img[bottom]  # (out_h, in_w, 3)
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    tb32 = tb.astype(np.float32)[:, None, None]
    itb32 = (1 - tb).astype(np.float32)[:, None, None]
    ilr, lr = (np.float32(1) - slr)[None, :, None], slr[None, :, None]
    v = itb32 * ilr * rt[:, sl] + itb32 * lr * rt[:, sr]
    v = (v + tb32 * ilr * rb[:, sl]) + tb32 * lr * rb[:, sr]
    out[:, :n_simd] = v.astype(np.int32).astype(np.uint8)
    if n_simd < out_w:
        tl_, tr_, lr_t = _scalar_weights(-xs + n_simd * xs, xs, out_w - n_simd, in_w)
        lr_d, tbd = lr_t[None, :, None], tb[:, None, None]
        rt64, rb64 = rt.astype(np.float64), rb.astype(np.float64)
        v64 = (1 - tbd) * ((1 - lr_d) * rt64[:, tl_] + lr_d * rt64[:, tr_]) + tbd * (
            (1 - lr_d) * rb64[:, tl_] + lr_d * rb64[:, tr_]
        )
        out[:, n_simd:] = v64.astype(np.int32).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------------------------
# Tiled image pyramid (dlib/image_transforms/image_pyramid.h)


def _pyramid_rects(nr: int, nc: int, padding: int, outer_padding: int) -> tuple[list[Rect], int, int]:
    """``impl::compute_tiled_image_pyramid_details`` for pyramid_down<6>: tile rectangles and the
    tiled image's (rows, cols)."""
    if nr * nc == 0:
        return [], 0, 0
    rate = (PYRAMID_N - 1.0) / PYRAMID_N
    sizes = [(nr, nc)]
    while True:
        nr, nc = math.floor(rate * nr), math.floor(rate * nc)
        if nr * nc == 0 or nr < MIN_LEVEL_HEIGHT:
            break
        sizes.append((nr, nc))
    h0, w0 = sizes[0]
    total_height = sum(h + padding for h, _ in sizes) - 2 * padding
    height, prev_width = 0, 0
    for h, w in sizes:
        if w <= w0 - prev_width - padding and (height - h0) * 2 >= total_height - h0:
            break
        height += h + padding
        prev_width = w
    height -= padding
    rects: list[Rect] = []
    y = outer_padding
    i = 0
    while y < height + outer_padding and i < len(sizes):
        h, w = sizes[i]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):
        h, w = sizes[i]
        right, bottom = outer_padding + w0 - 1, y - 1
        rect = (right - (w - 1), bottom - (h - 1), right, bottom)
        if _area(_intersect(first, rect)):
            break  # it would overlap the full-size image
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, height + 2 * outer_padding, w0 + 2 * outer_padding


def tiled_pyramid(rgb: np.ndarray, input_layer: Layer) -> tuple[np.ndarray, list[Rect]]:
    """dlib ``input_rgb_image_pyramid::to_tensor`` for one image: (1,3,NR,NC) float32 + tile rects."""
    f = input_layer.fields
    padding = f.get("pyramid_padding", 10)
    outer = f.get("pyramid_outer_padding", 11)
    h, w = rgb.shape[:2]
    rects, nr, nc = _pyramid_rects(h, w, padding, outer)
    data = np.zeros((3, nr, nc), dtype=np.float32)
    if not rects:
        return data[None], rects
    mean = np.array([f["avg_red"], f["avg_green"], f["avg_blue"]], dtype=np.float32)
    x0, y0, x1, y1 = rects[0]
    for ch in range(3):  # (v - avg) / 256 as dlib computes it (float subtract, exact scaling)
        level0 = data[ch, y0 : y1 + 1, x0 : x1 + 1]
        np.subtract(rgb[:, :, ch], mean[ch], out=level0, dtype=np.float32)
        level0 *= np.float32(1 / 256)
    for (px0, py0, px1, py1), (x0, y0, x1, y1) in zip(rects, rects[1:]):
        prev = data[:, py0 : py1 + 1, px0 : px1 + 1]
        data[:, y0 : y1 + 1, x0 : x1 + 1] = resize_bilinear(prev, y1 - y0 + 1, x1 - x0 + 1)
    return data[None], rects


# ----------------------------------------------------------------------------------------------
# loss_mmod_ decoding (dlib/dnn/loss.h)


def _round_rect(left: float, top: float, right: float, bottom: float) -> Rect:
    """drectangle -> rectangle: each side ``floor(v + 0.5)``."""
    return tuple(math.floor(v + 0.5) for v in (left, top, right, bottom))  # type: ignore[return-value]


def _area(r: Rect) -> int:
    return max(0, r[2] - r[0] + 1) * max(0, r[3] - r[1] + 1)


def _intersect(a: Rect, b: Rect) -> Rect:
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def _overlaps(a: Rect, b: Rect, iou_thresh: float, covered_thresh: float) -> bool:
    """dlib ``test_box_overlap``; the "union" is the bounding box of both rectangles."""
    inner = _area(_intersect(a, b))
    if inner == 0:
        return False
    outer = _area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    if inner / outer > iou_thresh:
        return True
    return inner / _area(a) > covered_thresh or inner / _area(b) > covered_thresh


def _nearest_rect(rects: list[Rect], x: float, y: float) -> int:
    px, py = math.floor(x + 0.5), math.floor(y + 0.5)
    best, best_d = 0, math.inf
    for i, (x0, y0, x1, y1) in enumerate(rects):
        if x0 <= px <= x1 and y0 <= py <= y1:
            return i
        d = math.hypot(min(max(px, x0), x1) - px, min(max(py, y0), y1) - py)
        if d < best_d:
            best, best_d = i, d
    return best


def _output_to_input_map(layers: list[tuple[str, Layer]]) -> tuple[int, int, int, int]:
    """Compose each conv's ``map_output_to_input`` (p*stride - padding + size/2) from the top
    down: tensor-space x = sx*c + ox, y = sy*r + oy."""
    sx, ox, sy, oy = 1, 0, 1, 0
    for token, layer in layers:
        if token == "con":
            f = layer.fields
            ox = ox * f["stride_x"] - f["padding_x"] + f["nc"] // 2
            sx *= f["stride_x"]
            oy = oy * f["stride_y"] - f["padding_y"] + f["nr"] // 2
            sy *= f["stride_y"]
    return sx, ox, sy, oy


class MmodOnnxDetector:
    """dlib's ``cnn_face_detection_model_v1`` on ONNX Runtime. Thread-safe."""

    def __init__(
        self,
        dat_path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        intra_op_threads: int | None = None,
        adjust_threshold: float = 0.0,
    ) -> None:
        if dat_path is None:
            from regard.vision.models import model_path

            dat_path = model_path("mmod_human_face_detector.dat")
        net: DlibNet = read_net(dat_path)
        self._input = net.input
        self._options: dict[str, Any] = net.loss.fields["options"]
        if self._options.get("use_bounding_box_regression"):
            raise ValueError("MMOD networks with bounding box regression are not supported")
        layers = match_architecture(net, mmod_architecture())
        self._map = _output_to_input_map(layers)
        keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        self._convs = [
            tuple(lay.fields[k] for k in keys) for tok, lay in reversed(layers) if tok == "con"
        ]
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        model = cached_onnx(Path(dat_path), cache, build_mmod_onnx, "dlib_mmod", CONVERTER_VERSION)
        self.model_path = model if isinstance(model, Path) else None
        self._session = make_session(model, intra_op_threads)
        self.adjust_threshold = adjust_threshold

    def scores(self, rgb: np.ndarray) -> tuple[np.ndarray, list[Rect]]:
        """The raw (k, h, w) score map of the tiled pyramid of ``rgb``, and the tile rectangles."""
        tensor, rects = tiled_pyramid(rgb, self._input)
        if not rects or not self._fits(tensor.shape[2], tensor.shape[3]):
            # dlib raises here (a filter larger than the padded input); no face fits anyway
            return np.zeros((len(self._options["detector_windows"]), 0, 0), np.float32), []
        return self._session.run(["scores"], {"image": tensor})[0][0], rects

    def _fits(self, h: int, w: int) -> bool:
        for kh, kw, sy, sx, py, px in self._convs:
            if kh > h + 2 * py or kw > w + 2 * px:
                return False
            h, w = 1 + (h + 2 * py - kh) // sy, 1 + (w + 2 * px - kw) // sx
        return True

    def detect(self, rgb: np.ndarray, upsample: int = 0) -> list[Box]:
        """Faces in an (H,W,3) uint8 RGB image as ``(left, top, right, bottom, score)``, best first.

        Same boxes and scores as ``dlib.cnn_face_detection_model_v1(path)(rgb, upsample)``;
        ``right``/``bottom`` are exclusive pixel edges (dlib's ``rect.right() + 1``).
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H,W,3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
        for _ in range(upsample):
            # pyramid_up with pyramid_down<2>: output size from rect_up of the image rectangle
            h, w = rgb.shape[:2]
            up = _round_rect(2.5, 1.5, (w - 1 + 1.25) * 2, (h - 1 + 0.75) * 2)
            rgb = resize_bilinear_rgb(rgb, up[3] + 1, up[2] + 1)
        scores, rects = self.scores(np.ascontiguousarray(rgb))
        dets = self._decode(scores, rects)
        out = []
        for rect, score in dets:
            for _ in range(upsample):  # pyramid_down<2>::rect_down
                x0, y0, x1, y1 = rect
                rect = _round_rect(x0 / 2 - 1.25, y0 / 2 - 0.75, x1 / 2 - 1.25, y1 / 2 - 0.75)
            out.append((float(rect[0]), float(rect[1]), float(rect[2] + 1), float(rect[3] + 1), score))
        return out

    def _decode(self, scores: np.ndarray, rects: list[Rect]) -> list[tuple[Rect, float]]:
        windows = self._options["detector_windows"]
        sx, ox, sy, oy = self._map
        up = PYRAMID_N / (PYRAMID_N - 1.0)
        cands: list[tuple[float, Rect]] = []
        for k, win in enumerate(windows):
            rows, cols = np.nonzero(scores[k] > self.adjust_threshold)
            half_w, half_h = (win["width"] - 1) / 2, (win["height"] - 1) / 2
            for r, c in zip(rows.tolist(), cols.tolist()):
                px, py = float(sx * c + ox), float(sy * r + oy)
                level = _nearest_rect(rects, px, py)
                box = [px - half_w - rects[level][0], py - half_h - rects[level][1]]
                box += [px + half_w - rects[level][0], py + half_h - rects[level][1]]
                for _ in range(level):  # pyramid_down<6>::point_up on both corners
                    box = [v * up + 0.3 for v in box]
                cands.append((float(scores[k, r, c]), _round_rect(*box)))
        cands.sort(key=lambda d: d[0], reverse=True)
        iou_t, cov_t = self._options["overlaps_nms"]
        kept: list[tuple[Rect, float]] = []
        for score, rect in cands:
            if not any(_overlaps(k_rect, rect, iou_t, cov_t) for k_rect, _ in kept):
                kept.append((rect, score))
        return kept
