"""Concurrency and durability of the store, on SQLite and on PostgreSQL: writers in several threads
and several processes while others search lose nothing; a batch indexer killed with SIGKILL leaves
a catalog and an index that agree, with every acknowledged face present and no half-written
batch."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from regard.store import Store

import store_workers
from store_workers import random_faces, writer

HERE = Path(__file__).resolve().parent


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test on SQLite and on a real PostgreSQL server (skipped where none is installed)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'regard.db'}"
    return request.getfixturevalue("postgres_url")


def _assert_all_present(store: Store, collection: str, face_ids: list[str]) -> None:
    """Catalog and index agree, and each face is found first by its own embedding."""
    assert store.catalog.consistency_problems(collection) == []
    _, seq, count = store.catalog.state(collection)
    rows = store.catalog.get_faces(collection, face_ids, embeddings=True)
    assert set(rows) == set(face_ids)
    entry = store.indexes.synced(collection)
    assert len(entry.faces) == count and entry.seq == seq
    assert set(entry.faces.face_ids()) >= set(face_ids)
    vectors = np.stack([rows[f].embedding for f in face_ids])
    for fid, hits in zip(face_ids, store.search(collection, vectors, 1)):
        assert hits[0].face_id == fid and hits[0].distance < 1e-3


def test_threads_write_and_search_concurrently(url):
    store = Store(url, checkpoint_dir=False)
    store.catalog.create_collection("c", "arn:c", "1.0")
    added: list[list[str]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(i: int) -> None:
        try:
            for b in range(10):
                faces = random_faces(5, seed=i * 100 + b)
                store.add_faces("c", faces)
                added[i] += [f.face_id for f in faces]
                assert store.search("c", faces[0].embedding, 1)[0][0].face_id == faces[0].face_id
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def search() -> None:
        rng = np.random.default_rng(0)
        try:
            while not stop.is_set():
                store.search("c", rng.normal(size=(3, 128)).astype(np.float32) * 0.1, 5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    searchers = [threading.Thread(target=search) for _ in range(2)]
    for t in writers + searchers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in searchers:
        t.join()
    assert not errors, errors
    everything = [f for part in added for f in part]
    assert len(everything) == 200
    _assert_all_present(store, "c", everything)
    # A second Store (another process's view) rebuilt from the catalog agrees too.
    _assert_all_present(Store(url, checkpoint_dir=False), "c", everything)


def test_processes_write_while_this_one_searches(url):
    store = Store(url, checkpoint_dir=False)
    store.catalog.create_collection("c", "arn:c", "1.0")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=3, mp_context=ctx) as pool:
        futures = [pool.submit(writer, url, "c", seed, 10, 5) for seed in range(3)]
        while not all(f.done() for f in futures):
            hits = store.search("c", np.zeros(128, np.float32), 3)[0]
            assert len(hits) <= 3
            time.sleep(0.01)
        everything = [fid for f in futures for fid in f.result()]
    assert len(everything) == 150
    _assert_all_present(store, "c", everything)


@pytest.mark.slow
def test_kill_9_mid_batch_loses_no_acknowledged_face(url):
    Store(url, checkpoint_dir=False).catalog.create_collection("c", "arn:c", "1.0")
    acknowledged: list[str] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    for round_, stop_after in enumerate((7, 23, 41)):
        child = subprocess.Popen(
            [sys.executable, "-u", store_workers.__file__, url, "c", str(round_ + 1)],
            stdout=subprocess.PIPE, text=True, env=env)
        assert child.stdout is not None
        for _ in range(stop_after):
            line = child.stdout.readline()
            assert line, "the indexer died on its own"
            acknowledged += line.split()
        os.kill(child.pid, signal.SIGKILL)  # almost surely inside the next transaction
        child.wait()
        acknowledged += child.stdout.read().split()  # acknowledged before the kill landed
        store = Store(url, checkpoint_dir=False)
        _assert_all_present(store, "c", acknowledged)
        batches: dict[str, list[str]] = defaultdict(list)
        for row in store.catalog.list_faces("c", limit=100_000):
            batches[row.image_id].append(row.consent_ref)
        for refs in batches.values():  # every stored batch is whole
            assert len(refs) == int(refs[0].split(":")[1])
        store.close()
