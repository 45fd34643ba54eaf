"""The stream processors' sinks against real things: an HTTP server on loopback, a file, a
Starlette app served by uvicorn and followed by httpx, Debian's mosquitto broker, a local object
store; and the audit ledger's batcher against a recording stand-in for the service."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import uvicorn

from live_server import free_port
from regard.context import CallContext
from regard.object_store import LocalObjectStore
from regard.streams.model import ProcessorRun, Sink
from regard.streams.sinks import (JsonLinesSink, LedgerBatcher, MqttSink, S3Sink, SseHub,
                                  SseSink, WebhookSink, check_target, encode_record, open_sink,
                                  parse_mqtt_url, sse_events)


def record(n: int, **extra: Any) -> dict[str, Any]:
    return {"InputInformation": {"KinesisVideo": {"StreamArn": "arn:cam",
                                                  "FragmentNumber": str(n)}},
            "StreamProcessorInformation": {"Status": "RUNNING"}, "N": n, **extra}


def wait_for(condition: Any, timeout: float = 10.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# -- webhook ---------------------------------------------------------------------------------------
class Receiver:
    """An HTTP server on loopback that records the JSON bodies POSTed to it; ``fail_first``
    requests are answered ``status_on_fail``."""

    def __init__(self, fail_first: int = 0, status_on_fail: int = 500) -> None:
        self.bodies: list[Any] = []
        self.content_types: list[str] = []
        self.requests = 0
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                if outer.requests <= outer.fail_first:
                    self.send_response(status_on_fail)
                else:
                    outer.bodies.append(json.loads(data))
                    outer.content_types.append(self.headers["Content-Type"])
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_webhook_delivers_records_in_order() -> None:
    with Receiver() as receiver:
        sink = WebhookSink(receiver.url)
        for n in range(100):
            sink.send(record(n))
        assert wait_for(lambda: len(receiver.bodies) == 100)
        sink.close()
    assert [body["N"] for body in receiver.bodies] == list(range(100))
    assert set(receiver.content_types) == {"application/json"}
    assert sink.counters.snapshot() == {"Sent": 100, "Dropped": 0, "Failed": 0}


def test_webhook_retries_a_failing_receiver() -> None:
    with Receiver(fail_first=2) as receiver:
        sink = WebhookSink(receiver.url, base_delay=0.01)
        sink.send(record(1))
        sink.send(record(2))
        assert wait_for(lambda: len(receiver.bodies) == 2)
        sink.close()
    assert [body["N"] for body in receiver.bodies] == [1, 2]
    assert receiver.requests == 4
    assert sink.counters.snapshot() == {"Sent": 2, "Dropped": 0, "Failed": 0}


@pytest.mark.parametrize("status", [400, 302])
def test_webhook_does_not_retry_a_refusal(status: int) -> None:
    with Receiver(fail_first=1, status_on_fail=status) as receiver:
        sink = WebhookSink(receiver.url, base_delay=0.01)
        sink.send(record(1))
        sink.send(record(2))
        assert wait_for(lambda: len(receiver.bodies) == 1)
        sink.close()
    assert [body["N"] for body in receiver.bodies] == [2]
    assert sink.counters.snapshot() == {"Sent": 1, "Dropped": 0, "Failed": 1}


def test_webhook_down_drops_and_counts_without_blocking() -> None:
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    sink = WebhookSink(url, max_queue=5, attempts=3, base_delay=0.05, timeout=0.5,
                       close_timeout=0.5)
    slowest = 0.0
    for n in range(200):
        t0 = time.perf_counter()
        sink.send(record(n))
        slowest = max(slowest, time.perf_counter() - t0)
    assert slowest < 0.05
    assert sink.queued <= 5
    assert wait_for(lambda: sink.counters.failed >= 1)
    t0 = time.monotonic()
    sink.close()
    assert time.monotonic() - t0 < 3.0
    counts = sink.counters.snapshot()
    assert counts["Sent"] == 0
    assert counts["Dropped"] >= 190
    assert counts["Dropped"] + counts["Failed"] == 200
    sink.send(record(999))  # after close: counted, never raised
    assert sink.counters.dropped == counts["Dropped"] + 1


def test_webhook_close_flushes_what_is_queued() -> None:
    with Receiver() as receiver:
        sink = WebhookSink(receiver.url)
        for n in range(20):
            sink.send(record(n))
        sink.close()
        assert [body["N"] for body in receiver.bodies] == list(range(20))


def test_records_are_encoded_as_one_line(tmp_path: Path) -> None:
    import numpy as np

    text = encode_record({"Similarity": np.float32(99.5), "Box": np.array([1, 2]),
                          "Name": "a\nb \u00e9"})
    assert "\n" not in text and text.isascii()
    assert json.loads(text) == {"Similarity": 99.5, "Box": [1, 2], "Name": "a\nb \u00e9"}
    sink = JsonLinesSink(tmp_path / "r.jsonl")
    sink.send({"Similarity": float("nan")})  # not JSON: counted, not raised
    sink.send({"Face": object()})
    sink.close()
    assert sink.counters.snapshot() == {"Sent": 0, "Dropped": 0, "Failed": 2}


# -- JSON Lines ------------------------------------------------------------------------------------
def test_jsonl_appends_private_lines(tmp_path: Path) -> None:
    path = tmp_path / "out" / "records.jsonl"
    sink = JsonLinesSink(path)
    with open(path) as follower:  # a `tail -f`: sees each line at once
        for n in range(5):
            sink.send(record(n, When=datetime(2024, 1, 1, tzinfo=timezone.utc)))
            line = follower.readline()
            assert line.endswith("\n") and json.loads(line)["N"] == n
    sink.close()
    sink = JsonLinesSink(path)  # appends, never truncates
    sink.send(record(5, Text="line\nbreak \u00e9"))
    sink.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["N"] for line in lines] == list(range(6))
    assert json.loads(lines[5])["Text"] == "line\nbreak \u00e9"
    assert json.loads(lines[0])["When"] == "2024-01-01T00:00:00+00:00"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sink.counters.snapshot() == {"Sent": 1, "Dropped": 0, "Failed": 0}


def test_jsonl_tightens_an_existing_file_and_follows_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text("")
    os.chmod(path, 0o644)
    sink = JsonLinesSink(path, reopen_check=0.0)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sink.send(record(1))
    path.rename(tmp_path / "records.jsonl.1")  # logrotate's create mode
    sink.send(record(2))
    sink.close()
    assert json.loads(path.read_text())["N"] == 2
    assert json.loads((tmp_path / "records.jsonl.1").read_text())["N"] == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_jsonl_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    size = len(encode_record(record(0))) + 1
    sink = JsonLinesSink(path, max_bytes=3 * size, backups=2)
    for n in range(10):
        sink.send(record(n))
    sink.close()
    assert [json.loads(x)["N"] for x in path.read_text().splitlines()] == [9]
    assert [json.loads(x)["N"] for x in Path(f"{path}.1").read_text().splitlines()] == [6, 7, 8]
    assert [json.loads(x)["N"] for x in Path(f"{path}.2").read_text().splitlines()] == [3, 4, 5]
    assert not Path(f"{path}.3").exists()


# -- Server-Sent Events ----------------------------------------------------------------------------
@pytest.fixture
def sse_app() -> Iterator[tuple[str, SseHub]]:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    hub = SseHub()

    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            sse_events(hub, request.path_params["name"], heartbeat=0.3,
                       last_event_id=request.headers.get("last-event-id")),
            media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    app = Starlette(routes=[Route("/v1/streams/sinks/{name}/events", events)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http="h11"))  # as regard serve runs it
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started, 20)
    yield f"http://127.0.0.1:{port}/v1/streams/sinks", hub
    hub.close()
    server.should_exit = True
    thread.join(10)


def parse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE events (and comments, as {"comment": ...}) from a line iterator."""
    event: dict[str, str] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            key, _, value = line.partition(":")
            event[key] = value[1:] if value.startswith(" ") else value


