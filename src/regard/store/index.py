"""In-memory vector indexes (FAISS), one per collection, derived from the catalog and never trusted
over it.

A ``VectorIndex`` holds vectors under FAISS positions 0..n-1 and maps positions to FaceIds. Small
indexes are exact (``IndexFlatL2``); at ``hnsw_threshold`` live vectors an index becomes
``IndexHNSWFlat`` (graph search, sub-millisecond at a million faces where exact search costs tens
of milliseconds). Neither removes vectors cheaply (HNSW cannot at all), so a deletion clears the
position's bit in a live bitmap that FAISS filters during search (``IDSelectorBitmap``: results
are the exact top-k among live vectors, not a top-k that was thinned afterwards), and the index is
rebuilt without the dead positions once they exceed ``compact_fraction`` (from
``background_from`` vectors on, that rebuild and the flat -> HNSW switch run in a background
thread while searches go on against the current index, which is then swapped for the new one
after the changes made meanwhile are applied to it). A deleted face's vector is overwritten
with its face-model pack's ``scrub_value`` in FAISS's own storage at once: deleted (erased)
biometric data does not wait in memory for the compaction. In HNSW the node stays in the graph with that vector,
far from every real embedding, so searches route around it (recall measured in the tests). A
background rebuild works from a private copy of the live vectors; a face deleted while it builds
stays in that copy until the swap (seconds at 100,000 faces, minutes at a million), when it is
overwritten in the new index and the copy is zeroed.

A ``CollectionIndex`` keeps two such indexes for a collection (all faces; faces associated with a
user, for SearchUsers) and the change sequence number they are current at. Before every search it
reads the collection's (id, seq, face_count) row, one indexed lookup, and applies the catalog's
changes after its seq, so writes made by other processes are visible to the next search. Its face
count must then equal the catalog's; if it ever does not, or the collection was recreated under
the same name, it reloads from the catalog.

Searches run FAISS with one OpenMP thread: a single query split across threads waits on thread
barriers, which measured 0.38 ms (1 thread) against 9.7 ms (2 threads) for 10k faces on this
2-core machine under load. Builds use every core. OpenMP's thread count is per calling thread,
so setting it around each call does not disturb other threads (or the engine's detectors).

Large indexes are slow to build (HNSW at a million faces: minutes on two cores), so a loaded index
can be checkpointed to ``$REGARD_HOME/index`` and restored at the next start, then caught up by
the change sequence like any other; a checkpoint is keyed by the catalog's instance id and the
collection id, and one that does not match, or does not agree with the catalog after catching up,
is ignored. After faces are deleted (``IndexRegistry.after_deletion``, once the deletion commits),
the loaded index is caught up at once, which overwrites the deleted vectors, and the checkpoint
that holds them is removed, so deleted embeddings linger neither in memory nor on disk, and no
search waits minutes for a large index to be rebuilt from the catalog (a restart does, once,
unless a background rebuild has checkpointed the index since). A checkpoint is written at a known
change seq and removed again if a deletion committed after that seq (``_write_checkpoint``): a
full load or rebuild that raced a deletion never leaves the deleted vectors on disk. Deletions
made by other processes or replicas reach this one when it catches up (its next search, or
``refresh``, which servers run every minute), and then remove its checkpoint as well.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import faiss
import numpy as np

from regard import config
from regard.errors import ResourceNotFoundError
from regard.private_files import open_private
from regard.secure_memory import wipe
from regard.store import schema as s
from regard.store.catalog import Catalog, Change, Snapshot
from regard.store.faults import is_storage_full
from regard.vision.packs import FaceModelPack, get_pack

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads in this thread, restoring the previous count after."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def build_threads() -> int:
    """``REGARD_INDEX_BUILD_THREADS``, else one per CPU core."""
    return config.current().index_build_threads or os.cpu_count() or 1


# What a deleted vector is overwritten with unless its pack says otherwise
# (``FaceModelPack.scrub_value`` explains the choice).
SCRUBBED = 1.0e4


@dataclass(frozen=True)
class IndexOptions:
    """Defaults measured by ``bench/collections_scale.py`` (recall@1 vs exact, latency) on this CPU."""

    hnsw_threshold: int = config.Settings.hnsw_threshold.default  # 50,000
    hnsw_m: int = 32
    ef_construction: int = 80
    # Recall@1 vs exact on 1M synthetic faces (mated / stranger probes): efSearch 128 gave
    # 0.977 / 0.897, 256 gave 0.990 / 0.953, 512 gave 0.997 / 0.993 (p50 6 ms); so the search
    # breadth grows with the collection: ef_search up to ef_large_from faces, twice that above.
    ef_search: int = config.Settings.hnsw_ef_search.default  # 256
    ef_large_from: int = 500_000
    compact_fraction: float = 0.1
    checkpoint_min: int = 20_000  # checkpoint after a full load of at least this many faces
    # From this many vectors, compaction and the flat -> HNSW switch are rebuilt by a background
    # thread while searches go on against the current index (HNSW at a million faces takes
    # minutes); below it they are rebuilt inline (a flat index of 20,000 rebuilds in ~10 ms).
    background_from: int = 20_000

    @classmethod
    def from_env(cls) -> "IndexOptions":
        """``REGARD_HNSW_THRESHOLD``, ``REGARD_HNSW_EF_SEARCH`` override the defaults."""
        settings = config.current()
        return cls(hnsw_threshold=settings.hnsw_threshold, ef_search=settings.hnsw_ef_search)


@dataclass(frozen=True)
class Hit:
    face_id: str
    distance: float  # Euclidean


class VectorIndex:
    """FaceId-addressed vectors in one FAISS index, with a live bitmap for deletions."""

    def __init__(self, dim: int, options: IndexOptions | None = None,
                 scrub_value: float = SCRUBBED) -> None:
        self.dim = dim
        self.scrub_value = scrub_value
        self.options = options or IndexOptions()
        self._index: faiss.Index = self._empty(0)
        self._ids = np.empty(0, dtype="S36")
        self._live = np.empty(0, dtype=bool)
        self._n = 0
        self._dead = 0
        self._bitmap: np.ndarray | None = None  # packed live bits, rebuilt lazily after removals
        self._selector: Any = None
        self.rebuild_due = False  # a rebuild was deferred to the background (``IndexRegistry``)

    # -- state -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n - self._dead

    @property
    def kind(self) -> str:
        return "hnsw" if isinstance(self._index, faiss.IndexHNSWFlat) else "flat"

    @property
    def dead(self) -> int:
        return self._dead

    def face_ids(self) -> list[str]:
        return [b.decode() for b in self._ids[: self._n][self._live[: self._n]]]

    def stored_vectors(self) -> np.ndarray:
        """Every vector the index holds, live or dead, as FAISS stores it (for checks that a
        deleted face's embedding is really gone)."""
        if not self._n:
            return np.empty((0, self.dim), dtype=np.float32)
        return self._index.reconstruct_n(0, self._n)

    def memory_bytes(self) -> int:
        """Approximate resident size: vectors, graph links and the id arrays."""
        vectors = self._n * self.dim * 4
        links = 0
        if isinstance(self._index, faiss.IndexHNSWFlat):
            links = self._index.hnsw.neighbors.size() * 4 + self._n * 20
        return vectors + links + self._ids.nbytes + self._live.nbytes

    # -- mutation --------------------------------------------------------------------------------
    def add(self, face_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Append vectors; FaceIds are unique for ever, so an id is never added twice."""
        if not len(face_ids):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(face_ids), self.dim)
        if self.kind == "flat" and len(self) + len(face_ids) >= self.options.hnsw_threshold:
            if len(self) + len(face_ids) < self.options.background_from:
                self._rebuild(extra_ids=list(face_ids), extra=vectors)
                return
            self.rebuild_due = True  # meanwhile the flat index stays exact
        self._grow(self._n + len(face_ids))
        self._ids[self._n:self._n + len(face_ids)] = [f.encode() for f in face_ids]
        self._live[self._n:self._n + len(face_ids)] = True
        with omp_threads(build_threads() if len(face_ids) > 1000 else 1):
            self._index.add(vectors)
        self._n += len(face_ids)
        self._bitmap = None

    def remove(self, face_ids: Sequence[str]) -> int:
        """Mark vectors dead (ids not present are ignored); compact past ``compact_fraction``."""
        if not face_ids or not self._n:
            return 0
        hit = np.isin(self._ids[: self._n], np.array([f.encode() for f in face_ids], dtype="S36"))
        hit &= self._live[: self._n]
        count = int(hit.sum())
        if count:
            self._live[: self._n][hit] = False
            self._dead += count
            self._bitmap = None
            self._scrub(np.flatnonzero(hit))
            if self._dead > self.options.compact_fraction * max(self._n, 1):
                if self._n < self.options.background_from:
                    self._rebuild()
                else:
                    self.rebuild_due = True
        return count

    def live_copy(self) -> tuple[np.ndarray, np.ndarray]:
        """(FaceIds as bytes, vectors) of the live entries, copied: what a rebuild starts from."""
        keep = np.flatnonzero(self._live[: self._n])
        stored = self.stored_vectors()
        vectors = stored[keep]
        wipe(stored)
        return self._ids[keep].copy(), vectors

    def frozen_copy(self) -> "VectorIndex":
        """A private copy to checkpoint from without the owner's lock (FAISS's clone copies the
        vectors and links directly: ~40 ms at 100,000 faces, against ~100-300 ms to serialize,
        which would otherwise stall the collection's searches)."""
        twin = VectorIndex(self.dim, self.options, self.scrub_value)
        twin._index = faiss.clone_index(self._index)
        twin._ids, twin._live = self._ids[: self._n].copy(), self._live[: self._n].copy()
        twin._n, twin._dead = self._n, self._dead
        return twin

    def rebuilt(self, face_ids: np.ndarray, vectors: np.ndarray) -> "VectorIndex":
        """A fresh index, flat or HNSW by size, of what ``live_copy`` gave (the slow part of a
        background rebuild: it needs no lock)."""
        fresh = VectorIndex(self.dim, self.options, self.scrub_value)
        fresh.load(list(face_ids), vectors)
        return fresh

    def reconcile(self, fresh: "VectorIndex", built_from: np.ndarray) -> "VectorIndex":
        """Bring ``fresh`` (built from ``built_from`` ids) to this index's live contents: what
        was removed since goes (overwritten), what was added since is added. Call with the
        owner's lock held."""
        live_pos = np.flatnonzero(self._live[: self._n])
        live_ids = self._ids[live_pos]
        gone = np.setdiff1d(built_from, live_ids, assume_unique=True)
        if len(gone):
            fresh.remove([g.decode() for g in gone])
        new = ~np.isin(live_ids, built_from)
        if new.any():
            stored = self.stored_vectors()
            vectors = stored[live_pos[new]]
            wipe(stored)
            fresh.add([f.decode() for f in live_ids[new]], vectors)
            wipe(vectors)
        return fresh

    def _scrub(self, positions: np.ndarray) -> None:
        """Overwrite the vectors at ``positions`` with ``scrub_value`` in the index's storage."""
        flat = self._index.storage if isinstance(self._index, faiss.IndexHNSWFlat) else self._index
        flat = faiss.downcast_index(flat)
        stored = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * self.dim)
        stored.reshape(flat.ntotal, self.dim)[positions] = self.scrub_value

    def _grow(self, size: int) -> None:
        if size > len(self._ids):
            cap = max(size, 2 * len(self._ids), 1024)
            ids = np.empty(cap, dtype="S36")
            ids[: self._n] = self._ids[: self._n]
            live = np.zeros(cap, dtype=bool)
            live[: self._n] = self._live[: self._n]
            self._ids, self._live = ids, live

    def _rebuild(self, extra_ids: Sequence[str] = (), extra: np.ndarray | None = None) -> None:
        """Rebuild from live vectors (+ extra), choosing flat or HNSW by the resulting size."""
        keep = np.flatnonzero(self._live[: self._n])
        stored = self.stored_vectors()
        parts = [stored[keep]]
        ids = list(self._ids[keep])
        if extra is not None and len(extra_ids):
            parts.append(extra)
            ids += [f.encode() for f in extra_ids]
        vectors = np.concatenate(parts).astype(np.float32, copy=False)
        try:
            self.load(ids, vectors)
        finally:
            wipe(stored, parts[0], vectors)

    def load(self, face_ids: Sequence[str | bytes], vectors: np.ndarray) -> None:
        """Replace the contents (a full load from a catalog snapshot)."""
        n = len(face_ids)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(n, self.dim)
        self._index = self._empty(n)
        self._ids = np.empty(max(n, 1024), dtype="S36")
        self._ids[:n] = [f if isinstance(f, bytes) else f.encode() for f in face_ids]
        self._live = np.zeros(len(self._ids), dtype=bool)
        self._live[:n] = True
        self._n, self._dead, self._bitmap = n, 0, None
        if n:
            with omp_threads(build_threads()):
                self._index.add(vectors)

    def _empty(self, n: int) -> faiss.Index:
        if n >= self.options.hnsw_threshold:
            index = faiss.IndexHNSWFlat(self.dim, self.options.hnsw_m)
            index.hnsw.efConstruction = self.options.ef_construction
            return index
        return faiss.IndexFlatL2(self.dim)

    # -- search ----------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, max_distance: float | None = None
               ) -> list[list[Hit]]:
        """The ``k`` nearest live vectors of each query row, nearest first (Euclidean), only
        those within ``max_distance`` when given."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = min(k, len(self))
        if k <= 0:
            return [[] for _ in range(len(queries))]
        params = self._params(k)
        with omp_threads(1 if len(queries) < 20 else build_threads()):
            dist, pos = self._index.search(queries, k, params=params)
        out = []
        limit = np.inf if max_distance is None else max_distance * max_distance
        for drow, prow in zip(dist, pos):
            ok = (prow >= 0) & (drow <= limit)
            out.append([Hit(fid.decode(), float(d)) for fid, d in
                        zip(self._ids[prow[ok]], np.sqrt(np.maximum(drow[ok], 0.0)))])
        return out

    def _params(self, k: int) -> Any:
        selector = None
        if self._dead:
            if self._bitmap is None:
                self._bitmap = np.packbits(self._live[: self._n], bitorder="little")
                self._selector = faiss.IDSelectorBitmap(self._n, faiss.swig_ptr(self._bitmap))
            selector = self._selector
        if isinstance(self._index, faiss.IndexHNSWFlat):
            ef = self.options.ef_search
            if self._n >= self.options.ef_large_from:
                ef *= 2
            params = faiss.SearchParametersHNSW(efSearch=max(ef, k))
            if selector is not None:
                params.sel = selector
            return params
        return None if selector is None else faiss.SearchParameters(sel=selector)

    # -- checkpoints -----------------------------------------------------------------------------
    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The index serialized (a copy of its vectors, wiped by ``_write_checkpoint``)."""
        return {
            f"{prefix}_index": faiss.serialize_index(self._index),
            f"{prefix}_ids": self._ids[: self._n],
            f"{prefix}_live": self._live[: self._n],
        }

    def from_arrays(self, arrays: Any, prefix: str) -> None:
        serialized = np.asarray(arrays[f"{prefix}_index"])
        index = faiss.deserialize_index(serialized)
        wipe(serialized)
        ids = np.asarray(arrays[f"{prefix}_ids"], dtype="S36")
        live = np.asarray(arrays[f"{prefix}_live"], dtype=bool)
        if index.ntotal != len(ids) or len(live) != len(ids) or index.d != self.dim:
            raise ValueError("inconsistent checkpoint")
        self._index, self._n = index, len(ids)
        self._ids = np.empty(max(self._n, 1024), dtype="S36")
        self._ids[: self._n] = ids
        self._live = np.zeros(len(self._ids), dtype=bool)
        self._live[: self._n] = live
        self._dead = int(self._n - live.sum())
        self._bitmap = None


