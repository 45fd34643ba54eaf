"""What the hardening review's attacks cost a ``regard serve`` process now, at full scale, on
127.0.0.0/8 only, every flood bounded in count and time.

    .venv/bin/python bench/attacks.py [--json OUT]

Needs no research data. Figures:
- memory (VmRSS, and the peak from VmHWM after ``clear_refs``) of the server under 80 concurrent
  clients each sending a 13 MB body (the largest the door accepts), anonymous and with a plausible
  signature (a real key id, a wrong secret), and 1 s after they end;
- descriptors held and ``/healthz`` latency under 5,000 idle connections from one address plus 200
  slowloris connections from another, and the log lines they caused;
- ms per image for decode + detect (in process, ``Engine.detect``) of a normal photo and of the
  images that cost 9-36 s before (a 38 KB PNG of 6300x6300 zeros, a 6000x6000 flat JPEG, the same
  truncated), with their ratio to the normal photo; and a normal DetectFaces through the server
  while 4 of the worst are in flight (it took 35 s before).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import httpx
import numpy as np
from botocore.config import Config
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from attackers import IdleFlood, ServeProcess, flood_bodies, signed_headers  # noqa: E402

from regard.analysis import Engine  # noqa: E402
from regard.errors import RegardError  # noqa: E402
from regard.imaging import ImageLimits  # noqa: E402

MB = 1024 * 1024
TARGET = "RekognitionService.DetectFaces"


def jpeg(rgb: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", **kw)
    return buf.getvalue()


def costly_images() -> dict[str, bytes]:
    zeros = io.BytesIO()
    Image.new("L", (6300, 6300)).save(zeros, "PNG", optimize=True)
    flat = jpeg(np.full((6000, 6000, 3), 120, np.uint8))
    return {"PNG 6300x6300 zeros": zeros.getvalue(), "JPEG 6000x6000 flat": flat,
            "JPEG 6000x6000 truncated": flat[: len(flat) // 2]}


def memory(home: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    with ServeProcess(home) as srv:
        rek = boto3.client("rekognition", endpoint_url=srv.url, region_name="us-east-1",
                           aws_access_key_id=srv.key, aws_secret_access_key=srv.secret)
        rek.detect_faces(Image={"Bytes": jpeg(data.astronaut())})
        baseline = srv.rss()
        out["baseline MB"] = baseline / MB
        for name, headers in [
            ("anonymous", {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": TARGET}),
            ("known key, wrong secret", signed_headers(srv.url, TARGET, srv.key, "wrong")),
        ]:
            srv.reset_peak()
            started = time.monotonic()
            replies = flood_bodies(srv.port, 80, 13 * MB, headers)
            out[f"{name}: seconds"] = time.monotonic() - started
            out[f"{name}: peak +MB"] = (srv.peak_rss() - baseline) / MB
            time.sleep(1.0)
            out[f"{name}: 1 s after +MB"] = (srv.rss() - baseline) / MB
            out[f"{name}: bodies read"] = sum("403" in r for r in replies) \
                if name != "anonymous" else 0
    return out


def connections(home: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    with ServeProcess(home) as srv:
        before, log_before = srv.descriptors(), srv.log_bytes()
        started = time.monotonic()
        with IdleFlood(srv.port, 5000) as idle, IdleFlood(srv.port, 200, source="127.0.0.3",
                                                          drip=1.0) as slow:
            out["flood opened in s"] = time.monotonic() - started
            time.sleep(1.0)  # refused connections closed
            out["descriptors held (1 s into the flood)"] = srv.descriptors() - before
            t = time.monotonic()
            status = httpx.get(srv.url + "/healthz", timeout=10).status_code
            out["/healthz ms during flood"] = (time.monotonic() - t) * 1000
            out["/healthz status"] = status
            time.sleep(11.0)  # past the default 10 s header deadline
            out["idle closed by server"] = idle.closed_by_server()
            out["idle accepted by TCP"] = len(idle.sockets)
            out["slowloris closed by server"] = slow.closed_by_server()
            out["descriptors after deadline"] = srv.descriptors() - before
        out["log bytes"] = srv.log_bytes() - log_before
    return out


def cpu(home: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    engine = Engine(limits=ImageLimits(max_bytes=15 * MB))
    normal = jpeg(data.astronaut())
    engine.detect(normal)

    def ms(image: bytes, repeat: int = 5) -> float:
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            try:
                engine.detect(image)
            except RegardError:
                pass  # the truncated one is refused: the time to refuse it is what counts
            best = min(best, time.perf_counter() - t)
        return best * 1000

    base = ms(normal)
    out["normal 512x512 JPEG ms"] = base
    photo = np.asarray(Image.fromarray(data.astronaut()).resize((1920, 1920)))[:1080]
    full_hd = ms(jpeg(photo))
    out["normal 1920x1080 JPEG ms"] = full_hd
    for name, image in costly_images().items():
        cost = ms(image)
        out[f"{name} ms"] = cost
        out[f"{name} x 512x512"] = cost / base
        out[f"{name} x 1920x1080"] = cost / full_hd
    with ServeProcess(home) as srv:
        rek = boto3.client("rekognition", endpoint_url=srv.url, region_name="us-east-1",
                           aws_access_key_id=srv.key, aws_secret_access_key=srv.secret,
                           config=Config(retries={"max_attempts": 1}))
        rek.detect_faces(Image={"Bytes": normal})
        t = time.monotonic()
        rek.detect_faces(Image={"Bytes": normal})
        out["DetectFaces via server ms, idle"] = (time.monotonic() - t) * 1000
        worst = costly_images()["PNG 6300x6300 zeros"]
        with ThreadPoolExecutor(4) as pool:
            bombs = [pool.submit(rek.detect_faces, Image={"Bytes": worst}) for _ in range(4)]
            time.sleep(0.05)
            t = time.monotonic()
            rek.detect_faces(Image={"Bytes": normal})
            out["DetectFaces via server ms, 4 worst images in flight"] = \
                (time.monotonic() - t) * 1000
            for bomb in bombs:
                bomb.result()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for name, run in (("memory", memory), ("connections", connections), ("cpu", cpu)):
        with tempfile.TemporaryDirectory() as home:
            results[name] = run(Path(home))
        print(f"\n## {name}")
        for key, value in results[name].items():
            print(f"{key:55s} {value:10.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