def test_sse_followers_get_records_from_another_thread_at_once(
        sse_app: tuple[str, SseHub]) -> None:
    base, hub = sse_app
    sink = SseSink(hub, "door")
    latencies: list[float] = []
    with httpx.Client(timeout=10) as client, \
            client.stream("GET", f"{base}/door/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_events(response.iter_lines())
        assert next(events)["comment"].startswith("regard stream sink door")
        assert wait_for(lambda: hub.subscribers("door") == 1)

        def publish() -> None:
            for n in range(10):
                sink.send(record(n, T=time.monotonic()))
                time.sleep(0.03)

        publisher = threading.Thread(target=publish)
        publisher.start()
        got: list[dict[str, Any]] = []
        ids: list[str] = []
        for event in events:
            if "comment" in event or "retry" in event:
                continue
            assert event["event"] == "record"
            data = json.loads(event["data"])
            latencies.append(time.monotonic() - data["T"])
            got.append(data)
            ids.append(event["id"])
            if len(got) == 10:
                break
        publisher.join()
        # quiet: a heartbeat comes
        assert next(events) == {"comment": "keep-alive"}
    assert [d["N"] for d in got] == list(range(10))
    assert len(set(ids)) == 10
    assert max(latencies) < 0.1, latencies
    assert wait_for(lambda: hub.subscribers("door") == 0)  # the client went: unsubscribed
    assert sink.counters.sent == 10

    # A follower that reconnects with Last-Event-ID gets what it missed.
    sink.send(record(10))
    sink.send(record(11))
    with httpx.Client(timeout=10) as client, client.stream(
            "GET", f"{base}/door/events", headers={"Last-Event-ID": ids[-1]}) as response:
        events = (e for e in parse_events(response.iter_lines()) if "data" in e)
        assert [json.loads(next(events)["data"])["N"] for _ in range(2)] == [10, 11]


def test_sse_hub_close_ends_the_stream(sse_app: tuple[str, SseHub]) -> None:
    base, hub = sse_app
    with httpx.Client(timeout=10) as client, \
            client.stream("GET", f"{base}/gate/events") as response:
        lines = response.iter_lines()
        next(lines)
        assert wait_for(lambda: hub.subscribers("gate") == 1)
        hub.publish("gate", record(1))
        hub.close("gate")
        rest = list(lines)  # ends: the response is complete
    assert any(line.startswith("data: ") and json.loads(line[6:])["N"] == 1 for line in rest)


def test_sse_slow_subscriber_is_bounded_and_told() -> None:
    hub = SseHub(replay=10)
    sink = SseSink(hub, "busy")
    sub = hub.subscribe("busy", max_queue=50)
    for n in range(20_000):
        sink.send(record(n, Pad="x" * 100))
        assert len(sub) <= 50
    events, lost = sub.get(0)
    assert lost == 20_000 - 50 and sub.lost == lost
    assert [json.loads(data)["N"] for _, data in events] == list(range(19_950, 20_000))
    assert hub.counters("busy").snapshot() == {"Sent": 20_000, "Dropped": 19_950, "Failed": 0}
    sub.close()
    assert hub.subscribers("busy") == 0

    async def follow() -> list[str]:
        chunks: list[str] = []
        stream = sse_events(hub, "busy", heartbeat=5.0, max_queue=3)
        chunks.append(await stream.__anext__())
        for n in range(10):  # from another thread, while the follower is not reading
            await asyncio.to_thread(hub.publish, "busy", record(n))
        chunks.append(await stream.__anext__())
        chunks.append(await stream.__anext__())
        await stream.aclose()
        return chunks

    chunks = asyncio.run(follow())
    assert chunks[1].startswith(": dropped 7 events (slow subscriber)\nevent: dropped\n")
    assert [json.loads(line[6:])["N"] for line in chunks[2].splitlines()
            if line.startswith("data: ")] == [7, 8, 9]
    assert hub.subscribers("busy") == 0


# -- MQTT ------------------------------------------------------------------------------------------
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)


