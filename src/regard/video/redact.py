"""Irreversible face redaction of images and videos: every face blurred, pixelated or filled.

Three methods (``RedactionOptions.method``):

- ``blur`` (default): the face region is first averaged over blocks of 1/8 of the face (a
  many-to-one reduction: what it drops is gone, not merely attenuated), then smoothed with a
  Gaussian of sigma = 1/4 of the face (2 blocks), then given a little random noise (2 levels of
  255) before it is interpolated back up. A plain Gaussian blur is a convolution with a known
  kernel, so deconvolution (Wiener, blind or learned) recovers a good part of a face from it;
  here the fine detail is discarded by the reduction, and the few coarse frequencies the blur
  only attenuates are buried under fresh noise and 8-bit rounding, so nothing is left to invert.
- ``mosaic``: block averages, blocks of 1/8 of the face (``mosaic_blocks`` across it). A visual
  style more than a protection: published attacks re-identify people from 8x8-block mosaics in
  closed sets of known faces, so prefer ``blur`` or ``box`` where that matters.
- ``box``: a solid fill (``fill``, default black): nothing of the face remains.

The mask (``shape``: ``ellipse`` inscribed in the box, or the ``box``) covers the detector's
face box enlarged ``scale`` times about its centre (default 1.3: hair, ears and the jitter of
detector boxes; the ellipse then covers the face box's own ellipse with 30 % margin). Pixels
outside the masks are not touched.

Videos are read twice (``redact_video``): pass 1 decodes every frame, runs the detector on every
``detect_every``-th one (on a copy reduced to ``detect_size`` pixels on its longer side) and
links the detections into tracks; pass 2 decodes again and writes every frame with the masks of
the tracks, interpolated between detections and held ``pad_ms`` (never less than the detection
interval) before a track's first and after its last detection, so a face that appears or leaves
between two detections is covered too. Two passes rather than one pass with a look-ahead buffer:
a frame's masks depend on detections up to the padding plus a detector miss ahead (a second or
more of frames), and on whether the track was ever identified (``keep_matched``), which one pass
could only know by holding the frames; pass 1 keeps only boxes, so memory stays bounded for any
length, and the extra decode costs ~1 ms a 720p frame. Pass 2 masks the decoded YUV planes in
place (no RGB round trip) and re-encodes only the video; audio packets are copied unchanged.
Frame rate, resolution, display rotation, timestamps and the container are kept.
"""

from __future__ import annotations

import bisect
import io
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from regard.errors import (
    InvalidParameterError,
    InvalidVideoError,
)

if TYPE_CHECKING:
    from regard.analysis import Engine, Face
    from regard.context import CallContext
    from regard.service import RegardService
    from regard.vision.detect import Detection

METHODS = ("blur", "mosaic", "box")
SHAPES = ("ellipse", "box")
# Measured on 2 cores, 1280x720, every frame written (crf 20), one detection pass, libx264
# veryfast: detecting every frame ~27 fps, every 2nd ~36, every 3rd ~56 on tests/video_clips.py's
# clip and ~34 on real footage (a stage and an audience: the encoder works harder), every 4th
# ~64. With the second, shadow-lifted pass on the real footage (29.97 fps, ~17 faces masked a
# frame): every 3rd + veryfast 22 fps, every 4th + veryfast 26.5, every 3rd + superfast 28,
# every 4th + superfast 33.6 (files ~1.75x veryfast's at the same crf). The defaults are the
# last, the one faster than real time; ``--preset veryfast`` trades speed for size. Faces are
# tracked and interpolated between detections and masks padded (never less than the interval),
# so every 4th frame (133-160 ms) loses nothing for faces in view more than a few frames.
DEFAULT_DETECT_EVERY = 4
DEFAULT_PRESET = "superfast"
# The detector sees frames reduced to this many pixels on their longer side: YuNet on WIDER FACE
# dev (150 images, at confidence 35) finds 86 of 106 faces of 20-30 px at 0.75x (1024 -> 768),
# 87 at full size and 75 at 0.5x; at 720p, 960x540 takes 25 ms a frame on 2 cores, 1280x720 47.
DEFAULT_DETECT_SIZE = 960
# Lower than YuNet's own 50: a missed face is a leak, a false one only an extra blur. With the
# second, shadow-lifted pass (``lift_shadows``, at ``DEFAULT_LIFTED_CONFIDENCE``) recall of true
# faces (bench/video.py's truth: the union of YuNet and CenterFace on the original) on the dev
# clip rises from 0.55 (35, one pass) to 0.96 at 360p and from 0.68 to 0.90 at 720p, and of WIDER
# FACE dev's faces >= 20 px from 0.905 to 0.968. Measured sweep (plain / lifted thresholds), dev
# clip 720p and 360p recall, false boxes per frame at 720p: 20/20 0.81 0.91 2.4; 20/15 0.84 0.94
# 3.1; 20/10 0.90 0.96 5.0; 10/10 0.94 0.96 6.9. The lifted copy's false boxes are mostly small
# blobs in dark areas: hidden needlessly, never a leak.
DEFAULT_MIN_CONFIDENCE = 20.0
DEFAULT_LIFTED_CONFIDENCE = 10.0
# The shadow lift: gamma 0.5, as a lookup table (dark, backlit and out-of-focus faces, an
# audience in a dim hall, are found on the lifted copy that the detector misses on the original).
_LIFT = (255.0 * (np.arange(256) / 255.0) ** 0.5).round().astype(np.uint8)
BLUR_SAMPLES = 8  # blocks across the face before the blur
BLUR_NOISE = 2.0  # standard deviation, in 8-bit levels, of the noise added after the blur
MAX_IDENTIFY_PER_TRACK = 3
# Images are searched for faces at up to 4K (8.3 MP; a 12 MP photo is reduced 1.2x): YuNet finds
# faces from ~10 px there, ~0.3 s on 2 cores. Larger pictures are reduced to this first.
IMAGE_DETECT_PIXELS = 3840 * 2160
IMAGE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}

Box = tuple[float, float, float, float]  # left, top, right, bottom (pixels)
Identify = Callable[[np.ndarray, "list[Face]"], "list[bool]"]


