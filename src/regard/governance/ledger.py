"""The audit ledger: an append-only, hash-chained record of who did what to which faces, and why.

Each entry holds the sequence number, UTC time, principal (access key id, or ``local:<user>`` for
the CLI and Python), operation, collection, declared purpose and case reference, the SHA-256 of
each input image (never the image or an embedding), a result summary (matched FaceIds and
UserIds, top similarity, threshold used, or the error name) and the client address.

Tamper evidence: an entry's ``hash`` is SHA-256 over the previous entry's hash and the entry's
canonical encoding (sorted-key JSON of every other field, its sequence number included), so
editing, deleting, inserting or reordering an entry breaks the chain at that point. The chain
head (last sequence number and hash) is kept in one row HMAC-signed with the server's ledger key
(``REGARD_LEDGER_KEY``, or ``$REGARD_HOME/ledger.key`` created on first use, mode 0600), so
cutting entries off the tail, or re-chaining after an edit, is detected too unless the editor
also holds the key. ``verify`` says where the chain breaks.

What a database owner can still do is replace the whole ledger with an empty one; anchoring the
head elsewhere (``regard audit head``, ``regard audit export``) is the defence against that.

Appends lock the head row (SQLite: the write lock; PostgreSQL: ``SELECT ... FOR UPDATE``), so
concurrent writers from several threads, processes or replicas produce one gap-free chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from sqlalchemy import JSON, String, case, cast, func, insert, select, type_coerce, update
from sqlalchemy.sql import Select

from regard import config
from regard.errors import CatalogCorruptError, RegardError
from regard.operations.registry import search_operations
from regard.private_files import private_dir
from regard.store import schema as s
from regard.store.database import Database, HasDatabase, database_of

GENESIS = "0" * 64
_HEAD_FOR_UPDATE = select(s.audit_head).where(s.audit_head.c.id == 1).with_for_update()
KEY_FILE = "ledger.key"
PAGE = 2000


class LedgerIntegrityError(RegardError):
    """The ledger's signed head does not verify: refuse to append to a chain that was tampered
    with (or to one signed with another key: a misconfigured replica)."""

    code = "InternalServerError"
    http_status = 500


def utc_iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(content: dict[str, Any]) -> bytes:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def chain_hash(prev_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(content)).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: str
    principal: str
    operation: str
    collection: str | None
    purpose: str | None
    case_ref: str | None
    image_sha256: list[str] | None
    result: dict[str, Any]
    client: str | None
    prev_hash: str
    hash: str = ""

    def content(self) -> dict[str, Any]:
        """Everything the hash covers (all fields but the hash)."""
        body = asdict(self)
        body.pop("hash")
        return body

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ChainReport:
    """``verify``'s answer: ``ok`` and, when not, each break with the entry where it is."""

    entries: int
    head_seq: int
    problems: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, seq: int | None, text: str) -> None:
        if self.first_bad_seq is None and seq is not None:
            self.first_bad_seq = seq
        self.problems.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "head_seq": self.head_seq,
                "first_bad_seq": self.first_bad_seq, "problems": self.problems}


def ledger_key(home: Path | None = None) -> bytes:
    """The HMAC key: ``REGARD_LEDGER_KEY`` (hex; the same on every replica sharing a database) or
    ``home/ledger.key``, created with 32 random bytes and mode 0600 on first use."""
    settings = config.current()
    if settings.ledger_key is not None:  # parsed (hex, >= 16 bytes) by regard.config
        return settings.ledger_key
    if home is None:
        home = settings.home
    path = home / KEY_FILE
    private_dir(home)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    try:
        key = secrets.token_bytes(32)
        os.write(fd, key.hex().encode())
        return key
    finally:
        os.close(fd)


PAST_DAYS_KEPT = 400  # past days' counts remembered by ``Ledger.daily_counts``


