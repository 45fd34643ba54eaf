"""Safe image decoding: the only place where untrusted bytes become pixels.

Every refusal is a typed error that maps to Rekognition's (see ``errors.py``). Limits come from the
environment (read by ``regard.config``) so that an operator can tighten them without code:

- ``REGARD_MAX_IMAGE_BYTES`` (default 5 MiB, Rekognition's limit for inline bytes);
- ``REGARD_MAX_IMAGE_PIXELS`` (default 40 megapixels; checked from the header, before decoding,
  so a decompression bomb never allocates its pixels);
- minimum 80x80 pixels after EXIF rotation (Rekognition's rule);
- ``REGARD_MAX_ANALYSIS_PIXELS`` (default 1920x1080): larger images are analysed on a downscaled
  copy, as Rekognition does ("the minimum face size is 40x40 pixels in a 1920x1080 image; larger
  images need larger faces"). JPEGs are decoded at the reduced scale directly (libjpeg's DCT
  scaling), others are reduced right after decoding, so the detector's and the decoder's work per
  image is bounded by this, not by what a header claims: a 40-megapixel picture costs a small
  multiple of a photo's, never seconds of CPU. Boxes and landmarks are ratios on the wire, so the
  answers do not change; in the Python API pixel coordinates are those of the analysed copy.

16-bit greyscale PNGs (Pillow's ``I;16`` modes) are scaled to 8 bits; Pillow's own conversion
would clip them, turning every photo white.
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from regard import config
from regard.errors import ImageTooLargeError, InvalidImageFormatError, InvalidParameterError

DEFAULT_MAX_BYTES = config.Settings.max_image_bytes.default
DEFAULT_MAX_PIXELS = config.Settings.max_image_pixels.default
DEFAULT_MAX_ANALYSIS_PIXELS = config.Settings.max_analysis_pixels.default
MIN_SIDE = 80
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})


@dataclass(frozen=True)
class ImageLimits:
    """Byte and pixel limits; ``from_env`` reads the ``REGARD_*`` overrides."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = MIN_SIDE
    max_analysis_pixels: int = DEFAULT_MAX_ANALYSIS_PIXELS

    @classmethod
    def from_env(cls) -> "ImageLimits":
        """The limits ``regard.config`` reads (``InvalidParameterError`` when one is malformed)."""
        settings = config.current()
        return cls(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels,
                   max_analysis_pixels=settings.max_analysis_pixels)


@dataclass(frozen=True)
class DecodedImage:
    """RGB pixels (H, W, 3) uint8, upright (EXIF orientation applied), plus where they came from.
    ``scale`` is how much the pixels were reduced for analysis (1.0: not at all)."""

    pixels: np.ndarray
    format: str
    exif_orientation: int
    scale: float = 1.0

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


ImageInput = bytes | bytearray | memoryview | str | Path | np.ndarray | Image.Image


def decode(data: bytes | bytearray | memoryview, limits: ImageLimits | None = None) -> DecodedImage:
    """Decode untrusted image bytes, refusing anything Rekognition would refuse."""
    limits = limits or ImageLimits.from_env()
    data = bytes(data)
    if not data:
        raise InvalidParameterError("Image bytes are empty")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"Image is {len(data)} bytes; the limit for image bytes is {limits.max_bytes}"
        )
    with _untrusted():
        image, fmt = _opened(data, limits)
        width, height = image.size
        orientation = _exif_orientation(image)
        target = analysis_size(width, height, limits.max_analysis_pixels)
        if target != (width, height) and fmt == "JPEG":
            image.draft("RGB", target)  # decode at 1/2, 1/4 or 1/8 scale: bounded work
        image.load()  # full decode: truncated or corrupt data fails here
        if target != (width, height):
            image = _reduced(image, target)
        upright = image.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE \
            else image
        rgb = _to_rgb(upright)
    pixels = np.asarray(rgb, dtype=np.uint8)
    _check_min_size(pixels.shape[1], pixels.shape[0], limits)
    scale = max(width, height) / max(pixels.shape[:2])
    return DecodedImage(pixels=np.ascontiguousarray(pixels), format=fmt,
                        exif_orientation=orientation, scale=scale)


def load_full(data: bytes, limits: ImageLimits | None = None) -> tuple[Image.Image, str]:
    """The whole image at full size, decoded, and its format: refused as ``decode`` refuses
    (format, pixel limit, corrupt data) but with no byte limit and no reduction, for work that
    writes the picture back (redaction). EXIF orientation is not applied."""
    if not data:
        raise InvalidImageFormatError("The image file is empty")
    with _untrusted():
        image, fmt = _opened(bytes(data), limits or ImageLimits.from_env())
        image.load()
    return image, fmt


