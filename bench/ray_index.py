"""Batch indexing on a Ray cluster against the single-process ``regard index``.

    .venv/bin/python bench/ray_index.py [--lfw N] [--wider N] [--json OUT]

Everything runs on this machine, measured side by side in one run: a PostgreSQL catalog started
here (tests/postgres_server.py), a Ray cluster on loopback (tests/ray_cluster.py: a head with no
CPU and worker nodes of one CPU each) and the ``regard`` command as an operator runs it, in a
subprocess, timed from start to exit. Each configuration indexes the same images into its own
collection of the one catalog:

- ``single process``: ``regard index --workers 1`` as a user runs it: detection, embedding and
  writes in one process, ONNX Runtime's inference on all cores (it pins its own threads, so
  ``taskset`` cannot hold it to one);
- ``one thread, no Ray``: what a Ray worker does (``regard.cluster.worker.index_chunk``: read,
  hash, skip check, one-thread engine, exactly-once write), in one plain process, chunk after
  chunk: the baseline that isolates what Ray adds;
- ``local, all cores``: ``regard index`` with its default worker processes (both cores);
- ``Ray, 1 worker node`` and ``Ray, 2 worker nodes``: ``regard index --ray ADDRESS``.

Each is run twice: on a batch of 2 images (the fixed cost: interpreter, imports, models, the
cluster's connection and its workers' start) and on the whole set; the steady rate is
(N - 2) / (T_N - T_2). Ray's overhead per image is the steady time per image of one worker node
minus that of the same work without Ray. Two image sets from the research data: LFW (250x250, one face: the cheap case) and the
WIDER FACE validation photos (news and event photos up to 1024 px wide, up to hundreds of faces:
a newsroom archive). Then the catalog's write ceiling for one collection: several processes
write already-detected faces as fast as the exactly-once path lets them (PostgreSQL with fsync
on), which bounds a cluster of any size.

Read the 2-worker figure on this 2-core machine with care: the two worker nodes, the driver,
PostgreSQL and the Ray head share the same two cores, so it is a floor for what two machines do.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))
from _common import OUT, print_table, require_data, write_json  # noqa: E402
from postgres_server import serve as serve_postgres  # noqa: E402
from ray_cluster import LocalRayCluster  # noqa: E402

REGARD = [sys.executable, "-m", "regard.cli"]
KEY_HEX = "5b" * 32
PER_DAY = 10_000_000


def pick(folder: Path, count: int) -> list[Path]:
    found = sorted(p for p in folder.rglob("*.jpg"))
    step = max(1, len(found) // count) if count else 1
    return found[::step][:count]


def stage(images: list[Path], target: Path) -> Path:
    """The images as links in one folder (names made unique)."""
    target.mkdir(parents=True)
    for i, path in enumerate(images):
        (target / f"{i:05d}-{path.name}").symlink_to(path)
    return target


def run(env: dict[str, str], *args: str, command: tuple[str, ...] = tuple(REGARD)
        ) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([*command, *args], env={**os.environ, **env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"regard {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return seconds, done.stderr


def faces_added(output: str) -> int:
    for line in output.splitlines():
        if "face(s) added" in line:
            return int(line.split("indexed:")[1].split("face(s)")[0])
    return -1


IN_PROCESS = (sys.executable, __file__, "--in-process")


def measure(env: dict[str, str], name: str, small: Path, full: Path, count: int,
            extra: list[str], collection: str, command: tuple[str, ...] = tuple(REGARD)
            ) -> dict[str, object]:
    for suffix in ("-small", ""):
        run(env, "collections", "create", collection + suffix, "--purpose", "benchmark")
    t_small, _ = run(env, "index", collection + "-small", str(small), "--quality-filter", "NONE",
                     *extra, command=command)
    t_full, output = run(env, "index", collection, str(full), "--quality-filter", "NONE",
                         *extra, command=command)
    steady = (count - 2) / max(1e-6, t_full - t_small)
    return {"config": name, "images": count, "seconds": t_full, "startup_s": t_small,
            "images_per_s": count / t_full, "steady_per_s": steady,
            "faces": faces_added(output)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lfw", type=int, default=300, help="LFW images (0: none)")
    parser.add_argument("--wider", type=int, default=132, help="WIDER FACE photos (0: none)")
    parser.add_argument("--writers", default="1,4",
                        help="processes writing at once for the write ceiling (a list: 1,4)")
    parser.add_argument("--write-seconds", type=float, default=10.0)
    parser.add_argument("--writes-only", action="store_true",
                        help="only the catalog's write ceiling (no indexing runs, no Ray)")
    parser.add_argument("--database-url", default=None,
                        help="measure this catalog (a scratch PostgreSQL database: benchmark "
                             "collections are created in it) instead of starting one here; "
                             "REGARD_LEDGER_KEY must be its ledger's key")
    parser.add_argument("--json", default=str(OUT / "ray_index.json"))
    args = parser.parse_args()
    writers = [int(w) for w in args.writers.split(",")]
    root = require_data()
    sets = [(name, pick(root / folder, n)) for name, folder, n in (
        ("LFW", "verification/lfw/images", args.lfw),
        ("WIDER FACE", "detection/wider_face_val/images", args.wider)) if n]
    work = Path(tempfile.mkdtemp(prefix="regard-bench-ray-"))
    results: list[dict[str, object]] = []
    pg = None if args.database_url else serve_postgres(fsync=True)  # durable commits
    cluster: LocalRayCluster | None = None
    try:
        url = args.database_url or next(pg).new_database()  # type: ignore[arg-type]
        env = {"REGARD_DATABASE_URL": url,
               "REGARD_LEDGER_KEY": os.environ.get("REGARD_LEDGER_KEY", KEY_HEX),
               "REGARD_HOME": str(work / "home"), "OMP_NUM_THREADS": "1"}
        staged = []
        for i, (name, images) in enumerate(sets):
            full = stage(images, work / f"set{i}")
            small = stage(images[:2], work / f"set{i}-small")
            staged.append((name, small, full, len(images)))
        print(f"{', '.join(f'{n}: {c} images' for n, _, _, c in staged)}; PostgreSQL catalog; "
              f"{os.cpu_count()} cores", file=sys.stderr)
        local = [("single process", ["--workers", "1"], tuple(REGARD)),
                 ("one thread, no Ray", [], IN_PROCESS),
                 ("local, all cores", [], tuple(REGARD))]
        for name, small, full, count in [] if args.writes_only else staged:
            for label, extra, command in local:
                results.append({"set": name, **measure(env, label, small, full, count, extra,
                                                       f"c{len(results)}", command)})
        if not args.writes_only:
            cluster = LocalRayCluster(env, workers=1)
        for nodes in () if args.writes_only else (1, 2):
            if nodes == 2:
                cluster.add_worker()  # type: ignore[union-attr]
            for name, small, full, count in staged:
                label = f"Ray, {nodes} worker node{'s' if nodes > 1 else ''}"
                results.append({"set": name, **measure(
                    env, label, small, full, count, ["--ray", cluster.address],  # type: ignore
                    f"c{len(results)}")})
        ceiling = [c for n in writers
                   for c in write_ceiling(env, staged, n, args.write_seconds)]
    finally:
        if cluster is not None:
            cluster.shutdown()
        if pg is not None:
            pg.close()
        shutil.rmtree(work, ignore_errors=True)

    print_table(["set", "faces/image", "writers", "images/s written", "faces/s written"],
                [[c["set"], c["faces_per_image"], c["writers"], c["images_per_s"],
                  c["faces_per_s"]] for c in ceiling], 1)
    if args.writes_only:
        write_json(args.json, {"write_ceiling": ceiling, "cores": os.cpu_count()})
        return
    print()
    rows = []
    for r in results:
        def of(config: str) -> dict[str, object]:
            return next(b for b in results if b["set"] == r["set"] and b["config"] == config)

        base, bare = of("single process"), of("one thread, no Ray")
        overhead_ms = 1000 * (1 / r["steady_per_s"] - 1 / bare["steady_per_s"])  # type: ignore
        r["x_single"] = r["steady_per_s"] / base["steady_per_s"]  # type: ignore[operator]
        r["overhead_ms_per_image"] = overhead_ms if r["config"] == "Ray, 1 worker node" else None
        rows.append([r["set"], r["config"], r["images"], r["faces"], r["seconds"],
                     r["startup_s"], r["images_per_s"], r["steady_per_s"], r["x_single"],
                     r["overhead_ms_per_image"]])
    print_table(["set", "configuration", "images", "faces", "total s", "startup s",
                 "images/s", "steady images/s", "x single", "Ray overhead ms/image"], rows, 2)
    print()
    need = PER_DAY / 86400
    for name, *_ in staged:
        one = next(r for r in results if r["set"] == name and r["config"] == "Ray, 1 worker node")
        rate = float(one["steady_per_s"])  # type: ignore[arg-type]
        cpus = need / rate
        cap = max(c["images_per_s"] for c in ceiling if c["set"] == name)
        print(f"{name}: one Ray worker CPU indexes {rate:.1f} images/s, {rate * 86400:,.0f} a "
              f"day; 10 million a day ({need:.0f} images/s) needs {cpus:.0f} worker CPUs "
              f"({cpus / 16:.1f} nodes of 16); one collection's writes here top out at "
              f"{cap:.0f} images/s ({need / cap:.2f} of it)")
    write_json(args.json, {"results": results, "write_ceiling": ceiling,
                           "cores": os.cpu_count()})


def write_ceiling(env: dict[str, str], staged: list, writers: int,
                  seconds: float) -> list[dict[str, object]]:
    """How fast the catalog takes a batch's writes into one collection, detection aside:
    ``writers`` processes each index the faces of one image of the set (detected once, with its
    median face count) under new hashes for ``seconds``, through the workers' exactly-once
    path (the collection's row lock, one ledger entry per image)."""
    out = []
    for i, (name, _, full, _) in enumerate(staged):
        collection = f"ceiling{i}-{writers}-{secrets.token_hex(3)}"
        run(env, "collections", "create", collection, "--purpose", "benchmark")
        start_at = time.time() + 20  # after every writer's models and detections: together
        procs = [subprocess.Popen([sys.executable, __file__, "--write-ceiling", collection,
                                   str(full), str(seconds), str(start_at)],
                                  env={**os.environ, **env},
                                  stdout=subprocess.PIPE, text=True) for _ in range(writers)]
        answers = [p.communicate(timeout=seconds * 10 + 120)[0].split() for p in procs]
        images = sum(int(a[0]) for a in answers)
        faces_each = int(answers[0][1])
        out.append({"set": name, "writers": writers, "faces_per_image": faces_each,
                    "images_per_s": images / seconds, "faces_per_s": images * faces_each / seconds})
    return out


def write_loop(collection: str, folder: str, seconds: float, start_at: float) -> None:
    """One writer of ``write_ceiling``: prints images written and faces per image."""
    from regard.cli.common import local_context
    from regard.cluster import worker

    svc = worker.service()
    found = []
    for path in sorted(Path(folder).iterdir())[:15]:
        detected = svc.engine.detect(path.read_bytes(), embed=True)
        found.append(detected)
    found.sort(key=lambda d: len(d.faces))
    detected = found[len(found) // 2]  # the median image
    context = local_context("benchmark")
    time.sleep(max(0.0, start_at - time.time()))
    written, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        svc.index_detected_faces(detected, secrets.token_hex(32), context, once=True,
                                 CollectionId=collection, QualityFilter="NONE")
        written += 1
    print(written, len(detected.faces))


def in_process(collection: str, folder: str) -> None:
    """A Ray worker's work in this process, without Ray: the same batch job row, the same
    ``index_chunk`` on chunks of 8 (``--in-process COLLECTION FOLDER``, run by ``main``)."""
    from regard.cli.collection_commands import find_images
    from regard.cli.common import local_context
    from regard.cluster import INDEX_BATCH, worker
    from regard.cluster.batch import BatchJob, Tally
    from regard.jobs.store import JobStore

    refs = [str(p) for p in find_images([Path(folder)])]
    svc = worker.service()
    batch = BatchJob(JobStore(svc.store.database), INDEX_BATCH, local_context("benchmark"),
                     {"CollectionId": collection, "QualityFilter": "NONE"}, lease_seconds=60)
    batch.start()
    tally = Tally(total=len(refs))
    for start in range(0, len(refs), 8):
        for outcome in worker.index_chunk(batch.job_id, [(r, Path(r).name)
                                                         for r in refs[start:start + 8]]):
            tally.add(outcome)
    batch.finish(tally)
    print(f"{tally.done} image(s) indexed: {tally.faces} face(s) added", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--in-process"]:  # index COLLECTION FOLDER --quality-filter NONE
        in_process(sys.argv[3], sys.argv[4])
    elif sys.argv[1:2] == ["--write-ceiling"]:  # COLLECTION FOLDER SECONDS
        write_loop(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
