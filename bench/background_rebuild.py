"""What a compaction costs the searches that run during it: the background rebuild against the
inline one it replaced, side by side in one run.

    .venv/bin/python bench/background_rebuild.py [--faces 100000] [--json OUT]

Synthetic embeddings (Gaussian, the scale of dlib descriptors) in a SQLite catalog; the index is
loaded (HNSW from 50,000 faces), then just over ``compact_fraction`` (10 %) of the faces are
deleted, which makes the index due for a rebuild. Figures:
- inline: the time ``VectorIndex`` spends rebuilding the same contents in the calling thread,
  i.e. how long the search that triggered it, and every search queued behind the collection's
  lock, used to wait;
- background: searches issued back to back from the moment the rebuild starts until it has been
  swapped in (their p50 / p99 / max latency and count), the rebuild's own duration, and a search's
  latency after the swap; deletions made while it builds are checked to be absent afterwards;
- restart: the rebuilt index is checkpointed (the copy is taken under the collection's lock, so it
  counts in the searches above); a new Store's first search restores it, against the full load
  from the catalog a restart needed before (the deletions had removed the older checkpoint).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, ratio, write_json  # noqa: E402

from regard.store import NewFace, Store, VectorIndex  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    vectors = (rng.normal(size=(args.faces, 128)) * 0.09).astype(np.float32)
    with tempfile.TemporaryDirectory() as home:
        store = Store(f"sqlite:///{home}/bench.db", checkpoint_dir=Path(home) / "index")
        store.catalog.create_collection("c", "arn:c", "1.0")
        image = str(uuid.uuid4())
        ids: list[str] = []
        for i in range(0, args.faces, 5000):
            rows = store.add_faces("c", [NewFace(v, (0.1, 0.1, 0.2, 0.2), 99.0, image)
                                         for v in vectors[i:i + 5000]])
            ids += [r.face_id for r in rows]
        t = time.perf_counter()
        entry = store.indexes.synced("c")
        load_s = time.perf_counter() - t
        print(f"loaded {len(entry.faces):,} faces ({entry.faces.kind}) in {load_s:.1f} s",
              file=sys.stderr)
        doomed = rng.choice(args.faces, int(0.11 * args.faces), replace=False)
        store.delete_faces("c", [ids[i] for i in doomed])
        assert entry.faces.rebuild_due

        # inline, as before: the same contents rebuilt in this thread, on a copy
        copy = VectorIndex(entry.faces.dim, options=entry.faces.options)
        live_ids, live_vectors = entry.faces.live_copy()
        t = time.perf_counter()
        copy.load(list(live_ids), live_vectors)
        inline_s = time.perf_counter() - t

        probes = vectors[rng.choice(np.setdiff1d(np.arange(args.faces), doomed), 200)]
        during: list[float] = []
        t0 = time.perf_counter()
        store.search("c", probes[0], 10)  # starts the rebuild
        late = rng.choice(np.setdiff1d(np.arange(args.faces), doomed), 50, replace=False)
        store.delete_faces("c", [ids[i] for i in late])  # while it builds
        i = 0
        while entry.rebuilding:
            t = time.perf_counter()
            store.search("c", probes[i % len(probes)], 10)
            during.append((time.perf_counter() - t) * 1000)
            i += 1
        background_s = time.perf_counter() - t0
        entry = store.indexes.synced("c")
        after = []
        for q in probes:
            t = time.perf_counter()
            store.search("c", q, 10)
            after.append((time.perf_counter() - t) * 1000)
        live = set(entry.faces.face_ids())
        assert not live & {ids[i] for i in np.concatenate([doomed, late])}
        assert len(live) == args.faces - len(doomed) - len(late)
        assert entry.faces.dead == len(late)  # the late ones, overwritten in the new index
        store.indexes.wait_for_rebuilds(600)  # the checkpoint is written after the swap
        checkpoints = list((Path(home) / "index").glob("*.npz"))
        assert len(checkpoints) == 1, checkpoints
        checkpoint_mb = checkpoints[0].stat().st_size / 1e6
        store.close()
        t = time.perf_counter()
        restarted = Store(f"sqlite:///{home}/bench.db", checkpoint_dir=Path(home) / "index")
        restarted.search("c", probes[0], 10)
        restart_s = time.perf_counter() - t
        restored = restarted.indexes.synced("c")
        assert len(restored.faces) == len(live) and restored.faces.dead == len(late)
        restarted.close()

    d = np.array(during)
    rows = [
        ["inline rebuild (searches wait)", f"{inline_s:.1f} s", "", "", f"{inline_s * 1000:,.0f}"],
        ["background: searches during it", f"{background_s:.1f} s",
         f"{np.percentile(d, 50):.2f}", f"{np.percentile(d, 99):.2f}", f"{d.max():.1f}"],
        ["after the swap", "", f"{np.percentile(after, 50):.2f}",
         f"{np.percentile(after, 99):.2f}", f"{max(after):.1f}"],
    ]
    print(f"\n{args.faces:,} faces, {len(doomed):,} deleted (11 %), then 50 more during the "
          f"rebuild; {len(d):,} searches (k=10) ran during it\n")
    print_table(["", "rebuild", "search p50 ms", "p99 ms", "max ms"], rows)
    print(f"\nrestart after it: first search {restart_s:.2f} s (checkpoint of {checkpoint_mb:.0f} MB "
          f"restored) against a full load of {load_s:.1f} s")
    print(f"worst search during a compaction: {d.max():.1f} ms in the background against "
          f"{inline_s * 1000:,.0f} ms inline ({ratio(inline_s * 1000, d.max()):.0f}x shorter)")
    write_json(args.json, {"faces": args.faces, "deleted": int(len(doomed)),
                           "inline_rebuild_s": inline_s, "background_rebuild_s": background_s,
                           "searches_during": len(d),
                           "during_ms": {"p50": float(np.percentile(d, 50)),
                                         "p99": float(np.percentile(d, 99)),
                                         "max": float(d.max())},
                           "after_ms_p50": float(np.percentile(after, 50)),
                           "full_load_s": load_s, "restart_first_search_s": restart_s,
                           "checkpoint_mb": checkpoint_mb})


if __name__ == "__main__":
    main()
