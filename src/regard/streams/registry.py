"""Stream sources, sinks and processors: a repository over their tables in the catalog database.

Sources and sinks are registered by the operator (CLI ``regard streams``, REST) and given the
ARNs AWS clients name: a source a Kinesis Video stream ARN
(``arn:aws:kinesisvideo:REGION:ACCOUNT:stream/NAME/CREATED-MS``), a sink a Kinesis data stream ARN
(``arn:aws:kinesis:REGION:ACCOUNT:stream/NAME``). A camera URL often holds its password, so a
source's URL is returned only to the runtime; listings show it with the password masked
(``masked_url``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import delete, select, update

from regard.errors import (
    InvalidParameterError,
    ResourceAlreadyExistsError,
    ResourceInUseError,
    ResourceNotFoundError,
)
from regard.store import schema as s
from regard.store.database import Database, as_utc, utcnow
from regard.streams.model import STOPPED, Sink, Source

SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "file", "udp", "srt", "v4l2")


def masked_url(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def check_source_url(url: str) -> str:
    url = url.strip()
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES and not url.startswith("/"):
        raise InvalidParameterError(
            f"A source is a camera or stream URL ({', '.join(SCHEMES)}) or a local path, not "
            f"{masked_url(url)!r}")
    return url


def check_sink(kind: str, target: str) -> str:
    """The target, if it suits a sink of ``kind`` (``sinks.check_target``: the sinks know what
    they need); a Server-Sent Events sink takes none."""
    from regard.streams.sinks import check_target

    target = target.strip()
    if kind == "sse" and target:
        raise InvalidParameterError("A Server-Sent Events sink takes no target: its events are "
                                    "at /v1/streams/sinks/NAME/events")
    try:
        return check_target(kind, target)
    except ValueError as exc:
        raise InvalidParameterError(str(exc)[:1].upper() + str(exc)[1:]) from None


class StreamRegistry:
    def __init__(self, database: Database, region: str, account_id: str) -> None:
        self.database = database
        self.region = region
        self.account_id = account_id

    # -- ARNs -------------------------------------------------------------------------------------
    def processor_arn(self, name: str) -> str:
        return f"arn:aws:rekognition:{self.region}:{self.account_id}:streamprocessor/{name}"

    def processor_name_of(self, arn: str) -> str | None:
        prefix = f"arn:aws:rekognition:{self.region}:{self.account_id}:streamprocessor/"
        return arn[len(prefix):] if arn.startswith(prefix) else None

    # -- rows by name: what sources, sinks and processors share ---------------------------------
    def _insert_new(self, table: Any, row: dict[str, Any], taken: Exception) -> None:
        """Insert ``row`` unless its name is taken (then raise ``taken``), in one transaction."""
        with self.database.write_transaction() as conn:
            if conn.execute(select(table.c.name).where(table.c.name == row["name"])).first():
                raise taken
            conn.execute(table.insert().values(**row))

    def _all(self, table: Any) -> list[Any]:
        """Every row, by name."""
        with self.database.read_transaction() as conn:
            return [r._mapping for r in conn.execute(select(table).order_by(table.c.name))]

    def _one(self, table: Any, name: str | None, arn: str | None, missing: Exception) -> Any:
        """The row named ``name`` (or, without a name, with ARN ``arn``); ``missing`` raised
        when there is none."""
        column = table.c.name if name is not None else table.c.arn
        with self.database.read_transaction() as conn:
            row = conn.execute(select(table).where(column == (name or arn))).first()
        if row is None:
            raise missing
        return row._mapping

    # -- sources ----------------------------------------------------------------------------------
    def add_source(self, name: str, url: str) -> Source:
        _check_name(name)
        now = utcnow()
        arn = (f"arn:aws:kinesisvideo:{self.region}:{self.account_id}:stream/{name}/"
               f"{int(now.timestamp() * 1000)}")
        row = {"name": name, "url": check_source_url(url), "arn": arn, "created": now}
        self._insert_new(s.stream_sources, row,
                         ResourceAlreadyExistsError(f"A source named {name} exists"))
        return _source(row)

    def sources(self) -> list[Source]:
        return [_source(r) for r in self._all(s.stream_sources)]

    def source(self, *, name: str | None = None, arn: str | None = None) -> Source:
        return _source(self._one(s.stream_sources, name, arn, ResourceNotFoundError(
            f"No stream source {name or arn} is registered "
            "(`regard streams sources add NAME URL`)")))

    def remove_source(self, name: str) -> None:
        source = self.source(name=name)
        with self.database.write_transaction() as conn:
            using = conn.execute(select(s.stream_processors.c.name).where(
                s.stream_processors.c.input_arn == source.arn)).first()
            if using:
                raise ResourceInUseError(f"Stream processor {using.name} reads source {name}")
            conn.execute(delete(s.stream_sources).where(s.stream_sources.c.name == name))

    # -- sinks ------------------------------------------------------------------------------------
    def add_sink(self, name: str, kind: str, target: str = "",
                 options: dict[str, Any] | None = None) -> Sink:
        _check_name(name)
        now = utcnow()
        row = {"name": name, "kind": kind, "target": check_sink(kind, target),
               "arn": f"arn:aws:kinesis:{self.region}:{self.account_id}:stream/{name}",
               "options": options or {}, "created": now}
        self._insert_new(s.stream_sinks, row,
                         ResourceAlreadyExistsError(f"A sink named {name} exists"))
        return _sink(row)

    def sinks(self) -> list[Sink]:
        return [_sink(r) for r in self._all(s.stream_sinks)]

    def sink(self, *, name: str | None = None, arn: str | None = None) -> Sink:
        return _sink(self._one(s.stream_sinks, name, arn, ResourceNotFoundError(
            f"No stream sink {name or arn} is registered "
            "(`regard streams sinks add NAME KIND [TARGET]`)")))

    def remove_sink(self, name: str) -> None:
        sink = self.sink(name=name)
        for processor in self.processors(limit=100000)[0]:
            if (processor["output"].get("KinesisDataStream") or {}).get("Arn") == sink.arn:
                raise ResourceInUseError(f"Stream processor {processor['name']} writes to "
                                         f"sink {name}")
        with self.database.write_transaction() as conn:
            conn.execute(delete(s.stream_sinks).where(s.stream_sinks.c.name == name))

    # -- processors -------------------------------------------------------------------------------
    def create_processor(self, name: str, *, input_arn: str, output: dict[str, Any],
                         settings: dict[str, Any], role_arn: str, tags: dict[str, str],
                         owner: str) -> dict[str, Any]:
        now = utcnow()
        row = {"name": name, "arn": self.processor_arn(name), "status": STOPPED,
               "status_message": None, "input_arn": input_arn, "output": output,
               "settings": settings, "role_arn": role_arn, "tags": tags, "created": now,
               "updated": now, "owner": owner, "session_id": None, "session": None}
        self._insert_new(s.stream_processors, row,
                         ResourceInUseError(f"A stream processor named {name} exists"))
        return row

    def processor(self, name: str) -> dict[str, Any]:
        return _processor(self._one(s.stream_processors, name, None, ResourceNotFoundError(
            f"Stream processor {name} does not exist")))

    def processors(self, after: str | None = None, limit: int = 1000
                   ) -> tuple[list[dict[str, Any]], bool]:
        """Processors by name after ``after``; and whether there are more."""
        stmt = select(s.stream_processors).order_by(s.stream_processors.c.name)
        if after:
            stmt = stmt.where(s.stream_processors.c.name > after)
        with self.database.read_transaction() as conn:
            rows = conn.execute(stmt.limit(limit + 1)).all()
        return [_processor(r._mapping) for r in rows[:limit]], len(rows) > limit

    def set_status(self, name: str, status: str, message: str | None = None, *,
                   expect: tuple[str, ...] | None = None, session_id: str | None = None,
                   session: dict[str, Any] | None = None, clear_session: bool = False
                   ) -> bool:
        """Change the status (only from one of ``expect``, when given, and only of the session
        ``session_id`` when given: a stale thread cannot overwrite a newer session's status);
        whether a row changed."""
        values: dict[str, Any] = {"status": status, "status_message": message,
                                  "updated": utcnow()}
        if session is not None:
            values["session"] = session
            values["session_id"] = session["SessionId"]
        if clear_session:
            values["session"] = None
            values["session_id"] = None
        stmt = update(s.stream_processors).where(s.stream_processors.c.name == name)
        if expect is not None:
            stmt = stmt.where(s.stream_processors.c.status.in_(list(expect)))
        if session_id is not None:
            stmt = stmt.where(s.stream_processors.c.session_id == session_id)
        with self.database.write_transaction() as conn:
            return bool(conn.execute(stmt.values(**values)).rowcount)

    def set_tags(self, name: str, tags: dict[str, str]) -> None:
        with self.database.write_transaction() as conn:
            conn.execute(update(s.stream_processors).where(
                s.stream_processors.c.name == name).values(tags=tags, updated=utcnow()))

    def touch(self, name: str) -> None:
        with self.database.write_transaction() as conn:
            conn.execute(update(s.stream_processors).where(
                s.stream_processors.c.name == name).values(updated=utcnow()))

    def delete_processor(self, name: str, *, expect: tuple[str, ...]) -> bool:
        with self.database.write_transaction() as conn:
            return bool(conn.execute(delete(s.stream_processors).where(
                s.stream_processors.c.name == name).where(
                s.stream_processors.c.status.in_(list(expect)))).rowcount)

    def with_sessions(self) -> list[dict[str, Any]]:
        """Processors that should be running (a session was started and not stopped)."""
        with self.database.read_transaction() as conn:
            rows = conn.execute(select(s.stream_processors).where(
                s.stream_processors.c.session_id.is_not(None)))
            return [_processor(r._mapping) for r in rows]


def _check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[a-zA-Z0-9_.\-]{1,128}", name or ""):
        raise InvalidParameterError("A name is 1-128 letters, digits and _ . -")


def _source(m: Any) -> Source:
    return Source(m["name"], m["url"], m["arn"], _when(m["created"]))


def _sink(m: Any) -> Sink:
    return Sink(m["name"], m["kind"], m["target"], m["arn"], _when(m["created"]),
                dict(m["options"] or {}))


def _processor(m: Any) -> dict[str, Any]:
    out = dict(m)
    out["created"], out["updated"] = _when(m["created"]), _when(m["updated"])
    out["tags"] = dict(m["tags"] or {})
    return out


def _when(value: Any) -> datetime:
    when = as_utc(value)
    assert when is not None
    return when
