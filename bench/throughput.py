"""End-to-end throughput (decode -> detect -> align -> embed every face): Regard vs face_recognition.

    .venv/bin/python bench/throughput.py [--lfw N] [--wider N] [--workers 2] [--limit N] [--json OUT]

Image sets: the first ``--lfw`` LFW dev images (default 300; sorted paths, one centred face
each, 250x250) and the first ``--wider`` WIDER FACE dev images (default all 132; crowds, many
small faces). ``--limit N`` caps both.

Modes on each set (the pooled ones run first, see ``main``):
- ``regard 1 proc``: ``Engine().embed(path)`` in this process, after a warm-up image (models loaded).
  One process with the libraries' default threading (ONNX Runtime may use several cores).
- ``regard N proc``: ``regard.batch.map_images`` over ``--workers`` processes (default 2).
- ``peer 1 proc``: ``face_recognition.load_image_file`` -> ``face_locations`` (HOG, upsample 1) ->
  ``face_encodings`` (5-point, 1 jitter) for every located face, after a warm-up image.
- ``peer N proc``: the same in a ``ProcessPoolExecutor`` of ``--workers`` processes (chunksize 1,
  as map_images).
A pool's wall time includes starting its processes and loading models in them (a pool cannot be
warmed before map_images creates it), so its start-up is measured on its own (a run over one
image per worker, minus one image's single-process time) and ``img/s steady`` = images /
(wall - start-up). Ratios are Regard / peer at the same process count. Faces/s counts the faces
each system embedded (they find different numbers of faces).

Then per-stage ms for both on the LFW set (decode, detect, landmarks + chip, pose + quality, embed).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, ratio, require_data, require_peer, write_json  # noqa: E402

from regard.analysis import Engine  # noqa: E402
from regard.batch import map_images  # noqa: E402
from regard.datasets import lfw_images, wider_images  # noqa: E402
from regard.vision.packs import default_pack  # noqa: E402
from regard.vision.quality import estimate_pose, measure_quality  # noqa: E402

CHUNKSIZE = 1  # map_images' default


@dataclass
class Timing:
    system: str  # "regard" | "peer"
    procs: int
    images: int
    faces: int
    seconds: float
    startup_s: float | None = None

    @property
    def mode(self) -> str:
        return f"{self.system} {self.procs} proc"

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.seconds

    @property
    def steady_images_per_s(self) -> float | None:
        if self.startup_s is None:
            return self.images_per_s
        return self.images / max(self.seconds - self.startup_s, 1e-9)


# -- per-image tasks (module level: they are pickled to worker processes) ------------------------
def regard_count(engine: Engine, path: Path) -> int:
    return len(engine.embed(path))


def peer_count(path: str) -> int:
    import face_recognition as fr

    img = fr.load_image_file(path)
    return len(fr.face_encodings(img, fr.face_locations(img)))


# -- modes ------------------------------------------------------------------------------------------
def time_single(system: str, count: Callable[[Path], int], paths: list[Path]) -> Timing:
    count(paths[0])  # warm-up: models loaded, caches hot
    t0 = time.perf_counter()
    faces = sum(count(p) for p in paths)
    return Timing(system, 1, len(paths), faces, time.perf_counter() - t0)


def regard_pool(paths: list[Path], workers: int) -> int:
    results = list(map_images(regard_count, paths, workers=workers, chunksize=CHUNKSIZE))
    errors = [r for r in results if not isinstance(r, int)]
    if errors:
        print(f"  regard pool: {len(errors)} images failed, first: {errors[0]!r}", file=sys.stderr)
    return sum(r for r in results if isinstance(r, int))


def peer_pool(paths: list[Path], workers: int) -> int:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(peer_count, [str(p) for p in paths], chunksize=CHUNKSIZE))


def time_pool(system: str, run: Callable[[list[Path], int], int], paths: list[Path],
              workers: int) -> Timing:
    """Wall time of a pooled run; ``startup_s`` holds the one-image-per-worker run's wall time
    until ``combine`` subtracts one image's single-process time from it."""
    t0 = time.perf_counter()
    run([paths[0]] * workers, workers)
    startup_run = time.perf_counter() - t0
    t0 = time.perf_counter()
    faces = run(paths, workers)
    return Timing(system, workers, len(paths), faces, time.perf_counter() - t0, startup_run)