def _vectors(pack: FaceModelPack, options: IndexOptions) -> VectorIndex:
    return VectorIndex(pack.embedding_size, options, pack.scrub_value)


@dataclass
class CollectionIndex:
    """The vector indexes of one collection and the change seq they reflect."""

    collection_id: int
    seq: int
    face_model_version: str  # the collection's pack: vector size, scrub value, checkpoint key
    faces: VectorIndex
    users: VectorIndex
    lock: threading.Lock = field(default_factory=threading.Lock)
    rebuilding: bool = False  # a background rebuild of faces or users is in flight

    @classmethod
    def empty(cls, collection_id: int, pack: FaceModelPack, options: IndexOptions,
              seq: int = -1) -> "CollectionIndex":
        return cls(collection_id, seq, pack.version, _vectors(pack, options),
                   _vectors(pack, options))

    @classmethod
    def from_snapshot(cls, snap: Snapshot, pack: FaceModelPack, options: IndexOptions
                      ) -> "CollectionIndex":
        entry = cls.empty(snap.collection_id, pack, options, snap.seq)
        faces, users = entry.faces, entry.users
        try:
            faces.load(snap.face_ids, snap.vectors)
            users.load(snap.user_face_ids, snap.user_vectors)
        finally:
            wipe(snap.vectors, snap.user_vectors)
        return entry

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply changes in sequence order, batching adds (FaceIds are never reused)."""
        pending: dict[str, dict[str, np.ndarray]] = {"faces": {}, "users": {}}
        targets = {"faces": self.faces, "users": self.users}

        def add(which: str, ch: Change) -> None:
            if ch.embedding is not None:  # None: the face was deleted by a later change
                pending[which][ch.face_id] = ch.embedding

        def remove(which: str, face_id: str) -> None:
            if pending[which].pop(face_id, None) is None:
                targets[which].remove([face_id])

        for ch in changes:
            if ch.op == s.OP_ADD:
                add("faces", ch)
            elif ch.op == s.OP_DELETE:
                remove("faces", ch.face_id)
                remove("users", ch.face_id)
            elif ch.op == s.OP_ASSOCIATE:
                add("users", ch)
            elif ch.op == s.OP_DISASSOCIATE:
                remove("users", ch.face_id)
        for which, items in pending.items():
            if items:
                stacked = np.stack(list(items.values()))
                targets[which].add(list(items), stacked)
                wipe(stacked)
        if changes:
            self.seq = changes[-1].seq


class IndexRegistry:
    """Per-process cache of collection indexes, caught up from the catalog before each use."""

    def __init__(self, catalog: Catalog, options: IndexOptions | None = None,
                 checkpoint_dir: Path | None = None) -> None:
        self.catalog = catalog
        self.options = options or IndexOptions.from_env()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self._indexes: dict[str, CollectionIndex] = {}
        self._lock = threading.Lock()
        self._builders: list[threading.Thread] = []
        self._remove_abandoned_writes()

    @property
    def _instance_id(self) -> str:
        """The catalog database's id, which names its checkpoints (another database's never
        load here)."""
        return self.catalog.database.instance_id

    def search(self, collection: str, queries: np.ndarray, k: int, *, users: bool = False,
               max_distance: float | None = None) -> list[list[Hit]]:
        """Nearest faces (``users=True``: nearest faces associated with a user)."""
        entry = self._entry(collection)
        with entry.lock:
            self._sync(collection, entry)
            self._start_rebuild(collection, entry)
            return (entry.users if users else entry.faces).search(queries, k, max_distance)

    def synced(self, collection: str) -> CollectionIndex:
        """The collection's index, caught up (tests and benchmarks inspect it)."""
        entry = self._entry(collection)
        with entry.lock:
            self._sync(collection, entry)
            self._start_rebuild(collection, entry)
        return entry

    def wait_for_rebuilds(self, timeout: float | None = None) -> None:
        """Join the background rebuilds in flight (tests, benchmarks, shutdown)."""
        with self._lock:
            builders = list(self._builders)
        for thread in builders:
            thread.join(timeout)

    def _start_rebuild(self, collection: str, entry: CollectionIndex) -> None:
        """Start a background rebuild of the first index that deferred one (``entry.lock``
        held): it copies the live vectors now, builds without the lock, and swaps the result in
        after applying what changed meanwhile."""
        if entry.rebuilding:
            return
        which = next((w for w in ("faces", "users") if getattr(entry, w).rebuild_due), None)
        if which is None:
            return
        owner = getattr(entry, which)
        ids, vectors = owner.live_copy()
        entry.rebuilding = True

        def build() -> None:
            saved: tuple[int, int, str, VectorIndex, VectorIndex] | None = None
            try:
                fresh = owner.rebuilt(ids, vectors)
                with entry.lock:
                    current = getattr(entry, which)
                    setattr(entry, which, current.reconcile(fresh, ids))
                    if self.checkpoint_dir is not None and \
                            len(entry.faces) >= self.options.checkpoint_min:
                        saved = (entry.collection_id, entry.seq, entry.face_model_version,
                                 entry.faces.frozen_copy(), entry.users.frozen_copy())
                log.info("rebuilt the %s index of %s in the background (%d vectors)", which,
                         collection, len(fresh))
            except Exception:
                log.exception("background rebuild of the %s index of %s failed", which,
                              collection)
            finally:
                # The copy may hold vectors of faces deleted while it built (they were overwritten
                # in ``fresh`` by ``reconcile``): zero it rather than leave it to the allocator.
                vectors.fill(0.0)
                with entry.lock:
                    entry.rebuilding = False
            if saved is not None:  # a restart then restores the rebuilt index, not the old one
                try:
                    self._write_checkpoint(saved[0], saved[1], saved[2], self._arrays(*saved))
                except OSError as exc:
                    log.warning("could not checkpoint the index of %s: %s", collection, exc)

        thread = threading.Thread(target=build, name=f"regard-rebuild-{collection}",
                                  daemon=True)
        with self._lock:
            self._builders = [t for t in self._builders if t.is_alive()] + [thread]
        thread.start()

    def forget(self, collection: str) -> None:
        with self._lock:
            self._indexes.pop(collection, None)

    def after_deletion(self, collection: str, collection_id: int) -> None:
        """Once a deletion has committed: catch the loaded index up now (overwriting the deleted
        vectors) and remove the checkpoint that still holds them. (Rewriting it instead would
        cost a write of the whole index, hundreds of MB at a million faces, per DeleteFaces; the
        next full load writes a fresh one.)"""
        self.discard_checkpoint(collection_id)
        with self._lock:
            entry = self._indexes.get(collection)
        if entry is None:
            return
        try:
            with entry.lock:
                self._sync(collection, entry)
        except Exception:
            self.forget(collection)  # no stale copy may survive; the next search reloads
            raise

    def refresh(self) -> None:
        """Catch every loaded index up with the catalog and remove the checkpoints that hold
        vectors deleted since they were written. Servers run it periodically, so a face deleted
        through another process or replica is overwritten in this one's memory and gone from its
        disk within that period even when no search here touches the collection."""
        with self._lock:
            loaded = list(self._indexes.items())
        for name, entry in loaded:
            try:
                with entry.lock:
                    self._sync(name, entry)
            except ResourceNotFoundError:  # the collection was deleted
                self.forget(name)
                self.discard_checkpoint(entry.collection_id)
        if self.checkpoint_dir is None or not self.checkpoint_dir.is_dir():
            return
        for path in self.checkpoint_dir.glob(f"{self._instance_id}-*.npz"):
            try:
                collection_id = self._checkpoint_collection(path)
            except ValueError:
                continue  # not a name this registry writes
            if collection_id is None:  # written before checkpoints were keyed by face model
                path.unlink(missing_ok=True)
                continue
            try:
                with np.load(path, allow_pickle=False) as arrays:
                    meta = json.loads(bytes(arrays["meta"]).decode())
                stale = self.catalog.deleted_since(int(meta["collection_id"]), int(meta["seq"]))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError) as exc:
                log.warning("removing unreadable index checkpoint %s: %s", path, exc)
                stale = True
            if stale:
                self.discard_checkpoint(collection_id)

    def discard_checkpoint(self, collection_id: int) -> None:
        """Remove a collection's checkpoint: after a deletion it holds vectors that must go
        (it is rewritten at the next full load, background rebuild or explicit checkpoint)."""
        if self.checkpoint_dir is None:
            return
        for path in self.checkpoint_dir.glob(f"{self._instance_id}-{collection_id}-v*.npz"):
            path.unlink(missing_ok=True)
        # and one being written: its writer finds it gone and keeps nothing
        for partial in self.checkpoint_dir.glob(
                f".{self._instance_id}-{collection_id}-v*.npz.*.tmp"):
            partial.unlink(missing_ok=True)

    def _remove_abandoned_writes(self) -> None:
        """Delete partial checkpoints that a process died writing (``.NAME.PID.TID.tmp`` of a
        process that no longer runs): they hold vectors that later deletions never reach."""
        if self.checkpoint_dir is None or not self.checkpoint_dir.is_dir():
            return
        for partial in self.checkpoint_dir.glob(".*.npz.*.tmp"):
            try:
                pid = int(partial.name.split(".npz.", 1)[1].split(".")[0])
                os.kill(pid, 0)
            except ProcessLookupError:
                partial.unlink(missing_ok=True)
            except (ValueError, IndexError, PermissionError, OSError):
                continue  # not ours to judge, or the process still runs

    def checkpoint(self, collection: str) -> Path | None:
        """Write the collection's caught-up index to the checkpoint directory."""
        entry = self._entry(collection)
        with entry.lock:
            self._sync(collection, entry)
            return self._save(entry)

    def checkpoint_if_large(self, collection: str) -> Path | None:
        """``checkpoint`` once the collection holds ``checkpoint_min`` faces (after a batch has
        indexed into it, so that the next search starts warm); None below that."""
        if self.catalog.get_collection(collection).face_count < self.options.checkpoint_min:
            return None
        return self.checkpoint(collection)

    # -- internals -------------------------------------------------------------------------------
    def _entry(self, collection: str) -> CollectionIndex:
        with self._lock:
            entry = self._indexes.get(collection)
            if entry is None:
                cid, _, _ = self.catalog.state(collection)
                pack = get_pack(self.catalog.get_collection(collection).face_model_version)
                entry = self._restore(cid, pack) or CollectionIndex.empty(cid, pack,
                                                                           self.options)
                self._indexes[collection] = entry
            return entry

    def _sync(self, collection: str, entry: CollectionIndex) -> None:
        """Bring ``entry`` up to the catalog (call with ``entry.lock`` held)."""
        cid, seq, count = self.catalog.state(collection)
        if cid == entry.collection_id and seq == entry.seq and len(entry.faces) == count:
            return
        if cid == entry.collection_id and entry.seq >= 0 and seq > entry.seq:
            head, count, changes = self.catalog.changes_since(cid, entry.seq)
            # Sequence numbers are gap-free per collection; a gap would mean lost history.
            contiguous = all(ch.seq == entry.seq + 1 + i for i, ch in enumerate(changes))
            if contiguous:
                entry.apply(changes)
                if any(ch.op == s.OP_DELETE for ch in changes):
                    # deleted elsewhere (another process or replica): our checkpoint holds them
                    self.discard_checkpoint(cid)
                if entry.seq == head and len(entry.faces) == count:
                    return
            log.warning("index of %s disagrees with the catalog after catching up; reloading",
                        collection)
        self._reload(collection, entry, cid)

    def _reload(self, collection: str, entry: CollectionIndex, cid: int) -> None:
        fresh = CollectionIndex.from_snapshot(self.catalog.snapshot(cid),
                                              get_pack(entry.face_model_version), self.options)
        entry.collection_id, entry.seq = fresh.collection_id, fresh.seq
        entry.faces, entry.users = fresh.faces, fresh.users
        if len(entry.faces) >= self.options.checkpoint_min:
            try:
                self._save(entry)
            except OSError as exc:  # a full disk costs the next start a rebuild, not a search
                log.warning("could not checkpoint the index of %s: %s", collection, exc)

    def _path(self, collection_id: int, face_model_version: str) -> Path | None:
        """Checkpoints are keyed by the face model too: a collection's vectors are only ever
        restored into an index of the pack that computed them."""
        if self.checkpoint_dir is None:
            return None
        return (self.checkpoint_dir
                / f"{self._instance_id}-{collection_id}-v{face_model_version}.npz")

    def _checkpoint_collection(self, path: Path) -> int | None:
        """The collection id in a checkpoint's name; None for a name without a face model
        (an older format); ``ValueError`` for a name this registry does not write."""
        rest = path.name[len(self._instance_id) + 1:-len(".npz")]
        collection_id, versioned, _ = rest.partition("-v")
        number = int(collection_id)  # ValueError: not ours
        return number if versioned else None

    def _save(self, entry: CollectionIndex) -> Path | None:
        """Checkpoint ``entry`` (its lock held)."""
        if self._path(entry.collection_id, entry.face_model_version) is None:
            return None
        return self._write_checkpoint(
            entry.collection_id, entry.seq, entry.face_model_version,
            self._arrays(entry.collection_id, entry.seq, entry.face_model_version, entry.faces,
                         entry.users))

    def _arrays(self, collection_id: int, seq: int, face_model_version: str, faces: VectorIndex,
                users: VectorIndex) -> dict[str, np.ndarray]:
        """What a checkpoint holds: the two indexes as they are at ``seq``."""
        meta = {"format": CHECKPOINT_FORMAT, "instance_id": self._instance_id,
                "collection_id": collection_id, "seq": seq,
                "face_model_version": face_model_version}
        return {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                **faces.to_arrays("faces"), **users.to_arrays("users")}

    def _write_checkpoint(self, collection_id: int, seq: int, face_model_version: str,
                          arrays: dict[str, np.ndarray]) -> Path | None:
        """Write a checkpoint current at ``seq``, unless a face was deleted after ``seq``
        meanwhile: the deleting process (or ``after_deletion`` here) may have removed the old
        checkpoint before this one landed, and this one may hold the deleted vectors. Checking
        after the rename closes that race: a deletion committed before the check is seen by it,
        one committed after removes the file itself."""
        path = self._path(collection_id, face_model_version)
        if path is None:
            return None
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with os.fdopen(open_private(tmp), "wb") as fh:  # embeddings: owner-only
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except FileNotFoundError:
            return None  # a deletion removed it while it was written (``discard_checkpoint``)
        except OSError as exc:
            if is_storage_full(exc):  # for /healthz: the catalog's disk is likely next
                self.catalog.database.health.note_full()
            raise
        finally:
            tmp.unlink(missing_ok=True)
            wipe(*(a for name, a in arrays.items() if name.endswith("_index")))  # serialized
        if self.catalog.deleted_since(collection_id, seq):
            path.unlink(missing_ok=True)
            return None
        return path

    def _restore(self, collection_id: int, pack: FaceModelPack) -> CollectionIndex | None:
        """A checkpointed index of ``pack``'s vectors (to be caught up by ``_sync``), or None."""
        path = self._path(collection_id, pack.version)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as arrays:
                meta = json.loads(bytes(arrays["meta"]).decode())
                if (meta.get("format") != CHECKPOINT_FORMAT
                        or meta.get("instance_id") != self._instance_id
                        or meta.get("collection_id") != collection_id
                        or meta.get("face_model_version") != pack.version):
                    return None
                entry = CollectionIndex.empty(collection_id, pack, self.options,
                                              int(meta["seq"]))
                entry.faces.from_arrays(arrays, "faces")
                entry.users.from_arrays(arrays, "users")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("ignoring unreadable index checkpoint %s: %s", path, exc)
            return None
        return entry
