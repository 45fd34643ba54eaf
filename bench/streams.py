"""Live stream processors: frame-to-record latency and analysed frame rate, one to four at once.

    .venv/bin/python bench/streams.py [--seconds S] [--max-processors N] [--json OUT]

The source is a camera stand-in: a 1280x720 25 fps H.264 clip made with tests/video_clips.py
(``moving_and_scaling``: the astronaut walking and growing, the cameraman standing; cached in
bench/out/streams), played by the runtime at its own pace and looped, exactly as a processor
plays a file source. The collection holds the astronaut, indexed from the whole picture. One
Engine (its models loaded before) serves every processor, as in the server.

- One processor for ``--seconds``: frame-to-record latency (from the frame leaving the decoder
  to its record being handed to the sink) p50 / p99 over every analysed frame, analysed fps,
  frames read and dropped (decoded but replaced by a newer one before the analysis was free).
- 1, 2, ... ``--max-processors`` processors at once, each with its own source thread reading the
  same clip: analysed fps of each, and how many sustain >= 5 fps.

Targets (this 2-core machine): latency p50 <= 150 ms, p99 <= 400 ms; the number of processors
that each sustain >= 5 analysed fps.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))
from _common import OUT, print_table, ratio, write_json  # noqa: E402
from video_clips import make_clip, moving_and_scaling  # noqa: E402

from regard.analysis import Engine  # noqa: E402
from regard.service import RegardService  # noqa: E402
from regard.store import Store  # noqa: E402
from regard.streams.model import ProcessorRun, ProcessorStats  # noqa: E402
from regard.streams.runtime import run_processor  # noqa: E402

SIZE, FPS, CLIP_SECONDS = (1280, 720), 25, 8.0
TARGET_P50, TARGET_P99, TARGET_FPS = 150.0, 400.0, 5.0


def clip() -> Path:
    folder = OUT / "streams"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "walk720.mp4"
    if not path.exists():
        make_clip(path, moving_and_scaling(CLIP_SECONDS), seconds=CLIP_SECONDS, fps=FPS,
                  size=SIZE, audio=False)
    return path


def service(home: Path, engine: Engine) -> RegardService:
    from skimage import data

    from conftest import encode

    store = Store(f"sqlite:///{home / 'regard.db'}", checkpoint_dir=home / "index")
    svc = RegardService(engine, store, default_purpose="stream benchmark")
    svc.create_collection(CollectionId="people")
    svc.index_faces(CollectionId="people", Image={"Bytes": encode(data.astronaut())},
                    ExternalImageId="astronaut.jpg")
    return svc


def run_many(svc: RegardService, source: Path, count: int, seconds: float
             ) -> list[dict[str, Any]]:
    """``count`` processors at once for ``seconds``; each one's figures."""
    results: list[dict[str, Any]] = [{} for _ in range(count)]
    stop = threading.Event()

    def one(i: int) -> None:
        run = ProcessorRun(name=f"p{i}", arn=f"arn:p{i}", session_id=f"s{i}",
                           source_url=str(source), source_arn=f"arn:kv:stream/p{i}",
                           collection="people", threshold=80.0)
        stats = ProcessorStats(latency_window=100_000)
        records: list[int] = [0]
        matches: list[dict[str, float]] = []
        statuses: list[tuple[str, str | None]] = []
        began = time.monotonic()
        run_processor(run, service=svc, context=None,
                      emit=lambda r: records.__setitem__(0, records[0] + 1),
                      on_matches=lambda _r, m: matches.append(m),
                      on_status=lambda s, m: statuses.append((s, m)), stop=stop, stats=stats)
        elapsed = time.monotonic() - began
        lat = np.asarray(list(stats.latencies_ms))
        results[i] = {
            "seconds": round(elapsed, 2), "frames_read": stats.frames_read,
            "frames_analysed": stats.frames_analysed, "frames_dropped": stats.frames_dropped,
            "records": records[0], "identifications": len(matches),
            "reconnects": stats.reconnects, "statuses": statuses,
            "analysed_fps": round(stats.frames_analysed / elapsed, 2),
            "read_fps": round(stats.frames_read / elapsed, 2),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
            "latency_max_ms": round(float(lat.max()), 1) if lat.size else None}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    for r in results:
        r["process_cpu_cores"] = round(cpu, 2)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="each run's length (20)")
    ap.add_argument("--max-processors", type=int, default=4, help="concurrency up to (4)")
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    args = ap.parse_args()

    source = clip()
    engine = Engine()
    with tempfile.TemporaryDirectory() as tmp:
        svc = service(Path(tmp), engine)  # loads the detector and the embedder
        print(f"source: {source.name} {SIZE[0]}x{SIZE[1]} {FPS} fps, played at its pace, looped;"
              f" {args.seconds:g} s a run\n")

        (single,) = run_many(svc, source, 1, args.seconds)
        print("One processor")
        print_table(["figure", "value", "target", "ratio to target"], [
            ["latency p50 (ms)", single["latency_p50_ms"], TARGET_P50,
             ratio(single["latency_p50_ms"], TARGET_P50)],
            ["latency p99 (ms)", single["latency_p99_ms"], TARGET_P99,
             ratio(single["latency_p99_ms"], TARGET_P99)],
            ["latency max (ms)", single["latency_max_ms"], None, None],
            ["analysed fps", single["analysed_fps"], TARGET_FPS,
             ratio(single["analysed_fps"], TARGET_FPS)],
            ["frames read", single["frames_read"], None, None],
            ["frames analysed", single["frames_analysed"], None, None],
            ["frames dropped", single["frames_dropped"], None, None],
            ["records", single["records"], None, None],
            ["identifications", single["identifications"], None, None],
            ["process CPU (cores)", single["process_cpu_cores"], None, None]], digits=2)

        concurrent: dict[int, list[dict[str, Any]]] = {}
        rows = []
        for n in range(1, args.max_processors + 1):
            found = run_many(svc, source, n, args.seconds)
            concurrent[n] = found
            fps = [r["analysed_fps"] for r in found]
            rows.append([n, min(fps), float(np.mean(fps)), sum(fps),
                         max(r["latency_p50_ms"] or 0 for r in found),
                         max(r["latency_p99_ms"] or 0 for r in found),
                         sum(f >= TARGET_FPS for f in fps), found[0]["process_cpu_cores"]])
        print("\nConcurrent processors (analysed fps each)")
        print_table(["processors", "min fps", "mean fps", "total fps", "worst p50 ms",
                     "worst p99 ms", f">= {TARGET_FPS:g} fps", "CPU cores"], rows, digits=2)
        sustained = max((n for n, found in concurrent.items()
                         if all(r["analysed_fps"] >= TARGET_FPS for r in found)), default=0)
        print(f"\n{sustained} processor(s) at once each sustain >= {TARGET_FPS:g} analysed fps "
              f"on {SIZE[1]}p {FPS} fps")
        svc.store.close()
    write_json(args.json, {"source": {"width": SIZE[0], "height": SIZE[1], "fps": FPS},
                           "seconds": args.seconds, "single": single,
                           "concurrent": {str(n): v for n, v in concurrent.items()},
                           "sustained_at_5fps": sustained})


if __name__ == "__main__":
    main()