def _opened(data: bytes, limits: ImageLimits) -> tuple[Image.Image, str]:
    """Pillow's lazy image of untrusted bytes, once its format and pixel count (read from the
    header, before any decoding) are acceptable."""
    image = Image.open(io.BytesIO(data))
    fmt = image.format or ""
    if fmt not in SUPPORTED_FORMATS:
        raise InvalidImageFormatError(
            f"Unsupported image format {fmt or 'unknown'}; use JPEG, PNG or WebP")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(f"Image is {width}x{height} = {width * height} pixels; "
                                 f"the limit is {limits.max_pixels}")
    return image, fmt


@contextmanager
def _untrusted() -> Iterator[None]:
    """Pillow's failures on untrusted bytes as Rekognition's errors."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past 2x errors) on big images; our own pixel check runs first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except (ImageTooLargeError, InvalidImageFormatError):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"Image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageFormatError(
            "Image bytes are not a recognized image (JPEG, PNG or WebP)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageFormatError(f"Image bytes could not be decoded: {exc}") from exc


# EXIF orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose;
# applied explicitly because a reduced copy no longer carries the EXIF block).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def analysis_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) reduced, keeping the aspect ratio, to at most ``max_pixels``."""
    if width * height <= max_pixels:
        return width, height
    factor = (max_pixels / (width * height)) ** 0.5
    return max(1, int(width * factor)), max(1, int(height * factor))


def _reduced(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.mode not in ("RGB", "RGBA", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F"):
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    # reducing_gap: a cheap integer box reduction first, then a bilinear resize of the rest.
    return image.resize(size, Image.BILINEAR, reducing_gap=2.0)


# 16-bit value -> nearest 8-bit value (v / 257, rounded): a lookup is faster than arithmetic
# on a big image and allocates nothing wider than the result.
_SIXTEEN_TO_EIGHT = ((np.arange(65536, dtype=np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, scaling high-depth greyscale (16-bit PNG: ``I;16*``, or ``I``/``F`` holding its
    values) instead of clipping it to white as ``convert("RGB")`` does."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image)
        if values.dtype != np.uint16:
            values = np.clip(values, 0, 65535).astype(np.uint16)
        return Image.fromarray(_SIXTEEN_TO_EIGHT[values], mode="L").convert("RGB")
    return image.convert("RGB")


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # malformed EXIF is common in the wild; ignore it rather than refuse the image
        return 1


def _check_min_size(width: int, height: int, limits: ImageLimits) -> None:
    if width < limits.min_side or height < limits.min_side:
        raise InvalidParameterError(
            f"Image is {width}x{height}; the minimum is {limits.min_side}x{limits.min_side} pixels"
        )


def load(source: ImageInput, limits: ImageLimits | None = None) -> DecodedImage:
    """Accept bytes, a path, an RGB array or a PIL image; always return validated RGB pixels.

    Paths are read with the same byte limit as inline bytes, so the CLI and the API refuse the same
    images. Arrays must be (H, W, 3) uint8 RGB (grayscale (H, W) is widened).
    """
    limits = limits or ImageLimits.from_env()
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode(source, limits)
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InvalidParameterError(f"Cannot read image file {path}: {exc.strerror}") from exc
        if size > limits.max_bytes:
            raise ImageTooLargeError(
                f"{path} is {size} bytes; the limit for image bytes is {limits.max_bytes}"
            )
        return decode(path.read_bytes(), limits)
    if isinstance(source, Image.Image):
        if source.width * source.height > limits.max_pixels:
            raise ImageTooLargeError(f"Image has {source.width * source.height} pixels")
        arr = np.asarray(source.convert("RGB"), dtype=np.uint8)
        _check_min_size(arr.shape[1], arr.shape[0], limits)
        return DecodedImage(np.ascontiguousarray(arr), "ARRAY", 1)
    if isinstance(source, np.ndarray):
        return DecodedImage(_validate_array(source, limits), "ARRAY", 1)
    raise InvalidParameterError(f"Unsupported image input type {type(source).__name__}")


def _validate_array(arr: np.ndarray, limits: ImageLimits) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InvalidParameterError(f"Image array must be (H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InvalidParameterError(f"Image array must be uint8, got {arr.dtype}")
    arr = arr[:, :, :3]
    if arr.shape[0] * arr.shape[1] > limits.max_pixels:
        raise ImageTooLargeError(f"Image has {arr.shape[0] * arr.shape[1]} pixels")
    _check_min_size(arr.shape[1], arr.shape[0], limits)
    return np.ascontiguousarray(arr)