@dataclass(frozen=True)
class RedactionOptions:
    """How faces are hidden and how a video is written. Invalid values raise
    ``InvalidParameterError``.

    ``codec``: FFmpeg encoder (``libx264``, ``libx265``, ``libvpx-vp9``, ...); None: the source
    codec's encoder when there is one the container takes, else libx264 (libvpx-vp9 in WebM).
    ``crf``: quality, x264's scale (lower is better; 20 is visually lossless for most video),
    mapped to the encoder's own. ``preset``: x264's speed names, mapped for other encoders.
    ``detect_every``: detect on every n-th frame (masks are tracked in between).
    ``detect_size``: longer side of the detector's copy of a frame (0: full size).
    ``keep_matched``: tracks that ``identify`` matched stay visible (everyone else is hidden);
    ``only_matched``: only those are hidden. ``audio``: copy the audio streams (else drop them).
    ``lift_shadows``: detect a second time on a shadow-lifted copy (gamma 0.5) and take both
    passes' faces (those of the second at ``lifted_confidence`` or more): dark faces are the
    ones a single pass misses.
    """

    method: str = "blur"
    shape: str = "ellipse"
    scale: float = 1.3
    fill: tuple[int, int, int] = (0, 0, 0)
    mosaic_blocks: int = 8
    codec: str | None = None
    crf: int = 20
    preset: str = DEFAULT_PRESET
    detect_every: int = DEFAULT_DETECT_EVERY
    detect_size: int = DEFAULT_DETECT_SIZE
    pad_ms: float = 300.0
    max_gap_ms: float = 1000.0
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    keep_matched: bool = False
    only_matched: bool = False
    audio: bool = True
    lift_shadows: bool = True
    lifted_confidence: float = DEFAULT_LIFTED_CONFIDENCE

    def __post_init__(self) -> None:
        checks = [
            (self.method in METHODS, f"method must be one of {', '.join(METHODS)}"),
            (self.shape in SHAPES, f"shape must be one of {', '.join(SHAPES)}"),
            (1.0 <= self.scale <= 4.0, "scale must be 1-4"),
            (len(self.fill) == 3 and all(0 <= int(c) <= 255 for c in self.fill),
             "fill must be three values 0-255"),
            (2 <= self.mosaic_blocks <= 16, "mosaic_blocks must be 2-16"),
            (0 <= self.crf <= 63, "crf must be 0-63"),
            (1 <= self.detect_every <= 100, "detect_every must be 1-100"),
            (self.detect_size == 0 or self.detect_size >= 160, "detect_size must be 0 or >= 160"),
            (0 <= self.pad_ms <= 10_000, "pad_ms must be 0-10000"),
            (0 <= self.max_gap_ms <= 60_000, "max_gap_ms must be 0-60000"),
            (0 <= self.min_confidence <= 100, "min_confidence must be 0-100"),
            (0 <= self.lifted_confidence <= 100, "lifted_confidence must be 0-100"),
            (not (self.keep_matched and self.only_matched),
             "keep_matched and only_matched exclude each other"),
            (self.codec is None or bool(self.codec.strip()), "codec must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidParameterError(message)


# -- masking pixels --------------------------------------------------------------------------------
def _as_box(item: Any) -> Box:
    if hasattr(item, "left"):
        return (float(item.left), float(item.top), float(item.right), float(item.bottom))
    left, top, right, bottom = item
    return (float(left), float(top), float(right), float(bottom))


def mask_box(box: Box, scale: float) -> Box:
    """``box`` enlarged ``scale`` times about its centre (the area a mask covers)."""
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2
    hw, hh = (right - left) * scale / 2, (bottom - top) * scale / 2
    return (cx - hw, cy - hh, cx + hw, cy + hh)


def redact_image(rgb: np.ndarray, boxes: Iterable[Any],
                 options: RedactionOptions | None = None) -> np.ndarray:
    """A copy of ``rgb`` ((H, W, 3) or (H, W, 4) uint8; alpha left alone) with each face box
    (``(left, top, right, bottom)`` pixels, or anything with those attributes: ``Face``,
    ``Detection``) hidden as ``options`` say. Pure: the input is not modified."""
    options = options or RedactionOptions()
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise InvalidParameterError("redact_image takes (H, W, 3) uint8 RGB pixels")
    out = rgb.copy()
    colour = out[:, :, :3]
    rng = np.random.default_rng()
    for item in boxes:
        box = _as_box(item)
        _obscure(colour, box, options, np.array(options.fill, np.float32), 255, rng)
    return out


def _obscure(plane: np.ndarray, face: Box, options: RedactionOptions, fill: np.ndarray,
             maxval: int, rng: np.random.Generator, flat: bool = False) -> None:
    """Hide one face in ``plane`` ((H, W) or (H, W, C), modified in place); ``face`` in this
    plane's pixels. ``flat``: a blur becomes the region's mean (a video's chroma planes: who
    someone is lies in the luma, which is blurred; a flat chroma hides as much, faster)."""
    size = max(face[2] - face[0], face[3] - face[1])
    if size <= 0:
        return
    left, top, right, bottom = mask_box(face, options.scale)
    height, width = plane.shape[:2]
    x0, y0 = max(0, int(math.floor(left))), max(0, int(math.floor(top)))
    x1, y1 = min(width, int(math.ceil(right))), min(height, int(math.ceil(bottom)))
    if x1 <= x0 or y1 <= y0:
        return
    region = plane[y0:y1, x0:x1]
    if options.method == "box":
        hidden = np.broadcast_to(fill.astype(plane.dtype), region.shape)
    elif options.method == "mosaic":
        block = max(1, int(round(size / options.mosaic_blocks)))
        means = _block_mean(region, block)
        hidden = np.repeat(np.repeat(means, block, 0), block, 1)[:y1 - y0, :x1 - x0]
        hidden = np.rint(hidden).astype(plane.dtype)
    elif flat:
        mean = region.reshape((-1, *region.shape[2:])).mean(axis=0)
        hidden = np.broadcast_to(np.rint(mean).astype(plane.dtype), region.shape)
    else:
        hidden = _blur(region, size, maxval, rng)
    if options.shape == "ellipse":
        ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - (top + bottom) / 2) / ((bottom - top) / 2)
        xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - (left + right) / 2) / ((right - left) / 2)
        inside = ys[:, None] ** 2 + xs[None, :] ** 2 <= 1.0
        region[inside] = hidden[inside]
    else:
        region[...] = hidden