def measure_pools(paths: list[Path], workers: int) -> list[Timing]:
    return [time_pool("regard", regard_pool, paths, workers),
            time_pool("peer", peer_pool, paths, workers)]


def measure_singles(paths: list[Path]) -> list[Timing]:
    engine = Engine()
    return [time_single("regard", lambda p: len(engine.embed(p)), paths),
            time_single("peer", lambda p: peer_count(str(p)), paths)]


def combine(singles: list[Timing], pools: list[Timing]) -> list[Timing]:
    """Single and pooled timings per system; pool start-up = its start-up run minus one image."""
    one_image = {t.system: t.seconds / t.images for t in singles}
    for t in pools:
        t.startup_s = max((t.startup_s or 0.0) - one_image[t.system], 0.0)
    return [t for system in ("regard", "peer") for t in singles + pools if t.system == system]


# -- per-stage timing ---------------------------------------------------------------------------
STAGES = ["decode", "detect", "landmarks", "pose+quality", "chip+embed"]


def regard_stages(engine: Engine, path: Path, acc: dict[str, float]) -> int:
    """Engine.embed's steps with the default face model, timed one by one (same calls, same
    order)."""
    embedder = engine.embedder_for(default_pack())
    t = [time.perf_counter()]
    rgb = engine.load(path)
    t.append(time.perf_counter())
    dets = sorted(engine.detector.detect(rgb), key=lambda d: d.width * d.height,
                  reverse=True)[: engine.max_faces]
    t.append(time.perf_counter())
    all_marks = [engine.aligner.landmarks(rgb, d) for d in dets]
    t.append(time.perf_counter())
    for marks, d in zip(all_marks, dets):
        estimate_pose(marks.dlib5)
        measure_quality(rgb, (d.left, d.top, d.right, d.bottom))
    t.append(time.perf_counter())
    if all_marks:
        embedder.embed_faces(rgb, all_marks)
    t.append(time.perf_counter())
    for stage, a, b in zip(STAGES, t, t[1:]):
        acc[stage] += b - a
    return len(dets)


def peer_stages(fr, path: Path, acc: dict[str, float]) -> int:  # fr: face_recognition
    """The peer's steps; its face_encodings does landmarks, chip and embedding in one call."""
    t0 = time.perf_counter()
    img = fr.load_image_file(str(path))
    t1 = time.perf_counter()
    locations = fr.face_locations(img)
    t2 = time.perf_counter()
    fr.face_encodings(img, locations)
    t3 = time.perf_counter()
    acc["decode"] += t1 - t0
    acc["detect"] += t2 - t1
    acc["landmarks+chip+embed"] += t3 - t2
    return len(locations)


def measure_stages(paths: list[Path]) -> dict[str, dict[str, float]]:
    fr = require_peer()
    engine = Engine()
    engine.embed(paths[0])
    peer_count(str(paths[0]))
    reg: dict[str, float] = dict.fromkeys(STAGES, 0.0)
    peer: dict[str, float] = {"decode": 0.0, "detect": 0.0, "landmarks+chip+embed": 0.0}
    reg_faces = sum(regard_stages(engine, p, reg) for p in paths)
    peer_faces = sum(peer_stages(fr, p, peer) for p in paths)
    n = len(paths)
    out = {"regard": {k: 1000 * v / n for k, v in reg.items()},
           "peer": {k: 1000 * v / n for k, v in peer.items()}}
    out["regard"]["chip+embed ms/face"] = 1000 * reg["chip+embed"] / max(reg_faces, 1)
    out["peer"]["landmarks+chip+embed ms/face"] = 1000 * peer["landmarks+chip+embed"] / max(
        peer_faces, 1)
    return out


