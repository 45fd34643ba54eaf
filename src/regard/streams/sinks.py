"""Where a live stream processor's records go: the sinks, and the audit ledger's batcher.

A processor's output (``Output.KinesisDataStream.Arn``) names a registered sink
(``regard.streams.model.Sink``); ``open_sink`` turns it into a ``RecordSink`` for one session:

- ``webhook``: each record POSTed as JSON (``Content-Type: application/json``), in order, by a
  sender thread of its own (``WebhookSink``);
- ``jsonl``: one JSON object a line, appended to a file and flushed to the OS per record
  (``JsonLinesSink``);
- ``sse``: Server-Sent Events that any number of HTTP clients follow at the REST API
  (``SseHub``, ``SseSink``, ``sse_events``);
- ``mqtt``: a QoS 1 publication to an MQTT topic (``MqttSink``, paho-mqtt).

``Output.S3Destination`` is ``S3Sink``: records batched into JSON Lines objects.

Every sink obeys the ``RecordSink`` contract: ``send`` never waits on the network or on a slow
reader (at most a lock and an append), a sink that is slow or down buffers boundedly and drops,
and says so in its ``counters`` (``SinkCounters``: sent, dropped, failed), which ``/metrics`` and
DescribeStreamProcessor read. ``close`` delivers what it can within a short deadline.

Live identifications are recorded in the audit ledger by ``LedgerBatcher``: batched (one
``LiveFaceSearch`` call per processor session every ``max_delay`` seconds, or sooner when
``max_batch`` faces are pending), retried when the ledger cannot be written, and flushed on close,
so a busy camera is not a write storm and no identification goes unrecorded on a normal stop.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

from regard.private_files import FILE_MODE, private_dir, tighten
from regard.streams.model import SINK_KINDS, ProcessorRun, Record, RecordSink, Sink

log = logging.getLogger("regard.streams")

MQTT_PORTS = {"mqtt": 1883, "mqtts": 8883}


# -- common ----------------------------------------------------------------------------------------
@dataclass
class SinkCounters:
    """What a sink did with the records it was given; updated by its threads, read by metrics.

    ``sent``: delivered (a webhook's 2xx, a line written, an MQTT PUBACK, an event published to
    the hub, a record stored in an object). ``dropped``: discarded unsent because a bounded queue
    was full (the oldest goes, except MQTT, whose client refuses the newest) or ``close``'s
    deadline passed; for SSE, events a slow subscriber lost. ``failed``: given up after errors (a
    webhook's last retry, a write that failed, a record that could not be encoded)."""

    sent: int = 0
    dropped: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, sent: int = 0, dropped: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.sent += sent
            self.dropped += dropped
            self.failed += failed

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"Sent": self.sent, "Dropped": self.dropped, "Failed": self.failed}


def _json_default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    isoformat = getattr(value, "isoformat", None)  # datetimes
    if callable(isoformat):
        return isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_record(record: Record) -> str:
    """A record as one line of JSON (no newline in it: ASCII, control characters escaped)."""
    return json.dumps(record, separators=(",", ":"), default=_json_default, allow_nan=False)


def _drop_oldest(queue: collections.deque, limit: int, counters: SinkCounters) -> None:
    """Drop (and count) the oldest records beyond ``limit``: a sink that cannot keep up loses
    its oldest records, it never holds up the processor or grows without bound."""
    while len(queue) > limit:
        queue.popleft()
        counters.add(dropped=1)


def _encode(record: Record, counters: SinkCounters, where: str) -> str | None:
    try:
        return encode_record(record)
    except (TypeError, ValueError) as exc:
        counters.add(failed=1)
        log.warning("%s: a record could not be encoded as JSON and was not sent: %s", where, exc)
        return None


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self.end - time.monotonic())


# -- webhook ---------------------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())

