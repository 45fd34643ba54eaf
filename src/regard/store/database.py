"""The SQL database under Regard's repositories (the catalog of collections, faces and users,
the access keys, the audit ledger): which database, its engine and pragmas, failure translation,
migrations at open, transactions and the unit of work. Nothing here knows about faces.

Writers start their transaction holding the database's write lock (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: the repository locks the row it serializes on with ``SELECT ... FOR UPDATE``), so a
writer never upgrades a read lock (the classic SQLite deadlock) and concurrent writers from many
threads or processes serialize.

A unit of work (``Database.unit_of_work``) joins every write made inside it, by the same thread or
task, into one transaction, each write a savepoint within it: the service runs an operation and
appends its audit entry in one unit, so a crash or a failed append never leaves a change without
its entry (or an entry for a change that did not happen). The unit opens its transaction at the
first write, so decoding and embedding an image does not hold the write lock. Locks are taken in
one order, collections (in the order the operation visits them) before the ledger's head row.

SQLite runs in WAL mode (readers never block the writer), with a busy timeout so that writers in
other processes wait instead of failing, and ``synchronous=FULL`` by default so that an
acknowledged write survives power loss, not just a killed process (``REGARD_SQLITE_SYNCHRONOUS``
can relax it to NORMAL for bulk loads), and ``secure_delete`` so that a deleted face's embedding
is overwritten in the file rather than left in a free page.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import OperationalError

from regard import config
from regard.config import regard_home
from regard.errors import CatalogCorruptError, DatabaseUnavailableError, StorageFullError
from regard.private_files import private_dir, private_file, tighten
from regard.store import schema as s
from regard.store.faults import StorageHealth
from regard.store.migrations import migrate

DB_CONNECT_TIMEOUT_S = 10
MAX_LISTED = 20  # integrity-check lines (and, in the catalog, FaceIds) listed per problem
_WRITE = "regard_write"
_SINGLE = "regard_single_statement"
log = logging.getLogger("regard.store")


@dataclass
class _Unit:
    """The open unit of work of one thread or task (see the module docstring)."""

    database: "Database"
    conn: Connection | None = None
    after_commit: list[Callable[[], None]] = field(default_factory=list)


_unit: ContextVar[_Unit | None] = ContextVar("regard_unit_of_work", default=None)


def database_url() -> str:
    """``REGARD_DATABASE_URL``, else SQLite at ``$REGARD_HOME/regard.db``."""
    url = config.current().database_url
    if url:
        return url
    home = private_dir(regard_home())
    return f"sqlite:///{home / 'regard.db'}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    """A time read back from the database, as UTC: SQLite drops time zones, and everything
    Regard stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _translate_failure(health: StorageHealth, context: ExceptionContext) -> None:
    """Turn database failures into typed errors: a full disk (``StorageFullError``, not retried)
    and a damaged database (``CatalogCorruptError``) first, noted in ``health``; then the other
    operational failures (the server down or restarting, connections refused or exhausted,
    SQLite locked past its busy timeout) into a retryable ``DatabaseUnavailableError``: the HTTP
    doors answer it with a 500 that clients retry. The driver's message (hosts, ports, paths)
    goes to the log, not to the caller."""
    fault = health.translate(context.original_exception)
    if fault is not None:
        log.error("catalog storage fault: %s", context.original_exception)
        raise fault from context.sqlalchemy_exception
    if isinstance(context.sqlalchemy_exception, OperationalError):
        log.warning("catalog database unavailable: %s", context.original_exception)
        raise DatabaseUnavailableError(
            "The catalog database is unavailable or busy; retry with backoff"
        ) from context.sqlalchemy_exception


