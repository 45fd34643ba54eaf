"""The catalog: collections, faces (with their embeddings) and users, in SQL via SQLAlchemy Core.

The catalog is the source of truth; vector indexes are rebuilt from it. It is a repository over a
``Database`` (``store/database.py``: engine, pragmas, transactions, the unit of work), which the
access keys and the audit ledger share. Every write is one transaction that first locks its
collection (SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock; PostgreSQL:
``SELECT ... FOR UPDATE`` on the collection row), so concurrent writers from many threads or
processes serialize per collection, a writer never upgrades a read lock (the classic SQLite
deadlock), and the change sequence is gap-free in commit order. Inside a unit of work
(``Database.unit_of_work``) the catalog's writes join the unit's one transaction.

Embeddings here are plain numpy float32 arrays; nothing in this module knows about calibration,
engines or HTTP.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from regard import config
from regard.errors import (
    ConflictError,
    InvalidParameterError,
    ResourceAlreadyExistsError,
    ResourceNotFoundError,
    ServiceQuotaExceededError,
)
from regard.secure_memory import wipe
from regard.store import schema as s
from regard.store.database import MAX_LISTED, Database, as_utc, utcnow
from regard.vision.packs import get_pack

MAX_FACES_PER_USER = 100  # Rekognition's limit


# -- rows ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CollectionInfo:
    id: int
    name: str
    arn: str
    face_model_version: str
    created: datetime
    tags: dict[str, str]
    seq: int
    face_count: int


@dataclass(frozen=True)
class NewFace:
    """A face to add. ``bbox`` is Rekognition's (left, top, width, height) in image ratios."""

    embedding: np.ndarray
    bbox: tuple[float, float, float, float]
    confidence: float
    image_id: str
    external_image_id: str | None = None
    image_sha256: str | None = None
    face_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    expires: datetime | None = None
    consent_ref: str | None = None


@dataclass(frozen=True)
class FaceRow:
    face_id: str
    image_id: str
    external_image_id: str | None
    bbox: tuple[float, float, float, float]
    confidence: float
    created: datetime
    user_id: str | None
    seq: int
    image_sha256: str | None = None
    expires: datetime | None = None
    consent_ref: str | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class UserRow:
    user_id: str
    status: str
    created: datetime


@dataclass(frozen=True)
class Change:
    seq: int
    op: str
    face_id: str
    embedding: np.ndarray | None  # None when the face no longer exists (or op is a removal)


@dataclass(frozen=True)
class Snapshot:
    """Everything an index needs, read in one consistent transaction (the vectors are the
    reader's to wipe once loaded)."""

    collection_id: int
    seq: int
    face_count: int
    face_ids: list[str]
    vectors: np.ndarray  # (n, d) float32
    user_face_ids: list[str]
    user_vectors: np.ndarray


@dataclass(frozen=True)
class Failure:
    """A face an association, disassociation or deletion could not apply to, and why."""

    face_id: str
    reasons: list[str]
    user_id: str | None = None
    confidence: float | None = None


# Given the user's current embeddings (n, d) and one candidate's (d,): (accepted, confidence).
AssociationCheck = Callable[[np.ndarray, np.ndarray], tuple[bool, float | None]]


def to_blob(vector: np.ndarray, size: int) -> bytes:
    """An embedding as stored: ``size`` little-endian float32 (its face-model pack's size)."""
    v = np.asarray(vector, dtype="<f4").reshape(-1)
    if v.shape[0] != size or not np.all(np.isfinite(v)):
        raise InvalidParameterError(f"An embedding of this collection must be {size} finite "
                                    f"floats, got {v.shape[0]}")
    return v.tobytes()


def embedding_size(face_model_version: str) -> int | None:
    """The embedding size of a face model, None when it is not installed here."""
    try:
        return get_pack(face_model_version).embedding_size
    except InvalidParameterError:
        return None