class WebhookSink:
    """POST each record as JSON to ``url`` from a sender thread, in order.

    ``send`` appends the encoded record to a bounded queue (``max_queue``; when full the oldest
    record is dropped and counted) and returns. The sender tries each record up to ``attempts``
    times, backing off ``base_delay`` * 2^n seconds (at most ``max_delay``) between tries; a 2xx
    is success; a 4xx other than 408 and 429, or a redirect (not followed), is not retried (the
    receiver refused that record); anything else (connection refused, timeout, 5xx) is.
    ``close`` stops accepting records and sends what is queued within ``close_timeout``
    seconds; what is left then is dropped."""

    def __init__(self, url: str, *, max_queue: int = 1000, attempts: int = 4,
                 timeout: float = 5.0, base_delay: float = 0.5, max_delay: float = 10.0,
                 close_timeout: float = 5.0, headers: Mapping[str, str] | None = None,
                 name: str = "webhook") -> None:
        check_target("webhook", url)
        self.url = url
        self.name = name
        self.counters = SinkCounters()
        self._attempts = max(1, attempts)
        self._timeout = timeout
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._close_timeout = close_timeout
        self._headers = {"Content-Type": "application/json", "User-Agent": "regard-streams",
                         **(headers or {})}
        self._queue: collections.deque[bytes] = collections.deque()
        self._max_queue = max(1, max_queue)
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: _Deadline | None = None
        self._stop = threading.Event()  # cuts a backoff short on close
        self._healthy = True
        self._thread = threading.Thread(target=self._run, name=f"regard-sink-{name}", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, record: Record) -> None:
        text = _encode(record, self.counters, f"sink {self.name}")
        if text is None:
            return
        with self._cond:
            if self._closing:
                self.counters.add(dropped=1)
                return
            self._queue.append(text.encode())
            _drop_oldest(self._queue, self._max_queue, self.counters)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._deadline = _Deadline(self._close_timeout)
            self._cond.notify()
        self._stop.set()
        self._thread.join(self._close_timeout + 1.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                if self._deadline is not None and self._deadline.left() <= 0:
                    self.counters.add(dropped=len(self._queue))
                    log.warning("sink %s: closed with %d records unsent", self.name,
                                len(self._queue))
                    self._queue.clear()
                    return
                data = self._queue.popleft()
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        for attempt in range(1, self._attempts + 1):
            timeout = self._timeout
            if self._deadline is not None:
                timeout = min(timeout, max(0.1, self._deadline.left()))
            error, retry = self._post(data, timeout)
            if error is None:
                self.counters.add(sent=1)
                if not self._healthy:
                    log.info("sink %s: %s accepts records again", self.name, self.url)
                    self._healthy = True
                return
            if self._healthy:
                log.warning("sink %s: POST to %s failed (%s); retrying with backoff", self.name,
                            self.url, error)
                self._healthy = False
            if not retry or attempt == self._attempts:
                break
            delay = min(self._max_delay, self._base_delay * 2 ** (attempt - 1))
            if self._deadline is not None:
                if self._deadline.left() <= 0:
                    break
                delay = min(delay, self._deadline.left())
            self._stop.wait(delay)
        self.counters.add(failed=1)
        log.debug("sink %s: a record was given up", self.name)

    def _post(self, data: bytes, timeout: float) -> tuple[str | None, bool]:
        """(error or None, whether to retry)."""
        request = urllib.request.Request(self.url, data=data, method="POST",
                                         headers=self._headers)
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                response.read()
                if 200 <= response.status < 300:
                    return None, False
                return f"HTTP {response.status}", False
        except urllib.error.HTTPError as exc:  # redirects are not followed: a POST is not a GET
            return f"HTTP {exc.code}", exc.code >= 500 or exc.code in (408, 429)
        except (OSError, ValueError) as exc:  # refused, timeout, reset, unresolvable
            return str(exc) or type(exc).__name__, True


# -- JSON Lines file -------------------------------------------------------------------------------
class JsonLinesSink:
    """Append each record to ``path`` as one JSON line, written to the OS at once (``tail -f``
    sees it; no fsync per record). The file is created 0600 (its folders 0700 when Regard creates
    them); an existing file readable by others is tightened.

    Rotation: by default Regard never rotates; the file is opened ``O_APPEND``, so logrotate's
    ``copytruncate`` works, and its default ``create`` mode too: a file renamed or removed under
    the sink is noticed within ``reopen_check`` seconds and a new one created at ``path``. With
    ``max_bytes`` > 0 the sink rotates itself: a line that would take the file past ``max_bytes``
    first renames ``path`` to ``path.1`` (``path.1`` to ``path.2``, ..., keeping ``backups``)."""

    def __init__(self, path: str | Path, *, max_bytes: int = 0, backups: int = 3,
                 reopen_check: float = 1.0, name: str = "jsonl") -> None:
        self.path = Path(check_target("jsonl", str(path)))
        self.name = name
        self.counters = SinkCounters()
        self._max_bytes = max(0, int(max_bytes))
        self._backups = max(1, int(backups))
        self._reopen_check = reopen_check
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._checked = 0.0
        self._size = 0
        self._closed = False
        self._fd = self._open()

    def _open(self) -> int:
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        info = os.fstat(fd)
        if info.st_mode & 0o077:
            tighten(self.path)
        self._size = info.st_size
        self._checked = time.monotonic()
        return fd

    def _reopen_if_moved(self) -> None:
        now = time.monotonic()
        if self._fd is None or now - self._checked < self._reopen_check:
            return
        self._checked = now
        try:
            on_disk = os.stat(self.path)
            mine = os.fstat(self._fd)
            if (on_disk.st_ino, on_disk.st_dev) == (mine.st_ino, mine.st_dev):
                self._size = mine.st_size  # truncated by copytruncate, or grown by others
                return
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        self._fd = self._open()

    def _rotate(self) -> None:
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        for n in range(self._backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._fd = self._open()

    def send(self, record: Record) -> None:
        text = _encode(record, self.counters, f"sink {self.name}")
        if text is None:
            return
        data = (text + "\n").encode()
        with self._lock:
            if self._closed:
                self.counters.add(dropped=1)
                return
            try:
                if self._fd is None:
                    self._fd = self._open()
                self._reopen_if_moved()
                if self._max_bytes and self._size and self._size + len(data) > self._max_bytes:
                    self._rotate()
                view = memoryview(data)
                while view:
                    written = os.write(self._fd, view)
                    view = view[written:]
                self._size += len(data)
            except OSError as exc:
                self.counters.add(failed=1)
                log.warning("sink %s: could not append to %s: %s", self.name, self.path, exc)
                return
        self.counters.add(sent=1)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


# -- Server-Sent Events ----------------------------------------------------------------------------
class Subscription:
    """One follower of a hub's sink: a bounded queue of (id, data) events. Events arrive from
    any thread (``SseHub.publish``); a follower reads them from an asyncio task (``next``) or a
    thread (``get``). When the queue is full the oldest event is dropped; ``lost`` counts them
    all, and ``next``/``get``/``drain`` return the number lost since the previous read."""

    def __init__(self, hub: SseHub, sink_name: str, max_queue: int,
                 loop: asyncio.AbstractEventLoop | None) -> None:
        self.hub = hub
        self.sink_name = sink_name
        self.max_queue = max(1, max_queue)
        self.lost = 0
        self.closed = False
        self._events: collections.deque[tuple[str, str]] = collections.deque()
        self._unreported = 0
        self._lock = threading.Lock()
        self._loop = loop
        self._async_event = asyncio.Event() if loop is not None else None
        self._wake_scheduled = False
        self._thread_event = threading.Event()

    def __len__(self) -> int:
        return len(self._events)

    def _put(self, event: tuple[str, str]) -> bool:
        """Queue an event; True when an older one had to be dropped for it."""
        with self._lock:
            if self.closed:
                return False
            dropped = len(self._events) >= self.max_queue
            if dropped:
                self._events.popleft()
                self.lost += 1
                self._unreported += 1
            self._events.append(event)
        self._wake()
        return dropped

    def _wake(self) -> None:
        self._thread_event.set()
        if self._loop is None:
            return
        with self._lock:
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._set_async_event)
        except RuntimeError:  # its loop is closed: nobody is listening any more
            pass

    def _set_async_event(self) -> None:
        with self._lock:
            self._wake_scheduled = False
        assert self._async_event is not None
        self._async_event.set()

    def _ready(self) -> bool:
        return bool(self._events) or self._unreported > 0 or self.closed

    def drain(self) -> tuple[list[tuple[str, str]], int]:
        """The queued events and the number lost since the last read, without waiting."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
            lost, self._unreported = self._unreported, 0
            self._thread_event.clear()
        return events, lost

    async def next(self, timeout: float) -> tuple[list[tuple[str, str]], int]:
        """Wait up to ``timeout`` seconds for events (from the loop this subscription was made
        in); ([], 0) when none came or the subscription is closed."""
        if self._async_event is None:
            raise RuntimeError("this subscription was not made in an event loop")
        deadline = time.monotonic() + timeout
        while True:
            self._async_event.clear()
            if self._ready():
                return self.drain()
            left = deadline - time.monotonic()
            if left <= 0:
                return [], 0
            try:
                await asyncio.wait_for(self._async_event.wait(), left)
            except (asyncio.TimeoutError, TimeoutError):
                return self.drain()

    def get(self, timeout: float) -> tuple[list[tuple[str, str]], int]:
        """``next`` for a thread."""
        if not self._ready():
            self._thread_event.wait(timeout)
        return self.drain()

    def close(self) -> None:
        with self._lock:
            self.closed = True
        self.hub._remove(self)
        self._wake()


class SseHub:
    """The in-process exchange between SSE sinks (any thread) and their HTTP followers.

    ``publish(sink_name, record)`` gives the record an id and puts it in every current
    subscription's queue (bounded, see ``Subscription``). The hub also keeps the last ``replay``
    events of each sink so that a follower that reconnects with ``Last-Event-ID`` (as browsers'
    EventSource do) gets what it missed, if this hub issued that id and it is recent enough.
    Nothing is stored anywhere else; a record published with no follower is gone."""

    def __init__(self, *, replay: int = 100) -> None:
        self._epoch = uuid.uuid4().hex[:8]
        self._lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self._seq: dict[str, int] = {}
        self._recent: dict[str, collections.deque[tuple[int, str]]] = {}
        self._counters: dict[str, SinkCounters] = {}
        self._replay = max(0, replay)

    def counters(self, sink_name: str) -> SinkCounters:
        with self._lock:
            return self._counters.setdefault(sink_name, SinkCounters())

    def subscribers(self, sink_name: str) -> int:
        with self._lock:
            return len(self._subs.get(sink_name, ()))

    def subscribe(self, sink_name: str, max_queue: int = 1000,
                  last_event_id: str | None = None) -> Subscription:
        """A new follower of ``sink_name``. Made inside a running event loop it is read with
        ``await sub.next(...)``, otherwise with ``sub.get(...)`` (both work from a loop)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        sub = Subscription(self, sink_name, max_queue, loop)
        with self._lock:
            self._subs.setdefault(sink_name, set()).add(sub)
            after = self._parse_id(last_event_id)
            if after is not None:
                for seq, data in self._recent.get(sink_name, ()):
                    if seq > after:
                        sub._put((f"{self._epoch}-{seq}", data))
        return sub

    def _parse_id(self, event_id: str | None) -> int | None:
        if not event_id:
            return None
        epoch, _, seq = event_id.strip().partition("-")
        if epoch != self._epoch or not seq.isdigit():
            return None
        return int(seq)

    def publish(self, sink_name: str, record: Record | str) -> str | None:
        """Send ``record`` (a dict, or JSON text) to every follower of ``sink_name``; its event
        id, or None when it could not be encoded."""
        counters = self.counters(sink_name)
        data = record if isinstance(record, str) else _encode(record, counters,
                                                              f"sink {sink_name}")
        if data is None:
            return None
        with self._lock:
            seq = self._seq.get(sink_name, 0) + 1
            self._seq[sink_name] = seq
            if self._replay:
                self._recent.setdefault(sink_name, collections.deque(maxlen=self._replay)
                                        ).append((seq, data))
            subs = list(self._subs.get(sink_name, ()))
        event_id = f"{self._epoch}-{seq}"
        dropped = sum(sub._put((event_id, data)) for sub in subs)
        counters.add(sent=1, dropped=dropped)
        return event_id

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.sink_name)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.sink_name]

    def close(self, sink_name: str | None = None) -> None:
        """End the streams of ``sink_name`` (every sink's when None): their ``sse_events``
        return, so their HTTP responses finish (call it when a sink is deleted and before the
        HTTP server shuts down, or it waits for the streams to end)."""
        with self._lock:
            subs = [s for name, group in self._subs.items() if sink_name in (None, name)
                    for s in group]
            if sink_name is None:
                self._recent.clear()
            else:
                self._recent.pop(sink_name, None)
        for sub in subs:
            sub.close()