# -- report -----------------------------------------------------------------------------------------
def print_set(name: str, timings: list[Timing]) -> dict:
    print(f"\n{name}: {timings[0].images} images\n")
    print_table(
        ["mode", "faces", "wall s", "start-up s", "img/s", "img/s steady", "faces/s"],
        [[t.mode, t.faces, t.seconds, t.startup_s, t.images_per_s, t.steady_images_per_s,
          t.faces_per_s] for t in timings],
        digits=2,
    )
    by_mode = {(t.system, t.procs): t for t in timings}
    ratios = {}
    for procs in sorted({t.procs for t in timings}):
        r, p = by_mode["regard", procs], by_mode["peer", procs]
        ratios[f"{procs} proc"] = {
            "images_per_s": ratio(r.images_per_s, p.images_per_s),
            "steady_images_per_s": ratio(r.steady_images_per_s, p.steady_images_per_s),
            "faces_per_s": ratio(r.faces_per_s, p.faces_per_s),
        }
    print()
    print_table(["regard / peer", "img/s", "img/s steady", "faces/s"],
                [[k, v["images_per_s"], v["steady_images_per_s"], v["faces_per_s"]]
                 for k, v in ratios.items()], digits=2)
    return {"timings": [{**vars(t), "mode": t.mode, "images_per_s": t.images_per_s,
                         "steady_images_per_s": t.steady_images_per_s,
                         "faces_per_s": t.faces_per_s} for t in timings],
            "ratios_regard_over_peer": ratios}


def print_stages(stages: dict[str, dict[str, float]], n: int) -> None:
    print(f"\nper-stage ms per image on the LFW set ({n} images, single process)\n")
    rows = [[k, v] for k, v in stages["regard"].items()] + [["total", sum(
        v for k, v in stages["regard"].items() if k in STAGES)]]
    print_table(["regard stage", "ms"], rows, digits=2)
    print()
    rows = [[k, v] for k, v in stages["peer"].items()] + [["total", sum(
        v for k, v in stages["peer"].items() if "/face" not in k)]]
    print_table(["peer stage", "ms"], rows, digits=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lfw", type=int, default=300, help="first N LFW dev images (default 300)")
    ap.add_argument("--wider", type=int, default=None, help="first N WIDER dev images (default all)")
    ap.add_argument("--limit", type=int, help="cap both sets at N images (quick runs)")
    ap.add_argument("--workers", type=int, default=2, help="processes for the pooled modes")
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    args = ap.parse_args()
    root = require_data()
    require_peer()
    caps = [n for n in (args.wider, args.limit) if n is not None]
    lfw = lfw_images(root)[: min(args.lfw, args.limit or args.lfw)]
    wider = [im.path for im in wider_images(root)][: min(caps) if caps else None]
    out: dict = {"benchmark": "throughput", "workers": args.workers}
    sets = {"LFW dev": lfw, "WIDER FACE dev": wider}
    # Pools first, while this process has not run a detector: yuface runs on OpenMP (libgomp),
    # which is not fork-safe, and map_images forks; a worker forked after the parent used yuface
    # hangs in its first detection.
    pools = {}
    for name, paths in sets.items():
        print(f"timing pools on {name} ({len(paths)} images)...", file=sys.stderr)
        pools[name] = measure_pools(paths, args.workers)
    for name, paths in sets.items():
        print(f"timing single processes on {name}...", file=sys.stderr)
        out[name] = print_set(name, combine(measure_singles(paths), pools[name]))
    stages = measure_stages(lfw)
    print_stages(stages, len(lfw))
    out["stages_ms_lfw"] = stages
    write_json(args.json, out)


if __name__ == "__main__":
    main()