def embedding_checksum(face_id: str, blob: bytes) -> str:
    """SHA-256 of a face's embedding bytes bound to its FaceId, stored beside the embedding so
    that ``consistency_problems`` finds bytes changed on disk and rows swapped. Unkeyed: it
    catches damage, not someone who rewrites the database and the checksum together."""
    return hashlib.sha256(face_id.encode() + b"\0" + blob).hexdigest()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def _concatenated(parts: list[np.ndarray]) -> np.ndarray:
    """``parts`` as one array; the parts are wiped once copied."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.empty((0, 0), dtype=np.float32)
    whole = np.concatenate(parts)
    wipe(*parts)
    return whole


def _stack(blobs: Sequence[bytes]) -> np.ndarray:
    """Blobs as one (n, d) array, the caller's to wipe once used (``secure_memory``)."""
    if not blobs:
        return np.empty((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1).astype(np.float32)


class Catalog:
    """Collections, faces and users: a repository over one ``Database`` (see the module
    docstring). ``Catalog(url)`` (a URL string, or nothing for ``database_url()``), with
    ``busy_timeout_ms``, still opens a ``Database`` of its own, for the callers that predate the
    split; new code passes ``Catalog(Database(...))``.

    Every method about one collection takes the collection's NAME (``CollectionId``, the
    identity every request uses), resolved inside the method's own statement or transaction.
    Writes (and the reads that must tell) raise ``ResourceNotFoundError`` for an unknown name;
    the plain reads (``get_faces``, ``list_faces``, ``find_faces``, ``get_users``,
    ``list_users``, ``user_embeddings``, ``user_count``) read an unknown name as an empty
    collection, as a collection deleted between the caller's lookup and the read would be.

    The one exception is the change log the vector index reads (``snapshot``,
    ``changes_since``, ``deleted_since``): it takes the collection's numeric id, which ``state``
    returns, because a name can be reused by a new collection after a delete and an index must
    never mix two collections' changes."""

    def __init__(self, database: Database | str | None = None, *,
                 busy_timeout_ms: int | None = None,
                 change_log_keep: int | None = None) -> None:
        # Changes kept per collection (default ``REGARD_CHANGE_LOG_KEEP``): enough for any index
        # that is merely behind to catch up; one further behind (a checkpoint from long ago, a
        # replica restarted after a bulk load) reloads from the catalog, which ``IndexRegistry``
        # does whenever the changes it gets are not contiguous.
        self.change_log_keep = change_log_keep or config.current().change_log_keep
        if self.change_log_keep < 1:
            raise InvalidParameterError("change_log_keep must be at least 1")
        if isinstance(database, Database):
            if busy_timeout_ms is not None:
                raise TypeError("busy_timeout_ms belongs to the Database: "
                                "Database(url, busy_timeout_ms=...)")
        else:  # compatibility: a URL (or None) opens a Database of the catalog's own
            database = Database(database, busy_timeout_ms=busy_timeout_ms)
        self.database = database
        # Statements every operation runs, built once (building one costs more than running it).
        self._state_stmt = select(s.collections.c.id, s.collections.c.seq,
                                  s.collections.c.face_count).where(
            s.collections.c.name == bindparam("name"))
        self._collection_stmt = select(s.collections).where(
            s.collections.c.name == bindparam("name"))
        self._id_stmt = select(s.collections.c.id).where(
            s.collections.c.name == bindparam("name"))
        # The search hot path: the collection resolved by name in the same statement (a scalar
        # subquery on the unique name, evaluated once), so a search costs no extra round trip.
        self._faces_stmt = {with_embeddings: select(*_face_columns(with_embeddings)).where(and_(
            s.faces.c.collection_id == _id_of(bindparam("name")),
            s.faces.c.face_id.in_(bindparam("ids", expanding=True))))
            for with_embeddings in (False, True)}

    # -- within a write transaction ------------------------------------------------------------
    def _lock(self, conn: Connection, name: str) -> CollectionInfo:
        row = conn.execute(
            select(s.collections).where(s.collections.c.name == name).with_for_update()
        ).first()
        if row is None:
            raise ResourceNotFoundError(f"The collection id: {name} does not exist")
        return _collection(row)

    def _resolve(self, conn: Connection, name: str) -> int:
        """The id of the collection named ``name`` (a read, within the caller's transaction)."""
        cid = conn.execute(self._id_stmt, {"name": name}).scalar()
        if cid is None:
            raise ResourceNotFoundError(f"The collection id: {name} does not exist")
        return int(cid)

    def _advance(self, conn: Connection, coll: CollectionInfo, ops: Sequence[tuple[str, str]],
                 face_delta: int = 0) -> list[int]:
        """Append ``(op, face_id)`` changes; return their sequence numbers. Every tenth of
        ``change_log_keep`` changes, the changes older than the last ``change_log_keep`` go."""
        head = coll.seq + len(ops)
        seqs = list(range(coll.seq + 1, head + 1))
        if ops:
            conn.execute(insert(s.changes), [
                {"collection_id": coll.id, "seq": q, "op": op, "face_id": fid}
                for q, (op, fid) in zip(seqs, ops)
            ])
        conn.execute(update(s.collections).where(s.collections.c.id == coll.id).values(
            seq=head, face_count=s.collections.c.face_count + face_delta))
        step = max(1, self.change_log_keep // 10)
        if head > self.change_log_keep and head // step > coll.seq // step:
            conn.execute(delete(s.changes).where(and_(
                s.changes.c.collection_id == coll.id,
                s.changes.c.seq <= head - self.change_log_keep)))
        return seqs

    # -- collections ---------------------------------------------------------------------------
    def create_collection(self, name: str, arn: str, face_model_version: str,
                          tags: dict[str, str] | None = None) -> CollectionInfo:
        try:
            with self.database.write_transaction() as conn:
                exists = conn.execute(
                    select(s.collections.c.id).where(s.collections.c.name == name)).first()
                if exists:
                    raise ResourceAlreadyExistsError(f"The collection id: {name} already exists")
                conn.execute(insert(s.collections).values(
                    name=name, arn=arn, face_model_version=face_model_version, created=utcnow(),
                    tags=dict(tags or {}), seq=0, face_count=0))
                return self._lock(conn, name)
        except IntegrityError as exc:  # a concurrent create won the race (PostgreSQL)
            raise ResourceAlreadyExistsError(f"The collection id: {name} already exists") from exc

    def get_collection(self, name: str) -> CollectionInfo:
        with self.database.single_statement.connect() as conn:
            row = conn.execute(self._collection_stmt, {"name": name}).first()
        if row is None:
            raise ResourceNotFoundError(f"The collection id: {name} does not exist")
        return _collection(row)

    def list_collections(self, after_id: int = 0, limit: int = 1000) -> list[CollectionInfo]:
        """Collections in creation order (id), after ``after_id``."""
        with self.database.engine.connect() as conn:
            rows = conn.execute(select(s.collections).where(s.collections.c.id > after_id)
                                .order_by(s.collections.c.id).limit(limit)).all()
        return [_collection(r) for r in rows]

    def delete_collection(self, name: str) -> CollectionInfo:
        with self.database.write_transaction() as conn:
            coll = self._lock(conn, name)
            for table in (s.changes, s.faces, s.users, s.images_without_faces):
                conn.execute(delete(table).where(table.c.collection_id == coll.id))
            conn.execute(delete(s.collections).where(s.collections.c.id == coll.id))
            return coll

    def user_count(self, collection: str) -> int:
        """The collection's number of users (0 for an unknown name)."""
        with self.database.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(s.users)
                                .where(s.users.c.collection_id == _id_of(collection))
                                ).scalar_one()

    # -- faces ---------------------------------------------------------------------------------
    def add_faces(self, collection: str, new: Sequence[NewFace]) -> list[FaceRow]:
        """Add faces in one transaction: all of them are stored, or none."""
        now = utcnow()
        with self.database.write_transaction() as conn:
            coll = self._lock(conn, collection)
            size = get_pack(coll.face_model_version).embedding_size
            blobs = [to_blob(f.embedding, size) for f in new]
            rows = [{
                "face_id": f.face_id, "image_id": f.image_id,
                "external_image_id": f.external_image_id, "image_sha256": f.image_sha256,
                "bbox_left": float(f.bbox[0]), "bbox_top": float(f.bbox[1]),
                "bbox_width": float(f.bbox[2]), "bbox_height": float(f.bbox[3]),
                "confidence": float(f.confidence), "embedding": blob,
                "embedding_sha256": embedding_checksum(f.face_id, blob),
                "created": now, "expires": f.expires, "consent_ref": f.consent_ref,
                "user_id": None,
            } for f, blob in zip(new, blobs)]
            seqs = self._advance(conn, coll, [(s.OP_ADD, r["face_id"]) for r in rows],
                                 face_delta=len(rows))
            for row, q in zip(rows, seqs):
                row["collection_id"], row["seq"] = coll.id, q
            if rows:
                conn.execute(insert(s.faces), rows)
        return [_face({**r, "embedding": None}) for r in rows]

    def get_faces(self, collection: str, face_ids: Sequence[str], *,
                  embeddings: bool = False) -> dict[str, FaceRow]:
        """The faces among ``face_ids`` that exist in the collection, by id (none for an
        unknown name)."""
        found: dict[str, FaceRow] = {}
        if not face_ids:
            return found
        with self.database.engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(face_ids)), 500):
                rows = conn.execute(self._faces_stmt[embeddings],
                                    {"name": collection, "ids": chunk}).all()
                for r in rows:
                    found[r.face_id] = _face(r._mapping)
        return found

    def list_faces(self, collection: str, *, after: str | None = None, limit: int = 1000,
                   user_id: str | None = None, face_ids: Sequence[str] | None = None,
                   external_image_id: str | None = None) -> list[FaceRow]:
        """Faces ordered by FaceId (stable pagination), optionally filtered (none for an
        unknown name)."""
        cond = [s.faces.c.collection_id == _id_of(collection)]
        if external_image_id is not None:
            cond.append(s.faces.c.external_image_id == external_image_id)
        if after:
            cond.append(s.faces.c.face_id > after)
        if user_id is not None:
            cond.append(s.faces.c.user_id == user_id)
        if face_ids is not None:
            cond.append(s.faces.c.face_id.in_(list(face_ids)))
        with self.database.engine.connect() as conn:
            rows = conn.execute(select(*_face_columns(False)).where(and_(*cond))
                                .order_by(s.faces.c.face_id).limit(limit)).all()
        return [_face(r._mapping) for r in rows]

    def delete_faces(self, collection: str, face_ids: Sequence[str]
                     ) -> tuple[list[str], list[Failure]]:
        """Delete faces; a face associated with a user is refused (Rekognition's rule)."""
        wanted = list(dict.fromkeys(face_ids))
        with self.database.write_transaction() as conn:
            coll = self._lock(conn, collection)
            existing = _face_owners(conn, coll.id, wanted)
            failures, deleted = [], []
            for fid in wanted:
                if fid not in existing:
                    failures.append(Failure(fid, ["FACE_NOT_FOUND"]))
                elif existing[fid] is not None:
                    failures.append(Failure(fid, ["ASSOCIATED_TO_AN_EXISTING_USER"],
                                            user_id=existing[fid]))
                else:
                    deleted.append(fid)
            self._advance(conn, coll, [(s.OP_DELETE, f) for f in deleted],
                          face_delta=-len(deleted))
            for chunk in _chunks(deleted, 500):
                conn.execute(delete(s.faces).where(s.faces.c.face_id.in_(chunk)))
        return deleted, failures

    def erase(self, collection: str, face_ids: Sequence[str], user_ids: Sequence[str] = ()
              ) -> tuple[list[str], list[str]]:
        """Delete faces whether or not they are associated with a user, and delete users, in one
        transaction (erasure and retention; DeleteFaces keeps Rekognition's refusal). Returns the
        FaceIds and UserIds that existed and are now gone."""
        wanted = list(dict.fromkeys(face_ids))
        with self.database.write_transaction() as conn:
            coll = self._lock(conn, collection)
            existing = _face_owners(conn, coll.id, wanted)
            gone = [f for f in wanted if f in existing]
            self._advance(conn, coll, [(s.OP_DELETE, f) for f in gone], face_delta=-len(gone))
            for chunk in _chunks(gone, 500):
                conn.execute(delete(s.faces).where(s.faces.c.face_id.in_(chunk)))
            users_gone = []
            for user_id in dict.fromkeys(user_ids):
                if conn.execute(delete(s.users).where(and_(
                        s.users.c.collection_id == coll.id, s.users.c.user_id == user_id))
                        ).rowcount:
                    users_gone.append(user_id)
            touched = {existing[f] for f in gone if existing[f] is not None} - set(users_gone)
            for user_id in touched:  # users that lost faces but remain
                left = conn.execute(select(func.count()).select_from(s.faces).where(and_(
                    s.faces.c.collection_id == coll.id, s.faces.c.user_id == user_id))
                ).scalar_one()
                self._set_status(conn, coll, user_id, "ACTIVE" if left else "CREATED")
        return gone, users_gone

    def find_faces(self, collection: str, *, external_image_id: str | None = None,
                   user_id: str | None = None, created_before: datetime | None = None,
                   expires_before: datetime | None = None) -> list[tuple[str, str | None]]:
        """(FaceId, UserId) of the faces matching every given criterion (erasure, retention);
        none for an unknown name."""
        f = s.faces.c
        stmt = select(f.face_id, f.user_id).where(f.collection_id == _id_of(collection))
        if external_image_id is not None:
            stmt = stmt.where(f.external_image_id == external_image_id)
        if user_id is not None:
            stmt = stmt.where(f.user_id == user_id)
        if created_before is not None:
            stmt = stmt.where(f.created < created_before)
        if expires_before is not None:
            stmt = stmt.where(and_(f.expires.is_not(None), f.expires <= expires_before))
        with self.database.engine.connect() as conn:
            return [(r.face_id, r.user_id) for r in conn.execute(stmt.order_by(f.face_id))]

    def set_tags(self, collection: str, tags: dict[str, str]) -> CollectionInfo:
        """Replace a collection's tags (policy changes arrive this way)."""
        with self.database.write_transaction() as conn:
            coll = self._lock(conn, collection)
            conn.execute(update(s.collections).where(s.collections.c.id == coll.id)
                         .values(tags=dict(tags)))
            return self._lock(conn, collection)

    def image_hashes(self, collection: str) -> set[str]:
        """SHA-256 of every image that has at least one face in the collection."""
        with self.database.engine.connect() as conn:
            cid = self._resolve(conn, collection)
            rows = conn.execute(select(s.faces.c.image_sha256).distinct().where(and_(
                s.faces.c.collection_id == cid, s.faces.c.image_sha256.is_not(None))))
            return {r[0] for r in rows}

    def images_without_faces(self, collection: str) -> set[str]:
        """SHA-256 of the images an IndexFaces into the collection stored no face from."""
        t = s.images_without_faces
        with self.database.engine.connect() as conn:
            cid = self._resolve(conn, collection)
            rows = conn.execute(select(t.c.image_sha256).where(t.c.collection_id == cid))
            return {r[0] for r in rows}

    def image_known(self, collection: str, image_sha256: str, *, lock: bool = False) -> bool:
        """Whether an IndexFaces into the collection already stored faces from this image, or
        noted that it had none. With ``lock``, in a write transaction that holds the
        collection's row until the caller's unit of work commits: a batch's check and its
        insert are then one step, so two workers given the same image (a task retried after its
        node died, two copies of one photo) index it once."""
        if lock:
            with self.database.write_transaction() as conn:
                cid = self._lock(conn, collection).id
                return self._known(conn, cid, image_sha256)
        with self.database.engine.connect() as conn:
            return self._known(conn, self._resolve(conn, collection), image_sha256)

    @staticmethod
    def _known(conn: Connection, cid: int, image_sha256: str) -> bool:
        f, t = s.faces, s.images_without_faces
        return conn.execute(select(f.c.face_id).where(and_(
            f.c.collection_id == cid, f.c.image_sha256 == image_sha256)).limit(1)).first() \
            is not None or conn.execute(select(t.c.image_sha256).where(and_(
                t.c.collection_id == cid, t.c.image_sha256 == image_sha256))).first() is not None

    def note_image_without_faces(self, collection: str, image_sha256: str) -> None:
        """Remember that an IndexFaces stored no face from this image (idempotent)."""
        with self.database.write_transaction() as conn:
            coll = self._lock(conn, collection)  # serializes the check and the insert
            t = s.images_without_faces
            known = conn.execute(select(t.c.image_sha256).where(and_(
                t.c.collection_id == coll.id, t.c.image_sha256 == image_sha256))).first()
            if known is None:
                conn.execute(insert(t).values(collection_id=coll.id, image_sha256=image_sha256,
                                              seen=utcnow()))

    # -- users ---------------------------------------------------------------------------------
    def create_user(self, collection: str, user_id: str, token: str | None = None) -> None:
        with self.database.write_transaction() as conn:
            coll = self._lock(conn, collection)
            row = conn.execute(select(s.users).where(and_(
                s.users.c.collection_id == coll.id, s.users.c.user_id == user_id))).first()
            if row is not None:
                if token is not None and row.client_request_token == token:
                    return  # an idempotent retry
                raise ConflictError(f"The user id: {user_id} already exists in {collection}")
            conn.execute(insert(s.users).values(collection_id=coll.id, user_id=user_id,
                                                created=utcnow(), status="CREATED",
                                                client_request_token=token))

    def delete_user(self, collection: str, user_id: str) -> None:
        """Delete a user; its faces stay in the collection, disassociated (as Rekognition does)."""
        with self.database.write_transaction() as conn:
            coll = self._lock(conn, collection)
            self._user(conn, coll, user_id)
            faces = [r[0] for r in conn.execute(select(s.faces.c.face_id).where(and_(
                s.faces.c.collection_id == coll.id, s.faces.c.user_id == user_id)))]
            self._advance(conn, coll, [(s.OP_DISASSOCIATE, f) for f in faces])
            conn.execute(update(s.faces).where(and_(
                s.faces.c.collection_id == coll.id, s.faces.c.user_id == user_id)
            ).values(user_id=None))
            conn.execute(delete(s.users).where(and_(
                s.users.c.collection_id == coll.id, s.users.c.user_id == user_id)))

    def get_user(self, collection: str, user_id: str) -> UserRow:
        """The user; ``ResourceNotFoundError`` (about the user) when it, or the collection, is
        not there."""
        with self.database.engine.connect() as conn:
            row = conn.execute(select(s.users).where(and_(
                s.users.c.collection_id == _id_of(collection), s.users.c.user_id == user_id))
            ).first()
        if row is None:
            raise ResourceNotFoundError(f"The user id: {user_id} does not exist")
        return UserRow(row.user_id, row.status, as_utc(row.created))

    def get_users(self, collection: str, user_ids: Sequence[str]) -> dict[str, UserRow]:
        """The users among ``user_ids`` that exist in the collection (none for an unknown
        name)."""
        found: dict[str, UserRow] = {}
        with self.database.engine.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(user_ids)), 500):
                for r in conn.execute(select(s.users).where(and_(
                        s.users.c.collection_id == _id_of(collection),
                        s.users.c.user_id.in_(chunk)))):
                    found[r.user_id] = UserRow(r.user_id, r.status, as_utc(r.created))
        return found

    def list_users(self, collection: str, *, after: str | None = None, limit: int = 500
                   ) -> list[UserRow]:
        """Users ordered by UserId (none for an unknown name)."""
        cond = [s.users.c.collection_id == _id_of(collection)]
        if after:
            cond.append(s.users.c.user_id > after)
        with self.database.engine.connect() as conn:
            rows = conn.execute(select(s.users).where(and_(*cond))
                                .order_by(s.users.c.user_id).limit(limit)).all()
        return [UserRow(r.user_id, r.status, as_utc(r.created)) for r in rows]

    def user_embeddings(self, collection: str, user_id: str) -> tuple[list[str], np.ndarray]:
        """FaceIds and embeddings of a user's faces (the caller wipes the embeddings); none for
        an unknown name."""
        with self.database.engine.connect() as conn:
            rows = conn.execute(select(s.faces.c.face_id, s.faces.c.embedding).where(and_(
                s.faces.c.collection_id == _id_of(collection), s.faces.c.user_id == user_id))
            ).all()
        return [r.face_id for r in rows], _stack([r.embedding for r in rows])

    def associate_faces(self, collection: str, user_id: str, face_ids: Sequence[str],
                        check: AssociationCheck) -> tuple[list[str], list[Failure], str]:
        """Associate faces with a user in one transaction; ``check`` judges each candidate
        against the faces the user already had (a user without faces accepts any face)."""
        wanted = list(dict.fromkeys(face_ids))
        with self.database.write_transaction() as conn:
            coll = self._lock(conn, collection)
            self._user(conn, coll, user_id)
            current = _stack([r[0] for r in conn.execute(select(s.faces.c.embedding).where(and_(
                s.faces.c.collection_id == coll.id, s.faces.c.user_id == user_id)))])
            rows = {r.face_id: r for r in conn.execute(
                select(s.faces.c.face_id, s.faces.c.user_id, s.faces.c.embedding).where(and_(
                    s.faces.c.collection_id == coll.id, s.faces.c.face_id.in_(wanted))))}
            done, new, failures = [], [], []
            for fid in wanted:
                row = rows.get(fid)
                if row is None:
                    failures.append(Failure(fid, ["FACE_NOT_FOUND"], user_id))
                elif row.user_id == user_id:
                    done.append(fid)
                elif row.user_id is not None:
                    failures.append(Failure(fid, ["ASSOCIATED_TO_A_DIFFERENT_USER"], user_id))
                else:
                    ok, confidence = (True, None) if len(current) == 0 else check(
                        current, from_blob(row.embedding))
                    if ok:
                        new.append(fid)
                    else:
                        failures.append(Failure(fid, ["LOW_MATCH_CONFIDENCE"], user_id,
                                                confidence))
            wipe(current)
            if len(current) + len(new) > MAX_FACES_PER_USER:
                raise ServiceQuotaExceededError(
                    f"A user can have at most {MAX_FACES_PER_USER} faces; {user_id} has "
                    f"{len(current)} and {len(new)} more were requested")
            self._advance(conn, coll, [(s.OP_ASSOCIATE, f) for f in new])
            for chunk in _chunks(new, 500):
                conn.execute(update(s.faces).where(s.faces.c.face_id.in_(chunk))
                             .values(user_id=user_id))
            status = "ACTIVE" if len(current) + len(new) else "CREATED"
            self._set_status(conn, coll, user_id, status)
        return done + new, failures, status

    def disassociate_faces(self, collection: str, user_id: str, face_ids: Sequence[str]
                           ) -> tuple[list[str], list[Failure], str]:
        wanted = list(dict.fromkeys(face_ids))
        with self.database.write_transaction() as conn:
            coll = self._lock(conn, collection)
            self._user(conn, coll, user_id)
            rows = _face_owners(conn, coll.id, wanted)
            gone, failures = [], []
            for fid in wanted:
                if fid not in rows:
                    failures.append(Failure(fid, ["FACE_NOT_FOUND"], user_id))
                elif rows[fid] != user_id:
                    failures.append(Failure(fid, ["ASSOCIATED_TO_A_DIFFERENT_USER"], user_id))
                else:
                    gone.append(fid)
            self._advance(conn, coll, [(s.OP_DISASSOCIATE, f) for f in gone])
            for chunk in _chunks(gone, 500):
                conn.execute(update(s.faces).where(s.faces.c.face_id.in_(chunk))
                             .values(user_id=None))
            left = conn.execute(select(func.count()).select_from(s.faces).where(and_(
                s.faces.c.collection_id == coll.id, s.faces.c.user_id == user_id))).scalar_one()
            status = "ACTIVE" if left else "CREATED"
            self._set_status(conn, coll, user_id, status)
        return gone, failures, status

    @staticmethod
    def _user(conn: Connection, coll: CollectionInfo, user_id: str) -> None:
        if conn.execute(select(s.users.c.user_id).where(and_(
                s.users.c.collection_id == coll.id, s.users.c.user_id == user_id))).first() is None:
            raise ResourceNotFoundError(f"The user id: {user_id} does not exist")

    @staticmethod
    def _set_status(conn: Connection, coll: CollectionInfo, user_id: str, status: str) -> None:
        conn.execute(update(s.users).where(and_(
            s.users.c.collection_id == coll.id, s.users.c.user_id == user_id)
        ).values(status=status))

    # -- change log, for the vector index (by collection id: a name can be reused) ---------------
    # ``state`` is the way in: it takes the name a request carries and returns the collection's
    # id. The reads after it take that id, not the name: once a collection is deleted its name
    # can be given to a new collection, and an index that caught up by name could then apply the
    # new collection's changes on top of the old one's vectors. By id, the old collection is
    # simply gone (``ResourceNotFoundError`` / ``deleted_since`` True) and the index reloads.
    def state(self, name: str) -> tuple[int, int, int]:
        """(collection id, last change seq, face count): one indexed row, read before searches.
        The id is what ``snapshot``, ``changes_since`` and ``deleted_since`` take."""
        with self.database.single_statement.connect() as conn:
            row = conn.execute(self._state_stmt, {"name": name}).first()
        if row is None:
            raise ResourceNotFoundError(f"The collection id: {name} does not exist")
        return row.id, row.seq, row.face_count

    def snapshot(self, collection_id: int) -> Snapshot:
        """All vectors of a collection and the seq they are current at, from one snapshot."""
        with self.database.read_transaction() as conn:
            head = conn.execute(select(s.collections.c.seq, s.collections.c.face_count)
                                .where(s.collections.c.id == collection_id)).first()
            if head is None:
                raise ResourceNotFoundError(f"The collection {collection_id} does not exist")
            ids: list[str] = []
            parts: list[np.ndarray] = []
            user_ids: list[str] = []
            user_parts: list[np.ndarray] = []
            result = conn.execution_options(yield_per=20_000).execute(
                select(s.faces.c.face_id, s.faces.c.embedding, s.faces.c.user_id)
                .where(s.faces.c.collection_id == collection_id).order_by(s.faces.c.seq))
            for chunk in result.partitions():  # bounded memory: one chunk of blobs at a time
                ids += [r[0] for r in chunk]
                parts.append(_stack([r[1] for r in chunk]))
                users = np.array([r[2] is not None for r in chunk], dtype=bool)
                user_ids += [r[0] for r in chunk if r[2] is not None]
                user_parts.append(parts[-1][users])
        return Snapshot(collection_id, head.seq, head.face_count, ids, _concatenated(parts),
                        user_ids, _concatenated(user_parts))

    def changes_since(self, collection_id: int, seq: int) -> tuple[int, int, list[Change]]:
        """(seq, face count, changes after ``seq`` in order), from one snapshot."""
        with self.database.read_transaction() as conn:
            head = conn.execute(select(s.collections.c.seq, s.collections.c.face_count)
                                .where(s.collections.c.id == collection_id)).first()
            if head is None:
                raise ResourceNotFoundError(f"The collection {collection_id} does not exist")
            rows = conn.execute(
                select(s.changes.c.seq, s.changes.c.op, s.changes.c.face_id, s.faces.c.embedding)
                .select_from(s.changes.outerjoin(s.faces, s.faces.c.face_id == s.changes.c.face_id))
                .where(and_(s.changes.c.collection_id == collection_id, s.changes.c.seq > seq))
                .order_by(s.changes.c.seq)).all()
        changes = [Change(r.seq, r.op, r.face_id,
                          None if r.embedding is None else from_blob(r.embedding)) for r in rows]
        return head.seq, head.face_count, changes

    def deleted_since(self, collection_id: int, seq: int) -> bool:
        """Whether a face of the collection may have been deleted after ``seq``: also True when
        the collection is gone or the change log no longer reaches back to ``seq``. An index
        checkpoint written at ``seq`` must not stay on disk then (it may hold the vectors)."""
        with self.database.read_transaction() as conn:
            head = conn.execute(select(s.collections.c.seq)
                                .where(s.collections.c.id == collection_id)).first()
            if head is None:
                return True
            if head.seq <= seq:
                return False
            oldest = conn.execute(select(func.min(s.changes.c.seq))
                                  .where(s.changes.c.collection_id == collection_id)).scalar()
            if oldest is None or oldest > seq + 1:
                return True
            deletion = conn.execute(
                select(s.changes.c.seq)
                .where(and_(s.changes.c.collection_id == collection_id, s.changes.c.seq > seq,
                            s.changes.c.op == s.OP_DELETE))
                .limit(1)).first()
        return deletion is not None

    # -- checks --------------------------------------------------------------------------------
    def consistency_problems(self, collection: str) -> list[str]:
        """Invariants a crash must never break (tests; ``regard collections check``)."""
        problems = []
        with self.database.read_transaction() as conn:
            coll = conn.execute(select(s.collections).where(s.collections.c.name == collection)
                                ).first()
            if coll is None:
                return [f"no collection {collection}"]
            n = conn.execute(select(func.count()).select_from(s.faces)
                             .where(s.faces.c.collection_id == coll.id)).scalar_one()
            if n != coll.face_count:
                problems.append(f"face_count {coll.face_count} != {n} face rows")
            max_change = conn.execute(select(func.max(s.changes.c.seq))
                                      .where(s.changes.c.collection_id == coll.id)).scalar()
            if (max_change or 0) != coll.seq:
                problems.append(f"collection seq {coll.seq} != last change {max_change}")
            size = embedding_size(coll.face_model_version)
            if size is None:
                problems.append(f"face model {coll.face_model_version} is not installed: "
                                "embedding sizes not checked")
            problems += _embedding_problems(conn, coll.id, size)
            # Faces added before the oldest change kept lost their add change to pruning.
            oldest = conn.execute(select(func.min(s.changes.c.seq))
                                  .where(s.changes.c.collection_id == coll.id)).scalar()
            orphan = conn.execute(
                select(func.count()).select_from(s.faces.outerjoin(s.changes, and_(
                    s.changes.c.collection_id == s.faces.c.collection_id,
                    s.changes.c.seq == s.faces.c.seq)))
                .where(and_(s.faces.c.collection_id == coll.id, s.changes.c.seq.is_(None),
                            s.faces.c.seq >= (oldest or 0)))
            ).scalar_one()
            if orphan:
                problems.append(f"{orphan} faces without their add change")
        return problems