class SseSink:
    """A processor's records published to the hub under the sink's name."""

    def __init__(self, hub: SseHub, sink_name: str) -> None:
        self.hub = hub
        self.name = sink_name
        self.counters = hub.counters(sink_name)  # shared by every processor using this sink

    def send(self, record: Record) -> None:
        self.hub.publish(self.name, record)

    def close(self) -> None:
        """Nothing to release: followers stay connected for the next session."""


def format_event(event_id: str, data: str, event: str = "record") -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n"


async def sse_events(hub: SseHub, sink_name: str, *, heartbeat: float = 15.0,
                     max_queue: int = 1000, last_event_id: str | None = None
                     ) -> AsyncIterator[str]:
    """The text of an SSE stream of ``sink_name``'s records, for a ``StreamingResponse``
    (``media_type="text/event-stream"``): each record as ``id``/``event: record``/``data``,
    a ``: keep-alive`` comment after ``heartbeat`` quiet seconds, and, when this follower was too
    slow and lost events, a ``: dropped N events`` comment and an ``event: dropped`` with
    ``{"Dropped": N}``. Ends when the hub closes the sink's streams; a client that goes away
    ends it too (the response cancels it), and its subscription is removed."""
    sub = hub.subscribe(sink_name, max_queue=max_queue, last_event_id=last_event_id)
    try:
        yield f": regard stream sink {sink_name}\nretry: 3000\n\n"
        closed = False
        while not closed:
            closed = sub.closed  # nothing is queued after this: one more drain gets the rest
            events, lost = sub.drain() if closed else await sub.next(heartbeat)
            if lost:
                yield (f": dropped {lost} events (slow subscriber)\n"
                       f"event: dropped\ndata: {json.dumps({'Dropped': lost})}\n\n")
            if events:
                yield "".join(format_event(event_id, data) for event_id, data in events)
            elif not lost and not closed and not sub.closed:
                yield ": keep-alive\n\n"
    finally:
        sub.close()