class Ledger:
    """The audit ledger: a repository over the ``audit_log`` and ``audit_head`` tables of a
    ``Database``.

    ``database``: the ``Database``, or (for the callers that predate the store's split, which
    pass ``store.catalog``) any object with a ``.database``, such as a ``Catalog``."""

    def __init__(self, database: Database | HasDatabase, key: bytes | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.database = database_of(database)
        self._key = key
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._past_days: dict[str, dict[str, int] | None] = {}  # see daily_counts

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = ledger_key()
        return self._key

    def sign(self, seq: int, head_hash: str) -> str:
        return hmac.new(self.key, f"{seq}:{head_hash}".encode(), hashlib.sha256).hexdigest()

    def _head_ok(self, seq: int, head_hash: str, signature: str) -> bool:
        if seq == 0:
            return head_hash == GENESIS
        return hmac.compare_digest(self.sign(seq, head_hash), signature)

    # -- writing --------------------------------------------------------------------------------
    def append(self, *, principal: str, operation: str, collection: str | None = None,
               purpose: str | None = None, case_ref: str | None = None,
               image_sha256: Iterable[str] | None = None, result: dict[str, Any] | None = None,
               client: str | None = None) -> AuditEntry:
        hashes = list(image_sha256) if image_sha256 is not None else None
        with self.database.write_transaction() as conn:
            head = conn.execute(_HEAD_FOR_UPDATE).one()
            if not self._head_ok(head.seq, head.hash, head.signature):
                raise LedgerIntegrityError(
                    "The audit ledger's signed head does not verify; refusing to append "
                    "(run `regard audit verify`; on a replica, check REGARD_LEDGER_KEY)")
            entry = AuditEntry(head.seq + 1, utc_iso(self.clock()), principal, operation,
                               collection, purpose, case_ref, hashes or None, result or {},
                               client, head.hash)
            entry = AuditEntry(**{**entry.to_dict(),
                                  "hash": chain_hash(head.hash, entry.content())})
            conn.execute(insert(s.audit_log).values(**entry.to_dict()))
            conn.execute(update(s.audit_head).where(s.audit_head.c.id == 1).values(
                seq=entry.seq, hash=entry.hash, signature=self.sign(entry.seq, entry.hash)))
        return entry

    # -- reading --------------------------------------------------------------------------------
    def entries(self, since: datetime | None = None, until: datetime | None = None,
                operations: Iterable[str] | None = None, after: int = 0
                ) -> Iterator[AuditEntry]:
        """Entries in sequence order (read in pages), optionally within [since, until) and
        after a sequence number. A row altered outside Regard (JSON that does not parse, a value
        of the wrong type) stops the read with ``LedgerIntegrityError`` naming the entry: an
        export must neither crash nor leave it out in silence."""
        ops = list(operations) if operations is not None else None
        while True:
            stmt = _RAW.where(s.audit_log.c.seq > after)
            if since is not None:
                stmt = stmt.where(s.audit_log.c.time >= utc_iso(since))
            if until is not None:
                stmt = stmt.where(s.audit_log.c.time < utc_iso(until))
            if ops is not None:
                stmt = stmt.where(s.audit_log.c.operation.in_(ops))
            with self.database.read_transaction() as conn:
                rows = conn.execute(stmt.order_by(s.audit_log.c.seq).limit(PAGE)).all()
            for row in rows:
                entry = _parsed(row._mapping)
                if isinstance(entry, _Unreadable):
                    raise LedgerIntegrityError(f"{entry.reason}; `regard audit verify` lists "
                                               "every damaged entry")
                yield entry
            if len(rows) < PAGE:
                return
            after = rows[-1].seq

    def browse(self, *, before: int | None = None, limit: int = 50,
               operation: str | None = None, principal: str | None = None,
               collection: str | None = None) -> list[AuditEntry]:
        """One page of entries, newest first, before sequence ``before``, optionally of one
        operation, principal or collection (the console's ledger view; the export reads in
        order with ``entries``)."""
        stmt = _RAW
        if before is not None:
            stmt = stmt.where(s.audit_log.c.seq < before)
        for column, value in (("operation", operation), ("principal", principal),
                              ("collection", collection)):
            if value is not None:
                stmt = stmt.where(s.audit_log.c[column] == value)
        rows = self._raw(stmt.order_by(s.audit_log.c.seq.desc()).limit(max(1, limit)))
        out = []
        for row in rows:
            entry = _parsed(row._mapping)
            if isinstance(entry, _Unreadable):
                raise LedgerIntegrityError(f"{entry.reason}; `regard audit verify` lists "
                                           "every damaged entry")
            out.append(entry)
        return out

    def daily_counts(self, since: datetime) -> dict[str, dict[str, int]]:
        """Per UTC day from ``since`` (days with entries only): all entries, searches (the
        operations that can identify someone), and refusals and failures (entries whose result
        names an ``Error``), counted by the database.

        A day before today is counted once per process and remembered: entries are appended
        with the time they are written, so a past day's count does not change (short of a
        replica's clock running behind at midnight, or an edit outside Regard, which
        ``verify`` reports). Only today's entries are counted again, so an overview costs the
        same with 20,000 entries a day in the window as with 20."""
        today = self.clock().astimezone(timezone.utc).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)
        first = since.astimezone(timezone.utc).replace(hour=0, minute=0, second=0,
                                                       microsecond=0)
        past = [(first + timedelta(days=i)).date().isoformat()
                for i in range(max(0, (today - first).days))]
        missing = [d for d in past if d not in self._past_days]
        if missing:
            counted = self._count_days(datetime.fromisoformat(missing[0]).replace(
                tzinfo=timezone.utc), today)
            for day in missing:
                self._past_days[day] = counted.get(day)
            while len(self._past_days) > PAST_DAYS_KEPT:
                self._past_days.pop(next(iter(self._past_days)))
        out = {d: c for d in past if (c := self._past_days.get(d)) is not None}
        out.update(self._count_days(max(today, first), None))
        return out

    def _count_days(self, since: datetime, until: datetime | None
                    ) -> dict[str, dict[str, int]]:
        day = func.substr(s.audit_log.c.time, 1, 10).label("day")
        failed = cast(s.audit_log.c.result, String).like('%"Error"%')
        stmt = (select(day, func.count().label("entries"),
                       func.sum(case((s.audit_log.c.operation.in_(list(search_operations())), 1),
                                     else_=0)).label("searches"),
                       func.sum(case((failed, 1), else_=0)).label("refused"))
                .where(s.audit_log.c.time >= utc_iso(since)))
        if until is not None:
            stmt = stmt.where(s.audit_log.c.time < utc_iso(until))
        return {r.day: {"Entries": int(r.entries), "Searches": int(r.searches or 0),
                        "Refused": int(r.refused or 0)}
                for r in self._raw(stmt.group_by(day).order_by(day))}

    def head(self) -> dict[str, Any]:
        with self.database.read_transaction() as conn:
            head = conn.execute(select(s.audit_head).where(s.audit_head.c.id == 1)).one()
        return {"seq": head.seq, "hash": head.hash, "signature": head.signature,
                "signature_ok": self._head_ok(head.seq, head.hash, head.signature)}

    def verify(self) -> ChainReport:
        """Walk the whole chain; report every break and where it is, damaged rows included."""
        head = self.head()
        report = ChainReport(entries=0, head_seq=head["seq"])
        prev_hash: str | None = GENESIS  # None: after an entry that cannot be read
        expected = 1
        for entry in self._stored(head["seq"]):
            if entry.seq is None:
                report.problem(None, entry.reason)
                continue
            report.entries += 1
            if entry.seq > expected:
                missing = (f"entry {expected}" if entry.seq == expected + 1
                           else f"entries {expected}-{entry.seq - 1}")
                report.problem(expected, f"{missing} missing (deleted)")
            if isinstance(entry, _Unreadable):
                report.problem(entry.seq, entry.reason)
                prev_hash, expected = None, entry.seq + 1
                continue
            if chain_hash(entry.prev_hash, entry.content()) != entry.hash:
                report.problem(entry.seq, f"entry {entry.seq} was altered: its content does not "
                                          "match its hash")
            elif (prev_hash is not None and entry.prev_hash != prev_hash
                  and entry.seq == expected):
                report.problem(entry.seq, f"entry {entry.seq} does not follow entry "
                                          f"{entry.seq - 1}: an entry before it was altered, "
                                          "inserted or reordered")
            prev_hash, expected = entry.hash, entry.seq + 1
        last = expected - 1
        if not head["signature_ok"]:
            report.problem(None, "the signed head does not verify: the head was altered, or "
                                 "the ledger key is not the one that signed it")
        elif head["seq"] > last:
            report.problem(last + 1, f"the ledger ends at entry {last} but its signed head is "
                                     f"at entry {head['seq']}: entries {last + 1}-{head['seq']} "
                                     "were cut off")
        elif head["seq"] < last:
            report.problem(head["seq"] + 1,
                           f"entries {head['seq'] + 1}-{last} follow the signed head: written "
                           "outside Regard")
        elif prev_hash is not None and head["hash"] != prev_hash:
            report.problem(last, f"the signed head does not match entry {last}: the end of the "
                                 "chain was rewritten")
        return report

    def _stored(self, head_seq: int) -> Iterator[AuditEntry | _Unreadable]:
        """Every stored row in sequence order, as an entry or, where it cannot be read (a damaged
        database page) or parsed (a value changed outside Regard), as the reason: for ``verify``,
        a damaged row is a finding to name, not a failure. Where a page of rows cannot be read,
        its sequence numbers are read one by one, so the report names each lost entry."""
        after = 0
        while True:
            try:
                rows = self._raw(_RAW.where(s.audit_log.c.seq > after)
                                 .order_by(s.audit_log.c.seq).limit(PAGE))
            except CatalogCorruptError:
                if after >= head_seq:
                    yield _Unreadable(after + 1, f"the rows after entry {after} cannot be read: "
                                                 "the database is damaged there")
                    return
                for seq in range(after + 1, after + PAGE + 1):
                    try:
                        found = self._raw(_RAW.where(s.audit_log.c.seq == seq))
                    except CatalogCorruptError:
                        yield _Unreadable(seq, f"entry {seq} cannot be read: the database page "
                                               "holding it is damaged")
                        continue
                    yield from (_parsed(row._mapping) for row in found)
                after += PAGE
                continue
            yield from (_parsed(row._mapping) for row in rows)
            seqs = [r.seq for r in rows if isinstance(r.seq, int)]
            if len(rows) < PAGE or not seqs:
                return
            after = max(seqs)

    def _raw(self, stmt: Select[Any]) -> list[Any]:
        with self.database.read_transaction() as conn:
            return list(conn.execute(stmt).all())

    def who_searched(self, face_ids: Iterable[str] = (), user_ids: Iterable[str] = ()
                     ) -> list[AuditEntry]:
        """Searches and comparisons that matched (or probed with) any of these faces or users."""
        faces, users = set(face_ids), set(user_ids)
        found = []
        for entry in self.entries(operations=search_operations()):
            r = entry.result
            if (faces & set(r.get("FaceIds", ())) or users & set(r.get("UserIds", ()))
                    or r.get("ProbeFaceId") in faces or r.get("ProbeUserId") in users):
                found.append(entry)
        return found




