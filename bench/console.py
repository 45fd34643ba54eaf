"""The web console at scale: page times with a small and a large collection and ledger, measured
side by side in one run, against the REST API's answer for the same data.

    .venv/bin/python bench/console.py [--sizes 10000,200000] [--ledger 20000] [--requests 30]
        [--json OUT]

For each size, a fresh catalog (SQLite, as shipped) is filled before the server starts: one
collection of N faces (**synthetic** embeddings of the default model's size: the pages never read them; four faces per
ExternalImageId, each with a consent reference) and a ledger of ``--ledger`` entries (searches
and listings, hash-chained and signed as the service writes them). Then ``regard serve``'s app
runs on 127.0.0.1 (uvicorn, one process) and a signed-in client (httpx, keep-alive, one request
at a time) asks each page ``--requests`` times:

- overview (DescribeCollections + AuditSummary: 14 days of ledger counted in SQL);
- a collection's faces, first page (50, by FaceId), a page from the middle (its NextToken),
  and one person's faces (by ExternalImageId: an index lookup);
- the audit ledger, newest page, filtered by operation, and a page from the middle (``before``);
- search by photo (scikit-image's astronaut, 512x512: decode, detect, embed, search N faces,
  the answer page with the picture boxed), and the same search through REST for comparison;
- REST ``GET /v1/collections/{id}/faces?MaxResults=50`` (Rekognition's ListFaces), the API's
  answer for the faces page.

Each console page is also an audited read (one to three ledger entries), as in use. What the
table shows: a page's cost must not grow with the collection or the ledger (paginated, indexed
reads; nothing loads a million rows), and what rendering adds to the API's answer.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _common import print_table, ratio, write_json  # noqa: E402


def fill(home: Path, faces: int, ledger_entries: int) -> None:
    from regard.context import CallContext
    from regard.service import RegardService
    from regard.store import NewFace, Store

    store = Store(f"sqlite:///{home / 'catalog.db'}", checkpoint_dir=False)
    service = RegardService(store=store, default_purpose="benchmark")
    operator = CallContext.operator("bench")
    service.call("CreateCollection", {"CollectionId": "big", "Tags": {
        "regard:purpose": "console benchmark"}}, operator)
    from regard.vision.packs import get_pack

    dims = get_pack(store.catalog.get_collection("big").face_model_version).embedding_size
    rng = np.random.default_rng(0)
    batch = 5000
    for start in range(0, faces, batch):
        vectors = rng.standard_normal((min(batch, faces - start), dims)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.add_faces("big", [
            NewFace(v, (0.3, 0.2, 0.25, 0.3), 99.5, str(uuid.uuid4()),
                    f"person-{(start + i) // 4}", None, consent_ref=f"consent-{start + i}")
            for i, v in enumerate(vectors)])
    ledger = service.gate.ledger
    start_time = datetime.now(timezone.utc) - timedelta(days=13)
    step = timedelta(days=13) / max(1, ledger_entries)
    ledger.clock = lambda: start_time + step * counter[0]
    counter = [0]
    for i in range(ledger_entries):
        counter[0] = i
        operation = "SearchFacesByImage" if i % 3 else "ListFaces"
        ledger.append(principal="RGKBENCHBENCHBENCH00", operation=operation, collection="big",
                      purpose="door camera", case_ref=f"INC-{i}",
                      result={"Outcome": "OK", "Threshold": 90.0, "FaceIds": []}
                      if i % 7 else {"Error": "AccessDeniedException", "Scope": "search"},
                      client="127.0.0.1")
    store.close()


def timed(call: Callable[[], Any], n: int) -> tuple[list[float], int]:
    call()  # warm
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        response = call()
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (response.status_code, response.text[:300])
        size = len(response.content)
    return times, size


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def run_size(faces: int, ledger_entries: int, requests: int, engine: Any,
             photo: bytes) -> dict[str, Any]:
    import httpx

    from console_client import ConsoleClient
    from live_server import LiveServer

    home = Path(tempfile.mkdtemp(prefix="regard-bench-console-"))
    t0 = time.perf_counter()
    fill(home, faces, ledger_entries)
    filled = time.perf_counter() - t0
    with LiveServer(home, engine, default_purpose="benchmark") as live:
        key, secret = live.server.keys.create("bench", scopes=["admin"])
        client = ConsoleClient(live.url, key.access_key_id, secret)
        rest = httpx.Client(base_url=live.url, timeout=120,
                            headers={"Authorization": f"Bearer {key.access_key_id}:{secret}"})
        # a FaceId from the middle: the faces page after it
        listed = live.server.service.store.catalog.list_faces("big", limit=faces)
        middle_face = sorted(f.face_id for f in listed)[faces // 2]
        del listed
        from regard.operations.common import encode_token

        token = encode_token("faces", middle_face)
        head = live.server.service.gate.ledger.head()["seq"]
        pages: dict[str, Callable[[], Any]] = {
            "overview": lambda: client.get("/console"),
            "faces, first page": lambda: client.get("/console/collections/big/faces"),
            "faces, middle page": lambda: client.get(
                f"/console/collections/big/faces?next={token}"),
            "faces of one person": lambda: client.get(
                f"/console/collections/big/faces?external_image_id=person-{faces // 8}"),
            "REST ListFaces (50)": lambda: rest.get("/v1/collections/big/faces",
                                                    params={"max_results": 50}),
            "audit, newest page": lambda: client.get("/console/audit"),
            "audit, one operation": lambda: client.get("/console/audit?operation=ListFaces"),
            "audit, middle page": lambda: client.get(f"/console/audit?before={head // 2}"),
            "search by photo (console)": lambda: client.post(
                "/console/search", data={"collection": "big", "purpose": "bench",
                                         "threshold": "99"},
                files={"photo": ("p.jpg", photo, "image/jpeg")}),
            "search by photo (REST)": lambda: rest.post(
                "/v1/collections/big/search", data={"face_match_threshold": "99"},
                files={"image": ("p.jpg", photo, "image/jpeg")}),
        }
        results = {}
        for name, call in pages.items():
            times, size = timed(call, requests)
            results[name] = {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95),
                             "bytes": size}
        check = client.get("/console/collections/big/faces").text
        assert len(re.findall(r'name="face_id"', check)) == 50
        client.close()
        rest.close()
    return {"faces": faces, "ledger": ledger_entries, "fill_seconds": filled,
            "pages": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,200000")
    parser.add_argument("--ledger", type=int, default=20000,
                        help="ledger entries at the largest size (a tenth at the others)")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from PIL import Image
    from skimage import data

    from regard import Engine

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "JPEG", quality=90)
    engine = Engine()
    runs = []
    for size in sizes:
        ledger = args.ledger if size == max(sizes) else max(1000, args.ledger // 10)
        print(f"filling: {size:,} faces, {ledger:,} ledger entries ...", flush=True)
        runs.append(run_size(size, ledger, args.requests, engine, buf.getvalue()))
        print(f"  filled in {runs[-1]['fill_seconds']:.0f} s", flush=True)

    small, large = runs[0], runs[-1]
    print(f"\nWeb console pages, {args.requests} requests each, one at a time (ms); "
          f"SYNTHETIC embeddings")
    headers = ["page", f"p50 @ {small['faces']:,}", f"p95 @ {small['faces']:,}",
               f"p50 @ {large['faces']:,}", f"p95 @ {large['faces']:,}", "large/small p50",
               "KiB"]
    rows = []
    for name in small["pages"]:
        a, b = small["pages"][name], large["pages"][name]
        rows.append([name, a["p50_ms"], a["p95_ms"], b["p50_ms"], b["p95_ms"],
                     ratio(b["p50_ms"], a["p50_ms"]), b["bytes"] / 1024])
    print_table(headers, rows, digits=1)
    big = large["pages"]
    print(f"\nfaces page / REST ListFaces (p50, {large['faces']:,} faces): "
          f"{ratio(big['faces, first page']['p50_ms'], big['REST ListFaces (50)']['p50_ms']):.2f}x")
    print(f"search page / REST search (p50): "
          f"{ratio(big['search by photo (console)']['p50_ms'], big['search by photo (REST)']['p50_ms']):.2f}x")
    write_json(args.json, {"runs": runs, "requests": args.requests})


if __name__ == "__main__":
    main()
