"""What the HTTP service costs: DetectFaces through boto3 against ``regard serve`` vs the same work
as an in-process ``Engine.detect`` call, measured side by side in one run.

    .venv/bin/python bench/service_overhead.py [--requests 200] [--clients 4] [--json OUT]

The image: 640x480 JPEG with one face (scikit-image's astronaut, top 480 rows, padded to 640
wide), sent as ``Image.Bytes``. Needs no research data.

Modes:
- ``in-process, 1 caller``: ``Engine().detect(jpeg_bytes).detect_faces_response()`` in a loop in
  this process (decode, detect, landmarks, pose, quality: what DetectFaces does), after warm-up.
- ``boto3, 1 client``: ``client.detect_faces`` against ``regard serve`` started as a separate
  process on 127.0.0.1 (SigV4 signed, JSON 1.1, base64), one request at a time. The difference to
  the line above is the service's overhead per request (signing and verifying, base64 and JSON,
  HTTP, the key lookup, the worker pool hop, metrics).
- ``in-process, N threads`` and ``boto3, N clients``: ``--clients`` concurrent callers, for
  throughput on all cores (the server's image pool has one worker per core).
Latency percentiles are per request; req/s = requests / wall time.
"""

from __future__ import annotations

import argparse
import configparser
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, ratio, write_json  # noqa: E402


def test_image() -> bytes:
    import io

    from PIL import Image
    from skimage import data

    canvas = np.full((480, 640, 3), 120, np.uint8)
    canvas[:, 64:576] = data.astronaut()[:480]
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def measure(call: Callable[[], object], requests: int, clients: int) -> dict[str, float]:
    latencies: list[float] = []

    def one(_: int) -> None:
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)

    for _ in range(3):  # warm-up: models loaded, connections open
        one(0)
    latencies.clear()
    start = time.perf_counter()
    if clients == 1:
        for i in range(requests):
            one(i)
    else:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"req_s": requests / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95))}


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    import httpx

    env = {**os.environ, "REGARD_HOME": str(home)}
    env.pop("REGARD_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "regard.cli", "serve", "--port", str(port),
                             "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("regard serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--port", type=int, default=8931)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import boto3
    from botocore.config import Config

    from regard import Engine

    image = test_image()
    engine = Engine()
    faces = len(engine.detect(image).faces)
    print(f"image: 640x480 JPEG, {len(image)} bytes, {faces} face(s); "
          f"{args.requests} requests per mode, {os.cpu_count()} CPU cores\n")

    with tempfile.TemporaryDirectory() as home:
        proc = start_server(Path(home), args.port)
        try:
            creds = configparser.ConfigParser()
            creds.read(Path(home) / "admin-credentials")
            client = boto3.client(
                "rekognition", endpoint_url=f"http://127.0.0.1:{args.port}",
                region_name="us-east-1",
                aws_access_key_id=creds["regard"]["aws_access_key_id"],
                aws_secret_access_key=creds["regard"]["aws_secret_access_key"],
                config=Config(max_pool_connections=args.clients * 2,
                              retries={"max_attempts": 1}))

            def local() -> object:
                return engine.detect(image).detect_faces_response()

            def remote() -> object:
                return client.detect_faces(Image={"Bytes": image})

            assert len(remote()["FaceDetails"]) == faces
            results = {
                "in-process, 1 caller": measure(local, args.requests, 1),
                "boto3, 1 client": measure(remote, args.requests, 1),
                f"in-process, {args.clients} threads": measure(local, args.requests,
                                                               args.clients),
                f"boto3, {args.clients} clients": measure(remote, args.requests, args.clients),
            }
        finally:
            proc.terminate()
            proc.wait(timeout=20)

    rows = [[name, r["req_s"], r["p50_ms"], r["p95_ms"]] for name, r in results.items()]
    print_table(["mode", "req/s", "p50 ms", "p95 ms"], rows, digits=1)
    base, served = results["in-process, 1 caller"], results["boto3, 1 client"]
    par_base = results[f"in-process, {args.clients} threads"]
    par_served = results[f"boto3, {args.clients} clients"]
    print()
    print(f"boto3 / in-process req/s, 1 caller:        {ratio(served['req_s'], base['req_s']):.3f}")
    print(f"boto3 - in-process p50 (overhead):          "
          f"{served['p50_ms'] - base['p50_ms']:.1f} ms")
    print(f"boto3 / in-process req/s, {args.clients} concurrent:    "
          f"{ratio(par_served['req_s'], par_base['req_s']):.3f}")
    write_json(args.json, {"image_bytes": len(image), "requests": args.requests,
                           "clients": args.clients, "results": results})


if __name__ == "__main__":
    main()
