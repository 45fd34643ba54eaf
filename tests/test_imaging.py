"""Safe decoding: every refusal is a typed Rekognition error, never a crash or a hang."""

from __future__ import annotations

import io
import time
import zlib
import struct

import numpy as np
import pytest
from PIL import Image

from regard import imaging
from regard.errors import ImageTooLargeError, InvalidImageFormatError, InvalidParameterError
from regard.imaging import ImageLimits

from conftest import encode
from crafted_images import png16


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decodes_supported_formats(astronaut, fmt):
    img = imaging.decode(encode(astronaut, fmt))
    assert img.pixels.shape == astronaut.shape and img.pixels.dtype == np.uint8
    assert img.format == fmt


def test_exif_orientation_is_applied(astronaut):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer must turn it 90 degrees clockwise
    raw = np.ascontiguousarray(astronaut[:, :400])  # non-square so the turn is visible
    img = imaging.decode(encode(raw, "JPEG", exif=exif.tobytes()))
    assert img.exif_orientation == 6
    assert img.pixels.shape[:2] == (400, 512)
    expected = np.rot90(raw, k=-1)  # 90 degrees clockwise
    assert np.abs(img.pixels.astype(int) - expected.astype(int)).mean() < 8


def test_byte_limit(astronaut):
    noise = np.random.default_rng(0).integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
    big = encode(noise, "PNG")
    assert len(big) > 5 * 1024 * 1024  # a 6 MB image
    with pytest.raises(ImageTooLargeError) as info:
        imaging.decode(big)
    assert info.value.code == "ImageTooLargeException"
    assert imaging.decode(big, ImageLimits(max_bytes=10 * 1024 * 1024,
                                           max_analysis_pixels=1500 * 1500)).width == 1500


def test_byte_limit_from_environment(astronaut, monkeypatch):
    data = encode(astronaut)
    monkeypatch.setenv("REGARD_MAX_IMAGE_BYTES", str(len(data) - 1))
    with pytest.raises(ImageTooLargeError):
        imaging.load(data)


def _png_bomb(width: int, height: int) -> bytes:
    """A valid grayscale PNG of width x height zeros: a few KB on disk, width*height in memory."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    row = b"\x00" + b"\x00" * width
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.slow
@pytest.mark.parametrize("side", [(30_000, 30_000), (8_000, 6_000)])
def test_png_bomb_is_refused_before_decoding(side):
    bomb = _png_bomb(*side)  # 900 and 48 megapixels (Pillow's own guard stops only the first)
    assert len(bomb) < 2 * 1024 * 1024
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError):
        imaging.decode(bomb)
    assert time.perf_counter() - start < 2.0  # refused from the header, not after inflating


def test_truncated_bytes(astronaut):
    data = encode(astronaut)
    with pytest.raises(InvalidImageFormatError):
        imaging.decode(data[: len(data) // 2])


@pytest.mark.parametrize("payload", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
                                     b"\xff\xd8\xff" + b"\x00" * 100])
def test_garbage_is_invalid_format(payload):
    with pytest.raises(InvalidImageFormatError) as info:
        imaging.decode(payload)
    assert info.value.to_dict()["__type"] == "InvalidImageFormatException"


def test_unsupported_format(astronaut):
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, format="GIF")
    with pytest.raises(InvalidImageFormatError, match="GIF"):
        imaging.decode(buf.getvalue())


def test_empty_bytes():
    with pytest.raises(InvalidParameterError):
        imaging.decode(b"")


@pytest.mark.parametrize("shape", [(79, 200), (200, 79), (40, 40)])
def test_below_80_pixels(astronaut, shape):
    small = np.ascontiguousarray(astronaut[: shape[0], : shape[1]])
    with pytest.raises(InvalidParameterError, match="80x80"):
        imaging.decode(encode(small, "PNG"))
    with pytest.raises(InvalidParameterError):
        imaging.load(small)


def test_exactly_80_pixels_is_accepted(astronaut):
    assert imaging.decode(encode(np.ascontiguousarray(astronaut[:80, :80]), "PNG")).width == 80


def test_arrays_and_paths(astronaut, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(encode(astronaut, "PNG"))
    assert np.array_equal(imaging.load(path).pixels, astronaut)
    assert imaging.load(astronaut[:, :, 0]).pixels.shape == (512, 512, 3)
    with pytest.raises(InvalidParameterError):
        imaging.load(astronaut.astype(np.float32))
    with pytest.raises(InvalidParameterError):
        imaging.load(tmp_path / "missing.jpg")
    with pytest.raises(InvalidParameterError):
        imaging.load(12345)  # type: ignore[arg-type]


def test_16_bit_greyscale_png_is_scaled_not_clipped(astronaut, engine):
    grey = np.asarray(Image.fromarray(astronaut).convert("L"), dtype=np.uint16)
    decoded = imaging.decode(png16(grey * 257))  # the same picture at 16 bits
    assert decoded.pixels.shape == (512, 512, 3)
    assert np.abs(decoded.pixels[..., 0].astype(int) - grey.astype(int)).max() <= 1
    # and the face is found (it was 0 faces, no error, when the image was read as white)
    assert len(engine.detect(png16(grey * 257)).faces) == 1


def test_large_images_are_analysed_on_a_reduced_copy(astronaut, engine):
    big = np.asarray(Image.fromarray(astronaut).resize((3072, 3072), Image.BILINEAR))
    for fmt in ("JPEG", "PNG"):
        exif = Image.Exif()
        exif[0x0112] = 6
        data = encode(big[:, :2048], fmt, exif=exif.tobytes())
        decoded = imaging.decode(data, ImageLimits(max_bytes=50 * 1024 * 1024))
        h, w = decoded.pixels.shape[:2]
        assert w * h <= imaging.DEFAULT_MAX_ANALYSIS_PIXELS
        assert w / h == pytest.approx(3072 / 2048, rel=0.01)  # the EXIF turn still applies
        assert decoded.scale == pytest.approx(3072 / max(h, w), rel=0.01)
    canvas = np.full((3000, 3000, 3), 128, np.uint8)  # 9 megapixels, the astronaut at 1000,500
    canvas[500:1012, 1000:1512] = astronaut
    faces = engine.detect(encode(canvas, "JPEG")).faces
    assert len(faces) == 1 and faces[0].image_width == 1440  # found on the reduced copy
    (face,) = engine.detect(astronaut).faces
    box = face.bounding_box()
    assert faces[0].bounding_box() == pytest.approx({  # the same place, in ratios of the canvas
        "Left": (1000 + box["Left"] * 512) / 3000, "Top": (500 + box["Top"] * 512) / 3000,
        "Width": box["Width"] * 512 / 3000, "Height": box["Height"] * 512 / 3000}, abs=0.005)


def test_truncated_large_jpeg_is_refused(astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((4000, 4000)))
    data = encode(big, "JPEG")
    with pytest.raises(InvalidImageFormatError, match="truncated"):
        imaging.decode(data[: len(data) // 2], ImageLimits(max_bytes=50 * 1024 * 1024))
