"""Collections at scale (insert rate, search latency, recall@1 vs exact, memory) and
identification on LFW dev.

    .venv/bin/python bench/collections_scale.py [--sizes 10000,100000,1000000] [--queries 300]
        [--ef 16,32,64,128,256] [--no-identification] [--json OUT]

(Named ``collections_scale.py``: a script called ``collections.py`` would shadow the standard
library's ``collections`` module, since Python puts the script's folder first on ``sys.path``.)

**Scale, on SYNTHETIC embeddings** (every table says so): 128-d vectors drawn from a Gaussian
with the mean and covariance of the real LFW dev embeddings (``bench/out/lfw_dev_embeddings.npz``,
written by ``bench/calibrate.py``; without it, an isotropic Gaussian of the same overall scale,
and the table says that instead). Probes, ``--queries`` of each kind:
- *mated*: a stored vector plus Gaussian noise whose expected norm is the median genuine-pair
  distance on LFW dev (another photo of someone in the collection);
- *stranger*: a fresh draw (someone not in the collection).
For each size, in a fresh SQLite catalog (WAL, ``synchronous=FULL`` as shipped) under a temporary
``REGARD_HOME``:
- **insert**: faces/s with one face per transaction (what IndexFaces and ``regard index`` do per
  image; the first 2,000 faces) and with 1,000 faces per transaction (bulk; fills the rest);
- **load**: seconds to build the collection's index from the catalog (snapshot read + FAISS
  build), and to restore it from its checkpoint (what a restarted process does);
- **search**: latency p50/p95 of one probe at a time through ``Store.search`` (catalog seq check +
  k-NN, k=100 = default MaxFaces) with the index the defaults choose (exact flat below
  ``REGARD_HNSW_THRESHOLD``, HNSW above), and of the whole SearchFacesByImage search step after
  the engine (k-NN + threshold 80 + reading the matched faces' rows). Against: exact FAISS flat
  (one thread) and the peer's approach (``face_recognition.face_distance``: numpy distance to
  every known face; the arithmetic is reproduced, so the peer need not be installed);
- **recall@1 vs exact**: share of probes whose nearest face equals exact search's, for the
  default index and for an efSearch sweep over an HNSW index (M=32) of the same vectors;
- **memory per face**: index bytes (vectors + graph + ids), process RSS growth while loading,
  catalog file bytes.

**Identification, on REAL embeddings** (LFW dev, the same cache): gallery = the first image of
each person with >= 2 images, mated probes = their second image, strangers = people with one image
(never in the gallery). Rank-1 = the nearest gallery face is the right person; FNIR at S = mated
probes whose right mate is not returned at rank 1 with similarity >= S; FPIR at S = strangers
whose nearest gallery face has similarity >= S. The peer's default (distance <= 0.6) for context.

Run time on this 2-core machine: ~25 s for ``--sizes 10000``; the default sizes need an estimated
15-25 minutes (1M faces: ~2 min of inserts, several minutes of HNSW build) and ~3 GB of memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, print_table, ratio, write_json  # noqa: E402

from regard.store import IndexOptions, NewFace, Store, VectorIndex  # noqa: E402
from regard.store.index import omp_threads  # noqa: E402
from regard.vision import calibration  # noqa: E402

LFW_CACHE = OUT / "lfw_dev_embeddings.npz"
K = 100  # default MaxFaces
SINGLE_TX = 2_000
BULK = 1_000


# -- data ---------------------------------------------------------------------------------------
def lfw_embeddings() -> tuple[np.ndarray, np.ndarray] | None:
    """(embeddings, identities) of LFW dev images with a face, or None without the cache."""
    if not LFW_CACHE.is_file():
        return None
    data = np.load(LFW_CACHE, allow_pickle=False)
    found = data["found"]
    ids = np.array([Path(k).parent.name for k in data["keys"]])[found]
    return data["emb"][found].astype(np.float32), ids


class Sampler:
    """Synthetic embeddings shaped like real ones (see the module docstring)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        real = lfw_embeddings()
        if real is not None and len(real[0]) > 256:
            emb, ids = real
            self.source = f"Gaussian fit to {len(emb)} LFW dev embeddings"
            self.mean = emb.mean(axis=0)
            self.chol = np.linalg.cholesky(np.cov(emb, rowvar=False) + 1e-6 * np.eye(128))
            by: dict[str, list[int]] = defaultdict(list)
            for i, who in enumerate(ids):
                by[who].append(i)
            genuine = [np.linalg.norm(emb[v[0]] - emb[v[1]]) for v in by.values() if len(v) > 1]
            self.genuine = float(np.median(genuine))
        else:
            self.source = "isotropic Gaussian (no LFW cache: run bench/calibrate.py for a fit)"
            self.mean = np.zeros(128)
            self.chol = np.eye(128) * (0.82 / np.sqrt(2 * 128))  # impostor distance ~0.82
            self.genuine = 0.43

    def draw(self, n: int) -> np.ndarray:
        out = np.empty((n, 128), dtype=np.float32)
        for i in range(0, n, 100_000):
            m = min(100_000, n - i)
            out[i:i + m] = self.rng.standard_normal((m, 128)) @ self.chol.T + self.mean
        return out

    def mated(self, stored: np.ndarray, n: int) -> np.ndarray:
        picks = stored[self.rng.integers(0, len(stored), n)]
        noise = self.rng.standard_normal((n, 128)) * (self.genuine / np.sqrt(128))
        return (picks + noise).astype(np.float32)