def _embedding_problems(conn: Connection, collection_id: int, size: int | None
                        ) -> list[str]:
    """Faces whose embedding is damaged: the wrong size, all zeros, not finite, or not the bytes
    its checksum was computed over (changed on disk, or swapped with another row's)."""
    found: dict[str, list[str]] = {}
    result = conn.execution_options(yield_per=20_000).execute(
        select(s.faces.c.face_id, s.faces.c.embedding, s.faces.c.embedding_sha256)
        .where(s.faces.c.collection_id == collection_id).order_by(s.faces.c.face_id))
    for face_id, blob, checksum in result:
        if size is not None and len(blob) != size * 4:
            found.setdefault("with a malformed embedding", []).append(face_id)
            continue
        vector = from_blob(blob)
        if not np.all(np.isfinite(vector)):
            found.setdefault("with a non-finite embedding", []).append(face_id)
        elif not np.any(vector):
            found.setdefault("with an all-zero embedding", []).append(face_id)
        if checksum is None:
            found.setdefault("without an embedding checksum", []).append(face_id)
        elif checksum != embedding_checksum(face_id, blob):
            found.setdefault("whose embedding fails its checksum (damaged or swapped)",
                             []).append(face_id)
    return [f"{len(ids)} face(s) {what}: {', '.join(ids[:MAX_LISTED])}"
            + (", ..." if len(ids) > MAX_LISTED else "") for what, ids in found.items()]


