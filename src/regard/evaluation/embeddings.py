"""Run the Engine over every image an evaluation needs, on all cores, with an on-disk cache.

Why here: an evaluation embeds thousands of images and detects faces in hundreds of crowd photos;
that is minutes of CPU, while every figure computed from the results takes seconds. So the model
work is done once, in one process pool (``regard.batch.map_images``: one Engine per worker), and
the per-image results are cached in ``--cache DIR`` as ``.npz`` files keyed by each image's
resolved path, size and modification time (a changed file is recomputed) and named by the models
that made them (a different detector or model version never reads another's cache). A rerun of
``regard eval`` on the same data then only recomputes the statistics.

What is computed per image:
- ``embed``: the 128-d embedding of its *central* face (``central_face``: identity-labelled
  crops such as LFW and UTKFace are centred on their subject; bystanders may appear at the edges),
  NaN when no face is found, and how many faces were found;
- ``detect``: every box ``Engine.detect`` returns (what DetectFaces returns: at most the 100
  largest faces).
A file that cannot be read or decoded is recorded with its error and counted as "failed" by the
evaluations, never fatal.

The cache holds biometric templates of the evaluated people: keep it out of the repository and
delete it with the data.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from regard.analysis import Engine, Face
from regard.batch import default_workers, map_images
from regard.errors import RegardError
from regard.vision.packs import default_pack, get_pack

EMBED = "embed"
DETECT = "detect"


def central_face(faces: list[Face], width: int, height: int) -> Face | None:
    """The face an identity-labelled crop is about: nearest the image centre (relative to the
    face's size), ties to the larger. (Moved here from ``bench/_common.py``.)"""
    if not faces:
        return None
    cx, cy = width / 2, height / 2

    def key(f: Face) -> tuple[float, float]:
        fx, fy = (f.left + f.right) / 2, (f.top + f.bottom) / 2
        return ((fx - cx) ** 2 + (fy - cy) ** 2) / max(f.size, 1) ** 2, -f.area

    return min(faces, key=key)



def central_embedding(engine: Engine, item: tuple[str, str]) -> np.ndarray | None:
    """The embedding, by the face model of version ``item[1]``, of the face the image at
    ``item[0]`` is about (``central_face``); a module-level task for ``batch.map_images``."""
    path, version = item
    found = engine.detect(path, embed=True, pack=get_pack(version))
    face = central_face(found.faces, found.width, found.height)
    return None if face is None else np.asarray(face.embedding, dtype=np.float32)

@dataclass
class ImageEmbedding:
    """The central face's embedding (None: no face or an error) and the number of faces found."""

    embedding: np.ndarray | None
    faces: int
    error: str | None = None


@dataclass
class ImageDetections:
    """Boxes (k, 4) as left, top, right, bottom pixels, with confidences (k,)."""

    boxes: np.ndarray
    confidences: np.ndarray
    error: str | None = None


# -- per-image tasks (module level: they are pickled to the workers) -------------------------------
def _error_text(exc: Exception) -> str:
    if isinstance(exc, RegardError):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def embed_task(engine: Engine, path: str) -> ImageEmbedding:
    try:
        result = engine.detect(path, embed=True)
    except (RegardError, OSError) as exc:
        return ImageEmbedding(None, 0, _error_text(exc))
    face = central_face(result.faces, result.width, result.height)
    vector = None if face is None else np.asarray(face.embedding, dtype=np.float32)
    return ImageEmbedding(vector, len(result.faces))


def detect_task(engine: Engine, path: str) -> ImageDetections:
    try:
        faces = engine.detect(path).faces
    except (RegardError, OSError) as exc:
        return ImageDetections(np.zeros((0, 4)), np.zeros(0), _error_text(exc))
    boxes = np.array([(f.left, f.top, f.right, f.bottom) for f in faces], dtype=np.float64)
    return ImageDetections(boxes.reshape(-1, 4),
                           np.array([f.confidence for f in faces], dtype=np.float64))


def _task(engine: Engine, item: tuple[str, str]) -> ImageEmbedding | ImageDetections:
    kind, path = item
    return embed_task(engine, path) if kind == EMBED else detect_task(engine, path)


# -- the cache -----------------------------------------------------------------------------------------
def file_key(path: Path) -> str:
    """``resolved path|size|mtime_ns``: a changed or replaced file gets a new key."""
    resolved = Path(path).resolve()
    try:
        st = resolved.stat()
    except OSError:
        return f"{resolved}|missing"
    return f"{resolved}|{st.st_size}|{st.st_mtime_ns}"


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_embeddings(path: Path) -> dict[str, ImageEmbedding]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as d:
        keys, emb, faces, errors = d["keys"], d["emb"], d["faces"], d["errors"]
    return {str(k): ImageEmbedding(None if np.isnan(e[0]) else e.astype(np.float32), int(n),
                                   str(err) or None)
            for k, e, n, err in zip(keys, emb, faces, errors)}


def _size(entries: Iterable[ImageEmbedding]) -> int:
    """The embeddings' size (the default pack's when there is none to tell)."""
    for entry in entries:
        if entry.embedding is not None:
            return len(entry.embedding)
    return default_pack().embedding_size


def save_embeddings(path: Path, entries: dict[str, ImageEmbedding]) -> None:
    keys = sorted(entries)
    emb = np.full((len(keys), _size(entries.values())), np.nan, dtype=np.float32)
    for i, k in enumerate(keys):
        if entries[k].embedding is not None:
            emb[i] = entries[k].embedding
    _atomic_savez(path, keys=np.array(keys, dtype=str), emb=emb,
                  faces=np.array([entries[k].faces for k in keys], dtype=np.int64),
                  errors=np.array([entries[k].error or "" for k in keys], dtype=str))


def load_detections(path: Path) -> dict[str, ImageDetections]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as d:
        keys, offsets, boxes, conf, errors = (d["keys"], d["offsets"], d["boxes"], d["conf"],
                                              d["errors"])
    return {str(k): ImageDetections(boxes[a:b].copy(), conf[a:b].copy(), str(err) or None)
            for k, a, b, err in zip(keys, offsets[:-1], offsets[1:], errors)}


def save_detections(path: Path, entries: dict[str, ImageDetections]) -> None:
    keys = sorted(entries)
    counts = [len(entries[k].boxes) for k in keys]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    boxes = (np.concatenate([entries[k].boxes for k in keys]) if keys else np.zeros((0, 4)))
    conf = (np.concatenate([entries[k].confidences for k in keys]) if keys else np.zeros(0))
    _atomic_savez(path, keys=np.array(keys, dtype=str), offsets=offsets,
                  boxes=boxes.reshape(-1, 4).astype(np.float64), conf=conf.astype(np.float64),
                  errors=np.array([entries[k].error or "" for k in keys], dtype=str))


def cache_names(detector: str, embedder: str, model_version: str, max_faces: int
                ) -> dict[str, str]:
    """Cache file names per kind of result, naming everything that changes the results."""
    safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "_" for c in s)  # noqa: E731
    return {
        EMBED: f"embeddings-{safe(detector)}-{safe(embedder)}-v{safe(model_version)}.npz",
        DETECT: f"detections-{safe(detector)}-max{max_faces}.npz",
    }


