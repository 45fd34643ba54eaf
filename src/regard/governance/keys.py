"""Access keys for the HTTP APIs: issued, listed and revoked by the operator (``regard keys``).

A key is an AWS-style pair: an access key id (public, 20 characters, ``RGK`` + 17 base-32
characters, so it never collides with a real AWS ``AKIA...`` id) and a 40-character secret. The
Rekognition door verifies SigV4 signatures with the secret; the native REST door takes the pair in
a header. Revocation takes effect on the next request (every request reads the key row).

Each key carries scopes and an optional collection allow-list (enforced by governance, issue 4;
recorded from day one so keys issued now keep their meaning) and a default purpose for the audit
ledger.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

from sqlalchemy import select

from regard.errors import InvalidParameterError, ResourceNotFoundError, UnrecognizedClientError
from regard.operations.registry import ADMIN as ADMIN_SCOPE
from regard.operations.registry import SCOPES  # declared with the operations that need them
from regard.private_files import open_private
from regard.store import schema as s
from regard.store.database import Database, HasDatabase, as_utc, database_of, utcnow

CREDENTIALS_FILE = "admin-credentials"


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    name: str | None
    created: datetime
    revoked: datetime | None
    scopes: tuple[str, ...]
    collections: tuple[str, ...] | None
    default_purpose: str | None
    max_tps: float | None = None  # requests per second; None: no limit

    @property
    def active(self) -> bool:
        return self.revoked is None

    def to_dict(self) -> dict[str, object]:
        """For ``regard keys list --json`` (never includes the secret)."""
        return {"AccessKeyId": self.access_key_id, "Name": self.name,
                "Created": self.created.isoformat(),
                "Revoked": self.revoked.isoformat() if self.revoked else None,
                "Scopes": list(self.scopes),
                "Collections": list(self.collections) if self.collections is not None else None,
                "DefaultPurpose": self.default_purpose, "MaxTps": self.max_tps}


class KeyStore:
    """Access keys: a repository over the ``access_keys`` table of a ``Database``.

    ``database``: the ``Database``, or (for the callers that predate the store's split, which
    pass ``store.catalog``) any object with a ``.database``, such as a ``Catalog``."""

    def __init__(self, database: Database | HasDatabase) -> None:
        self.database = database_of(database)

    def create(self, name: str | None = None, scopes: Sequence[str] = (ADMIN_SCOPE,),
               collections: Sequence[str] | None = None,
               default_purpose: str | None = None,
               max_tps: float | None = None) -> tuple[AccessKey, str]:
        """Issue a key; returns it with its secret (shown once, never listed again).
        ``max_tps``: the requests per second it may make (bursts of up to that many)."""
        scopes = tuple(dict.fromkeys(scopes))
        if max_tps is not None and not (0 < max_tps <= 1e6):
            raise InvalidParameterError("max_tps must be a number of requests per second > 0")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise InvalidParameterError(
                f"Unknown scope(s) {', '.join(unknown) or '(none given)'}; "
                f"scopes are {', '.join(SCOPES)}")
        key_id = "RGK" + base64.b32encode(secrets.token_bytes(11)).decode()[:17]
        secret = secrets.token_urlsafe(30)  # 40 characters
        row = {"access_key_id": key_id, "secret": secret, "name": name, "created": utcnow(),
               "revoked": None, "scopes": list(scopes),
               "collections": list(collections) if collections is not None else None,
               "default_purpose": default_purpose, "max_tps": max_tps}
        with self.database.write_transaction() as conn:
            conn.execute(s.access_keys.insert().values(**row))
        return _key(row), secret

    def list(self, include_revoked: bool = True) -> list[AccessKey]:
        stmt = select(s.access_keys).order_by(s.access_keys.c.created)
        if not include_revoked:
            stmt = stmt.where(s.access_keys.c.revoked.is_(None))
        with self.database.read_transaction() as conn:
            return [_key(r._mapping) for r in conn.execute(stmt)]

    def revoke(self, access_key_id: str) -> AccessKey:
        with self.database.write_transaction() as conn:
            found = conn.execute(s.access_keys.update()
                                 .where(s.access_keys.c.access_key_id == access_key_id)
                                 .where(s.access_keys.c.revoked.is_(None))
                                 .values(revoked=utcnow())).rowcount
            row = conn.execute(select(s.access_keys).where(
                s.access_keys.c.access_key_id == access_key_id)).first()
        if row is None:
            raise ResourceNotFoundError(f"No access key {access_key_id}")
        if not found:
            raise InvalidParameterError(f"Access key {access_key_id} is already revoked")
        return _key(row._mapping)

    def secret(self, access_key_id: str) -> tuple[AccessKey, str]:
        """The active key and its secret, for verifying a request; unknown and revoked keys get
        AWS's ``UnrecognizedClientException``."""
        with self.database.read_transaction() as conn:
            row = conn.execute(select(s.access_keys).where(
                s.access_keys.c.access_key_id == access_key_id)).first()
        if row is None or row.revoked is not None:
            raise UnrecognizedClientError(
                "The security token included in the request is invalid.")
        return _key(row._mapping), row.secret

    def authenticate(self, access_key_id: str, secret: str) -> AccessKey:
        """Check a key pair presented in full (the native REST door)."""
        key, expected = self.secret(access_key_id)
        if not hmac.compare_digest(expected.encode(), secret.encode()):
            raise UnrecognizedClientError("The access key id or secret is invalid.")
        return key


def write_credentials_file(path: Path, access_key_id: str, secret: str) -> None:
    """An AWS shared-credentials file (profile ``regard``), created with mode 0600."""
    text = (f"[regard]\naws_access_key_id = {access_key_id}\n"
            f"aws_secret_access_key = {secret}\n")
    fd = open_private(path)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _key(m: object) -> AccessKey:
    g = m.__getitem__  # type: ignore[attr-defined]
    collections = g("collections")
    return AccessKey(g("access_key_id"), g("name"), as_utc(g("created")), as_utc(g("revoked")),
                     tuple(g("scopes")), tuple(collections) if collections is not None else None,
                     g("default_purpose"), g("max_tps"))