# -- row mapping --------------------------------------------------------------------------------
def _id_of(name: Any) -> Any:
    """The id of the collection named ``name`` (a value or a ``bindparam``), as a scalar
    subquery: NULL, so no rows match, when there is no such collection."""
    return select(s.collections.c.id).where(s.collections.c.name == name).scalar_subquery()


def _collection(row: Any) -> CollectionInfo:
    return CollectionInfo(row.id, row.name, row.arn, row.face_model_version,
                          as_utc(row.created), dict(row.tags or {}), row.seq, row.face_count)


def _face_columns(embeddings: bool) -> list[Any]:
    cols = [c for c in s.faces.c if c.name not in ("embedding", "embedding_sha256")]
    return cols + [s.faces.c.embedding] if embeddings else cols


def _face(m: Any) -> FaceRow:
    blob = m.get("embedding")
    return FaceRow(
        face_id=m["face_id"], image_id=m["image_id"], external_image_id=m["external_image_id"],
        bbox=(m["bbox_left"], m["bbox_top"], m["bbox_width"], m["bbox_height"]),
        confidence=m["confidence"], created=as_utc(m["created"]), user_id=m["user_id"],
        seq=m["seq"], image_sha256=m["image_sha256"], expires=as_utc(m["expires"]),
        consent_ref=m["consent_ref"], embedding=None if blob is None else from_blob(blob),
    )


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _face_owners(conn: Any, collection_id: Any, face_ids: list[str]) -> dict[str, str | None]:
    """FaceId -> UserId (None when unassociated) for those of ``face_ids`` in the collection."""
    return {r.face_id: r.user_id for r in conn.execute(
        select(s.faces.c.face_id, s.faces.c.user_id).where(and_(
            s.faces.c.collection_id == collection_id, s.faces.c.face_id.in_(face_ids))))}