# -- measurements ---------------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def timed(fn, queries: np.ndarray) -> tuple[list[float], list]:
    times, results = [], []
    for q in queries:
        t = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - t)
    return times, results


def faces_for(vectors: np.ndarray) -> list[NewFace]:
    image = str(uuid.uuid4())
    return [NewFace(v, (0.1, 0.1, 0.2, 0.2), 99.0, image) for v in vectors]


def bench_size(n: int, sampler: Sampler, queries: int, efs: list[int], home: Path) -> dict:
    print(f"\n== {n:,} faces (synthetic) ==", file=sys.stderr)
    vectors = sampler.draw(n)
    url = f"sqlite:///{home / f'scale-{n}.db'}"
    store = Store(url, checkpoint_dir=home / f"index-{n}")
    store.catalog.create_collection("bench", "arn:bench", "1.0")
    row: dict = {"faces": n}

    single = min(SINGLE_TX, n)
    t = time.perf_counter()
    for v in vectors[:single]:
        store.add_faces("bench", faces_for(v[None, :]))
    row["insert_1_per_tx"] = single / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(single, n, BULK):
        store.add_faces("bench", faces_for(vectors[i:i + BULK]))
    bulk_s = time.perf_counter() - t
    row["insert_bulk"] = (n - single) / bulk_s if n > single else None
    print(f"inserted in {bulk_s:.1f} s", file=sys.stderr)
    db_bytes = sum(p.stat().st_size for p in home.glob(f"scale-{n}.db*"))
    row["catalog_bytes_per_face"] = db_bytes / n

    fresh = Store(url, checkpoint_dir=home / f"index-{n}-fresh")  # a restarted process
    rss0 = rss_bytes()
    t = time.perf_counter()
    entry = fresh.indexes.synced("bench")
    row["load_s"] = time.perf_counter() - t
    row["rss_bytes_per_face"] = (rss_bytes() - rss0) / n
    row["index_kind"] = entry.faces.kind
    row["index_bytes_per_face"] = entry.faces.memory_bytes() / n
    t = time.perf_counter()
    path = fresh.indexes.checkpoint("bench")
    row["checkpoint_write_s"] = time.perf_counter() - t
    restored = Store(url, checkpoint_dir=path.parent)
    t = time.perf_counter()
    restored.indexes.synced("bench")
    row["checkpoint_restore_s"] = time.perf_counter() - t
    restored.close()

    mated = sampler.mated(vectors, queries)
    strangers = sampler.draw(queries)
    probes = np.vstack([mated, strangers])
    flat = faiss.IndexFlatL2(128)
    flat.add(vectors)
    with omp_threads(os.cpu_count() or 1):
        _, exact = flat.search(probes, 1)
    exact = exact[:, 0]

    times, hits = timed(lambda q: fresh.search("bench", q, K)[0], probes)
    row["search_p50_ms"], row["search_p95_ms"] = percentiles(times)
    row["recall1_mated"], row["recall1_strangers"] = recall_at_1(
        fresh, "bench", [h[0].face_id for h in hits], exact, vectors, queries)
    from regard.service import RegardService

    svc = RegardService(store=fresh)
    coll = fresh.catalog.get_collection("bench")
    times, _ = timed(lambda q: svc._face_matches(coll, q, {}), probes)
    row["step_p50_ms"], row["step_p95_ms"] = percentiles(times)

    with omp_threads(1):
        times, _ = timed(lambda q: flat.search(q[None, :], K), probes)
    row["exact_p50_ms"], row["exact_p95_ms"] = percentiles(times)
    peer_probes = probes[: min(len(probes), 100 if n <= 100_000 else 20)]
    times, _ = timed(lambda q: np.linalg.norm(vectors - q, axis=1), peer_probes)
    row["peer_p50_ms"], row["peer_p95_ms"] = percentiles(times)
    row["x_vs_peer"] = ratio(row["peer_p50_ms"], row["search_p50_ms"])

    hnsw = entry.faces if entry.faces.kind == "hnsw" else None
    t = time.perf_counter()
    if hnsw is None:
        hnsw = VectorIndex(128, options=IndexOptions(hnsw_threshold=1))
        hnsw.load([str(i) for i in range(n)], vectors)
        row["hnsw_build_s"] = time.perf_counter() - t
    sweep = []
    for ef in efs:
        hnsw.options = replace(hnsw.options, ef_search=ef)
        times, res = timed(lambda q: hnsw.search(q, 1)[0][0].face_id, probes)
        if entry.faces is hnsw:  # the default index: FaceIds
            rec = recall_at_1(fresh, "bench", res, exact, vectors, queries)
        else:  # built here over positions
            got = np.array([int(f) for f in res])
            rec = (float((got[:queries] == exact[:queries]).mean()),
                   float((got[queries:] == exact[queries:]).mean()))
        p50, p95 = percentiles(times)
        sweep.append({"ef": ef, "recall1_mated": float(rec[0]), "recall1_strangers": float(rec[1]),
                      "p50_ms": p50, "p95_ms": p95})
    row["ef_sweep"] = sweep
    fresh.close()
    store.close()
    return row


