"""The catalog's tables (SQLAlchemy Core), the source of truth for collections, faces and users.

Portable on purpose: only generic types (no SQLite-only SQL), so the same metadata creates the
schema on PostgreSQL. Timestamps are stored as timezone-aware UTC where the backend keeps zones;
the catalog re-attaches UTC on read for backends (SQLite) that do not.

Change sequence: every write that changes what a vector index must hold (a face added or
deleted, a face associated with or disassociated from a user) takes the next numbers of its
collection's ``collections.seq`` counter and appends one ``changes`` row per face. Writers lock the
collection row first, so per collection the sequence order is the commit order on every backend,
and an index that has applied everything up to ``seq`` catches up with ``changes.seq > seq``.
``collections.face_count`` is updated in the same transactions, so an index can check itself
against the catalog with the same one-row read it uses to see whether it is behind.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

SCHEMA_VERSION = 8

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    # Random id of this catalog: keys on-disk index caches so that a recreated database never
    # picks up the cache of an older one whose collection ids happen to coincide.
    Column("instance_id", String(36), nullable=False),
)

collections = Table(
    "collections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("arn", String(512), nullable=False),
    Column("face_model_version", String(32), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("tags", JSON, nullable=False),
    Column("seq", BigInteger, nullable=False, default=0),
    Column("face_count", BigInteger, nullable=False, default=0),
    # SQLite: ids are never reused after a delete (caches are keyed by id).
    sqlite_autoincrement=True,
)

users = Table(
    "users",
    metadata,
    Column("collection_id", Integer, ForeignKey("collections.id", ondelete="CASCADE"),
           primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("client_request_token", String(64), nullable=True),
)

faces = Table(
    "faces",
    metadata,
    Column("face_id", String(36), primary_key=True),
    Column("collection_id", Integer, ForeignKey("collections.id", ondelete="CASCADE"),
           nullable=False),
    Column("image_id", String(36), nullable=False),
    Column("external_image_id", String(255), nullable=True),
    # SHA-256 of the image bytes (never the image): lets batch indexing resume.
    Column("image_sha256", String(64), nullable=True),
    Column("bbox_left", Float, nullable=False),
    Column("bbox_top", Float, nullable=False),
    Column("bbox_width", Float, nullable=False),
    Column("bbox_height", Float, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("embedding", LargeBinary, nullable=False),  # float32, little-endian
    # SHA-256 of FaceId and embedding bytes (schema version 5; ``catalog.embedding_checksum``),
    # written with the embedding: ``regard collections check`` finds damaged or swapped rows.
    Column("embedding_sha256", String(64), nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=True),
    Column("consent_ref", String(255), nullable=True),
    Column("user_id", String(128), nullable=True),
    Column("seq", BigInteger, nullable=False),
    ForeignKeyConstraint(["collection_id", "user_id"], ["users.collection_id", "users.user_id"],
                         name="fk_faces_user"),
    Index("ix_faces_collection_face", "collection_id", "face_id"),
    Index("ix_faces_collection_seq", "collection_id", "seq"),
    Index("ix_faces_collection_user", "collection_id", "user_id"),
    Index("ix_faces_collection_sha", "collection_id", "image_sha256"),
    # (schema version 7) the console's faces by ExternalImageId, and erasure by it
    Index("ix_faces_collection_external", "collection_id", "external_image_id", "face_id"),
)

changes = Table(
    "changes",
    metadata,
    Column("collection_id", Integer, ForeignKey("collections.id", ondelete="CASCADE"),
           primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("op", String(16), nullable=False),  # add | delete | associate | disassociate
    Column("face_id", String(36), nullable=False),
)

# Access keys of the HTTP APIs (schema version 2). The secret is kept as issued because SigV4 is a
# shared-secret HMAC: the server must recompute each signature (AWS keeps its secrets the same way).
access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key_id", String(32), primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("name", String(128), nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("revoked", DateTime(timezone=True), nullable=True),
    Column("scopes", JSON, nullable=False),
    Column("collections", JSON, nullable=True),  # allow-list; NULL: every collection
    Column("default_purpose", String(512), nullable=True),
    # Requests per second the key may make (schema version 4); NULL: no limit.
    Column("max_tps", Float, nullable=True),
)

# The audit ledger (schema version 3): append-only, hash-chained (see regard.governance.ledger).
# Times are ISO-8601 strings so that the hashed encoding survives every backend unchanged.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time", String(32), nullable=False),
    Column("principal", String(128), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("collection", String(255), nullable=True),
    Column("purpose", String(512), nullable=True),
    Column("case_ref", String(255), nullable=True),
    Column("image_sha256", JSON, nullable=True),  # list of hex digests of the input images
    Column("result", JSON, nullable=False),
    Column("client", String(64), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_time", "time"),
    # (schema version 7: with seq, so that a filtered page, newest first, reads only its rows;
    # who-searched reads by operation too)
    Index("ix_audit_log_operation_seq", "operation", "seq"),
    Index("ix_audit_log_principal_seq", "principal", "seq"),
    Index("ix_audit_log_collection_seq", "collection", "seq"),
)

# One row: the chain head (last seq and hash), HMAC-signed with the server's ledger key. Writers
# lock it to append, which also serializes appends across processes and replicas.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("signature", String(64), nullable=False),
)

# Images an IndexFaces call stored no face from (none found, or none passed the quality filter or
# MaxFaces), by content hash (schema version 4): a resumed ``regard index`` skips them as it skips
# images that have faces in the collection, instead of detecting on them again. A hash of a
# photo, no biometric data; it goes with the collection.
images_without_faces = Table(
    "images_without_faces",
    metadata,
    Column("collection_id", Integer, ForeignKey("collections.id", ondelete="CASCADE"),
           primary_key=True),
    Column("image_sha256", String(64), primary_key=True),
    Column("seen", DateTime(timezone=True), nullable=False),
)

# Background jobs (schema version 6; ``regard.jobs``). A job row holds the CallContext of the
# request that started it (``context``, CallContext.to_json's fields) and runs with it. The runner
# that holds a job IN_PROGRESS is ``lease_owner`` until ``lease_expires`` (its heartbeat deadline);
# every write a runner makes to a job is conditional on still holding that lease, which is what
# keeps two runners from running one job at once on SQLite and PostgreSQL alike.
jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("owner", String(128), nullable=False),  # the submitting principal
    Column("purpose", String(512), nullable=True),
    Column("context", JSON, nullable=False),
    Column("parameters", JSON, nullable=False),
    Column("parameters_hash", String(64), nullable=False),
    Column("client_token", String(64), nullable=True),
    Column("job_tag", String(1024), nullable=True),  # Rekognition JobTag: up to 1024
    Column("state", String(16), nullable=False),  # QUEUED | IN_PROGRESS | SUCCEEDED | FAILED
    Column("status_message", String(1024), nullable=True),
    Column("progress", JSON, nullable=True),  # {"done": n, "total": m}
    Column("lease_owner", String(128), nullable=True),  # the runner holding it (or that last did)
    Column("lease_expires", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("started", DateTime(timezone=True), nullable=True),
    Column("finished", DateTime(timezone=True), nullable=True),
    Column("expires", DateTime(timezone=True), nullable=True),  # results kept until
    Column("result_pages", Integer, nullable=False, default=0),
    Index("ix_jobs_claim", "state", "lease_expires"),  # the runners' claim query
    Index("ix_jobs_expires", "expires"),
    Index("ix_jobs_owner_created", "owner", "created"),
)

# A job's results, in numbered pages (0, 1, ...): a step that is run again after a takeover
# rewrites its page instead of adding a second one.
job_pages = Table(
    "job_pages",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.job_id", ondelete="CASCADE"),
           primary_key=True),
    Column("page", Integer, primary_key=True, autoincrement=False),
    Column("body", JSON, nullable=False),
    Column("written", DateTime(timezone=True), nullable=False),
    Column("written_by", String(128), nullable=False),  # the lease owner that wrote it
)

# ClientRequestToken: the same (principal, operation, token) with the same parameters returns the
# job (or result) of the first request until ``expires``; with other parameters it is refused.
idempotency_tokens = Table(
    "idempotency_tokens",
    metadata,
    Column("principal", String(128), primary_key=True),
    Column("operation", String(64), primary_key=True),
    Column("token", String(64), primary_key=True),
    Column("parameters_hash", String(64), nullable=False),
    Column("job_id", String(36), nullable=True),
    Column("result", JSON, nullable=True),  # for operations that answer without a job
    Column("created", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),
    Index("ix_idempotency_tokens_expires", "expires"),
)

# Web console sessions (schema version 7): the cookie holds a random token, the row only its
# SHA-256, so a copy of the database cannot be used to take over a session; the key is read
# again on every request, so revoking it ends its sessions at once.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("access_key_id", String(32), nullable=True),  # NULL: --insecure-local operator
    Column("csrf_token", String(64), nullable=False),
    Column("client", String(64), nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False),  # absolute end
    Index("ix_console_sessions_expires", "expires"),
)

# Live streams (schema version 8): cameras and record sinks the operator registered, and the
# stream processors that join them (see regard.streams).
stream_sources = Table(
    "stream_sources",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("url", String(2048), nullable=False),  # may carry a camera's password: never listed
    Column("arn", String(512), nullable=False, unique=True),
    Column("created", DateTime(timezone=True), nullable=False),
)

stream_sinks = Table(
    "stream_sinks",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),  # webhook | jsonl | sse | mqtt
    Column("target", String(2048), nullable=False),
    Column("arn", String(512), nullable=False, unique=True),
    Column("options", JSON, nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
)

stream_processors = Table(
    "stream_processors",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("arn", String(512), nullable=False, unique=True),
    Column("status", String(16), nullable=False),  # STOPPED | STARTING | RUNNING | ...
    Column("status_message", String(1024), nullable=True),
    Column("input_arn", String(512), nullable=False),
    Column("output", JSON, nullable=False),  # Rekognition's Output member
    Column("settings", JSON, nullable=False),  # Rekognition's Settings member
    Column("role_arn", String(2048), nullable=False),
    Column("tags", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
    Column("owner", String(128), nullable=False),  # the creating principal
    # The session a server should be running (StartStreamProcessor's): its SessionId, the
    # context it runs with and its stop selector; NULL when stopped.
    Column("session_id", String(64), nullable=True),
    Column("session", JSON, nullable=True),
)

OP_ADD = "add"
OP_DELETE = "delete"
OP_ASSOCIATE = "associate"
OP_DISASSOCIATE = "disassociate"
