"""What both HTTP doors share: the service, the keys, the bounded worker pools and the metrics.

Face work is CPU-bound and blocking, so it never runs on the event loop: each operation runs in a
thread pool (ONNX Runtime, FAISS, libfacedetection and SQLite release the GIL). Each pool admits
``workers + queue`` operations at a time; one more gets ``ThrottlingException`` at once instead of
waiting behind the others (clients back off and retry, as AWS SDKs do). Image operations and the
light ones (listings, deletes, searches by id) have separate pools, so a burst of uploads cannot
stall a ``ListCollections``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

from regard import config
from regard.api.connections import ConnectionLimits
from regard.api.metrics import Metrics
from regard.errors import RegardError, ThrottlingError
from regard.governance.keys import AccessKey
from regard.governance.ratelimit import RateLimiter
from regard.context import CallContext
from regard.imaging import ImageLimits
from regard.jobs import JobRunner
from regard.operations import registry
from regard.service import RegardService

log = logging.getLogger("regard.api")
T = TypeVar("T")

@dataclass(frozen=True)
class ServerSettings:
    workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    queue: int = 16  # image operations waiting beyond ``workers`` before throttling
    light_workers: int = 8
    light_queue: int = 64
    insecure_local: bool = False  # no authentication (loopback only; see ``regard serve``)
    retention_sweep_seconds: float = 3600.0  # 0: no background sweeper
    # How often loaded indexes catch up with deletions made elsewhere (other processes or
    # replicas) and stale checkpoints go, searched or not; 0: only when searched.
    index_refresh_seconds: float = 60.0
    # Background jobs run at once by this server (0: none here; another replica runs them),
    # and how often expired job results are deleted.
    job_workers: int = field(default_factory=lambda: config.current().job_workers)
    job_sweep_seconds: float = 3600.0
    # The whole request body must arrive within this (a 13 MB body at 1 Mbit/s takes ~105 s);
    # a client that stalls gets RequestTimeoutException instead of holding its connection.
    body_read_seconds: float = 120.0
    # A web console upload (several photos, a video streamed to a temporary file) gets longer.
    upload_read_seconds: float = 3600.0
    # Request bodies held in memory by all requests in flight together (both doors); a request
    # that would go past it gets ThrottlingException before its body is read. 80 anonymous 14 MB
    # bodies took an unbounded server to 1.25 GB.
    body_buffer_bytes: int = 128 * 1024 * 1024
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    # Live stream processors run at once by this server (0: none; another server runs them).
    stream_processors: int = 4

    def max_body_bytes(self, limits: ImageLimits) -> int:
        """Largest request body read: two inline images (CompareFaces) in base64, plus JSON."""
        return 2 * (limits.max_bytes * 4 // 3 + 4) + 64 * 1024


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address, no port) is this machine's loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class WorkerPool:
    """A thread pool that refuses work beyond its capacity instead of queueing it unboundedly."""

    def __init__(self, name: str, workers: int, queue: int, metrics: Metrics) -> None:
        self.name = name
        self.capacity = workers + queue
        self.admitted = 0
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._metrics = metrics

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        # Only the event loop thread touches ``admitted``: no lock needed.
        if self.admitted >= self.capacity:
            self._metrics.throttled.inc()
            raise ThrottlingError(
                "Regard is busy: too many requests are waiting. Retry with backoff.")
        self.admitted += 1
        self._metrics.in_flight.inc()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        finally:
            self.admitted -= 1
            self._metrics.in_flight.dec()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class BodyBuffers:
    """The bytes of request bodies held in memory by requests in flight, under one cap.

    A request reserves its declared ``Content-Length`` (or, when chunked, each chunk as it
    arrives) before the bytes are read, and gives the reservation back when it ends. When all
    reservations are back after a large burst, the C allocator is asked to return free memory to
    the system (``malloc_trim``): freed 64 KiB receive buffers otherwise stay in the process's
    heap, and a server that once held a gigabyte of bodies kept it."""

    TRIM_AFTER = 32 * 1024 * 1024  # bytes released since the last trim worth a trim

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self.held = 0
        self._released = 0
        self._trim_pending = False
        self._metrics = metrics

    def reserve(self, n: int) -> None:
        # Only the event loop's thread calls this: no lock needed.
        if n > 0 and self.held + n > self.limit:
            self._metrics.bodies_refused.inc()
            raise ThrottlingError(
                "Regard is receiving too many large requests at once; retry with backoff")
        self.held += n
        self._metrics.body_bytes_buffered.set(self.held)

    def release(self, n: int) -> None:
        self.held -= n
        self._released += n
        self._metrics.body_bytes_buffered.set(self.held)
        if self.held == 0 and self._released >= self.TRIM_AFTER and not self._trim_pending:
            # Later, not now: the request releasing its reservation still holds its body.
            self._released = 0
            self._trim_pending = True
            asyncio.get_running_loop().call_later(0.2, self._trim)

    def _trim(self) -> None:
        self._trim_pending = False
        give_memory_back()


def _libc() -> Any:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_allocations(threshold: int = 1024 * 1024) -> None:
    """Have glibc serve allocations of ``threshold`` bytes or more (request bodies, decoded
    images) from their own memory maps, returned to the system when freed. By default glibc
    raises this threshold after the first large free (up to 32 MiB), after which 13 MB bodies
    come from the heap and stay in the process's memory after they are freed."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, threshold)