class Broker:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             "persistence false\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def accepting() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False

        assert wait_for(accepting, 10, 0.05), "mosquitto did not start"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto)")
    pytest.importorskip("paho.mqtt.client")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        client.reconnect_delay_set(1, 1)

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            c.subscribe(topic, qos=1)

        def on_subscribe(c: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
            self.subscribed.set()

        def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            self.subscribed.clear()

        def on_message(c: Any, userdata: Any, message: Any) -> None:
            self.messages.append(json.loads(message.payload))

        client.on_connect, client.on_subscribe = on_connect, on_subscribe
        client.on_disconnect, client.on_message = on_disconnect, on_message
        client.connect_async("127.0.0.1", port)
        client.loop_start()
        self.client = client
        assert self.subscribed.wait(10)

    def numbers(self) -> set[int]:
        return {m["N"] for m in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_publishes_and_survives_a_broker_restart(broker: Broker) -> None:
    topic = "regard/front door"
    subscriber = Subscriber(broker.port, topic)
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/regard/front%20door", reconnect_max=1)
    try:
        assert sink.connected.wait(10)
        for n in range(20):
            sink.send(record(n))
        assert wait_for(lambda: subscriber.numbers() == set(range(20)))
        assert wait_for(lambda: sink.counters.sent == 20)

        broker.stop()
        assert wait_for(lambda: not sink.connected.is_set())
        slowest = 0.0
        for n in range(20, 30):  # while the broker is down: kept, never blocking
            t0 = time.perf_counter()
            sink.send(record(n))
            slowest = max(slowest, time.perf_counter() - t0)
        assert slowest < 0.05
        broker.start()
        assert sink.connected.wait(15)
        assert subscriber.subscribed.wait(15)
        for n in range(30, 40):
            sink.send(record(n))
        assert wait_for(lambda: set(range(30, 40)) <= subscriber.numbers(), 15)
        assert wait_for(lambda: sink.counters.sent >= 40 and sink.queued == 0, 15)
    finally:
        sink.close()
        subscriber.close()
    assert sink.counters.dropped == 0 and sink.counters.failed == 0


def test_mqtt_bounded_queue_while_the_broker_is_away() -> None:
    pytest.importorskip("paho.mqtt.client")
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}/regard/x", max_queued=10,
                    close_timeout=0.2)
    for n in range(50):
        sink.send(record(n))
    assert sink.queued == 10
    sink.close()
    assert sink.counters.snapshot() == {"Sent": 0, "Dropped": 50, "Failed": 0}


