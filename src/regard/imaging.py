"""Safe image decoding: the only place where untrusted bytes become pixels.

Every refusal is a typed error that maps to Rekognition's (see ``errors.py``). Limits come from the
environment so that an operator can tighten them without code:

- ``REGARD_MAX_IMAGE_BYTES`` (default 5 MiB, Rekognition's limit for inline bytes);
- ``REGARD_MAX_IMAGE_PIXELS`` (default 40 megapixels; checked from the header, before decoding,
  so a decompression bomb never allocates its pixels);
- minimum 80x80 pixels after EXIF rotation (Rekognition's rule).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from regard.errors import ImageTooLargeError, InvalidImageFormatError, InvalidParameterError

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
MIN_SIDE = 80
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})


@dataclass(frozen=True)
class ImageLimits:
    """Byte and pixel limits; ``from_env`` reads the ``REGARD_*`` overrides."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = MIN_SIDE

    @classmethod
    def from_env(cls) -> "ImageLimits":
        return cls(
            max_bytes=_env_int("REGARD_MAX_IMAGE_BYTES", DEFAULT_MAX_BYTES),
            max_pixels=_env_int("REGARD_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS),
        )


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidParameterError(f"{name} must be an integer, got {raw!r}") from exc
    if value <= 0:
        raise InvalidParameterError(f"{name} must be positive, got {value}")
    return value


@dataclass(frozen=True)
class DecodedImage:
    """RGB pixels (H, W, 3) uint8, upright (EXIF orientation applied), plus where they came from."""

    pixels: np.ndarray
    format: str
    exif_orientation: int

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
    try:
        with warnings.catch_warnings():
            # Pillow warns (and past 2x errors) on big images; our own pixel check runs first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or ""
            if fmt not in SUPPORTED_FORMATS:
                raise InvalidImageFormatError(
                    f"Unsupported image format {fmt or 'unknown'}; use JPEG, PNG or WebP"
                )
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageTooLargeError(
                    f"Image is {width}x{height} = {width * height} pixels; "
                    f"the limit is {limits.max_pixels}"
                )
            orientation = _exif_orientation(image)
            image.load()  # full decode: truncated or corrupt data fails here
            upright = ImageOps.exif_transpose(image) if orientation not in (0, 1) else image
            rgb = upright.convert("RGB")
    except (ImageTooLargeError, InvalidImageFormatError):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"Image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageFormatError(
            "Image bytes are not a recognized image (JPEG, PNG or WebP)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageFormatError(f"Image bytes could not be decoded: {exc}") from exc
    pixels = np.asarray(rgb, dtype=np.uint8)
    _check_min_size(pixels.shape[1], pixels.shape[0], limits)
    return DecodedImage(pixels=np.ascontiguousarray(pixels), format=fmt, exif_orientation=orientation)


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
