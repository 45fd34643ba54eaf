"""The job runner: a small thread pool that claims jobs from the catalog and runs them.

One per server process (``regard serve``), separate from the request pools. A poll thread claims
jobs while a worker slot is free (and at once when this process submits one); a heartbeat thread
extends the lease of every running job every ``lease_seconds / 3``. Any number of runners, in any
number of processes or replicas sharing the database, may run at once: the store's conditional
updates give each job to one runner at a time (see ``regard.jobs.store``).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable

from regard.context import CallContext
from regard.errors import DatabaseUnavailableError, RegardError
from regard.jobs.kinds import (
    JobCancelled,
    RunningJob,
    finish_hooks,
    get_kind,
    registered_kinds,
)
from regard.jobs.store import (
    DEFAULT_RESULT_DAYS,
    DEFAULT_TOKEN_DAYS,
    FAILED,
    SUCCEEDED,
    Job,
    JobStore,
)
from regard.store.database import database_of

log = logging.getLogger("regard.jobs")

DEFAULT_WORKERS = 2
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_POLL_SECONDS = 1.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_MAX_CONCURRENT = 20  # Rekognition's default concurrent stored-video jobs per account
INTERNAL_ERROR = "internal error"


def default_runner_id() -> str:
    """``hostname:pid:random``: unique per process, readable in ``jobs.lease_owner``."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


