"""What accountability costs: audit-ledger appends and verification, and a search through the
gate (scopes, policy, ledger entry) against the same search without it, and a write (TagResource)
through the whole gate, where the change and its entry commit in one transaction, against the
bare write and against the bare write plus an entry appended in a second transaction (the least
an audited write costs without the gate), side by side in one run.

    .venv/bin/python bench/audit_ledger.py [--entries 20000] [--searches 300] [--json OUT]

SQLite catalog with ``synchronous=FULL`` (the default), on this machine's disk. No research data:
the search uses a collection of 1,000 synthetic embeddings plus one real face (scikit-image's
astronaut) and probes with that face's stored embedding (SearchFaces), so the figure is the
gate's cost, not the detector's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, ratio, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--searches", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from regard.context import CallContext
    from regard.governance.ledger import Ledger
    from regard.service import RegardService
    from regard.store import NewFace, Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db", checkpoint_dir=False)
        ledger = Ledger(store.database, key=b"b" * 32)
        result = {"FaceIds": ["3f1c2a9e-0000-4000-8000-000000000000"], "TopSimilarity": 97.5,
                  "Threshold": 80.0}
        start = time.perf_counter()
        for i in range(args.entries):
            ledger.append(principal="RGKBENCH", operation="SearchFacesByImage", collection="c",
                          purpose="benchmark", case_ref=f"B-{i}", image_sha256=["ab" * 32],
                          result=result, client="127.0.0.1")
        append_s = time.perf_counter() - start
        start = time.perf_counter()
        report = ledger.verify()
        verify_s = time.perf_counter() - start
        assert report.ok

        service = RegardService(store=store, default_purpose="benchmark")
        service.gate.ledger = ledger
        service.create_collection(CollectionId="c")
        rng = np.random.default_rng(0)
        vectors = rng.normal(0, 0.05, (1000, 128)).astype(np.float32)
        rows = store.add_faces("c", [NewFace(v, (0.1, 0.1, 0.2, 0.2), 99.0, "img")
                                     for v in vectors])
        probe = rows[0].face_id
        caller = CallContext(principal="RGKBENCH", purpose="benchmark")
        params = {"CollectionId": "c", "FaceId": probe, "MaxFaces": 10}

        def gated() -> object:
            return service.call("SearchFaces", params, caller)

        def ungated() -> object:
            return service._search_faces(dict(params))

        timings = {}
        for name, fn in (("without the gate", ungated), ("through the gate", gated)):
            fn()
            samples = []
            for _ in range(args.searches):
                t = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t) * 1000)
            timings[name] = (float(np.percentile(samples, 50)), float(np.percentile(samples, 95)))

        arn = service.describe_collection(CollectionId="c")["CollectionARN"]
        counter = iter(range(10**9))

        def tags() -> dict:
            return {"ResourceArn": arn, "Tags": {"bench": str(next(counter))}}

        def write_alone() -> object:
            return service._tag_resource(tags())

        def write_then_entry() -> object:
            body = service._tag_resource(params := tags())
            ledger.append(principal="RGKBENCH", operation="TagResource", collection="c",
                          purpose="benchmark", result={"Outcome": "OK", "Tags": params["Tags"]})
            return body

        def write_gated() -> object:
            return service.call("TagResource", tags(), caller)

        writes = {}
        for name, fn in (("write alone", write_alone),
                         ("write, then its entry (2 transactions)", write_then_entry),
                         ("through the gate (1 transaction)", write_gated)):
            fn()
            samples = []
            for _ in range(args.searches):
                t = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t) * 1000)
            writes[name] = (float(np.percentile(samples, 50)), float(np.percentile(samples, 95)))
        assert ledger.verify().ok
        store.close()

    print(f"ledger: {args.entries} appends in {append_s:.1f} s = "
          f"{args.entries / append_s:,.0f} entries/s ({append_s / args.entries * 1000:.2f} ms "
          f"each, one transaction each); verify {report.entries} entries in {verify_s:.2f} s = "
          f"{report.entries / verify_s:,.0f} entries/s\n")
    print_table(["SearchFaces, 1,000 faces", "p50 ms", "p95 ms"],
                [[name, p50, p95] for name, (p50, p95) in timings.items()], digits=2)
    p50_gate, p50_raw = timings["through the gate"][0], timings["without the gate"][0]
    print(f"\ngate overhead at p50: {p50_gate - p50_raw:.2f} ms "
          f"({ratio(p50_gate, p50_raw):.2f}x)")
    print()
    print_table(["TagResource (a durable write)", "p50 ms", "p95 ms"],
                [[name, p50, p95] for name, (p50, p95) in writes.items()], digits=2)
    one, two = writes["through the gate (1 transaction)"][0], \
        writes["write, then its entry (2 transactions)"][0]
    print(f"\nwrite through the gate (one transaction) vs bare write + entry (two): "
          f"{ratio(one, two):.2f}x the time, {one - two:+.2f} ms")
    write_json(args.json, {"entries": args.entries, "append_per_s": args.entries / append_s,
                           "verify_per_s": report.entries / verify_s, "search_ms": timings,
                           "write_ms": writes})


if __name__ == "__main__":
    main()
