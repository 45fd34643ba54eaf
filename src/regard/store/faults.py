"""Storage faults told apart from a busy database: a full disk and a damaged catalog.

"Busy, retry with backoff" is the right answer to a locked SQLite file or a restarting PostgreSQL
server, and the wrong one to a full disk (a retry cannot free space; every request, reads too,
fails because each writes an audit entry) or to a damaged file (a retry reads the same bad page).
So the catalog turns those driver errors into their own errors, and remembers them in a
``StorageHealth`` that ``/healthz`` and ``/metrics`` read without touching the database.
"""

from __future__ import annotations

import errno
import shutil
import threading
import time
from pathlib import Path

from regard import config
from regard.errors import CatalogCorruptError, StorageFullError

SQLITE_CORRUPT, SQLITE_FULL, SQLITE_IOERR, SQLITE_NOTADB = 11, 13, 10, 26
PG_DISK_FULL = "53100"
PG_CORRUPT = frozenset({"XX001", "XX002"})  # data_corrupted, index_corrupted
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# /healthz reports "full" this long after the last refusal, unless a write succeeds before.
FULL_WINDOW_S = 60.0
# Below this much free space in the SQLite file's folder, /healthz reports "full" before any
# write fails (REGARD_MIN_FREE_BYTES): one more collection checkpoint or WAL growth away from it.
DEFAULT_MIN_FREE_BYTES = config.Settings.min_free_bytes.default


def _sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None  # the primary code of an extended one


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def is_storage_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL, PostgreSQL's disk_full, or an OS write refused for space or quota."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    return _sqlite_code(exc) == SQLITE_FULL or _sqlstate(exc) == PG_DISK_FULL


def is_corrupt(exc: BaseException) -> bool:
    """SQLite's SQLITE_CORRUPT / SQLITE_NOTADB, PostgreSQL's data_corrupted / index_corrupted."""
    return _sqlite_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB) or _sqlstate(exc) in PG_CORRUPT


def storage_full_error() -> StorageFullError:
    return StorageFullError(
        "Regard's storage is full: the catalog cannot record this request, so it was refused. "
        "An operator must free disk space (or raise the quota) on the server; this is not "
        "retried automatically")


def corrupt_error() -> CatalogCorruptError:
    return CatalogCorruptError(
        "The catalog database is damaged: run `regard collections check` on the server and "
        "restore the database from a backup; retrying will not help")


class StorageHealth:
    """What the catalog has seen of its storage, cheap to read (``/healthz``, ``/metrics``).
    ``folder``: where the SQLite file lives (None for a database server: free space unknown)."""

    def __init__(self, folder: Path | None, min_free_bytes: int | None = None) -> None:
        self.folder = folder
        self.min_free_bytes = (min_free_bytes if min_free_bytes is not None else
                               config.current().min_free_bytes)
        self.full_errors = 0
        self.corrupt = False
        self._last_full: float | None = None
        self._lock = threading.Lock()

    def note_full(self) -> None:
        with self._lock:
            self.full_errors += 1
            self._last_full = time.monotonic()

    def note_write_ok(self) -> None:
        """A write committed: space is back (if it was ever gone)."""
        self._last_full = None

    def note_corrupt(self) -> None:
        self.corrupt = True

    def free_bytes(self) -> int | None:
        if self.folder is None:
            return None
        try:
            return shutil.disk_usage(self.folder).free
        except OSError:
            return None

    def low_on_space(self) -> bool:
        free = self.free_bytes()
        return free is not None and free < self.min_free_bytes

    def storage_full(self) -> bool:
        last = self._last_full
        return ((last is not None and time.monotonic() - last < FULL_WINDOW_S)
                or self.low_on_space())

    def translate(self, exc: BaseException) -> StorageFullError | CatalogCorruptError | None:
        """The typed error for a driver or OS error, if it is a storage fault (and note it). An
        I/O error counts as a full disk when free space is low: SQLite reports some failed
        writes (the WAL index, a sync) as SQLITE_IOERR, never with the errno."""
        if is_storage_full(exc) or (_sqlite_code(exc) == SQLITE_IOERR and self.low_on_space()):
            self.note_full()
            return storage_full_error()
        if is_corrupt(exc):
            self.note_corrupt()
            return corrupt_error()
        return None
