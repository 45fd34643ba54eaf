"""Prometheus metrics of one server (its own registry, so several apps in one process, as in
tests, do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

    def observe(self, door: str, operation: str, outcome: str, seconds: float) -> None:
        self.requests.labels(door, operation, outcome).inc()
        self.latency.labels(door, operation).observe(seconds)