@dataclass(frozen=True)
class _Unreadable:
    """A stored row ``verify`` cannot check, and why (``seq`` None: not even its number)."""

    seq: int | None
    reason: str


# The ledger's columns with the JSON ones as stored (text), so that each row is parsed here and
# one that does not parse is reported instead of failing the whole read.
_RAW = select(*[type_coerce(c, String).label(c.name) if isinstance(c.type, JSON) else c
                for c in s.audit_log.c])


def _parsed(m: Any) -> AuditEntry | _Unreadable:
    seq = m["seq"]
    if not isinstance(seq, int):
        return _Unreadable(None, f"a ledger row has the sequence number {seq!r}, which is not a "
                                 "number: it was changed outside Regard")
    values = {k: m[k] for k in AuditEntry.__dataclass_fields__}
    for name in ("image_sha256", "result"):
        if isinstance(values[name], (str, bytes)):  # SQLite; PostgreSQL's driver parses JSON
            try:
                values[name] = json.loads(values[name])
            except ValueError:
                return _Unreadable(seq, f"entry {seq} was altered: its {name} is not valid JSON")
    entry = AuditEntry(**values)
    try:
        canonical(entry.content())
    except (TypeError, ValueError):
        return _Unreadable(seq, f"entry {seq} was altered: it holds a value of the wrong type")
    return entry