# -- running ---------------------------------------------------------------------------------------------
@dataclass
class Analysed:
    """Per-image results by path."""

    embeddings: dict[Path, ImageEmbedding]
    detections: dict[Path, ImageDetections]
    computed: int  # images run through the models this time (the rest came from the cache)


def analyse_images(
    embed_paths: Sequence[Path],
    detect_paths: Sequence[Path],
    *,
    engine_kwargs: dict[str, Any] | None = None,
    workers: int | None = None,
    cache_dir: Path | None = None,
    cache_files: dict[str, str] | None = None,
    on_result: Callable[[str], None] | None = None,
) -> Analysed:
    """Embed ``embed_paths`` and detect in ``detect_paths``, in one process pool, reading and
    updating the cache. ``on_result(kind)`` is called once per image (cached ones first)."""
    engine_kwargs = engine_kwargs or {}
    files = cache_files or cache_names(engine_kwargs.get("detector") or "default",
                                       engine_kwargs.get("embedder") or "onnx", "0", 100)
    caches: dict[str, dict[str, Any]] = {EMBED: {}, DETECT: {}}
    if cache_dir is not None:
        caches[EMBED] = load_embeddings(Path(cache_dir) / files[EMBED])
        caches[DETECT] = load_detections(Path(cache_dir) / files[DETECT])

    wanted = [(EMBED, Path(p)) for p in dict.fromkeys(embed_paths)]
    wanted += [(DETECT, Path(p)) for p in dict.fromkeys(detect_paths)]
    keys = {(kind, p): file_key(p) for kind, p in wanted}
    results: dict[tuple[str, Path], Any] = {}
    todo: list[tuple[str, Path]] = []
    for kind, p in wanted:
        hit = caches[kind].get(keys[(kind, p)])
        if hit is not None:
            results[(kind, p)] = hit
            if on_result:
                on_result(kind)
        else:
            todo.append((kind, p))

    # Heavy crowd photos first: the pool then ends on the cheap crops, not on one slow image.
    todo.sort(key=lambda item: item[0] != DETECT)
    n_workers = max(1, min(workers or default_workers(), len(todo) or 1))
    items = [(kind, str(p)) for kind, p in todo]
    for (kind, p), res in zip(todo, map_images(_task, items, workers=n_workers,
                                                engine_kwargs=engine_kwargs)):
        if isinstance(res, RegardError):  # raised outside the task's own guard (model loading)
            raise res
        results[(kind, p)] = res
        caches[kind][keys[(kind, p)]] = res
        if on_result:
            on_result(kind)

    if cache_dir is not None and todo:
        kinds = {kind for kind, _ in todo}
        if EMBED in kinds:
            save_embeddings(Path(cache_dir) / files[EMBED], caches[EMBED])
        if DETECT in kinds:
            save_detections(Path(cache_dir) / files[DETECT], caches[DETECT])
    return Analysed(
        {p: results[(EMBED, p)] for kind, p in wanted if kind == EMBED},
        {p: results[(DETECT, p)] for kind, p in wanted if kind == DETECT},
        len(todo),
    )


def embedding_matrix(paths: Sequence[Path], embeddings: dict[Path, ImageEmbedding]
                     ) -> np.ndarray:
    """(N, d) float32 in ``paths`` order, NaN rows where there is no embedding."""
    out = np.full((len(paths), _size(embeddings[p] for p in paths)), np.nan, dtype=np.float32)
    for i, p in enumerate(paths):
        e = embeddings[p].embedding
        if e is not None:
            out[i] = e
    return out