# -- MQTT ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MqttTarget:
    tls: bool
    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt[s]://[user[:password]@]host[:port]/topic/path``: 1883 (8883 for mqtts) by
    default; the topic is the path, percent-decoded, without wildcards."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in MQTT_PORTS:
        raise ValueError(f"an MQTT sink URL starts mqtt:// or mqtts://, not {url!r}")
    if not parsed.hostname:
        raise ValueError(f"the MQTT URL {url!r} names no broker host")
    try:
        port = parsed.port or MQTT_PORTS[parsed.scheme]
    except ValueError as exc:
        raise ValueError(f"the MQTT URL {url!r} has a bad port") from exc
    topic = urllib.parse.unquote(parsed.path.removeprefix("/"))
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise ValueError(f"the MQTT URL {url!r} needs a topic without wildcards after the host "
                         "(mqtt://host:1883/regard/front-door)")
    if parsed.query or parsed.fragment or "#" in url or "?" in url:
        raise ValueError(f"the MQTT URL {url!r} takes no query or fragment")
    return MqttTarget(parsed.scheme == "mqtts", parsed.hostname, port, topic,
                      urllib.parse.unquote(parsed.username) if parsed.username else None,
                      urllib.parse.unquote(parsed.password) if parsed.password else None)


class MqttSink:
    """Publish each record as JSON to the URL's topic (QoS 1 by default) through paho-mqtt.

    The client's network thread (``loop_start``) connects in the background and reconnects after
    a broker restart or a network loss (1 s, doubling to ``reconnect_max`` seconds); ``send``
    never waits for it. Publications not yet acknowledged (sent or waiting for a connection) are
    kept by the client, at most ``max_queued``; beyond that a new record is dropped and counted.
    QoS 1 messages are sent again after a reconnect, so a record may arrive twice (Rekognition's
    Kinesis output is at-least-once too). ``sent`` counts acknowledged publications. ``close``
    waits up to ``close_timeout`` seconds for the queue to empty, then disconnects."""

    def __init__(self, url: str, *, qos: int = 1, retain: bool = False,
                 client_id: str | None = None, max_queued: int = 1000, keepalive: int = 30,
                 reconnect_max: int = 30, ca_file: str | None = None, insecure: bool = False,
                 close_timeout: float = 5.0, name: str = "mqtt") -> None:
        import paho.mqtt.client as mqtt

        self.target = parse_mqtt_url(url)
        self.name = name
        self.counters = SinkCounters()
        if qos not in (0, 1, 2):
            raise ValueError("MQTT QoS is 0, 1 or 2")
        self._qos = qos
        self._retain = retain
        self._close_timeout = close_timeout
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closed = False
        self.connected = threading.Event()
        self._mqtt = mqtt
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"regard-{uuid.uuid4().hex[:12]}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.max_queued_messages_set(max(1, max_queued))
        client.reconnect_delay_set(1, max(1, reconnect_max))
        if self.target.username is not None:
            client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            client.tls_set(ca_certs=ca_file)
            if insecure:
                client.tls_insecure_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        self._was_connected = False
        client.connect_async(self.target.host, self.target.port, keepalive)
        client.loop_start()

    @property
    def queued(self) -> int:
        return self._in_flight

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("sink %s: MQTT broker %s:%d refused the connection: %s", self.name,
                        self.target.host, self.target.port, reason)
            return
        self.connected.set()
        log.log(logging.INFO if self._was_connected else logging.DEBUG,
                "sink %s: connected to MQTT broker %s:%d", self.name, self.target.host,
                self.target.port)
        self._was_connected = True

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()
        if not self._closed:
            log.warning("sink %s: disconnected from MQTT broker %s:%d (%s); reconnecting",
                        self.name, self.target.host, self.target.port, reason)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
        self.counters.add(sent=1)

    def send(self, record: Record) -> None:
        text = _encode(record, self.counters, f"sink {self.name}")
        if text is None:
            return
        if self._closed:
            self.counters.add(dropped=1)
            return
        with self._lock:
            self._in_flight += 1
        try:
            info = self._client.publish(self.target.topic, text, qos=self._qos,
                                        retain=self._retain)
            rc = info.rc
        except (ValueError, OSError) as exc:
            rc = exc
        mqtt = self._mqtt
        if rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN) and (
                self._qos > 0 or rc == mqtt.MQTT_ERR_SUCCESS):
            return  # sent, or (QoS > 0) kept by the client until it is connected again
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
        if rc == mqtt.MQTT_ERR_QUEUE_SIZE or rc == mqtt.MQTT_ERR_NO_CONN:
            self.counters.add(dropped=1)
        else:
            self.counters.add(failed=1)
            log.warning("sink %s: MQTT publish failed: %s", self.name, rc)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        deadline = _Deadline(self._close_timeout)
        while self._in_flight and deadline.left() > 0:
            time.sleep(0.02)
        left = self._in_flight
        if left:
            self.counters.add(dropped=left)
            log.warning("sink %s: closed with %d MQTT messages unacknowledged", self.name, left)
        self._client.disconnect()
        self._client.loop_stop()