def recall_at_1(store: Store, collection: str, found: list[str], exact: np.ndarray,
                vectors: np.ndarray, q: int) -> tuple[float, float]:
    """(mated, strangers) share of probes whose found face is exact search's nearest vector."""
    rows = store.catalog.get_faces(collection, found, embeddings=True)
    same = np.array([np.array_equal(rows[f].embedding, vectors[e]) for f, e in zip(found, exact)])
    return float(same[:q].mean()), float(same[q:].mean())


# -- identification on LFW dev ------------------------------------------------------------------
def identification(home: Path) -> dict | None:
    real = lfw_embeddings()
    if real is None:
        print("no LFW dev embeddings cache: identification skipped (run bench/calibrate.py)",
              file=sys.stderr)
        return None
    emb, ids = real
    by: dict[str, list[int]] = defaultdict(list)
    for i, who in enumerate(ids):
        by[who].append(i)
    people = sorted(p for p, v in by.items() if len(v) >= 2)
    strangers = sorted(p for p, v in by.items() if len(v) == 1)
    store = Store(f"sqlite:///{home / 'lfw.db'}", checkpoint_dir=False)
    store.catalog.create_collection("lfw", "arn:lfw", "1.0")
    gallery = faces_for(emb[[by[p][0] for p in people]])
    store.add_faces("lfw", gallery)
    owner = {f.face_id: p for f, p in zip(gallery, people)}
    mated = emb[[by[p][1] for p in people]]
    stranger = emb[[by[p][0] for p in strangers]]
    top_mated = [h[0] for h in store.search("lfw", mated, 1)]
    top_stranger = [h[0] for h in store.search("lfw", stranger, 1)]
    right = np.array([owner[h.face_id] == p for h, p in zip(top_mated, people)])
    d_mated = np.array([h.distance for h in top_mated])
    d_stranger = np.array([h.distance for h in top_stranger])
    s_mated = calibration.similarity(d_mated)
    s_stranger = calibration.similarity(d_stranger)
    out = {"gallery": len(people), "mated_probes": len(people), "strangers": len(strangers),
           "rank1": float(right.mean()), "rows": []}
    for label, ok_m, ok_s in [
        ("similarity >= 80", s_mated >= 80, s_stranger >= 80),
        ("similarity >= 99", s_mated >= 99, s_stranger >= 99),
        ("peer: distance <= 0.6", d_mated <= 0.6, d_stranger <= 0.6),
    ]:
        out["rows"].append({"threshold": label, "fnir": float(1 - (right & ok_m).mean()),
                            "fpir": float(ok_s.mean()),
                            "wrong_at_rank1": float((~right & ok_m).mean())})
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=300, help="probes of each kind")
    ap.add_argument("--ef", default="16,32,64,128,256", help="efSearch values to sweep")
    ap.add_argument("--no-identification", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    efs = [int(e) for e in args.ef.split(",") if e]
    sampler = Sampler()
    opts = IndexOptions.from_env()
    results: dict = {"embeddings": f"SYNTHETIC: {sampler.source}", "sizes": [],
                     "hnsw_threshold": opts.hnsw_threshold, "ef_search": opts.ef_search,
                     "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="regard-bench-") as tmp:
        home = Path(tmp)
        os.environ["REGARD_HOME"] = str(home)
        for n in sizes:
            results["sizes"].append(bench_size(n, sampler, args.queries, efs, home))
        ident = None if args.no_identification else identification(home)
    results["identification"] = ident

    print(f"\nScale: SYNTHETIC embeddings ({sampler.source}); {args.queries} mated + "
          f"{args.queries} stranger probes; default index: exact flat below "
          f"{opts.hnsw_threshold:,} faces, HNSW (M=32, efSearch {opts.ef_search}) above\n")
    print_table(
        ["faces", "index", "insert/s 1/tx", "insert/s bulk", "load s", "restore s",
         "search p50 ms", "p95 ms", "step p50 ms", "exact p50 ms", "peer p50 ms", "x peer",
         "recall@1 mated", "recall@1 strangers"],
        [[r["faces"], r["index_kind"], r["insert_1_per_tx"], r["insert_bulk"], r["load_s"],
          r["checkpoint_restore_s"], r["search_p50_ms"], r["search_p95_ms"], r["step_p50_ms"],
          r["exact_p50_ms"], r["peer_p50_ms"], r["x_vs_peer"], r["recall1_mated"],
          r["recall1_strangers"]] for r in results["sizes"]], digits=3)
    print("\nMemory per face (bytes, SYNTHETIC)\n")
    print_table(["faces", "index", "RSS growth", "catalog on disk"],
                [[r["faces"], r["index_bytes_per_face"], r["rss_bytes_per_face"],
                  r["catalog_bytes_per_face"]] for r in results["sizes"]], digits=0)
    print("\nHNSW efSearch sweep (recall@1 vs exact, k=1, SYNTHETIC)\n")
    print_table(["faces", "efSearch", "recall@1 mated", "recall@1 strangers", "p50 ms", "p95 ms"],
                [[r["faces"], s["ef"], s["recall1_mated"], s["recall1_strangers"], s["p50_ms"],
                  s["p95_ms"]] for r in results["sizes"] for s in r["ef_sweep"]], digits=4)
    if ident:
        print(f"\nIdentification on LFW dev (REAL embeddings): gallery {ident['gallery']} people, "
              f"{ident['mated_probes']} mated probes, {ident['strangers']} strangers; "
              f"rank-1 {ident['rank1']:.4f}\n")
        print_table(["threshold", "FNIR", "FPIR", "wrong person at rank 1"],
                    [[r["threshold"], r["fnir"], r["fpir"], r["wrong_at_rank1"]]
                     for r in ident["rows"]], digits=4)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