class JobRunner:
    """Runs queued jobs of the registered kinds with ``service``.

    ``db``: the catalog database (a ``Database``, or anything holding one: a ``Store``; default: the
    service's store). ``owner``: this runner's id (default ``hostname:pid:random``).
    ``workers``: jobs run at once by this runner. ``lease_seconds``: how long a claimed job stays
    this runner's without a heartbeat (heartbeats every third of it); a dead runner's jobs are
    taken over that long after its last heartbeat. ``poll_seconds``: how often to look for jobs.
    ``max_attempts``: starts of one job before it is FAILED (its runner died each time).
    ``result_days``: how long finished jobs and their pages are kept. ``max_concurrent``: jobs
    QUEUED or IN_PROGRESS (all principals, like Rekognition's per-account limit) past which
    ``submit`` raises ``LimitExceededError``; ``max_concurrent_per_principal``: the same per
    submitting principal (None: no such limit). ``token_days``: how long a ClientRequestToken
    is honoured. ``clock``: UTC time source of the store (tests).
    """

    def __init__(self, service: Any, db: Any = None, *, owner: str | None = None,
                 workers: int = DEFAULT_WORKERS, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 poll_seconds: float = DEFAULT_POLL_SECONDS,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 result_days: float = DEFAULT_RESULT_DAYS,
                 max_concurrent: int | None = DEFAULT_MAX_CONCURRENT,
                 max_concurrent_per_principal: int | None = None,
                 token_days: float = DEFAULT_TOKEN_DAYS,
                 clock: Callable[[], datetime] | None = None) -> None:
        if workers < 1 or lease_seconds <= 0 or poll_seconds <= 0 or max_attempts < 1:
            raise ValueError("workers and max_attempts must be at least 1, lease_seconds and "
                             "poll_seconds positive")
        self.service = service
        self.db = database_of(db if db is not None else service.store)
        self.store = JobStore(self.db, result_days=result_days, token_days=token_days,
                              clock=clock)
        self.owner = owner or default_runner_id()
        self.workers = workers
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.max_concurrent = max_concurrent
        self.max_concurrent_per_principal = max_concurrent_per_principal
        self._running: dict[str, RunningJob] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._beats_stop = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._poll_thread: threading.Thread | None = None
        self._beat_thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, service: Any, workers: int | None = None) -> JobRunner:
        """A runner over the service's catalog with the job settings of ``config`` (lease,
        concurrent jobs, result and token days); ``workers`` (default ``REGARD_JOB_WORKERS``),
        at least 1."""
        from regard import config

        settings = config.current()
        return cls(service, service.store.database,
                   workers=max(1, settings.job_workers if workers is None else workers),
                   lease_seconds=settings.job_lease_seconds,
                   max_concurrent=settings.max_concurrent_jobs,
                   result_days=settings.job_result_days, token_days=settings.job_result_days)

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, kind: str, context: CallContext, parameters: dict[str, Any], *,
               client_token: str | None = None, job_tag: str | None = None,
               operation: str | None = None) -> str:
        """Queue a job of ``kind`` that will run with ``context``; its JobId (see
        ``JobStore.submit`` for ClientRequestToken and ``LimitExceededError``). A kind that no
        code in this process registered is refused (``ValueError``: a server bug, not the
        caller's). Runners in any process sharing the database may run it; this one is woken at
        once (after the caller's unit of work commits, when there is one)."""
        try:
            get_kind(kind)
        except KeyError:
            raise ValueError(f"No job kind named {kind!r} is registered") from None
        job_id = self.store.submit(
            kind, context, parameters, client_token=client_token, job_tag=job_tag,
            operation=operation, max_concurrent=self.max_concurrent,
            max_concurrent_per_principal=self.max_concurrent_per_principal)
        self.db.after_commit(self._wake.set)
        return job_id

    def get(self, job_id: str, *, owner: str | None = None) -> Job:
        return self.store.get(job_id, owner=owner)

    def wait(self, job_id: str, timeout: float = 60.0, interval: float = 0.05) -> Job:
        """The job once it has finished (``TimeoutError`` after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.store.get(job_id)
            if job.done:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout:g} s")
            time.sleep(interval)

    def sweep_expired(self, now: datetime | None = None) -> dict[str, int]:
        """Delete expired results and tokens (``JobStore.delete_expired``): for the server's
        periodic loop. Safe on several replicas at once."""
        counts = self.store.delete_expired(now)
        if counts["jobs"] or counts["tokens"]:
            log.info("deleted %d expired jobs (%d result pages) and %d idempotency tokens",
                     counts["jobs"], counts["pages"], counts["tokens"])
        return counts

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def running(self) -> list[str]:
        """JobIds this runner is running now."""
        with self._lock:
            return list(self._running)

    def start(self) -> None:
        if self._pool is not None:
            raise RuntimeError("this JobRunner was started already")
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="regard-job")
        self._poll_thread = threading.Thread(target=self._poll_loop, name="regard-job-poll",
                                             daemon=True)
        self._beat_thread = threading.Thread(target=self._heartbeat_loop,
                                             name="regard-job-heartbeat", daemon=True)
        self._poll_thread.start()
        self._beat_thread.start()
        log.info("job runner %s started (%d workers, lease %g s)", self.owner, self.workers,
                 self.lease_seconds)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop claiming, ask the running jobs to stop (``job.cancelled``), wait up to
        ``timeout`` seconds for them; jobs that stopped early are given back (QUEUED) for
        another runner. True when every job had ended; the leases of any still running expire
        and other runners take them over."""
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        if self._poll_thread is not None:  # no claim after this one ends
            self._poll_thread.join(max(0.1, deadline - time.monotonic()))
        with self._idle:
            while self._running and time.monotonic() < deadline:
                self._idle.wait(min(0.1, max(0.0, deadline - time.monotonic())))
            ended = not self._running
        self._beats_stop.set()  # heartbeats went on while the jobs were ending
        if self._beat_thread is not None:
            self._beat_thread.join(max(0.1, deadline - time.monotonic()))
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        log.info("job runner %s stopped%s", self.owner,
                 "" if ended else " (jobs still running: their leases will expire)")
        return ended

    def __enter__(self) -> JobRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loops -----------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        failing = False
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                claimed = self.claim_and_start()
                if failing:
                    log.info("job runner %s: the database answers again", self.owner)
                failing = False
            except Exception as exc:  # the database down: say so once, keep polling
                if not failing:
                    log.warning("job runner %s cannot claim jobs: %s", self.owner, exc)
                failing = True
                claimed = 0
            if claimed and self._free_slots() > 0:
                continue  # there may be more waiting
            self._wake.wait(self.poll_seconds)

    def _free_slots(self) -> int:
        with self._lock:
            return self.workers - len(self._running)

    def claim_and_start(self) -> int:
        """Claim as many jobs as there are free worker slots and start them; how many."""
        free = self._free_slots()
        if free <= 0 or self._pool is None or self._stopping.is_set():
            return 0
        claimed_at = time.monotonic()
        given_up: list[str] = []
        jobs = self.store.claim(self.owner, lease_seconds=self.lease_seconds,
                                kinds=registered_kinds(), limit=free,
                                max_attempts=self.max_attempts, exclude=self.running,
                                failed=given_up)
        for job_id in given_up:  # FAILED here, not by a runner: their hooks run all the same
            self._finished(job_id)
        for job in jobs:
            running = RunningJob(job, self.store, self.service, runner=self.owner,
                                 lease_seconds=self.lease_seconds, stopping=self._stopping,
                                 claimed_at=claimed_at)
            with self._lock:
                self._running[job.job_id] = running
            log.info("job %s (%s, attempt %d) started by %s for %s", job.job_id, job.kind,
                     job.attempts, self.owner, job.owner)
            self._pool.submit(self._run, running)
        return len(jobs)

    def _finished(self, job_id: str) -> None:
        """Run the completion hooks of a job that is now SUCCEEDED or FAILED (a notification,
        removing an upload), each on its own: one failing does not stop the next."""
        try:
            job = self.store.get(job_id)
        except Exception:
            log.exception("job %s: could not be read for its completion hooks", job_id)
            return
        for hook in finish_hooks(job.kind):
            try:
                hook(job, self.service)
            except Exception:
                log.exception("job %s: its completion hook %s failed", job_id,
                              getattr(hook, "__name__", hook))

    def _heartbeat_loop(self) -> None:
        interval = self.lease_seconds / 3
        while not self._beats_stop.wait(interval):
            with self._lock:
                running = list(self._running.values())
            for job in running:
                if not job.lost:
                    job.heartbeat()

    def _run(self, job: RunningJob) -> None:
        try:
            self._run_job(job)
        except Exception:  # never let a job take the worker down
            log.exception("job %s: the runner failed to record its end", job.job_id)
        finally:
            with self._idle:
                self._running.pop(job.job_id, None)
                self._idle.notify_all()
            self._wake.set()

    def _run_job(self, job: RunningJob) -> None:
        state, message = SUCCEEDED, None
        try:
            get_kind(job.kind)(job)
        except JobCancelled:
            if job.lost:
                log.warning("job %s stopped on %s: lease lost", job.job_id, self.owner)
            elif self.store.release(job.job_id, self.owner, job.attempt):
                log.info("job %s given back by %s (stopping)", job.job_id, self.owner)
            return
        except DatabaseUnavailableError as exc:
            # Transient: leave the lease to expire; a runner takes the job again (an attempt).
            log.warning("job %s stopped: %s", job.job_id, exc)
            return
        except RegardError as exc:
            state, message = FAILED, exc.message
        except Exception:
            log.exception("job %s (%s) failed", job.job_id, job.kind)
            state, message = FAILED, INTERNAL_ERROR
        if self.store.finish(job.job_id, self.owner, job.attempt, state, message):
            log.info("job %s %s", job.job_id, state)
            self._finished(job.job_id)
        else:
            log.warning("job %s ended on %s after its lease was lost: another runner has it",
                        job.job_id, self.owner)


__all__ = ["DEFAULT_LEASE_SECONDS", "DEFAULT_MAX_ATTEMPTS", "DEFAULT_MAX_CONCURRENT",
           "DEFAULT_POLL_SECONDS", "DEFAULT_WORKERS", "INTERNAL_ERROR", "JobRunner",
           "default_runner_id"]
