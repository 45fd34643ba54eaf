"""The web console's sessions, kept server-side in the catalog database.

Why in the database and not in a signed cookie: a session must end when its user signs out or
its access key is revoked, on every replica behind a load balancer, and survive a restart; a
self-contained cookie can do neither. The browser holds only a random 256-bit token; the row is
keyed by its SHA-256, so reading the database does not give anyone a usable session.

A session ends after ``idle`` without a request (default 30 minutes, REGARD_CONSOLE_IDLE_MINUTES)
and in any case ``lifetime`` after sign-in (12 hours): a console left open on a shared computer
does not stay signed in for good. Its CSRF token is random per session and compared in constant
time (``Session.csrf_ok``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import delete, select, update

from regard.store import schema as s
from regard.store.database import Database, as_utc, utcnow

LIFETIME = timedelta(hours=12)
TOUCH_EVERY = timedelta(seconds=60)  # last_seen is written at most this often per session


@dataclass(frozen=True)
class Session:
    access_key_id: str | None  # None: the --insecure-local operator
    csrf_token: str
    created: datetime
    last_seen: datetime
    expires: datetime

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf_token.encode(),
                                                       str(presented).encode())


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, database: Database, idle: timedelta,
                 clock: Callable[[], datetime] = utcnow, lifetime: timedelta = LIFETIME) -> None:
        self.database = database
        self.idle = idle
        self.lifetime = lifetime
        self.clock = clock

    def create(self, access_key_id: str | None, client: str | None) -> tuple[str, Session]:
        """A new session; returns the token for the cookie (never stored) and the session."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        row = {"token_sha256": _digest(token), "access_key_id": access_key_id,
               "csrf_token": secrets.token_urlsafe(32), "client": (client or "")[:64] or None,
               "created": now, "last_seen": now, "expires": now + self.lifetime}
        with self.database.write_transaction() as conn:
            conn.execute(delete(s.console_sessions).where(s.console_sessions.c.expires < now))
            conn.execute(s.console_sessions.insert().values(**row))
        return token, _session(row)

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token``; None when unknown, idle too long or past its end
        (an expired row is deleted)."""
        if not token or len(token) > 128:
            return None
        digest = _digest(token)
        with self.database.read_transaction() as conn:
            row = conn.execute(select(s.console_sessions).where(
                s.console_sessions.c.token_sha256 == digest)).first()
        if row is None:
            return None
        session = _session(row._mapping)
        now = self.clock()
        if now >= session.expires or now - session.last_seen >= self.idle:
            self.end(token)
            return None
        if now - session.last_seen >= TOUCH_EVERY:
            with self.database.write_transaction() as conn:
                conn.execute(update(s.console_sessions)
                             .where(s.console_sessions.c.token_sha256 == digest)
                             .values(last_seen=now))
        return session

    def end(self, token: str) -> None:
        with self.database.write_transaction() as conn:
            conn.execute(delete(s.console_sessions).where(
                s.console_sessions.c.token_sha256 == _digest(token)))

    def end_all(self, access_key_id: str) -> int:
        """End every session of a key (revocation does this implicitly; this clears the rows)."""
        with self.database.write_transaction() as conn:
            return int(conn.execute(delete(s.console_sessions).where(
                s.console_sessions.c.access_key_id == access_key_id)).rowcount or 0)


def _session(m: object) -> Session:
    g = m.__getitem__  # type: ignore[attr-defined]
    created, last_seen, expires = (as_utc(g(k)) for k in ("created", "last_seen", "expires"))
    assert created and last_seen and expires
    return Session(g("access_key_id"), g("csrf_token"), created, last_seen, expires)