def _block_mean(region: np.ndarray, block: int) -> np.ndarray:
    """Means over ``block`` x ``block`` squares from the region's top-left corner (edges
    replicated to fill the last ones), float32, one value per block."""
    h, w = region.shape[:2]
    hb, wb = -(-h // block), -(-w // block)
    pad = [(0, hb * block - h), (0, wb * block - w)] + [(0, 0)] * (region.ndim - 2)
    padded = np.pad(region, pad, mode="edge").astype(np.float32)
    shape = (hb, block, wb, block) + region.shape[2:]
    return padded.reshape(shape).mean(axis=(1, 3))


def _gaussian(small: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (edges replicated) of a small float array: one matrix product
    per axis (a video frame has dozens of faces, each a few blocks across: products of small
    cached matrices cost far less than a loop over the kernel's taps)."""
    small = _along(_gaussian_matrix(small.shape[0], round(sigma, 3)), small, 0)
    return _along(_gaussian_matrix(small.shape[1], round(sigma, 3)), small, 1)


@lru_cache(maxsize=1024)
def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n): row i holds the kernel's weights on the samples it reads, edges replicated."""
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    matrix = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        for k, weight in enumerate(taps):
            matrix[i, min(max(i + k - radius, 0), n - 1)] += weight
    return matrix


def _along(matrix: np.ndarray, values: np.ndarray, axis: int) -> np.ndarray:
    """``matrix`` applied to ``values`` along ``axis`` (0 or 1; any trailing channel axis)."""
    out = np.tensordot(matrix, values, axes=(1, axis))
    return out if axis == 0 else np.moveaxis(out, 0, 1)


def _upsample(small: np.ndarray, height: int, width: int, block: int) -> np.ndarray:
    """Bilinear interpolation of block centres back to ``height`` x ``width`` pixels."""
    rows = _upsample_matrix(height, small.shape[0], block)
    cols = _upsample_matrix(width, small.shape[1], block)
    return _along(cols, _along(rows, small, 0), 1)


@lru_cache(maxsize=1024)
def _upsample_matrix(n: int, m: int, block: int) -> np.ndarray:
    """(n, m): the bilinear weights of pixel i on the m block centres."""
    pos = np.clip((np.arange(n, dtype=np.float32) + 0.5) / block - 0.5, 0, m - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, m - 1)
    frac = (pos - lo).astype(np.float32)
    matrix = np.zeros((n, m), dtype=np.float32)
    np.add.at(matrix, (np.arange(n), lo), 1 - frac)
    np.add.at(matrix, (np.arange(n), hi), frac)
    return matrix


def _blur(region: np.ndarray, size: float, maxval: int, rng: np.random.Generator) -> np.ndarray:
    """Reduce to ``BLUR_SAMPLES`` blocks across the face, blur with sigma = size / 4, add noise,
    interpolate back (see the module docstring for why this order). A face under
    ``2 x BLUR_SAMPLES`` pixels (a distant face, or the half-size chroma of a small one) is
    filled with its mean colour plus noise: the blur would leave no more than that anyway,
    and a video of a crowd has hundreds of them."""
    if size < 2 * BLUR_SAMPLES:
        channels = region.shape[2:]
        mean = region.reshape((-1, *channels)).mean(axis=0, dtype=np.float32)
        noise = rng.normal(0.0, BLUR_NOISE * maxval / 255, region.shape).astype(np.float32)
        return np.clip(np.rint(mean + noise), 0, maxval).astype(region.dtype)
    block = max(1, int(round(size / BLUR_SAMPLES)))
    small = _block_mean(region, block)
    # sigma in blocks, on a quarter-block grid: the blur matrices are shared between faces
    small = _gaussian(small, sigma=max(0.25, round(size / 4 / block * 4) / 4))
    small += rng.normal(0.0, BLUR_NOISE * maxval / 255, small.shape).astype(np.float32)
    smooth = _upsample(small, region.shape[0], region.shape[1], block)
    return np.clip(np.rint(smooth), 0, maxval).astype(region.dtype)


# -- images ------------------------------------------------------------------------------------
@dataclass
class ImageRedaction:
    """What ``redact_image_bytes`` / ``redact_image_file`` did."""

    faces: int  # faces found
    masked: int  # faces hidden (all of them unless an identify function kept some)
    width: int
    height: int
    format: str

    def to_dict(self) -> dict[str, Any]:
        return {"Faces": self.faces, "FacesMasked": self.masked, "Width": self.width,
                "Height": self.height, "Format": self.format}


@lru_cache(maxsize=4)
def _default_engine(min_confidence: float) -> Engine:
    from regard.analysis import Engine

    return Engine(detector="yunet", detector_options={"min_confidence": min_confidence})


def _engine(engine: Engine | None, options: RedactionOptions) -> Engine:
    """The caller's engine, or one whose detector reports down to the lowest confidence the
    options use (an engine's detector drops what is below its own threshold)."""
    lowest = min(options.min_confidence,
                 options.lifted_confidence if options.lift_shadows else 100.0)
    return engine if engine is not None else _default_engine(lowest)


def redact_image_bytes(data: bytes, options: RedactionOptions | None = None, *,
                       engine: Engine | None = None, identify: Identify | None = None,
                       format: str | None = None) -> tuple[bytes, ImageRedaction]:
    """Find and hide the faces of an encoded image (JPEG, PNG, WebP); returns the new file's
    bytes (``format``: JPEG | PNG | WEBP, default the input's) and what was done.

    The output is upright: EXIF orientation is applied to the pixels, then EXIF (camera, time,
    GPS), XMP and text chunks are dropped, so no metadata leaks and no viewer turns the picture
    back; the ICC colour profile is kept (it describes colours, not people). A JPEG is written
    with the input's quantization tables and chroma subsampling, so it keeps its quality. The
    output has the full resolution; the detector sees at most ``IMAGE_DETECT_PIXELS``.
    """
    options = options or RedactionOptions()
    image, source_format = _open_image(data)
    fmt = (format or source_format).upper()
    if fmt not in ("JPEG", "PNG", "WEBP"):
        raise InvalidParameterError(f"Cannot write images as {fmt}; use JPEG, PNG or WebP")
    pixels = _upright_pixels(image)
    faces = _image_faces(np.ascontiguousarray(pixels[:, :, :3]), options, _engine(engine, options),
                         identify)
    hidden = redact_image(pixels, [f for f, keep in faces if not keep], options)
    out = io.BytesIO()
    _save(hidden, image, fmt, out)
    report = ImageRedaction(len(faces), sum(1 for _, keep in faces if not keep),
                            int(pixels.shape[1]), int(pixels.shape[0]), fmt)
    return out.getvalue(), report


def redact_image_file(src: str | Path, dst: str | Path, options: RedactionOptions | None = None,
                      *, engine: Engine | None = None,
                      identify: Identify | None = None) -> ImageRedaction:
    """``redact_image_bytes`` from one file to another; the format follows ``dst``'s suffix
    (.jpg, .jpeg, .png, .webp). ``dst`` appears complete or not at all."""
    src, dst = Path(src), Path(dst)
    fmt = IMAGE_FORMATS.get(dst.suffix.lower())
    if fmt is None:
        raise InvalidParameterError(
            f"Unknown image suffix {dst.suffix or '(none)'!r} for {dst}; use .jpg, .png or .webp")
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise InvalidParameterError(f"Cannot read {src}: {exc.strerror}") from None
    encoded, report = redact_image_bytes(data, options, engine=engine, identify=identify,
                                         format=fmt)
    with replacing(dst, dst.suffix) as tmp:
        tmp.write_bytes(encoded)
    return report


def _open_image(data: bytes) -> tuple[Any, str]:
    """The image (Pillow), refused as ``regard.imaging`` refuses (format, pixel limit, corrupt
    data), but with no byte limit: redaction writes the full picture back."""
    from regard.imaging import load_full

    return load_full(data)


def _upright_pixels(image: Any) -> np.ndarray:
    """RGB (or RGBA when the image has transparency) uint8 with the EXIF orientation applied,
    read as ``regard.imaging`` reads it (malformed EXIF counts as upright)."""
    from regard.imaging import _TRANSPOSE, _exif_orientation, _to_rgb

    orientation = _exif_orientation(image)
    upright = image.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else image
    if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P"
                                                and "transparency" in upright.info):
        return np.asarray(upright.convert("RGBA"), dtype=np.uint8).copy()
    return np.asarray(_to_rgb(upright), dtype=np.uint8).copy()


def _image_faces(rgb: np.ndarray, options: RedactionOptions, engine: Engine,
                 identify: Identify | None) -> list[tuple[Box, bool]]:
    """Each face box (full-size pixels) and whether it stays visible. The raw detector, not
    ``Engine.detect``: no cap of 100 faces (a crowd is redacted whole) and no 80-pixel minimum;
    on a copy of at most ``IMAGE_DETECT_PIXELS``."""
    from PIL import Image

    from regard.imaging import analysis_size

    height, width = rgb.shape[:2]
    target = analysis_size(width, height, IMAGE_DETECT_PIXELS)
    small = rgb if target == (width, height) else np.asarray(
        Image.fromarray(rgb).resize(target, Image.BILINEAR, reducing_gap=2.0))
    fx, fy = width / small.shape[1], height / small.shape[0]
    found = [d for d in detect_faces(engine.detector, small, options)
             if min(d.width * fx, d.height * fy) >= engine.min_face_size]
    faces = [_scaled(d, fx, fy) for d in found]
    visible = [False] * len(faces)
    if options.keep_matched or options.only_matched:
        visible = _decide(identify, rgb, [_face(engine, rgb, d) for d in faces], options)
    return [((d.left, d.top, d.right, d.bottom), keep) for d, keep in zip(faces, visible)]


def detect_faces(detector: Any, rgb: np.ndarray, options: RedactionOptions) -> list[Detection]:
    """The faces to hide in ``rgb``: the detector's at ``min_confidence`` or more, plus, with
    ``lift_shadows``, those it finds on a shadow-lifted copy that overlap none of the first
    (IoU <= 0.4)."""
    found = [d for d in detector.detect(rgb) if d.confidence >= options.min_confidence]
    if not options.lift_shadows:
        return found
    boxes = [(d.left, d.top, d.right, d.bottom) for d in found]
    for d in detector.detect(_LIFT[rgb]):
        box = (d.left, d.top, d.right, d.bottom)
        if d.confidence >= options.lifted_confidence and all(_iou(box, b) <= 0.4 for b in boxes):
            found.append(d)
            boxes.append(box)
    return found


def _decide(identify: Identify | None, rgb: np.ndarray, faces: list[Face],
            options: RedactionOptions) -> list[bool]:
    """For each face: True to leave it visible."""
    if not (options.keep_matched or options.only_matched):
        return [False] * len(faces)
    if identify is None:
        raise InvalidParameterError("keep_matched / only_matched need an identify function")
    matches = [bool(m) for m in identify(rgb, faces)] if faces else []
    if len(matches) != len(faces):
        raise InvalidParameterError("identify must answer once per face")
    return matches if options.keep_matched else [not m for m in matches]


def _save(pixels: np.ndarray, source: Any, fmt: str, out: io.BytesIO) -> None:
    from PIL import Image

    image = Image.fromarray(pixels)
    kwargs: dict[str, Any] = {}
    icc = source.info.get("icc_profile")
    if icc:
        kwargs["icc_profile"] = icc
    if fmt == "JPEG":
        if image.mode == "RGBA":
            image = image.convert("RGB")
        kwargs["quality"] = 95
        if source.format == "JPEG" and getattr(source, "quantization", None):
            from PIL import JpegImagePlugin

            kwargs["qtables"] = source.quantization
            sampling = JpegImagePlugin.get_sampling(source)
            if sampling >= 0:
                kwargs["subsampling"] = sampling
            kwargs.pop("quality")
    elif fmt == "WEBP":
        kwargs["quality"] = 92
    image.save(out, format=fmt, **kwargs)


# -- video: tracks -------------------------------------------------------------------------------
@dataclass
class _Track:
    id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    matched: bool = False
    evaluations: int = 0
    evaluated_area: float = 0.0
    best_confidence: float = 0.0

    @property
    def last(self) -> int:
        return self.frames[-1]

    def predicted(self, index: int) -> Box:
        """Where the face should be at frame ``index``, moving as between its last two
        detections."""
        if len(self.frames) < 2:
            return self.boxes[-1]
        f0, f1 = self.frames[-2], self.frames[-1]
        return _lerp(self.boxes[-2], self.boxes[-1], (index - f0) / (f1 - f0))


def _lerp(a: Box, b: Box, w: float) -> Box:
    """``a`` + (``b`` - ``a``) x ``w``: interpolation for 0 <= w <= 1, extrapolation beyond."""
    return (a[0] + (b[0] - a[0]) * w, a[1] + (b[1] - a[1]) * w,
            a[2] + (b[2] - a[2]) * w, a[3] + (b[3] - a[3]) * w)


def _iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _affinity(track_box: Box, det: Box) -> float:
    """How well a detection continues a track (0: not at all): the IoU with the predicted box,
    or, for fast motion that leaves no overlap, a weak score when the centres are within one
    face width and the sizes within 1.6x."""
    iou = _iou(track_box, det)
    if iou >= 0.1:
        return iou
    tw, dw = track_box[2] - track_box[0], det[2] - det[0]
    if tw <= 0 or dw <= 0 or not 1 / 1.6 <= dw / tw <= 1.6:
        return 0.0
    dx = (track_box[0] + track_box[2] - det[0] - det[2]) / 2
    dy = (track_box[1] + track_box[3] - det[1] - det[3]) / 2
    dist = math.hypot(dx, dy) / max(tw, dw)
    return 0.1 * (1 - dist) if dist < 1 else 0.0


class _Tracker:
    """Greedy association of each detection frame's boxes with live tracks."""

    def __init__(self, max_gap: int) -> None:
        self.max_gap = max_gap
        self.tracks: list[_Track] = []
        self._live: list[_Track] = []

    def update(self, index: int, boxes: list[Box]) -> list[tuple[_Track, Box]]:
        self._live = [t for t in self._live if index - t.last <= self.max_gap]
        pairs = sorted(((_affinity(t.predicted(index), b), ti, bi)
                        for ti, t in enumerate(self._live) for bi, b in enumerate(boxes)),
                       reverse=True)
        used_t: set[int] = set()
        used_b: set[int] = set()
        assigned: list[tuple[_Track, Box]] = []
        for score, ti, bi in pairs:
            if score <= 0:
                break
            if ti in used_t or bi in used_b:
                continue
            used_t.add(ti)
            used_b.add(bi)
            assigned.append((self._live[ti], boxes[bi]))
        for bi, box in enumerate(boxes):
            if bi not in used_b:
                track = _Track(len(self.tracks))
                self.tracks.append(track)
                self._live.append(track)
                assigned.append((track, box))
        for track, box in assigned:
            track.frames.append(index)
            track.boxes.append(box)
        return assigned


def _confirmed(track: _Track, options: RedactionOptions) -> bool:
    """A track is masked when one of its detections reached ``min_confidence``, or when it was
    detected more than once: a box only the shadow-lifted pass found, once, is most often a
    blob in a dark area, while a dim face is found again at the next detection (the masks of a
    confirmed track cover the frames before its first detection too: nothing shows meanwhile)."""
    return track.best_confidence >= options.min_confidence or len(track.frames) >= 2


class _Schedule:
    """The masks of each frame from the tracks, queried in frame order: interpolated between a
    track's detections, held (and also extrapolated at the track's last speed) ``pad`` frames
    before its first and after its last."""

    def __init__(self, tracks: list[_Track], pad: int) -> None:
        self.pad = pad
        self._tracks = sorted(tracks, key=lambda t: t.frames[0])
        self._next = 0
        self._active: list[_Track] = []

    def boxes_at(self, index: int) -> list[Box]:
        while self._next < len(self._tracks) and \
                self._tracks[self._next].frames[0] - self.pad <= index:
            self._active.append(self._tracks[self._next])
            self._next += 1
        self._active = [t for t in self._active if t.last + self.pad >= index]
        out: list[Box] = []
        for track in self._active:
            out.extend(_track_boxes(track, index))
        return _merged(out)


MERGE_IOU = 0.5


def _merged(boxes: list[Box]) -> list[Box]:
    """Boxes overlapping at IoU > ``MERGE_IOU`` (a track's held and extrapolated padding, two
    tracks on one face) replaced by the box enclosing them: it covers all each would, and a
    crowded frame is masked once per face instead of several times. Each round joins every
    overlapping group at once (O(n^2) a round; rounds repeat while enclosing boxes overlap)."""
    from regard.vision.detect import iou_matrix

    out = list(boxes)
    while len(out) > 1:
        group = list(range(len(out)))

        def root(i: int) -> int:
            while group[i] != i:
                group[i] = group[group[i]]
                i = group[i]
            return i

        joined = False
        overlaps = np.triu(iou_matrix(np.array(out), np.array(out)) > MERGE_IOU, 1)
        for i, j in zip(*np.nonzero(overlaps)):
            if root(int(i)) != root(int(j)):
                group[root(int(j))] = root(int(i))
                joined = True
        if not joined:
            break
        enclosing: dict[int, Box] = {}
        for i, box in enumerate(out):
            r = root(i)
            e = enclosing.get(r, box)
            enclosing[r] = (min(e[0], box[0]), min(e[1], box[1]), max(e[2], box[2]),
                            max(e[3], box[3]))
        out = list(enclosing.values())
    return out


def _track_boxes(track: _Track, index: int) -> list[Box]:
    frames, boxes = track.frames, track.boxes
    if frames[0] <= index <= frames[-1]:
        pos = bisect.bisect_left(frames, index)
        if frames[pos] == index:
            return [boxes[pos]]
        f0, f1 = frames[pos - 1], frames[pos]
        return [_lerp(boxes[pos - 1], boxes[pos], (index - f0) / (f1 - f0))]
    end, other = (0, 1) if index < frames[0] else (-1, -2)
    if len(frames) < 2:
        return [boxes[end]]
    # Padding: held where last seen, and also moved on at the last speed (a face walking in
    # or out of view between two detections).
    ahead = (index - frames[end]) / (frames[end] - frames[other])
    return [boxes[end], _lerp(boxes[end], boxes[other], -ahead)]


# -- video: the report --------------------------------------------------------------------------
@dataclass
class RedactionReport:
    """What ``redact_video`` did. ``tracks_visible``: tracks left unmasked (matched with
    ``keep_matched``, or not matched with ``only_matched``)."""

    frames: int
    frames_with_masks: int
    tracks: int
    detections: int
    seconds: float
    fps: float
    audio_copied: bool
    tracks_visible: int = 0
    codec: str = ""
    detect_every: int = DEFAULT_DETECT_EVERY

    def to_dict(self) -> dict[str, Any]:
        names = {"frames": "Frames", "frames_with_masks": "FramesWithMasks", "tracks": "Tracks",
                 "detections": "Detections", "seconds": "Seconds", "fps": "FramesPerSecond",
                 "audio_copied": "AudioCopied", "tracks_visible": "TracksVisible",
                 "codec": "Codec", "detect_every": "DetectEvery"}
        return {names[k]: v for k, v in asdict(self).items()}


class _Ticker:
    """``progress`` at most twice a second (and always at the end)."""

    def __init__(self, progress: Callable[[int, int], None] | None) -> None:
        self.progress = progress
        self._last = 0.0

    def __call__(self, done: int, total: int, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self._last >= 0.5:
            self._last = now
            self.progress(done, max(total, done))


# -- video: pass 1 ------------------------------------------------------------------------------
@dataclass
class _Analysis:
    frames: int
    detections: int
    tracks: list[_Track]


def _analyse(reader: Any, engine: Engine, options: RedactionOptions,
             identify: Identify | None, check: Callable[[], None] | None, ticker: _Ticker,
             total_guess: int) -> _Analysis:
    meta = reader.metadata
    turns = (meta.rotation // 90) % 4
    stored_w, stored_h = reader.stream.codec_context.width, reader.stream.codec_context.height
    factor = 1.0
    if options.detect_size and max(stored_w, stored_h) > options.detect_size:
        factor = options.detect_size / max(stored_w, stored_h)
    small_w, small_h = max(2, round(stored_w * factor)), max(2, round(stored_h * factor))
    upright_small = (small_h, small_w) if turns % 2 else (small_w, small_h)
    fx, fy = meta.frame_width / upright_small[0], meta.frame_height / upright_small[1]
    fps = meta.frame_rate or 25.0
    tracker = _Tracker(max(options.detect_every, int(options.max_gap_ms * fps / 1000)))
    detector = engine.detector
    min_size = engine.min_face_size
    evaluating = options.keep_matched or options.only_matched
    detections = 0
    frames = 0
    for index, _ms, frame in reader.decoded():
        if check is not None:
            check()
        frames = index + 1
        if index % options.detect_every == 0:
            if factor == 1.0:
                small = frame.to_ndarray(format="rgb24")
            else:
                small = frame.to_ndarray(width=small_w, height=small_h, format="rgb24",
                                         interpolation="BILINEAR")
            if turns:
                small = np.ascontiguousarray(np.rot90(small, turns))
            found = [d for d in detect_faces(detector, small, options)
                     if min(d.width * fx, d.height * fy) >= min_size]
            detections += len(found)
            boxes = [(d.left * fx, d.top * fy, d.right * fx, d.bottom * fy) for d in found]
            assigned = tracker.update(index, boxes)
            confidence = {box: d.confidence for box, d in zip(boxes, found)}
            for track, box in assigned:
                track.best_confidence = max(track.best_confidence, confidence.get(box, 0.0))
            if evaluating and identify is not None and found:
                _identify_tracks(reader, frame, engine, identify, assigned,
                                 dict(zip(boxes, found)), fx, fy)
        ticker(frames, 2 * max(total_guess, frames))
    return _Analysis(frames, detections, tracker.tracks)


def _identify_tracks(reader: Any, frame: Any, engine: Engine, identify: Identify,
                     assigned: list[tuple[_Track, Box]], found: dict[Box, Detection],
                     fx: float, fy: float) -> None:
    """Ask ``identify`` about a bounded number of each track's faces: its first, then any at
    least 1.5x the area of the largest asked about, at most ``MAX_IDENTIFY_PER_TRACK``."""
    asked: list[tuple[_Track, Box]] = []
    for track, box in assigned:
        area = (box[2] - box[0]) * (box[3] - box[1])
        if track.evaluations < MAX_IDENTIFY_PER_TRACK and \
                (track.evaluations == 0 or area >= 1.5 * track.evaluated_area):
            asked.append((track, box))
    if not asked:
        return
    rgb = reader.upright(frame)
    faces = [_face(engine, rgb, _scaled(found[box], fx, fy)) for _, box in asked]
    answers = list(identify(rgb, faces))
    if len(answers) != len(faces):
        raise InvalidParameterError("identify must answer once per face")
    for (track, box), match in zip(asked, answers):
        track.evaluations += 1
        track.evaluated_area = max(track.evaluated_area, (box[2] - box[0]) * (box[3] - box[1]))
        track.matched = track.matched or bool(match)


def _scaled(det: Detection, fx: float, fy: float) -> Detection:
    from regard.vision.detect import Detection

    points = None
    if det.keypoints is not None:
        points = tuple((x * fx, y * fy) for x, y in det.keypoints)
    return Detection(det.left * fx, det.top * fy, det.right * fx, det.bottom * fy,
                     det.confidence, points)


def _face(engine: Engine, rgb: np.ndarray, det: Detection) -> Face:
    """A ``Face`` (landmarks, pose, quality) for a raw detection, as ``Engine.detect`` makes."""
    from regard.analysis import Face
    from regard.vision.quality import estimate_pose, measure_quality

    marks = engine.aligner.landmarks(rgb, det)
    box = (det.left, det.top, det.right, det.bottom)
    return Face(*box, confidence=round(float(det.confidence), 4), landmarks=marks,
                pose=estimate_pose(marks.dlib5), quality=measure_quality(rgb, box),
                image_width=rgb.shape[1], image_height=rgb.shape[0])


# -- video: pass 2 ------------------------------------------------------------------------------
_ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "vp8": "libvpx",
             "av1": "libsvtav1", "mpeg4": "mpeg4", "mpeg2video": "mpeg2video",
             "mjpeg": "mjpeg", "prores": "prores_ks"}
_WEBM_CODECS = {"libvpx-vp9", "libvpx", "libsvtav1", "libaom-av1"}


def _has_encoder(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def choose_encoder(source_codec: str, suffix: str, asked: str | None = None) -> str:
    """The encoder to write with: ``asked``, else the source codec's when it exists here and
    the container (by ``suffix``) takes it, else libx264 (libvpx-vp9 for WebM)."""
    webm = suffix.lower() == ".webm"
    if asked:
        if not _has_encoder(asked):
            raise InvalidParameterError(f"No video encoder {asked!r} in this FFmpeg build")
        if webm and asked not in _WEBM_CODECS:
            raise InvalidParameterError(f"WebM cannot hold {asked}; use libvpx-vp9 or libvpx")
        return asked
    name = _ENCODERS.get(source_codec, source_codec)
    if _has_encoder(name) and (not webm or name in _WEBM_CODECS):
        return name
    return "libvpx-vp9" if webm else "libx264"


def _encoder_settings(stream: Any, name: str, options: RedactionOptions, fps: float) -> None:
    """Quality and speed in the encoder's own terms."""
    fast = options.preset in ("ultrafast", "superfast", "veryfast")
    if name in ("libx264", "libx265"):
        opts = {"crf": str(options.crf), "preset": options.preset}
        if name == "libx265":
            opts["x265-params"] = "log-level=error"
        stream.options = opts
    elif name in ("libvpx-vp9", "libvpx"):
        crf = min(63, round(options.crf * 63 / 51))
        opts = {"crf": str(crf), "deadline": "realtime" if fast else "good",
                "cpu-used": "8" if fast else "4"}
        if name == "libvpx-vp9":
            opts.update({"b": "0", "row-mt": "1"})
        else:
            opts["b"] = str(int(stream.width * stream.height * max(fps, 1) * 0.15))
        stream.options = opts
    elif name == "libsvtav1":
        stream.options = {"crf": str(min(63, round(options.crf * 63 / 51))),
                          "preset": "10" if fast else "8"}
    else:  # mpeg4, mpeg2video, mjpeg...: constant quantizer, x264's crf 20 ~ q 3
        ctx = stream.codec_context
        ctx.qscale = True
        ctx.global_quality = max(2, min(31, round(options.crf / 6))) * 118  # FF_QP2LAMBDA


def _yuv_fill(rgb: tuple[int, int, int], full_range: bool, bt709: bool) -> tuple[float, ...]:
    r, g, b = (c / 255 for c in rgb)
    kr, kb = (0.2126, 0.0722) if bt709 else (0.299, 0.114)
    y = kr * r + (1 - kr - kb) * g + kb * b
    u, v = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    if full_range:
        return (255 * y, 128 + 255 * u, 128 + 255 * v)
    return (16 + 219 * y, 128 + 224 * u, 128 + 224 * v)


class _FrameMasker:
    """Masks faces on decoded frames in their own pixel format: planar YUV (8 to 16 bits,
    including NV12-style interleaved chroma) are changed in place plane by plane, with boxes
    mapped from the upright picture to the stored one; other formats go through RGB."""

    def __init__(self, options: RedactionOptions, rotation: int, encoder_format: str) -> None:
        self.options = options
        self.turns = (rotation // 90) % 4
        self.encoder_format = encoder_format
        self.rng = np.random.default_rng()

    def stored_box(self, box: Box, width: int, height: int) -> Box:
        """An upright box in the stored (not yet rotated) frame of ``width`` x ``height``."""
        left, top, right, bottom = box
        if self.turns == 1:
            return (width - bottom, left, width - top, right)
        if self.turns == 2:
            return (width - right, height - bottom, width - left, height - top)
        if self.turns == 3:
            return (top, height - right, bottom, height - left)
        return box

    def __call__(self, frame: Any, boxes: list[Box]) -> Any:
        stored = [self.stored_box(b, frame.width, frame.height) for b in boxes]
        layout = _planar_layout(frame)
        if layout is None:
            return self._via_rgb(frame, stored)
        frame.make_writable()  # decoded frames share buffers with the decoder's references
        full = frame.color_range == 2 or frame.format.name.startswith("yuvj")
        fill = _yuv_fill(self.options.fill, full, frame.colorspace == 1)
        for plane, comps, bits, dtype in layout:
            arr = _plane_array(plane, len(comps), dtype)
            sx, sy = plane.width / frame.width, plane.height / frame.height
            maxval = (1 << bits) - 1
            values = np.array([fill[c] * (maxval / 255) for c in comps], np.float32)
            if len(comps) == 1:
                values = values[0]
            chroma = 0 not in comps
            for (left, top, right, bottom) in stored:
                _obscure(arr, (left * sx, top * sy, right * sx, bottom * sy), self.options,
                         values, maxval, self.rng, flat=chroma)
        return frame

    def _via_rgb(self, frame: Any, stored: list[Box]) -> Any:
        import av

        rgb = frame.to_ndarray(format="rgb24")
        values = np.array(self.options.fill, np.float32)
        for box in stored:
            _obscure(rgb, box, self.options, values, 255, self.rng)
        new = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format=self.encoder_format)
        new.pts, new.time_base = frame.pts, frame.time_base
        return new


def _planar_layout(frame: Any) -> list[tuple[Any, list[int], int, Any]] | None:
    """Per plane to mask: the plane, its component indices (0 Y, 1 U, 2 V), bits, dtype; None
    for formats handled through RGB (packed, RGB, big-endian, alpha mixed with colour)."""
    fmt = frame.format
    name = fmt.name
    if not (name.startswith(("yuv", "nv12", "nv21", "nv16", "nv24", "p010", "p016", "gray"))):
        return None
    if name.endswith("be") or name.startswith(("yuyv", "uyvy", "yvyu")):
        return None
    comps = list(fmt.components)
    layout = []
    for index, plane in enumerate(frame.planes):
        mine = [i for i, c in enumerate(comps) if c.plane == index]
        if not mine or any(comps[i].is_alpha for i in mine):
            continue
        bits = comps[mine[0]].bits
        if name.startswith(("p010", "p016")):
            return None  # MSB-aligned high-depth: via RGB
        if name.startswith("nv21"):
            mine = list(reversed(mine))
        layout.append((plane, mine, bits, np.uint8 if bits <= 8 else np.uint16))
    return layout or None


def _plane_array(plane: Any, channels: int, dtype: Any) -> np.ndarray:
    """A writable numpy view of a plane (its line padding cut off)."""
    item = np.dtype(dtype).itemsize
    flat = np.frombuffer(plane, dtype=dtype)
    rows = flat[: plane.height * (plane.line_size // item)].reshape(plane.height, -1)
    view = rows[:, : plane.width * channels]
    return view.reshape(plane.height, plane.width, channels) if channels > 1 else view


# -- video: the whole job -----------------------------------------------------------------------
def redact_video(src: str | Path, dst: str | Path, options: RedactionOptions | None = None, *,
                 engine: Engine | None = None, identify: Identify | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 check: Callable[[], None] | None = None) -> RedactionReport:
    """Write ``dst``: ``src`` with every face hidden in every frame (see the module docstring).

    ``identify(rgb, faces) -> [bool]``: whether each face (``Face`` with landmarks, in the
    upright full-size ``rgb``) matches a collection; asked about at most
    ``MAX_IDENTIFY_PER_TRACK`` faces of a track (its first, then larger ones); used with
    ``options.keep_matched`` or ``only_matched``. A track never asked about, or never matched,
    counts as not matched (hidden with ``keep_matched``: the safe side).
    ``progress(done, total)``: at most twice a second; both passes count, each frame once per
    pass, so ``total`` is twice the frame count (an estimate until pass 1 ends).
    ``check()``: called for every frame of both passes; what it raises cancels the job.
    The container follows ``dst``'s suffix (none: the source's). ``dst`` appears complete or
    not at all (written beside it under a temporary name, renamed at the end). Raises
    ``InvalidVideoError`` (unreadable or corrupt source), ``InvalidParameterError``."""
    import av

    from regard.video.decode import VideoReader

    options = options or RedactionOptions()
    src, dst = Path(src), Path(dst)
    if (options.keep_matched or options.only_matched) and identify is None:
        raise InvalidParameterError("keep_matched / only_matched need an identify function")
    if src.resolve() == dst.resolve():
        raise InvalidParameterError("The output must not overwrite the input")
    suffix = dst.suffix or src.suffix
    if suffix.lower() in IMAGE_FORMATS:
        raise InvalidParameterError(f"{dst.name} names an image; a video needs a video "
                                    "container (.mp4, .mkv, .mov, .webm)")
    _check_container(suffix)
    engine = _engine(engine, options)
    started = time.monotonic()
    ticker = _Ticker(progress)
    with VideoReader(src) as reader:
        meta = reader.metadata
        guess = meta.frame_count or round(meta.duration_millis * (meta.frame_rate or 0) / 1000)
        analysis = _analyse(reader, engine, options, identify, check, ticker, guess)
    fps = meta.frame_rate or 25.0
    pad = max(options.detect_every, int(math.ceil(options.pad_ms * fps / 1000)))
    hidden = [t for t in analysis.tracks if _hidden(t, options) and _confirmed(t, options)]
    schedule = _Schedule(hidden, pad)
    encoder = choose_encoder(meta.codec, suffix, options.codec)
    with replacing(dst, suffix) as tmp:
        try:
            written, masked, audio = _write(src, tmp, schedule, options, encoder, meta.rotation,
                                            analysis.frames, check, ticker)
        except av.FFmpegError as exc:
            copied = ", and the audio copied unchanged" if options.audio else ""
            raise InvalidParameterError(
                f"Cannot write {dst.name} as {suffix} with {encoder} video{copied}: {exc}. "
                "Try another container (.mkv takes every codec), --codec or --no-audio"
            ) from None
    seconds = time.monotonic() - started
    ticker(2 * written, 2 * written, force=True)
    return RedactionReport(
        frames=written, frames_with_masks=masked, tracks=len(analysis.tracks),
        detections=analysis.detections, seconds=round(seconds, 3),
        fps=round(written / seconds, 2) if seconds > 0 else 0.0, audio_copied=audio,
        tracks_visible=len(analysis.tracks) - len(hidden), codec=encoder,
        detect_every=options.detect_every)


def _hidden(track: _Track, options: RedactionOptions) -> bool:
    if options.keep_matched:
        return not track.matched
    if options.only_matched:
        return track.matched
    return True


def _check_container(suffix: str) -> None:
    import av

    if not suffix:
        raise InvalidParameterError("The output needs a suffix naming its container (.mp4)")
    known = {ext for name in av.formats_available for ext in _muxer_extensions(name)}
    if suffix.lower().lstrip(".") not in known:
        raise InvalidParameterError(f"Unknown video container {suffix!r}; use .mp4, .mkv, "
                                    ".mov, .webm or .avi")


@cache
def _muxer_extensions(name: str) -> tuple[str, ...]:
    import av

    if "image2" in name or name.endswith("_pipe"):
        return ()  # one picture per file, not a video container
    try:
        fmt = av.ContainerFormat(name, "w")
    except Exception:
        return ()
    return tuple(e.strip().lower() for e in (fmt.extensions or ()) if e.strip())


def _write(src: Path, tmp: Path, schedule: _Schedule, options: RedactionOptions, encoder: str,
           rotation: int, total: int, check: Callable[[], None] | None,
           ticker: _Ticker) -> tuple[int, int, bool]:
    """Pass 2: decode again, mask, encode the video; copy the audio packets. Returns frames
    written, frames with masks, whether audio was copied."""
    import av

    inp = av.open(str(src), mode="r", metadata_errors="ignore")
    try:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        audio_in = list(inp.streams.audio) if options.audio else []
        with av.open(str(tmp), mode="w") as out:
            rate = vin.average_rate or vin.guessed_rate or Fraction(25)
            vout = out.add_stream(encoder, rate=rate)
            ctx = vin.codec_context
            vout.width, vout.height = ctx.width, ctx.height
            formats = {f.name for f in (av.codec.Codec(encoder, "w").video_formats or ())}
            source_format = ctx.pix_fmt or "yuv420p"
            pix_fmt = source_format if source_format in formats else (
                "yuv420p" if "yuv420p" in formats or not formats else min(formats))
            vout.pix_fmt = pix_fmt
            time_base = vin.time_base or Fraction(1, 90000)
            vout.time_base = time_base
            vout.codec_context.time_base = time_base
            for attr in ("color_range", "colorspace", "color_primaries", "color_trc"):
                try:
                    setattr(vout.codec_context, attr, getattr(ctx, attr))
                except (AttributeError, TypeError, ValueError):
                    pass
            _encoder_settings(vout, encoder, options, float(rate))
            if rotation:
                vout.set_display_rotation(rotation)
            try:
                audio_out = {a.index: out.add_stream_from_template(a) for a in audio_in}
            except ValueError as exc:  # PyAV: "'webm' format does not support 'aac' codec"
                raise InvalidParameterError(
                    f"Cannot copy the audio unchanged: {exc}. Try another container (.mkv "
                    "takes every codec) or --no-audio") from None
            masker = _FrameMasker(options, rotation, pix_fmt)
            step = max(1, round(1 / (float(rate) * float(time_base))))
            index = masked = 0
            last_pts: int | None = None
            try:
                for packet in inp.demux([vin, *audio_in]):
                    if packet.stream.type == "audio":
                        if packet.dts is not None:
                            packet.stream = audio_out[packet.stream.index]
                            out.mux(packet)
                        continue
                    for frame in packet.decode():
                        if check is not None:
                            check()
                        if index >= total:  # never seen by pass 1: refuse, rather than leak
                            raise InvalidVideoError(
                                f"The video decoded to more frames the second time ({index + 1}"
                                f" > {total}); it cannot be redacted reliably")
                        boxes = schedule.boxes_at(index)
                        if boxes:
                            frame = masker(frame, boxes)
                            masked += 1
                        pts = frame.pts if frame.pts is not None else (
                            last_pts + step if last_pts is not None else 0)
                        if last_pts is not None and pts <= last_pts:
                            pts = last_pts + 1
                        frame.pts, frame.time_base, last_pts = pts, time_base, pts
                        frame.pict_type = av.video.frame.PictureType.NONE
                        if frame.format.name != pix_fmt:
                            frame = frame.reformat(format=pix_fmt)
                        out.mux(vout.encode(frame))
                        index += 1
                        ticker(total + index, 2 * max(total, index))
            except av.error.InvalidDataError as exc:
                raise InvalidVideoError(
                    f"The video is corrupt or truncated after frame {index}: {exc}") from None
            out.mux(vout.encode(None))
        return index, masked, bool(audio_in)
    finally:
        inp.close()


class replacing:
    """``with replacing(dst, suffix) as tmp``: write ``tmp`` (beside ``dst``, same suffix so
    FFmpeg and Pillow pick the format), renamed over ``dst`` on success, removed on failure."""

    def __init__(self, dst: Path, suffix: str) -> None:
        self.dst = dst
        self.tmp = dst.with_name(f".{dst.stem}.{secrets.token_hex(4)}.part{suffix}")

    def __enter__(self) -> Path:
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, kind: Any, *rest: object) -> None:
        if kind is None:
            os.replace(self.tmp, self.dst)
        else:
            try:
                self.tmp.unlink()
            except FileNotFoundError:
                pass


# -- identification against a collection ----------------------------------------------------------
def collection_identifier(service: RegardService, collection: str,
                          context: CallContext | None, *, threshold: float | None = None,
                          engine: Engine | None = None,
                          matched: dict[str, float] | None = None) -> Identify:
    """An ``identify`` function: does each face match a face of ``collection`` at
    ``threshold`` (default Rekognition's 80; the collection's policy may raise it, as a search
    would)? Checked once here like a SearchFacesByImage by ``context`` (scopes, the collection
    allow-list, the policy's threshold floor and FPIR cap); the faces are embedded with the
    collection's face-model pack and looked up in its index, and their embeddings wiped after.
    The audit entry for the redaction job is the caller's to record: ``matched`` (when given)
    collects each matched FaceId with its best similarity for it."""
    from regard.config import DEFAULT_MATCH_THRESHOLD
    from regard.operations.searches import search_threshold
    from regard.secure_memory import wipe
    from regard.vision.packs import get_pack

    params: dict[str, Any] = {"CollectionId": collection}
    if threshold is not None:
        params["FaceMatchThreshold"] = threshold
    checked = service.preflight("SearchFacesByImage", params, context)  # scopes, floor
    info = service.store.catalog.get_collection(collection)  # ResourceNotFoundError
    pack = get_pack(info.face_model_version)
    asked = float(checked.get("FaceMatchThreshold", DEFAULT_MATCH_THRESHOLD))
    used, _ = search_threshold(info, pack, asked, max(1, int(info.face_count)))
    limit = pack.match_distance(used)
    embedder = engine or service.engine

    def identify(rgb: np.ndarray, faces: Sequence[Face]) -> list[bool]:
        if not faces:
            return []
        embedder.embed_faces(rgb, list(faces), pack)
        vectors = np.stack([f.embedding for f in faces]).astype(np.float32)
        try:
            hits = service.store.search(collection, vectors, 1, max_distance=limit)
            found = []
            for row in hits:
                similarity = float(pack.similarities(row[0].distance)) if row else 0.0
                found.append(bool(row) and similarity >= used)
                if found[-1] and matched is not None:
                    face = row[0].face_id
                    matched[face] = max(matched.get(face, 0.0), round(similarity, 5))
            return found
        finally:
            wipe(vectors, *(f.embedding for f in faces))
            for face in faces:
                face.embedding = None

    return identify


__all__ = ["DEFAULT_DETECT_EVERY", "ImageRedaction", "RedactionOptions", "RedactionReport",
           "choose_encoder", "collection_identifier", "mask_box", "redact_image",
           "redact_image_bytes", "redact_image_file", "redact_video"]