# -- S3 --------------------------------------------------------------------------------------------
class S3Sink:
    """Rekognition's ``Output.S3Destination``: records gathered into JSON Lines objects
    ``<prefix><processor>/<session>/<n>.jsonl`` (``n`` from 1, zero-padded to 6 digits so that
    names sort in order) stored with ``objects.put_file``: one when ``max_records`` are pending
    or ``max_seconds`` after the first of a batch arrived, and the rest on ``close``. A store that
    refuses is tried again at the next turn; meanwhile at most ``max_pending`` records are kept
    (the oldest dropped beyond). ``prefix`` is ``KeyPrefix`` as given ("a/b" and "a/b/" both mean
    the folder a/b)."""

    def __init__(self, objects: Any, bucket: str, prefix: str = "", *, processor: str,
                 session: str, max_records: int = 1000, max_seconds: float = 30.0,
                 max_pending: int = 20000, name: str = "s3") -> None:
        self.objects = objects
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.folder = f"{prefix}/{processor}/{session}/" if prefix else f"{processor}/{session}/"
        self.name = name
        self.counters = SinkCounters()
        self._max_records = max(1, max_records)
        self._max_seconds = max_seconds
        self._max_pending = max(self._max_records, max_pending)
        self._pending: collections.deque[str] = collections.deque()
        self._due: float | None = None
        self._next = 1
        self._cond = threading.Condition()
        self._put_lock = threading.Lock()
        self._closing = False
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=f"regard-sink-{name}", daemon=True)
        self._thread.start()

    def key(self, n: int) -> str:
        return f"{self.folder}{n:06d}.jsonl"

    def send(self, record: Record) -> None:
        text = _encode(record, self.counters, f"sink {self.name}")
        if text is None:
            return
        with self._cond:
            if self._closing:
                self.counters.add(dropped=1)
                return
            self._pending.append(text)
            _drop_oldest(self._pending, self._max_pending, self.counters)
            if self._due is None:
                self._due = time.monotonic() + self._max_seconds
            if len(self._pending) >= self._max_records:
                self._cond.notify()

    def _run(self) -> None:
        hold_until = 0.0  # after a refusal, the next try waits until then
        while True:
            with self._cond:
                while not self._closing:
                    now = time.monotonic()
                    if now >= hold_until and (len(self._pending) >= self._max_records or (
                            self._due is not None and now >= self._due)):
                        break
                    wake = hold_until if now < hold_until else self._due
                    self._cond.wait(None if wake is None else max(0.0, wake - now))
                if self._closing:
                    return
            if not self._flush_one():
                hold_until = time.monotonic() + max(1.0, min(self._max_seconds, 30.0))

    def _flush_one(self) -> bool:
        """Store one batch (up to ``max_records``); False when the store refused it."""
        with self._put_lock:
            with self._cond:
                batch = [self._pending.popleft()
                         for _ in range(min(self._max_records, len(self._pending)))]
                self._due = (time.monotonic() + self._max_seconds) if self._pending else None
            if not batch:
                return True
            key = self.key(self._next)
            fd, tmp = tempfile.mkstemp(prefix="regard-s3sink-", suffix=".jsonl")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write("".join(line + "\n" for line in batch))
                self.objects.put_file(self.bucket, key, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - any store error: keep the batch
                with self._cond:
                    self._pending.extendleft(reversed(batch))
                    _drop_oldest(self._pending, self._max_pending, self.counters)
                    if self._due is None:
                        self._due = time.monotonic() + self._max_seconds
                if not self._failing:
                    log.warning("sink %s: could not store s3://%s/%s (%s); will retry",
                                self.name, self.bucket, key, getattr(exc, "message", exc))
                    self._failing = True
                return False
            finally:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            self._next += 1
            self._failing = False
            self.counters.add(sent=len(batch))
            return True

    def close(self) -> None:
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join(10.0)
        while self._pending:
            if not self._flush_one():
                lost = len(self._pending)
                self._pending.clear()
                self.counters.add(failed=lost)
                log.error("sink %s: closed with %d records that could not be stored",
                          self.name, lost)
                return


# -- opening a registered sink ---------------------------------------------------------------------
def check_target(kind: str, target: str) -> str:
    """``target`` if it suits a sink of ``kind``, else ValueError saying what it must be (for
    the registry to call when a sink is added)."""
    if kind not in SINK_KINDS:
        raise ValueError(f"unknown sink kind {kind!r}; one of {', '.join(SINK_KINDS)}")
    if kind == "webhook":
        parsed = urllib.parse.urlsplit(target)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"a webhook sink needs an http:// or https:// URL, not {target!r}")
    elif kind == "jsonl":
        if not target or "\x00" in target or not os.path.isabs(os.path.expanduser(target)):
            raise ValueError(f"a jsonl sink needs an absolute file path, not {target!r}")
        if target.endswith(os.sep) or os.path.isdir(os.path.expanduser(target)):
            raise ValueError(f"a jsonl sink needs a file path, and {target!r} is a folder")
        return os.path.expanduser(target)
    elif kind == "mqtt":
        parse_mqtt_url(target)
    return target


