"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temporary folder, started on a
free loopback port, stopped and removed afterwards. Debian's ``postgresql`` package provides the
programs (``.ci/run`` installs it); PostgreSQL refuses to run as root, so as root the server runs
as the ``postgres`` user the package creates."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator


def find_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]))
    return candidates[-1] if candidates else None


def unavailable_reason() -> str | None:
    if find_program("initdb") is None or find_program("pg_ctl") is None:
        return "PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'regard[postgres]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``fsync``: off for the tests (fast); the benchmarks that time writes keep it on."""

    def __init__(self, fsync: bool = False) -> None:
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="regard-pg-"))
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run(find_program("initdb") or "initdb", "-D", str(self.root / "data"), "-U",
                  "regard", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.restart()

    def restart(self) -> None:
        """Start the server on its existing data (after ``crash``: with crash recovery)."""
        # fsync off: an OS crash could lose commits, a server crash (``crash``) cannot; the
        # durability against power loss is tested on SQLite.
        options = (f"-p {self.port} -h 127.0.0.1 -k {self.root} "
                   f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200")
        self._run(find_program("pg_ctl") or "pg_ctl", "-D", str(self.root / "data"), "-l",
                  str(self.root / "server.log"), "-w", "-t", "60", "-o", options, "start")

    def crash(self) -> None:
        """Stop the server at once, as a crash would (``immediate``: no shutdown checkpoint;
        the next start recovers from the write-ahead log)."""
        self._run(find_program("pg_ctl") or "pg_ctl", "-D", str(self.root / "data"), "-m",
                  "immediate", "-w", "stop")

    def stop(self) -> None:
        try:
            self.crash()
        except RuntimeError as exc:  # already down (a test crashed it)
            if "does not exist" not in str(exc) and "not running" not in str(exc):
                raise
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://regard@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=regard dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def serve(fsync: bool = False) -> Iterator[PostgresServer]:
    server = PostgresServer(fsync)
    server.start()
    try:
        yield server
    finally:
        server.stop()
