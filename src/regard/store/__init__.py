"""Storage: one SQL database (``Database``), the repositories over it (the catalog of collections,
faces and users, the source of truth; the access keys) and the in-memory vector indexes derived
from the catalog.

``Store`` puts them together: writes go to the catalog, searches go to a collection's index, which
first catches up with the catalog's change sequence (so another process's writes are visible to
the next search). Open one ``Store`` per process and share it between threads.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from regard.store.catalog import (
    Catalog,
    CollectionInfo,
    FaceRow,
    Failure,
    NewFace,
    UserRow,
)
from regard.store.database import Database, database_url
from regard.store.index import Hit, IndexOptions, IndexRegistry, VectorIndex
from regard.config import regard_home

if TYPE_CHECKING:
    from regard.governance.keys import KeyStore

__all__ = [
    "Catalog", "CollectionInfo", "Database", "FaceRow", "Failure", "Hit", "IndexOptions",
    "NewFace", "Store", "UserRow", "VectorIndex", "database_url",
]


class Store:
    """One ``database``, the ``catalog`` and the access ``keys`` over it, and the catalog's vector
    ``indexes``. ``url``: SQLAlchemy URL (default ``REGARD_DATABASE_URL`` or SQLite under
    ``REGARD_HOME``); ``checkpoint_dir``: where large indexes are checkpointed (default
    ``$REGARD_HOME/index``; ``False`` disables checkpoints).

    The audit ledger is not built here: its signing key is governance's to choose, so the
    service builds ``Ledger(store.database)`` itself."""

    def __init__(self, url: str | None = None, *, index_options: IndexOptions | None = None,
                 checkpoint_dir: Path | None | bool = None) -> None:
        self.database = Database(url)
        self.catalog = Catalog(self.database)
        if checkpoint_dir is None or checkpoint_dir is True:
            checkpoint_dir = regard_home() / "index"
        self.indexes = IndexRegistry(self.catalog, index_options,
                                     checkpoint_dir if checkpoint_dir else None)

    @cached_property
    def keys(self) -> KeyStore:
        """The access keys, in this store's database."""
        # Imported here: governance's repositories import ``regard.store`` (its schema and
        # ``Database``), so importing them at the top of this package would be a cycle.
        from regard.governance.keys import KeyStore

        return KeyStore(self.database)

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
        self.database.after_commit(lambda: self.indexes.after_deletion(collection, cid))

    def delete_collection(self, collection: str) -> CollectionInfo:
        info = self.catalog.delete_collection(collection)
        self.indexes.forget(collection)
        self.indexes.discard_checkpoint(info.id)
        return info

    def close(self) -> None:
        self.database.close()
