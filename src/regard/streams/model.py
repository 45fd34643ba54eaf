"""What a live stream processor is made of, shared by the registry, the operations, the runtime
and the sinks (so that none of them imports another's internals).

A **source** is a camera the operator registered once (``regard streams sources add NAME URL``):
an RTSP, HTTP(S)/HLS or file URL, or a local device, given a Kinesis-Video-style ARN that
CreateStreamProcessor names as ``Input.KinesisVideoStream.Arn``. A **sink** is where records go,
registered the same way and named by a Kinesis-Data-Streams-style ARN in
``Output.KinesisDataStream.Arn``: a webhook, a JSON Lines file, Server-Sent Events at a REST URL,
or an MQTT topic. A **record** is exactly Rekognition's stream processor output record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Protocol

# Rekognition's CreateStreamProcessor requires a RoleArn (the IAM role its Kinesis streams are read
# with); Regard reads its sources itself, so the doors that create processors send this one.
ROLE_ARN = "arn:aws:iam::000000000000:role/regard"

SINK_KINDS = ("webhook", "jsonl", "sse", "mqtt")

# Rekognition's status machine
STOPPED, STARTING, RUNNING, STOPPING, FAILED = (
    "STOPPED", "STARTING", "RUNNING", "STOPPING", "FAILED")


@dataclass(frozen=True)
class Source:
    name: str
    url: str
    arn: str
    created: datetime


@dataclass(frozen=True)
class Sink:
    name: str
    kind: str  # one of SINK_KINDS
    target: str  # webhook URL, file path, "" (sse), mqtt://host:port/topic
    arn: str
    created: datetime
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProcessorRun:
    """One session of a RUNNING processor, as the runtime needs it."""

    name: str
    arn: str
    session_id: str
    source_url: str
    source_arn: str
    collection: str
    threshold: float
    max_duration_seconds: float | None = None


Record = dict[str, Any]  # Rekognition's output record (see runtime.record)
Emit = Callable[[Record], None]


class RecordSink(Protocol):
    """Where a processor's records go; ``send`` must not block the analysis for long (a sink
    that is slow or down drops or buffers, boundedly, and says so in its counters)."""

    def send(self, record: Record) -> None: ...

    def close(self) -> None: ...


class ProcessorStats:
    """A running processor's counters, read by DescribeStreamProcessor and ``/metrics``.
    Written by the runtime's threads; each update is a single attribute store or a bounded
    deque append (thread-safe in CPython), read without a lock."""

    def __init__(self, latency_window: int = 2000) -> None:
        import collections
        import time

        self.started = time.monotonic()
        self.frames_read = 0  # frames decoded from the source
        self.frames_analysed = 0
        self.frames_dropped = 0  # decoded but replaced by a newer frame before analysis
        self.records = 0
        self.matches = 0
        self.reconnects = 0
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=latency_window)
        self.analysed_times: collections.deque[float] = collections.deque(maxlen=250)

    def analysed(self, latency_ms: float) -> None:
        import time

        self.frames_analysed += 1
        self.latencies_ms.append(latency_ms)
        self.analysed_times.append(time.monotonic())

    def snapshot(self) -> dict[str, Any]:
        import time

        import numpy as np

        times = list(self.analysed_times)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and \
            times[-1] > times[0] else 0.0
        lat = np.asarray(list(self.latencies_ms), dtype=np.float64)
        return {"FramesRead": self.frames_read, "FramesAnalysed": self.frames_analysed,
                "FramesDropped": self.frames_dropped, "Records": self.records,
                "Matches": self.matches, "Reconnects": self.reconnects,
                "AnalysedFps": round(fps, 2),
                "LatencyP50Ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
                "LatencyP99Ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
                "UptimeSeconds": round(time.monotonic() - self.started, 1)}


OnMatches = Callable[[ProcessorRun, dict[str, float]], None]  # FaceId -> best similarity
OnStatus = Callable[[str, "str | None"], None]  # (RUNNING | FAILED | ..., StatusMessage)