def give_memory_back() -> None:
    """Return the heap's free pages to the system (glibc; a no-op elsewhere). A few ms."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


class Server:
    """One running Regard server's shared state; both doors call ``dispatch``."""

    def __init__(self, service: RegardService, settings: ServerSettings | None = None) -> None:
        self.service = service
        self.settings = settings or ServerSettings()
        self.keys = service.keys
        self.metrics = Metrics()
        self.image_pool = WorkerPool("regard-image", self.settings.workers, self.settings.queue,
                                     self.metrics)
        self.light_pool = WorkerPool("regard-light", self.settings.light_workers,
                                     self.settings.light_queue, self.metrics)
        self.rates = RateLimiter()
        self.limits = service.engine.limits or ImageLimits.from_env()
        self.max_body_bytes = self.settings.max_body_bytes(self.limits)
        map_large_allocations()
        self.bodies = BodyBuffers(max(self.settings.body_buffer_bytes, self.max_body_bytes),
                                  self.metrics)
        # Jobs are submitted here whether or not this server runs any (``start_jobs``).
        self.jobs = JobRunner.from_config(service, self.settings.job_workers)
        service.jobs = self.jobs  # the Start* operations submit to this server's runner
        from regard.streams.supervisor import StreamSupervisor

        self.streams = StreamSupervisor(service,
                                        max_processors=self.settings.stream_processors)
        service.streams = self.streams
        from regard.api.metrics import BatchCollector, StreamCollector

        self.metrics.registry.register(StreamCollector(self.streams))
        self.metrics.registry.register(BatchCollector(self.jobs.store))

    def start_jobs(self) -> None:
        """Start running queued jobs in a pool of their own (separate from the request pools),
        unless ``job_workers`` is 0, and resume the stream processors that were running,
        unless ``stream_processors`` is 0."""
        if self.settings.job_workers > 0:
            self.jobs.start()
        if self.settings.stream_processors > 0:
            resumed = self.streams.resume()
            if resumed:
                log.info("resumed %d stream processor(s)", resumed)
            self.streams.watch()

    async def dispatch(self, operation: str, params: dict[str, Any], context: CallContext
                       ) -> dict[str, Any]:
        """Run ``operation`` in the worker pool its declaration names (``image``: operations
        that decode images and run the detector and the embedder)."""
        op = registry.get(operation)
        pool = self.image_pool if op is not None and op.pool == "image" else self.light_pool
        result = await pool.run(self.service.call, operation, params, context)
        if operation == "IndexFaces":
            self.metrics.faces_indexed.inc(len(result.get("FaceRecords", [])))
        return result

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a short blocking call (a key lookup) off the event loop."""
        return await self.light_pool.run(fn, *args)

    def context(self, key: AccessKey | None, client: str | None, headers: Mapping[str, str],
                request_id: str) -> CallContext:
        """The call context of a request: the verified key's id, scopes and collection
        allow-list (``key`` None: ``--insecure-local``, unrestricted) and the audit headers
        ``X-Regard-Purpose`` (default: the key's default purpose), ``X-Regard-Case`` and
        ``X-Regard-Consent``. Both doors call it once per request, after authentication, so it
        also takes the request from the key's rate (``ProvisionedThroughputExceededError``)."""
        if key is not None:
            self.rates.admit(key.access_key_id, key.max_tps)
        purpose = headers.get("x-regard-purpose") or (key.default_purpose if key else None)
        return CallContext(principal=key.access_key_id if key else "anonymous", client=client,
                           purpose=purpose, case=headers.get("x-regard-case"),
                           consent=headers.get("x-regard-consent"),
                           scopes=key.scopes if key else None,
                           collections=key.collections if key else None,
                           request_id=request_id)

    def shutdown(self) -> None:
        """Stop taking jobs and give back those that stop in time (others' leases expire and
        another server takes them over); then the request pools."""
        if self.settings.job_workers > 0:
            self.jobs.stop(timeout=10.0)
        self.streams.shutdown(timeout=10.0)
        self.image_pool.shutdown()
        self.light_pool.shutdown()


def outcome(error: BaseException | None) -> str:
    if error is None:
        return "OK"
    return error.code if isinstance(error, RegardError) else "InternalServerError"


def timer() -> Callable[[], float]:
    start = time.perf_counter()
    return lambda: time.perf_counter() - start