def test_mqtt_urls() -> None:
    target = parse_mqtt_url("mqtts://user:p%40ss@broker.lan/home/regard/door")
    assert (target.tls, target.host, target.port, target.topic) == (
        True, "broker.lan", 8883, "home/regard/door")
    assert (target.username, target.password) == ("user", "p@ss")
    assert parse_mqtt_url("mqtt://h:1884/t").port == 1884
    for bad in ("mqtt://h:1883/", "mqtt://h/a/#", "mqtt://h/a/+/b", "http://h/t", "mqtt:///t",
                "mqtt://h/t?qos=1"):
        with pytest.raises(ValueError):
            parse_mqtt_url(bad)


# -- S3 --------------------------------------------------------------------------------------------
def test_s3_sink_writes_json_lines_objects(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    objects = LocalObjectStore(tmp_path)
    sink = S3Sink(objects, "out", "live/", processor="door", session="s-1", max_records=3,
                  max_seconds=0.3)
    for n in range(7):
        sink.send(record(n))
    folder = tmp_path / "out" / "live" / "door" / "s-1"
    assert wait_for(lambda: (folder / "000002.jsonl").exists(), 5)
    assert wait_for(lambda: (folder / "000003.jsonl").exists(), 5)  # the 7th, after 0.3 s
    sink.send(record(7))
    sink.close()  # the rest
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["000001.jsonl", "000002.jsonl", "000003.jsonl", "000004.jsonl"]
    contents = [[json.loads(x)["N"] for x in (folder / name).read_text().splitlines()]
                for name in names]
    assert contents == [[0, 1, 2], [3, 4, 5], [6], [7]]
    assert sink.counters.snapshot() == {"Sent": 8, "Dropped": 0, "Failed": 0}


def test_s3_sink_retries_a_refusing_store(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path)  # no bucket yet: refused
    sink = S3Sink(objects, "late", "", processor="door", session="s", max_records=2,
                  max_seconds=0.1)
    for n in range(3):
        sink.send(record(n))
    time.sleep(0.3)
    assert sink.counters.sent == 0
    (tmp_path / "late").mkdir()
    sink.close()
    folder = tmp_path / "late" / "door" / "s"
    lines = [json.loads(x)["N"] for p in sorted(folder.iterdir())
             for x in p.read_text().splitlines()]
    assert lines == [0, 1, 2]
    assert sink.counters.sent == 3


# -- opening registered sinks ----------------------------------------------------------------------
def test_open_sink_and_targets(tmp_path: Path) -> None:
    now = datetime.now(timezone.utc)
    hub = SseHub()
    path = tmp_path / "r.jsonl"
    sink = open_sink(Sink("file", "jsonl", str(path), "arn:x", now, {"max_bytes": 10_000}),
                     hub=hub)
    assert isinstance(sink, JsonLinesSink)
    sink.send(record(1))
    sink.close()
    assert json.loads(path.read_text())["N"] == 1
    sse = open_sink(Sink("live", "sse", "", "arn:y", now), hub=hub)
    assert isinstance(sse, SseSink) and sse.name == "live"
    hook = open_sink(Sink("hook", "webhook", "http://127.0.0.1:9/x", "arn:z", now,
                          {"max_queue": 3}), hub=hub)
    assert isinstance(hook, WebhookSink)
    hook.close()
    with pytest.raises(ValueError):
        open_sink(Sink("k", "kinesis", "", "arn:k", now), hub=hub)
    for kind, target in (("webhook", "ftp://x/y"), ("webhook", "x"), ("jsonl", "relative.jsonl"),
                         ("jsonl", str(tmp_path)), ("mqtt", "mqtt://h/"), ("sms", "")):
        with pytest.raises(ValueError):
            check_target(kind, target)
    assert check_target("webhook", "https://h/hook") == "https://h/hook"


# -- the audit ledger ------------------------------------------------------------------------------
class RecordingService:
    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[str, dict[str, Any], CallContext]] = []
        self.failures = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def call(self, operation: str, params: dict[str, Any], context: CallContext) -> dict:
        with self.lock:
            if self.failures < self.fail_first:
                self.failures += 1
                raise RuntimeError("the ledger is down")
            self.calls.append((operation, json.loads(json.dumps(params)), context))
        return {}

    def faces(self) -> list[str]:
        return [m["FaceId"] for _, params, _ in self.calls for m in params["Matches"]]


