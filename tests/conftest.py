"""Shared fixtures: images that PyPI packages carry (scikit-image's astronaut and cameraman) and
compositions of them; the research data only through ``data_root`` (tests skip without it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from regard import Engine
from regard.datasets import data_root


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def cameraman() -> np.ndarray:
    """A different person (grayscale, widened to RGB)."""
    return np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))


@pytest.fixture(scope="session")
def engine() -> Engine:
    return Engine()


@pytest.fixture(scope="session")
def dev_data() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("research data not present (set REGARD_DATA)")
    return root


def encode(rgb: np.ndarray, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def face_crop(rgb: np.ndarray) -> np.ndarray:
    """The astronaut's head and shoulders (a face with some margin)."""
    return rgb[20:260, 140:310]


def paste_faces(face: np.ndarray, sizes: list[int], canvas: tuple[int, int] = (900, 1400)
                ) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Several copies of ``face`` at the given heights on a grey canvas, left to right.

    Returns the image and (x, y, height) of each copy."""
    out = np.full((*canvas, 3), 128, dtype=np.uint8)
    x, placed = 10, []
    for h in sizes:
        w = round(face.shape[1] * h / face.shape[0])
        tile = np.asarray(Image.fromarray(face).resize((w, h), Image.BILINEAR))
        y = (canvas[0] - h) // 2
        out[y:y + h, x:x + w] = tile
        placed.append((x, y, h))
        x += w + 20
    return out, placed


def fail_appends(monkeypatch: pytest.MonkeyPatch, operation: str) -> None:
    """Make the audit ledger refuse the success entry of ``operation`` (a full disk, a lost
    database), after the operation's own writes have run."""
    from regard.governance.ledger import Ledger

    original = Ledger.append

    def append(self: Ledger, **kw: object) -> object:
        if kw["operation"] == operation and "Error" not in (kw.get("result") or {}):
            raise OSError("disk full")
        return original(self, **kw)

    monkeypatch.setattr(Ledger, "append", append)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (skips when PostgreSQL is not installed)."""
    from postgres_server import serve, unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    yield from serve()


@pytest.fixture()
def postgres_url(postgres) -> str:
    """A fresh database on the session's PostgreSQL server."""
    return postgres.new_database()
