"""Image files written by hand, byte by byte, for tests of the decoders (shared by several test
files)."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def png16(rows: np.ndarray) -> bytes:
    """A 16-bit greyscale PNG written by hand (Pillow writes 16-bit grey from mode I;16 too, but
    this keeps the test independent of what Pillow chooses to write)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    h, w = rows.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