_OPTIONS: dict[str, tuple[str, ...]] = {
    "webhook": ("max_queue", "attempts", "timeout", "base_delay", "max_delay", "close_timeout",
                "headers"),
    "jsonl": ("max_bytes", "backups"),
    "mqtt": ("qos", "retain", "client_id", "max_queued", "keepalive", "reconnect_max",
             "ca_file", "insecure", "close_timeout"),
    "sse": (),
}


def open_sink(sink: Sink, *, hub: SseHub, objects: Any = None) -> RecordSink:
    """A ``RecordSink`` for one session of a processor whose output is ``sink``. The sink's
    ``options`` may set the keyword arguments of its class listed in ``_OPTIONS`` (others are
    ignored with a warning). ``objects`` is unused by these kinds (S3 output is ``S3Sink``)."""
    known = _OPTIONS.get(sink.kind)
    if known is None:
        raise ValueError(f"unknown sink kind {sink.kind!r}; one of {', '.join(SINK_KINDS)}")
    options = {k: v for k, v in (sink.options or {}).items() if k in known}
    ignored = sorted(set(sink.options or {}) - set(known))
    if ignored:
        log.warning("sink %s: options %s are not used by a %s sink", sink.name,
                    ", ".join(ignored), sink.kind)
    if sink.kind == "webhook":
        return WebhookSink(sink.target, name=sink.name, **options)
    if sink.kind == "jsonl":
        return JsonLinesSink(sink.target, name=sink.name, **options)
    if sink.kind == "mqtt":
        return MqttSink(sink.target, name=sink.name, **options)
    return SseSink(hub, sink.name)


