"""A batch's job row: found again on restart, leased by its driver, its progress reported.

The row is an ordinary ``jobs`` row (``regard.jobs.store``) that no ``JobRunner`` claims (its
kinds are not registered with one): the driver that started the batch holds its lease and
heartbeats it from a thread. A driver killed mid-batch stops heartbeating; the same command run
again finds the unfinished row by its kind, principal and parameters, waits for the lease to
lapse (the earlier driver may still be alive), takes the job over (one more attempt) and goes on:
the workers skip what is done. Progress is the row's ``progress``: images done and total, faces
stored, images skipped as already indexed, failures and the recent rate.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from regard.cluster import BATCH_KINDS, INDEX_BATCH, REDACTION_BATCH, VIDEO_BATCH
from regard.context import CallContext
from regard.jobs.runner import default_runner_id
from regard.jobs.store import ACTIVE_STATES, FAILED, SUCCEEDED, Job, JobStore, canonical_parameters

log = logging.getLogger("regard.cluster")

# Each restart of a driver is an attempt; a batch is worth many (a long run on spot nodes).
MAX_DRIVER_ATTEMPTS = 100
REPORT_SECONDS = 1.0


class BatchTakenError(Exception):
    """Another driver holds this batch's lease (it is running, or died less than a lease
    ago and the wait for it ran out)."""


@dataclass
class Tally:
    """What a batch has done so far: images (or files), faces stored, skipped, failed."""

    total: int
    done: int = 0
    faces: int = 0
    unindexed: int = 0
    skipped: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, outcome: dict[str, Any]) -> None:
        self.done += 1
        if outcome.get("Error"):
            self.failed += 1
        elif outcome.get("Skipped"):
            self.skipped += 1
        self.faces += int(outcome.get("Faces", 0))
        self.unindexed += int(outcome.get("Unindexed", 0))

    @property
    def rate(self) -> float:
        """Items per second since this driver started (skipped ones included)."""
        return self.done / max(1e-6, time.monotonic() - self.started)

    def detail(self) -> dict[str, Any]:
        return {"faces": self.faces, "unindexed": self.unindexed, "skipped": self.skipped,
                "failed": self.failed, "per_second": round(self.rate, 3)}


class BatchJob:
    """The job row of one batch, held by this driver while it runs."""

    def __init__(self, store: JobStore, kind: str, context: CallContext,
                 parameters: dict[str, Any], *, lease_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.kind = kind
        self.context = context
        self.parameters, self.digest = canonical_parameters(parameters)
        self.lease_seconds = lease_seconds
        self.owner = default_runner_id()
        self.job: Job | None = None
        self.resumed = False
        self._clock = clock
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._reported = 0.0

    @property
    def job_id(self) -> str:
        assert self.job is not None, "the batch has not started"
        return self.job.job_id

    @property
    def lost(self) -> bool:
        """The lease is gone: another driver took the batch over; this one must stop."""
        return self._lost.is_set()

    def start(self, wait_seconds: float | None = None) -> Job:
        """Take the unfinished job of the same batch over, or submit a new one; start the
        heartbeat. ``wait_seconds`` (default: the lease and a little): how long to wait for an
        earlier driver's lease to lapse before ``BatchTakenError``."""
        earlier = self._unfinished()
        if earlier is None:
            job_id = self.store.submit(self.kind, self.context, self.parameters,
                                       operation=self.kind)
        else:
            job_id, self.resumed = earlier.job_id, True
        deadline = self._clock() + (self.lease_seconds * 1.2 + 2 if wait_seconds is None
                                    else wait_seconds)
        while True:
            job = self.store.claim_job(job_id, self.owner, lease_seconds=self.lease_seconds,
                                       max_attempts=MAX_DRIVER_ATTEMPTS)
            if job is not None and not job.done:
                break
            if job is not None:  # it finished (or was given up on) meanwhile: start afresh
                return self._restart()
            if self._clock() > deadline:
                holder = self.store.get(job_id).lease_owner
                raise BatchTakenError(f"Batch job {job_id} is held by driver {holder}; stop it "
                                      "or wait for its lease to lapse")
            time.sleep(min(1.0, self.lease_seconds / 4))
        return self._hold(job)

    def _hold(self, job: Job) -> Job:
        self.job = job
        self._beat = threading.Thread(target=self._heartbeat, name="regard-batch-heartbeat",
                                      daemon=True)
        self._beat.start()
        log.info("batch job %s (%s, attempt %d) held by %s", job.job_id, self.kind,
                 job.attempts, self.owner)
        return job

    def _restart(self) -> Job:
        self.resumed = False
        job_id = self.store.submit(self.kind, self.context, self.parameters, operation=self.kind)
        job = self.store.claim_job(job_id, self.owner, lease_seconds=self.lease_seconds,
                                   max_attempts=MAX_DRIVER_ATTEMPTS)
        if job is None or job.done:
            raise BatchTakenError(f"Batch job {job_id} was taken by another driver")
        return self._hold(job)

    def _unfinished(self) -> Job | None:
        """This principal's unfinished batch of the same kind and parameters, if any."""
        after: str | None = None
        while True:
            page = self.store.list(self.context.principal, kind=self.kind, states=ACTIVE_STATES,
                                   after=after, limit=500)
            for job in page:
                if job.parameters_hash == self.digest:
                    return job
            if len(page) < 500:
                return None
            after = page[-1].job_id

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                held = self.store.heartbeat(self.job_id, self.owner, self._attempt,
                                            self.lease_seconds)
            except Exception as exc:  # the database away for a moment: the next beat retries
                log.warning("batch %s: heartbeat failed: %s", self.job_id, exc)
                continue
            if not held:
                log.warning("batch %s: lease lost; another driver has it", self.job_id)
                self._lost.set()
                return

    @property
    def _attempt(self) -> int:
        assert self.job is not None
        return self.job.attempts

    def report(self, tally: Tally, *, force: bool = False) -> None:
        """Write the tally to the job row (at most once a second unless ``force``)."""
        now = self._clock()
        if not force and now - self._reported < REPORT_SECONDS:
            return
        self._reported = now
        if not self.store.progress(self.job_id, self.owner, self._attempt, tally.done,
                                   tally.total, tally.detail()):
            self._lost.set()

    def finish(self, tally: Tally, message: str | None = None) -> bool:
        """End the job: SUCCEEDED when nothing failed, else FAILED with ``message``."""
        self._stop.set()
        self.report(tally, force=True)
        state = SUCCEEDED if not tally.failed and message is None else FAILED
        if state == FAILED and message is None:
            message = (f"{tally.failed} of {tally.total} item(s) failed; run the same command "
                       "again to retry them")
        return self.store.finish(self.job_id, self.owner, self._attempt, state, message)

    def release(self) -> None:
        """Give the job back unfinished (the driver was interrupted): the same command takes
        it over at once instead of waiting for the lease."""
        self._stop.set()
        try:
            self.store.release(self.job_id, self.owner, self._attempt)
        except Exception as exc:
            log.warning("batch %s: could not give the job back: %s", self.job_id, exc)


__all__ = ["BATCH_KINDS", "INDEX_BATCH", "REDACTION_BATCH", "VIDEO_BATCH", "BatchJob",
           "BatchTakenError", "MAX_DRIVER_ATTEMPTS", "Tally"]
