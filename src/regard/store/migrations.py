"""Schema versioning without Alembic: a one-row ``schema_version`` table and ordered upgrade steps.

A new catalog is created from the current metadata and stamped with ``SCHEMA_VERSION`` (the
"create_all, then stamp head" pattern); an older catalog is brought up by running, in order, each
registered step above its version, all in one transaction, so a crash leaves it at the old version
or the new one, never between. A catalog newer than this code is refused
(``SchemaVersionError``): guessing at a future schema is how data gets corrupted.

To change the schema: edit ``schema.py``, bump ``SCHEMA_VERSION`` and append a step here that turns
version N-1 into N with plain DDL (``ALTER TABLE ... ADD COLUMN``, ``CREATE INDEX``) that both
SQLite and PostgreSQL accept; ``tests/test_store.py`` checks that an upgraded catalog and a fresh
one have the same tables and columns.
"""

from __future__ import annotations

import uuid
from typing import Callable

from sqlalchemy import Connection, and_, bindparam, inspect, select, text

from regard.errors import SchemaVersionError
from regard.store.schema import SCHEMA_VERSION, metadata, schema_version

Migration = Callable[[Connection], None]

def _add_access_keys(conn: Connection) -> None:
    """Version 2: the HTTP APIs' access keys."""
    from regard.store.schema import access_keys

    access_keys.create(conn)


def _add_audit_ledger(conn: Connection) -> None:
    """Version 3: the audit ledger and its signed head."""
    from regard.store.schema import audit_head, audit_log

    audit_log.create(conn)
    audit_head.create(conn)
    _seed(conn)


def _seed(conn: Connection) -> None:
    """Rows every catalog starts with: the ledger's genesis head (seq 0, unsigned)."""
    from regard.store.schema import audit_head

    conn.execute(audit_head.insert().values(id=1, seq=0, hash="0" * 64, signature=""))


def _add_images_without_faces_and_key_rates(conn: Connection) -> None:
    """Version 4: images indexed without a stored face (what a resumed batch skips), and the
    access keys' request-rate limits."""
    from regard.store.schema import images_without_faces

    images_without_faces.create(conn)
    # (step 2 creates access_keys from today's metadata: the column may be there already)
    if "max_tps" not in {c["name"] for c in inspect(conn).get_columns("access_keys")}:
        conn.execute(text("ALTER TABLE access_keys ADD COLUMN max_tps FLOAT"))


_FILL_PAGE = 5000


def _add_embedding_checksums(conn: Connection) -> None:
    """Version 5: a checksum beside every embedding, computed here for the faces already stored
    (in pages by FaceId, so memory stays bounded at any catalog size)."""
    from regard.store.catalog import embedding_checksum
    from regard.store.schema import faces

    if "embedding_sha256" not in {c["name"] for c in inspect(conn).get_columns("faces")}:
        conn.execute(text("ALTER TABLE faces ADD COLUMN embedding_sha256 VARCHAR(64)"))
    fill = (faces.update().where(faces.c.face_id == bindparam("fid"))
            .values(embedding_sha256=bindparam("sum")))
    after = ""
    while True:
        rows = conn.execute(select(faces.c.face_id, faces.c.embedding).where(and_(
            faces.c.face_id > after, faces.c.embedding_sha256.is_(None)))
            .order_by(faces.c.face_id).limit(_FILL_PAGE)).all()
        if not rows:
            return
        conn.execute(fill, [{"fid": r.face_id, "sum": embedding_checksum(r.face_id, r.embedding)}
                            for r in rows])
        after = rows[-1].face_id


def _add_jobs(conn: Connection) -> None:
    """Version 6: background jobs, their result pages, and idempotency tokens."""
    from regard.store.schema import idempotency_tokens, job_pages, jobs

    for table in (jobs, job_pages, idempotency_tokens):
        table.create(conn, checkfirst=True)


def _add_console_sessions(conn: Connection) -> None:
    """Version 7: the web console's server-side sessions; faces found by ExternalImageId, and
    ledger pages filtered by operation, principal or collection, without reading everything."""
    from regard.store.schema import audit_log, console_sessions, faces

    console_sessions.create(conn, checkfirst=True)
    for index in [*faces.indexes, *audit_log.indexes]:
        if index.name in ("ix_faces_collection_external", "ix_audit_log_operation_seq",
                          "ix_audit_log_principal_seq", "ix_audit_log_collection_seq"):
            index.create(conn, checkfirst=True)
    conn.execute(text("DROP INDEX IF EXISTS ix_audit_log_operation"))  # a prefix of the above


def _add_streams(conn: Connection) -> None:
    """Version 8: live stream sources, sinks and processors."""
    from regard.store.schema import stream_processors, stream_sinks, stream_sources

    for table in (stream_sources, stream_sinks, stream_processors):
        table.create(conn, checkfirst=True)


# version -> step that upgrades a catalog from version-1 to version.
MIGRATIONS: dict[int, Migration] = {2: _add_access_keys, 3: _add_audit_ledger,
                                    4: _add_images_without_faces_and_key_rates,
                                    5: _add_embedding_checksums, 6: _add_jobs,
                                    7: _add_console_sessions, 8: _add_streams}

_PG_LOCK_KEY = 0x5245_4741  # "REGA": serializes concurrent first starts on PostgreSQL


def migrate(conn: Connection, target: int = SCHEMA_VERSION,
            migrations: dict[int, Migration] | None = None) -> int:
    """Create or upgrade the schema inside the caller's (write) transaction; return the version.

    Safe when several processes start at once: the transaction holds SQLite's write lock (the
    caller begins it IMMEDIATE) or a PostgreSQL advisory lock, so the others wait and then find
    the schema in place.
    """
    steps = MIGRATIONS if migrations is None else migrations
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    if not inspect(conn).has_table(schema_version.name):
        metadata.create_all(conn)
        conn.execute(schema_version.insert().values(version=target,
                                                    instance_id=str(uuid.uuid4())))
        if target >= 3:
            _seed(conn)
        return target
    current = conn.execute(select(schema_version.c.version)).scalar_one()
    if current > target:
        raise SchemaVersionError(
            f"The catalog has schema version {current}, newer than this Regard's {target}: "
            "upgrade Regard instead of opening it with an older version"
        )
    for version in range(current + 1, target + 1):
        if version not in steps:
            raise SchemaVersionError(f"No migration step to schema version {version}")
        steps[version](conn)
        conn.execute(schema_version.update().values(version=version))
    return target
