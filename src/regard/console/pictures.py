"""Uploaded photos shown back on the page that answers them, with their faces boxed.

Regard stores no photos, so the console cannot show a face it indexed; what it can show is the
picture just uploaded, in the answer to that upload. It is decoded as the analysis decodes it
(``imaging.decode``: the same limits, EXIF orientation applied, so Rekognition's box ratios fit
it), reduced to at most ``MAX_SIDE`` pixels, re-encoded as a JPEG without metadata and embedded
as a ``data:`` URI: nothing is written anywhere, and the page is not cached (``no-store``)."""

from __future__ import annotations

import base64
import io
import secrets
from dataclasses import dataclass

from PIL import Image

from regard.imaging import ImageLimits, decode

MAX_SIDE = 960


@dataclass(frozen=True)
class Picture:
    id: str  # for aria-labelledby
    uri: str
    width: int
    height: int


def picture_of(data: bytes, limits: ImageLimits | None = None) -> Picture:
    image = Image.fromarray(decode(data, limits).pixels)
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=82)
    return Picture(secrets.token_hex(4),
                   "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode(),
                   image.width, image.height)