# -- the audit ledger ------------------------------------------------------------------------------
LIVE_OPERATION = "LiveFaceSearch"


@dataclass
class LedgerCounters:
    calls: int = 0  # LiveFaceSearch entries written
    matches: int = 0  # (FaceId, batch) pairs recorded
    failures: int = 0  # calls that failed (each retried, up to max_attempts)
    lost: int = 0  # matches given up after max_attempts or a failed final flush
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if not f.name.startswith("_")}


@dataclass
class _Batch:
    run: ProcessorRun
    context: Any  # CallContext
    matches: dict[str, float]
    started: float
    attempts: int = 0
    retry_at: float = 0.0

    def params(self) -> dict[str, Any]:
        run = self.run
        return {"StreamProcessor": run.name, "SessionId": run.session_id,
                "CollectionId": run.collection, "FaceMatchThreshold": run.threshold,
                "Matches": [{"FaceId": face, "Similarity": similarity}
                            for face, similarity in self.matches.items()]}


class LedgerBatcher:
    """Record live identifications in the audit ledger in batches.

    ``add(run, context, matched)`` (FaceId -> similarity, from one analysed frame) merges the
    faces into the pending batch of that processor session (and context): a face seen again keeps
    its best similarity, so one person in front of a camera for a minute is one entry per
    ``max_delay`` seconds, not one per frame. A batch is written as one ``LiveFaceSearch`` call
    ``max_delay`` seconds after its first face, or at once when it holds ``max_batch`` faces
    (a batch never holds more). A call that fails is logged and tried again with backoff
    (``retry_delay`` seconds, doubling to ``max_retry_delay``) up to ``max_attempts`` times,
    then given up with an error naming its faces. ``close`` writes everything pending
    synchronously (failed batches get ``final_attempts`` more tries). ``service`` is anything
    with ``call(operation, params, context)``."""

    def __init__(self, service: Any, *, max_batch: int = 50, max_delay: float = 2.0,
                 max_attempts: int = 8, retry_delay: float = 2.0, max_retry_delay: float = 60.0,
                 final_attempts: int = 3,
                 operation: str = LIVE_OPERATION) -> None:
        self.service = service
        self.operation = operation
        self.counters = LedgerCounters()
        self._max_batch = max(1, max_batch)
        self._max_delay = max_delay
        self._max_attempts = max(1, max_attempts)
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._final_attempts = max(1, final_attempts)
        self._pending: dict[tuple[str, str, str], _Batch] = {}
        self._ready: collections.deque[_Batch] = collections.deque()  # full or due, or retrying
        self._cond = threading.Condition()
        self._closing = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="regard-live-ledger", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Faces not yet recorded."""
        with self._cond:
            return sum(len(b.matches) for b in self._pending.values()) + \
                sum(len(b.matches) for b in self._ready)

    def add(self, run: ProcessorRun, context: Any, matched: Mapping[str, float]) -> None:
        if not matched:
            return
        now = time.monotonic()
        with self._cond:
            if self._closed:
                closed = True
            else:
                closed = False
                key = (run.name, run.session_id, getattr(context, "request_id", str(id(context))))
                batch = self._pending.get(key)
                for face, similarity in matched.items():
                    if batch is None:
                        batch = self._pending[key] = _Batch(run, context, {}, now)
                    previous = batch.matches.get(face)
                    if previous is None and len(batch.matches) >= self._max_batch:
                        self._ready.append(self._pending.pop(key))
                        batch = self._pending[key] = _Batch(run, context, {}, now)
                    batch.matches[face] = max(float(similarity), previous or float("-inf"))
                if batch is not None and len(batch.matches) >= self._max_batch:
                    self._ready.append(self._pending.pop(key))
                self._cond.notify()  # a new batch's deadline, or a full one
        if closed:  # after close: written at once, nothing is left behind
            self._write_final(_Batch(run, context, {f: float(s) for f, s in matched.items()},
                                     now))

    def _take_due(self, now: float) -> list[_Batch]:
        due = [b for b in self._ready if b.retry_at <= now]
        if due:
            self._ready = collections.deque(b for b in self._ready if b.retry_at > now)
        for key in [k for k, b in self._pending.items() if now - b.started >= self._max_delay]:
            due.append(self._pending.pop(key))
        return due

    def _next_wake(self, now: float) -> float | None:
        times = [b.retry_at for b in self._ready] + \
            [b.started + self._max_delay for b in self._pending.values()]
        return max(0.0, min(times) - now) if times else None

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    now = time.monotonic()
                    due = self._take_due(now)
                    if due:
                        break
                    self._cond.wait(self._next_wake(now))
            for batch in due:
                if not self._write(batch):
                    self._retry_later(batch)

    def _write(self, batch: _Batch) -> bool:
        try:
            self.service.call(self.operation, batch.params(), batch.context)
        except Exception as exc:  # noqa: BLE001 - the ledger is down, or refused: retry
            batch.attempts += 1
            self.counters.add(failures=1)
            log.warning("live identifications of %s (session %s, %d faces) could not be "
                        "recorded in the audit ledger (attempt %d): %s", batch.run.name,
                        batch.run.session_id, len(batch.matches), batch.attempts,
                        getattr(exc, "message", None) or exc)
            return False
        self.counters.add(calls=1, matches=len(batch.matches))
        return True

    def _give_up(self, batch: _Batch) -> None:
        self.counters.add(lost=len(batch.matches))
        log.error("live identifications of %s (session %s) were NOT recorded in the audit "
                  "ledger after %d attempts: %s", batch.run.name, batch.run.session_id,
                  batch.attempts, json.dumps(batch.params()["Matches"]))

    def _retry_later(self, batch: _Batch) -> None:
        if batch.attempts >= self._max_attempts:
            self._give_up(batch)
            return
        batch.retry_at = time.monotonic() + min(self._max_retry_delay,
                                                self._retry_delay * 2 ** (batch.attempts - 1))
        with self._cond:
            self._ready.append(batch)
            self._cond.notify()

    def _write_final(self, batch: _Batch) -> bool:
        for attempt in range(self._final_attempts):
            if self._write(batch):
                return True
            time.sleep(min(1.0, 0.1 * 2 ** attempt))
        self._give_up(batch)
        return False

    def flush(self) -> bool:
        """Write every pending batch now (from the calling thread); True when all were."""
        with self._cond:
            batches = list(self._ready) + list(self._pending.values())
            self._ready.clear()
            self._pending.clear()
        ok = True
        for batch in batches:
            if not self._write(batch):
                ok = False
                self._retry_later(batch)
        return ok

    def close(self) -> None:
        """Stop the thread and write everything pending, synchronously; an ``add`` after this
        is written at once."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join()
        with self._cond:
            batches = list(self._ready) + list(self._pending.values())
            self._ready.clear()
            self._pending.clear()
            self._closed = True
        for batch in batches:
            self._write_final(batch)


__all__ = ["SinkCounters", "encode_record", "WebhookSink", "JsonLinesSink", "SseHub",
           "Subscription", "SseSink", "sse_events", "format_event", "MqttSink", "MqttTarget",
           "parse_mqtt_url", "S3Sink", "check_target", "open_sink", "LedgerBatcher",
           "LedgerCounters", "LIVE_OPERATION"]
