"""Helpers for the store tests that must run in other processes (spawned, so importable by name):
concurrent writers, and a batch indexer that the durability test kills with SIGKILL.

Run as a script it is that batch indexer: ``python store_workers.py DB_URL COLLECTION SEED``
adds batches of 1-5 faces forever and prints each batch's FaceIds (one line, space-separated)
only after the catalog acknowledged it (the transaction committed).
"""

from __future__ import annotations

import sys
import uuid

import numpy as np

from regard.store import NewFace, Store


def random_faces(n: int, seed: int, sha: str | None = None) -> list[NewFace]:
    """``n`` faces with random unit-scale embeddings (the store does not care what they mean)."""
    rng = np.random.default_rng(seed)
    image_id = str(uuid.uuid4())
    vecs = (rng.normal(size=(n, 128)) * 0.1).astype(np.float32)
    # consent_ref records the batch size, so a test can tell a whole batch from part of one.
    return [NewFace(v, (0.1, 0.2, 0.3, 0.4), 99.5, image_id, f"img-{seed}-{i}", sha,
                    consent_ref=f"batch:{n}") for i, v in enumerate(vecs)]


def writer(url: str, collection: str, seed: int, batches: int, batch_size: int) -> list[str]:
    """Add ``batches`` batches and search after each (catching up with everyone else's writes);
    return the FaceIds added."""
    store = Store(url, checkpoint_dir=False)
    added: list[str] = []
    for b in range(batches):
        faces = random_faces(batch_size, seed=seed * 10_000 + b)
        store.add_faces(collection, faces)
        added += [f.face_id for f in faces]
        hit = store.search(collection, faces[-1].embedding, 1)[0][0]
        if hit.face_id != faces[-1].face_id:
            raise AssertionError("a face just added is not found by its own embedding")
    store.close()
    return added


def main(url: str, collection: str, seed: int) -> None:
    store = Store(url, checkpoint_dir=False)
    rng = np.random.default_rng(seed)
    b = 0
    while True:
        faces = random_faces(int(rng.integers(1, 6)), seed=seed * 100_000 + b)
        store.add_faces(collection, faces)
        sys.stdout.write(" ".join(f.face_id for f in faces) + "\n")
        sys.stdout.flush()
        b += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
