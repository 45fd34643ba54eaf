"""Storage: the SQL catalog (source of truth) and the in-memory vector indexes derived from it.

``Store`` pairs them: writes go to the catalog, searches go to a collection's index, which first
catches up with the catalog's change sequence (so another process's writes are visible to the next
search). Open one ``Store`` per process and share it between threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from regard.store.catalog import (
    Catalog,
    CollectionInfo,
    FaceRow,
    Failure,
    NewFace,
    UserRow,
    database_url,
)
from regard.store.index import Hit, IndexOptions, IndexRegistry, VectorIndex
from regard.vision.models import regard_home

__all__ = [
    "Catalog", "CollectionInfo", "FaceRow", "Failure", "Hit", "IndexOptions",
    "NewFace", "Store", "UserRow", "VectorIndex", "database_url",
]


class Store:
    """Catalog + vector indexes. ``url``: SQLAlchemy URL (default ``REGARD_DATABASE_URL`` or
    SQLite under ``REGARD_HOME``); ``checkpoint_dir``: where large indexes are checkpointed
    (default ``$REGARD_HOME/index``; ``False`` disables checkpoints)."""

    def __init__(self, url: str | None = None, *, index_options: IndexOptions | None = None,
                 checkpoint_dir: Path | None | bool = None) -> None:
        self.catalog = Catalog(url)
        if checkpoint_dir is None or checkpoint_dir is True:
            checkpoint_dir = regard_home() / "index"
        self.indexes = IndexRegistry(self.catalog, index_options,
                                     checkpoint_dir if checkpoint_dir else None)

    def search(self, collection: str, queries: np.ndarray, k: int, *, users: bool = False,
               max_distance: float | None = None) -> list[list[Hit]]:
        """The ``k`` nearest faces of each query row within ``max_distance`` (Euclidean), after
        catching up with the catalog."""
        return self.indexes.search(collection, queries, k, users=users,
                                   max_distance=max_distance)

    def add_faces(self, collection: str, faces: list[NewFace]) -> list[FaceRow]:
        """Store faces in one transaction (the index picks them up on its next search)."""
        return self.catalog.add_faces(collection, faces)

    def delete_faces(self, collection: str, face_ids: list[str]) -> tuple[list[str], list[Failure]]:
        """Delete faces (refusing those associated with a user); once that commits, their
        vectors are overwritten in the loaded index and its checkpoint is removed."""
        deleted, failures = self.catalog.delete_faces(collection, face_ids)
        if deleted:
            self.cleanup_after_deletion(collection)
        return deleted, failures

    def erase(self, collection: str, face_ids: Sequence[str], user_ids: Sequence[str] = ()
              ) -> tuple[list[str], list[str]]:
        """``Catalog.erase`` (faces whether or not associated, and users); once that commits,
        their vectors are overwritten in the index and its checkpoint."""
        gone, users_gone = self.catalog.erase(collection, face_ids, user_ids)
        if gone or users_gone:
            self.cleanup_after_deletion(collection)
        return gone, users_gone

    def cleanup_after_deletion(self, collection: str) -> None:
        cid = self.catalog.state(collection)[0]
        self.catalog.after_commit(lambda: self.indexes.after_deletion(collection, cid))

    def delete_collection(self, collection: str) -> CollectionInfo:
        info = self.catalog.delete_collection(collection)
        self.indexes.forget(collection)
        self.indexes.discard_checkpoint(info.id)
        return info

    def close(self) -> None:
        self.catalog.close()
