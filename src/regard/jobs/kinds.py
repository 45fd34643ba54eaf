"""Job kinds: what a background job does, registered by name.

A kind is a function ``run(job: RunningJob) -> None`` registered with ``@job_kind("Name")``. The
runner hands it a ``RunningJob``: the job's id, parameters and ``context`` (the CallContext of
the request that started it), the ``service`` to run operations through (``job.call(...)`` is
``job.service.call(operation, params, job.context)``: authorized and audited under the submitting
principal), and the means to report: ``progress(done, total)`` and ``add_page(body, page=...)``.

Returning ends the job SUCCEEDED; raising a ``RegardError`` ends it FAILED with the error's
message; any other exception ends it FAILED with "internal error" (the traceback goes to the log,
not to the caller). A job may be run more than once (its runner died and another took it over
after the lease expired), so a kind makes each step idempotent: number the pages (``page=``)
so that a step run again rewrites its page, and resume from ``job.pages_written`` when the steps
allow it. A kind checks ``job.cancelled`` (or calls ``job.check()``) between steps: when the
runner lost the lease or is shutting down, it must stop; ``progress`` and ``add_page`` raise
``JobCancelled`` themselves once the lease is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from regard.context import CallContext

if TYPE_CHECKING:
    from regard.jobs.store import Job, JobStore

log = logging.getLogger("regard.jobs")

# A job is taken for lost this fraction of its lease before the deadline: room for the clocks of
# replicas sharing a database to differ a little (heartbeats come every third of the lease).
LEASE_MARGIN = 0.1
JobFunction = Callable[["RunningJob"], None]
_KINDS: dict[str, JobFunction] = {}
_FINISHED: dict[str, list[Callable[["Job", Any], None]]] = {}
_lock = threading.Lock()


class JobCancelled(Exception):
    """The running job must stop now: its runner lost the lease (another runner may hold the
    job) or is shutting down. Not an error of the job: it is neither SUCCEEDED nor FAILED."""


def job_kind(name: str) -> Callable[[JobFunction], JobFunction]:
    """Register ``run`` as the job kind ``name`` (the same function may be registered again,
    e.g. when its module is reloaded; another one under a taken name is refused)."""
    if not name or len(name) > 64:
        raise ValueError("A job kind's name is 1 to 64 characters")

    def register(run: JobFunction) -> JobFunction:
        with _lock:
            known = _KINDS.get(name)
            if known is not None and known is not run and (
                    getattr(known, "__module__", None), getattr(known, "__qualname__", None)) != (
                    getattr(run, "__module__", None), getattr(run, "__qualname__", None)):
                raise ValueError(f"Job kind {name} is already registered ({known!r})")
            _KINDS[name] = run
        return run

    return register


def on_finish(name: str) -> Callable[[Callable[["Job", Any], None]], Callable[["Job", Any],
                                                                            None]]:
    """Register ``hook(job, service)``, called once a job of kind ``name`` is SUCCEEDED or
    FAILED in the database (a notification sent then finds the results there). A kind may have
    several, run in the order registered; a hook's error is logged, never the job's, and does
    not stop the others."""

    def register(hook: Callable[["Job", Any], None]) -> Callable[["Job", Any], None]:
        with _lock:
            _FINISHED.setdefault(name, []).append(hook)
        return hook

    return register


def finish_hooks(name: str) -> list[Callable[["Job", Any], None]]:
    with _lock:
        return list(_FINISHED.get(name, ()))


def get_kind(name: str) -> JobFunction:
    """The function of kind ``name``; ``KeyError`` when none is registered."""
    with _lock:
        return _KINDS[name]


def registered_kinds() -> list[str]:
    with _lock:
        return sorted(_KINDS)


def unregister(name: str) -> None:
    """Forget kind ``name`` (tests)."""
    with _lock:
        _KINDS.pop(name, None)


class RunningJob:
    """What a kind's ``run`` gets: one attempt at one job, held by one runner under a lease."""

    def __init__(self, job: Job, store: JobStore, service: Any, *, runner: str,
                 lease_seconds: float, stopping: threading.Event | None = None,
                 claimed_at: float | None = None) -> None:
        self.job_id = job.job_id
        self.kind = job.kind
        self.parameters: dict[str, Any] = job.parameters
        self.context: CallContext = job.context
        self.service = service
        self.job_tag = job.job_tag
        self.attempt = job.attempts  # this claim's attempt number: the lease's fence
        self.pages_written = job.result_pages  # pages earlier attempts left (to resume from)
        self.runner = runner
        self.lease_seconds = lease_seconds
        self._store = store
        self._stopping = stopping or threading.Event()
        self._lost = False
        # The lease as this process knows it (``time.monotonic``), from before the claim: never
        # later than the deadline the database holds.
        self._deadline = (time.monotonic() if claimed_at is None else claimed_at) + lease_seconds
        self._next_page = job.result_pages

    @property
    def principal(self) -> str:
        return self.context.principal

    # -- state ---------------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        """The lease is gone, or may be: a heartbeat was refused, or none succeeded before the
        lease's deadline (another runner may hold the job now)."""
        margin = LEASE_MARGIN * self.lease_seconds
        if not self._lost and time.monotonic() > self._deadline - margin:
            self._lost = True
        return self._lost

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def cancelled(self) -> bool:
        """Stop now: the lease is lost or the runner is shutting down."""
        return self.lost or self.stopping

    def check(self) -> None:
        """Raise ``JobCancelled`` when the job must stop (call it between steps)."""
        if self.cancelled:
            raise JobCancelled(f"job {self.job_id}: "
                               + ("lease lost" if self.lost else "runner stopping"))

    def heartbeat(self) -> bool:
        """Extend the lease now (the runner also does it every lease/3); False when it is lost.
        A database error is logged and leaves the lease as it was: it is lost only if no
        heartbeat succeeds before its deadline."""
        if self._lost:
            return False
        started = time.monotonic()
        try:
            held = self._store.heartbeat(self.job_id, self.runner, self.attempt,
                                         self.lease_seconds)
        except Exception as exc:  # the database down: try again at the next beat
            log.warning("heartbeat of job %s failed: %s", self.job_id, exc)
            return not self.lost
        if held:
            self._deadline = started + self.lease_seconds
        else:
            log.warning("job %s: lease lost (another runner may hold it); stopping",
                        self.job_id)
            self._lost = True
        return held

    # -- reporting -----------------------------------------------------------------------------
    def progress(self, done: int, total: int | None = None) -> None:
        """Record progress (``{"done": done, "total": total}``); ``JobCancelled`` if the lease
        is lost."""
        if self.lost or not self._store.progress(self.job_id, self.runner, self.attempt, done,
                                                 total):
            self._lost = True
            raise JobCancelled(f"job {self.job_id}: lease lost")

    def add_page(self, body: dict[str, Any], *, page: int | None = None) -> int:
        """Write a result page: number ``page``, or the next one after the last written (in
        this attempt, or left by earlier ones). A page that exists is overwritten. Its number;
        ``JobCancelled`` if the lease is lost."""
        number = self._next_page if page is None else page
        if self.lost or not self._store.add_page(self.job_id, self.runner, self.attempt,
                                                 number, body):
            self._lost = True
            raise JobCancelled(f"job {self.job_id}: lease lost")
        self._next_page = max(self._next_page, number + 1)
        return number

    def call(self, operation: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run an operation as the job's principal (authorized and audited like a request)."""
        return self.service.call(operation, params or {}, self.context)


__all__ = ["JobCancelled", "JobFunction", "RunningJob", "finish_hooks", "get_kind", "job_kind",
           "on_finish",
           "registered_kinds", "unregister"]