RUN = ProcessorRun("door", "arn:proc/door", "sess-1", "rtsp://cam", "arn:cam", "staff", 85.0)
CONTEXT = CallContext("operator", purpose="site security")


def test_ledger_batches_a_burst_and_loses_nothing() -> None:
    service = RecordingService()
    batcher = LedgerBatcher(service, max_batch=50, max_delay=0.2)
    # a busy camera: the same 5 people in 1000 frames, plus 120 passers-by
    for frame in range(1000):
        batcher.add(RUN, CONTEXT, {f"regular-{frame % 5}": 90.0 + frame % 7})
    for n in range(120):
        batcher.add(RUN, CONTEXT, {f"passer-{n}": 88.0, "regular-0": 99.5})
    assert wait_for(lambda: batcher.pending == 0, 5)
    batcher.close()
    assert 3 <= len(service.calls) <= 8, len(service.calls)
    for operation, params, context in service.calls:
        assert operation == "LiveFaceSearch" and context is CONTEXT
        assert {k: params[k] for k in ("StreamProcessor", "SessionId", "CollectionId",
                                       "FaceMatchThreshold")} == {
            "StreamProcessor": "door", "SessionId": "sess-1", "CollectionId": "staff",
            "FaceMatchThreshold": 85.0}
        assert 1 <= len(params["Matches"]) <= 50
        faces = [m["FaceId"] for m in params["Matches"]]
        assert len(faces) == len(set(faces))
    assert set(service.faces()) == {f"regular-{i}" for i in range(5)} | {
        f"passer-{n}" for n in range(120)}
    best = max(m["Similarity"] for _, p, _ in service.calls for m in p["Matches"]
               if m["FaceId"] == "regular-0")
    assert best == 99.5
    assert batcher.counters.snapshot()["lost"] == 0


def test_ledger_close_flushes_synchronously() -> None:
    service = RecordingService()
    batcher = LedgerBatcher(service, max_delay=3600)
    other = ProcessorRun("gate", "arn:proc/gate", "sess-9", "rtsp://gate", "arn:gate", "staff",
                         80.0)
    batcher.add(RUN, CONTEXT, {"a": 91.0, "b": 92.0})
    batcher.add(other, CONTEXT, {"c": 93.0})
    batcher.add(RUN, CONTEXT, {})
    time.sleep(0.1)
    assert service.calls == []
    batcher.close()
    assert sorted(p["StreamProcessor"] for _, p, _ in service.calls) == ["door", "gate"]
    assert sorted(service.faces()) == ["a", "b", "c"]
    batcher.add(RUN, CONTEXT, {"d": 90.0})  # after close: recorded at once
    assert service.faces()[-1] == "d"


def test_ledger_retries_a_failing_call() -> None:
    service = RecordingService(fail_first=2)
    batcher = LedgerBatcher(service, max_delay=0.05, retry_delay=0.05)
    batcher.add(RUN, CONTEXT, {"a": 91.0})
    assert wait_for(lambda: service.faces() == ["a"], 5)
    assert service.failures == 2
    batcher.add(RUN, CONTEXT, {"b": 92.0})
    batcher.close()
    assert service.faces() == ["a", "b"]
    assert batcher.counters.snapshot() == {"calls": 2, "matches": 2, "failures": 2, "lost": 0}


def test_ledger_gives_up_boundedly_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    service = RecordingService(fail_first=10**6)
    batcher = LedgerBatcher(service, max_delay=0.01, retry_delay=0.01, max_attempts=3,
                            final_attempts=1)
    batcher.add(RUN, CONTEXT, {"a": 91.0})
    assert wait_for(lambda: batcher.counters.lost == 1, 5)
    assert service.failures == 3
    batcher.add(RUN, CONTEXT, {"b": 92.0})
    batcher.close()
    assert batcher.counters.lost == 2
    assert "NOT recorded" in caplog.text and '"b"' in caplog.text
