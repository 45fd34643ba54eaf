"""Connection-level defences of ``regard serve``, below FastAPI: what uvicorn does not bound.

uvicorn closes a connection that stays idle *between* requests (``timeout_keep_alive``) and caps
header size, but a client that opens connections and sends nothing, or sends its headers a byte
every few seconds, is kept forever; 20,000 of them exhausted the process's file descriptors and
every other client, ``/healthz`` included, timed out. So every connection here has:

- a deadline for its request line and headers (``header_seconds``, armed when the connection
  opens and again when the next request's first bytes arrive): missed, the connection is closed;
- a place under two caps, checked when it is accepted: ``max_connections`` in all and
  ``max_per_client`` from one address (0: no per-address cap; behind a reverse proxy every client
  shares the proxy's address, so set it to 0 there and let the proxy limit clients). A connection
  over a cap gets a 503 and is closed at once, so it costs a descriptor for microseconds.

``raise_descriptor_limit`` lifts the soft ``RLIMIT_NOFILE`` to the hard one at start, and the
caps stay below it, so ``accept`` never fails with EMFILE (which asyncio logs with a traceback per
attempt). ``RateLimitedLog`` keeps any one repeated message from flooding the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from regard.api.metrics import Metrics

log = logging.getLogger("regard.api.connections")

# Descriptors kept back from the connection caps: the catalog, checkpoints, models, logs.
RESERVED_DESCRIPTORS = 256


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int = 1024
    max_per_client: int = 128  # 0: no per-address cap (behind a reverse proxy)
    header_seconds: float = 10.0  # the request line and headers must arrive within this
    keep_alive_seconds: float = 5.0  # idle time allowed between two requests

    def within(self, descriptors: int) -> "ConnectionLimits":
        """These limits with ``max_connections`` lowered to fit ``descriptors``."""
        room = max(16, descriptors - RESERVED_DESCRIPTORS)
        if self.max_connections <= room:
            return self
        return ConnectionLimits(room, min(self.max_per_client, room), self.header_seconds,
                                self.keep_alive_seconds)


def raise_descriptor_limit(wanted: int = 65536) -> int:
    """Lift the soft file-descriptor limit towards the hard one; the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft)


def _refusal(message: str) -> bytes:
    body = json.dumps({"__type": "ThrottlingException", "message": message}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
            b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def guarded_protocol(limits: ConnectionLimits, metrics: Metrics) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the header deadline and the connection caps."""
    per_client: dict[str, int] = defaultdict(int)  # only the event loop's thread touches it
    open_connections = [0]

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _awaiting: Any = None
        _counted: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else "?"
            if open_connections[0] >= limits.max_connections:
                self._refuse("too many connections", "total")
                return
            if limits.max_per_client and per_client[host] >= limits.max_per_client:
                self._refuse(f"too many connections from {host}", "per_client")
                return
            per_client[host] += 1
            open_connections[0] += 1
            self._counted = host
            metrics.connections.inc()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted is not None:
                per_client[self._counted] -= 1
                if not per_client[self._counted]:
                    del per_client[self._counted]
                open_connections[0] -= 1
                self._counted = None
                metrics.connections.dec()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            between_requests = self.cycle is None or self.cycle.response_complete
            if self._header_timer is None and between_requests:
                self._arm()  # the next request's headers get the same deadline
            super().data_received(data)
            if self._header_timer is not None and self.cycle is not self._awaiting:
                self._disarm()  # its headers are in

        def _arm(self) -> None:
            self._awaiting = self.cycle
            self._header_timer = self.loop.call_later(limits.header_seconds, self._overdue)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _overdue(self) -> None:
            self._header_timer = None
            if self.cycle is self._awaiting and not self.transport.is_closing():
                metrics.connections_refused.labels("header_timeout").inc()
                self.transport.close()

        def _refuse(self, why: str, label: str) -> None:
            metrics.connections_refused.labels(label).inc()
            log.warning("Refused a connection: %s", why)
            self.transport.write(_refusal(f"Regard refused the connection: {why}; retry later"))
            self.transport.close()

    return GuardedH11Protocol


class RateLimitedLog(logging.Filter):
    """Lets at most ``burst`` records of one message template through per ``period`` seconds per
    logger, then one line saying how many were dropped. A flood of identical warnings or
    tracebacks (a refused connection, a client error repeated per request) then costs a few
    lines a minute instead of filling the disk."""

    def __init__(self, burst: int = 10, period: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.period = period
        self._seen: dict[tuple[str, Any], list[float]] = {}  # key -> [window start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg if isinstance(record.msg, str) else type(record.msg))
        now = time.monotonic()
        window = self._seen.get(key)
        if window is None or now - window[0] > self.period:
            dropped = int(window[2]) if window else 0
            if len(self._seen) > 10_000:  # many distinct messages: forget old windows
                self._seen.clear()
            self._seen[key] = [now, 1, 0]
            if dropped:
                record.msg = f"{record.msg} (and {dropped} similar messages dropped in the " \
                             f"last {self.period:g} s)" if isinstance(record.msg, str) else \
                    record.msg
            return True
        window[1] += 1
        if window[1] <= self.burst:
            return True
        window[2] += 1
        return False


_FILTER = RateLimitedLog()
# A logger's filters see only its own records, not its children's: name each one. The access
# log is left alone (one line per request is what it is for).
FLOODABLE_LOGGERS = ("asyncio", "uvicorn.error", "regard.api", "regard.api.aws",
                     "regard.api.rest", "regard.api.connections", "regard.service",
                     "regard.store.catalog")


def limit_log_floods() -> None:
    """Install the rate limit on the loggers a network flood reaches (idempotent)."""
    for name in FLOODABLE_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
