"""Shared by the benchmark scripts: data location, per-image tasks, embedding caches."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from regard.analysis import Engine, Face
from regard.batch import map_images
from regard.datasets import data_root

OUT = Path(__file__).resolve().parent / "out"


def require_data() -> Path:
    root = data_root()
    if root is None:
        sys.exit("No evaluation data: set REGARD_DATA to the dev data folder (see README)")
    return root


def central_face(faces: list[Face], width: int, height: int) -> Face | None:
    """The face an identity-labelled crop is about: nearest the image centre, ties to the larger.

    LFW and UTKFace images are centred on their subject; other people may appear at the edges.
    """
    if not faces:
        return None
    cx, cy = width / 2, height / 2

    def key(f: Face) -> tuple[float, float]:
        fx, fy = (f.left + f.right) / 2, (f.top + f.bottom) / 2
        return ((fx - cx) ** 2 + (fy - cy) ** 2) / max(f.size, 1) ** 2, -f.area

    return min(faces, key=key)


def central_embedding_task(engine: Engine, path: Path) -> np.ndarray | None:
    result = engine.detect(path, embed=True)
    face = central_face(result.faces, result.width, result.height)
    return None if face is None else face.embedding


def embed_images(paths: list[Path], cache_name: str, engine_kwargs: dict | None = None,
                 workers: int = 2, refresh: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (N,128) with NaN rows where no face was found, found mask), cached in bench/out."""
    OUT.mkdir(exist_ok=True)
    cache = OUT / f"{cache_name}.npz"
    keys = np.array([str(p) for p in paths])
    if cache.exists() and not refresh:
        data = np.load(cache, allow_pickle=False)
        if data["keys"].shape == keys.shape and (data["keys"] == keys).all():
            return data["emb"], data["found"]
    emb = np.full((len(paths), 128), np.nan, dtype=np.float32)
    t0 = time.perf_counter()
    for i, vec in enumerate(map_images(central_embedding_task, paths, workers=workers,
                                       engine_kwargs=engine_kwargs or {}, chunksize=8)):
        if isinstance(vec, np.ndarray):
            emb[i] = vec
    found = ~np.isnan(emb[:, 0])
    np.savez(cache, keys=keys, emb=emb, found=found)
    print(f"embedded {len(paths)} images ({found.sum()} with a face) in "
          f"{time.perf_counter() - t0:.1f} s -> {cache}", file=sys.stderr)
    return emb, found
