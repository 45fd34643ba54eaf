"""Prometheus metrics of one server (its own registry, so several apps in one process, as in
tests, do not collide)."""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from regard.store.faults import StorageHealth

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "regard_requests", "Requests by door, operation and outcome (error name or OK)",
            ["door", "operation", "outcome"], registry=self.registry)
        self.latency = Histogram(
            "regard_request_seconds", "Request latency by door and operation",
            ["door", "operation"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.faces_indexed = Counter(
            "regard_faces_indexed", "Faces stored by IndexFaces", registry=self.registry)
        self.in_flight = Gauge(
            "regard_requests_in_flight", "Operations running or queued in the worker pools",
            registry=self.registry)
        self.throttled = Counter(
            "regard_requests_throttled", "Requests refused because the worker queue was full",
            registry=self.registry)

        self.connections = Gauge(
            "regard_connections", "Open HTTP connections", registry=self.registry)
        self.connections_refused = Counter(
            "regard_connections_refused",
            "Connections closed by a defence: over the total or per-client cap, or headers not "
            "received in time", ["reason"], registry=self.registry)
        self.body_bytes_buffered = Gauge(
            "regard_body_bytes_buffered", "Request body bytes held in memory by requests in "
            "flight", registry=self.registry)
        self.bodies_refused = Counter(
            "regard_bodies_refused", "Requests refused because the bodies in flight already "
            "held the buffer limit", registry=self.registry)

    def observe(self, door: str, operation: str, outcome: str, seconds: float) -> None:
        self.requests.labels(door, operation, outcome).inc()
        self.latency.labels(door, operation).observe(seconds)

    def watch_storage(self, health: StorageHealth) -> None:
        """Export the catalog's storage faults (read at scrape time, never stored twice)."""
        self.registry.register(_StorageCollector(health))


class _StorageCollector(Collector):
    def __init__(self, health: StorageHealth) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "regard_storage_full_errors",
            "Writes that failed for lack of space: catalog statements (their requests are "
            "refused) and index checkpoints", value=self.health.full_errors)
        yield GaugeMetricFamily(
            "regard_catalog_corrupt", "1 once the catalog database was found damaged",
            value=int(self.health.corrupt))
        free = self.health.free_bytes()
        if free is not None:  # SQLite only: a database server's disk is not ours to see
            yield GaugeMetricFamily(
                "regard_storage_free_bytes", "Free bytes where the SQLite catalog lives",
                value=free)


# What each running stream processor exports: counters as counters, rates and latencies as
# gauges (its latency percentiles are over its last 2,000 analysed frames).
STREAM_COUNTERS = {"FramesRead": "frames read from the source",
                   "FramesAnalysed": "frames analysed",
                   "FramesDropped": "frames replaced by a newer one before analysis",
                   "Records": "output records written", "Matches": "live identifications",
                   "Reconnects": "reconnections to the source"}
STREAM_GAUGES = {"AnalysedFps": ("analysed_fps", "frames analysed per second, recently"),
                 "LatencyP50Ms": ("latency_p50_ms", "frame-to-record latency, median"),
                 "LatencyP99Ms": ("latency_p99_ms", "frame-to-record latency, 99th percentile")}


class StreamCollector(Collector):
    """Per-processor metrics of a ``StreamSupervisor`` (read at scrape time)."""

    def __init__(self, supervisor: object) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        running = self.supervisor.running()  # type: ignore[attr-defined]
        for member, text in STREAM_COUNTERS.items():
            family = CounterMetricFamily(
                f"regard_stream_{_snake(member)}", f"Stream processor {text}",
                labels=["processor"])
            for name, stats in running.items():
                family.add_metric([name], stats[member])
            yield family
        for member, (metric, text) in STREAM_GAUGES.items():
            family = GaugeMetricFamily(f"regard_stream_{metric}", f"Stream processor {text}",
                                       labels=["processor"])
            for name, stats in running.items():
                if stats[member] is not None:
                    family.add_metric([name], stats[member])
            yield family


# A running batch's progress (``regard.cluster``), as its driver last wrote it to the job row:
# any server on the catalog exports every batch, wherever its driver runs.
BATCH_GAUGES = {"total": "items in the batch", "done": "items done (skipped ones included)",
                "faces": "faces stored", "skipped": "images the collection already had",
                "failed": "items that failed", "per_second": "items per second"}


class BatchCollector(Collector):
    """Progress of the batches QUEUED or IN_PROGRESS in the catalog (read at scrape time)."""

    def __init__(self, jobs: object) -> None:
        self.jobs = jobs  # a JobStore

    def collect(self) -> Iterator[Metric]:
        from regard.cluster import BATCH_KINDS
        from regard.jobs.store import ACTIVE_STATES

        try:
            running = [job for job in self.jobs.list(  # type: ignore[attr-defined]
                states=ACTIVE_STATES, limit=1000) if job.kind in BATCH_KINDS]
        except Exception:  # the database away: the other metrics still answer
            return
        for member, text in BATCH_GAUGES.items():
            family = GaugeMetricFamily(f"regard_batch_{member}", f"Batch {text}",
                                       labels=["job_id", "kind", "owner"])
            for job in running:
                value = (job.progress or {}).get(member)
                if value is not None:
                    family.add_metric([job.job_id, job.kind, job.owner], float(value))
            yield family


def _snake(name: str) -> str:
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