class Database:
    """One SQL database, opened (and created or migrated) at construction; share it between
    threads and between the repositories over it (see the module docstring).

    ``url``: SQLAlchemy URL (default ``database_url()``); ``busy_timeout_ms``: how long a SQLite
    writer waits for another's lock (default ``REGARD_DB_BUSY_TIMEOUT_MS``, see ``config``)."""

    def __init__(self, url: str | None = None, *, busy_timeout_ms: int | None = None) -> None:
        self.url = url or database_url()
        parsed = make_url(self.url)
        self.health = StorageHealth(
            Path(parsed.database).parent if parsed.get_backend_name() == "sqlite"
            and parsed.database and parsed.database != ":memory:" else None)
        self.engine = self._create_engine(self.url, busy_timeout_ms, self.health)
        self._writer = self.engine.execution_options(**{_WRITE: True})
        # One-statement reads need no BEGIN/ROLLBACK round trips: a lone SELECT is atomic.
        self.single_statement: Engine = self.engine.execution_options(**{_SINGLE: True})
        with self._writer.begin() as conn:
            migrate(conn)
            self.instance_id: str = conn.execute(
                select(s.schema_version.c.instance_id)).scalar_one()

    @staticmethod
    def _create_engine(url: str, busy_timeout_ms: int | None, health: StorageHealth) -> Engine:
        parsed = make_url(url)
        translate = functools.partial(_translate_failure, health)
        if parsed.get_backend_name() != "sqlite":
            # A server that does not answer (a partition, not a refusal) must not hang requests.
            connect_args = ({"connect_timeout": DB_CONNECT_TIMEOUT_S}
                            if parsed.get_backend_name() == "postgresql" else {})
            engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args,
                                   hide_parameters=True)
            event.listen(engine, "handle_error", translate)
            return engine
        if parsed.database and parsed.database != ":memory:":
            database = Path(parsed.database)
            private_file(database)  # embeddings and key secrets: owner-only
            for companion in ("-wal", "-shm"):  # SQLite creates them with the file's mode
                tighten(database.with_name(database.name + companion))
        # hide_parameters: a failed statement's message (and so a logged traceback) would
        # otherwise carry its parameters, embeddings and key secrets among them.
        engine = create_engine(url, hide_parameters=True)
        event.listen(engine, "handle_error", translate)
        settings = config.current()
        timeout = busy_timeout_ms or settings.db_busy_timeout_ms
        synchronous = settings.sqlite_synchronous  # FULL, NORMAL or EXTRA (config checks it)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event, not pysqlite, decide how transactions start.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(timeout)}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            # Deleted faces are biometric data: overwrite their pages instead of leaving them in
            # the file's free list.
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            options = conn.get_execution_options()
            if options.get(_SINGLE, False):
                return  # autocommit: each statement is its own transaction
            conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_WRITE, False) else "BEGIN")

        return engine

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """One round trip to the database (readiness checks); raises
        ``DatabaseUnavailableError`` when it cannot be reached."""
        with self.single_statement.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    # -- transactions --------------------------------------------------------------------------
    @contextmanager
    def write_transaction(self) -> Iterator[Connection]:
        """A write transaction, holding the write lock from its start (SQLite), or a savepoint
        of the open unit of work when there is one."""
        unit = self._open_unit()
        if unit is None:
            with self._writer.begin() as conn:
                yield conn
            self.health.note_write_ok()
            return
        if unit.conn is None:
            unit.conn = self._writer.connect()
            unit.conn.begin()
        try:
            with unit.conn.begin_nested():  # this write alone is undone if it fails
                yield unit.conn
        except DatabaseUnavailableError as exc:
            # SQLite ends the whole transaction on a full disk or a damaged page, savepoint
            # included, so undoing the savepoint then fails: report the fault, not that.
            cause: BaseException | None = exc
            while cause is not None:
                if isinstance(cause, (StorageFullError, CatalogCorruptError)):
                    raise cause from None
                cause = cause.__context__
            raise

    @contextmanager
    def read_transaction(self) -> Iterator[Connection]:
        """A read transaction with one consistent snapshot (PostgreSQL: REPEATABLE READ)."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    def _open_unit(self) -> _Unit | None:
        unit = _unit.get()
        return unit if unit is not None and unit.database is self else None

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """Commit every write made inside the block together, or none of them (a nested unit
        joins the outer one). Work registered with ``after_commit`` runs once it is durable."""
        if self._open_unit() is not None:
            yield
            return
        unit = _Unit(self)
        token = _unit.set(unit)
        try:
            yield
            if unit.conn is not None:
                unit.conn.commit()
                self.health.note_write_ok()
        finally:
            _unit.reset(token)
            if unit.conn is not None:
                unit.conn.close()  # rolls back what was not committed
        for work in unit.after_commit:
            try:
                work()
            except Exception:  # the change is committed and audited; do not fail the caller
                log.exception("work after a committed change failed")

    def after_commit(self, work: Callable[[], None]) -> None:
        """Run ``work`` when the open unit of work commits (now when there is none)."""
        unit = self._open_unit()
        if unit is None:
            work()
        else:
            unit.after_commit.append(work)

    # -- upkeep --------------------------------------------------------------------------------
    def reclaim_space(self) -> None:
        """After deleting faces (erasure, retention, DeleteFaces, DeleteCollection), once that
        commits (inside a unit of work it waits for the commit).

        SQLite: fold the write-ahead log into the database and truncate it, so deleted rows' old
        pages do not linger in the WAL (``secure_delete`` already overwrites them in the main
        file). PostgreSQL: ``VACUUM`` the faces table, which prunes the dead rows and, compacting
        their pages, overwrites their bytes in most cases (measured: not for a row at the low end
        of its page, which waits for the page's reuse; ``VACUUM FULL`` removes those but locks
        the table). PostgreSQL's own WAL keeps the bytes until its segments are overwritten:
        byte-level erasure is guaranteed on SQLite only (README).

        SQLite also keeps the rows a connection read or wrote in the connection's memory (its
        page cache, the values of its cached statements) until it is closed: the pooled
        connections are closed then too (new ones open as needed, ~1 ms each)."""
        if self.engine.dialect.name == "sqlite":
            self.after_commit(self._checkpoint_wal)
            self.after_commit(self._reopen_connections)
        elif self.engine.dialect.name == "postgresql":
            self.after_commit(self._vacuum_faces)

    def _checkpoint_wal(self) -> None:
        with self.single_statement.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def _reopen_connections(self) -> None:
        if self.engine.url.database not in (None, "", ":memory:"):  # else the data would go too
            self.engine.dispose()

    def _vacuum_faces(self) -> None:
        # The faces table holds the embeddings: the biometric bytes a deletion must not leave.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM faces")

    def integrity_problems(self, *, quick: bool = False) -> list[str]:
        """SQLite's own check of the file's pages and indexes (``quick``: ``quick_check``, linear
        in the file's size, for server starts; else the full ``integrity_check``, for ``regard
        collections check``), at most ``MAX_LISTED`` lines; a damaged database is noted in
        ``health``. PostgreSQL checks its pages as it reads them (``data_checksums``) and has no
        such pragma without extensions: no problems listed there."""
        if self.engine.dialect.name != "sqlite":
            return []
        pragma = "quick_check" if quick else "integrity_check"
        try:
            with self.single_statement.connect() as conn:
                lines = [line for r in conn.exec_driver_sql(f"PRAGMA {pragma}({MAX_LISTED})")
                         for line in r[0].splitlines() if not line.startswith("*** in database")]
        except CatalogCorruptError as exc:
            lines = [f"SQLite could not finish its {pragma}: {exc.__cause__}"]
        if lines == ["ok"]:
            return []
        self.health.note_corrupt()
        return lines[:MAX_LISTED]


class HasDatabase(Protocol):
    """Anything that holds a ``Database`` (a ``Catalog``)."""

    @property
    def database(self) -> Database: ...


def database_of(source: Database | HasDatabase) -> Database:
    """``source`` itself when it is a ``Database``, else its ``.database``: the governance
    repositories (``KeyStore``, ``Ledger``) accept a ``Catalog`` too while their callers move
    to passing the ``Database``."""
    if isinstance(source, Database):
        return source
    database = getattr(source, "database", None)
    if not isinstance(database, Database):
        raise TypeError(f"expected a Database or an object with a .database, got {source!r}")
    return database
