"""Durable background jobs: the foundation of Rekognition's Start*/Get* operations.

A job is a row in the catalog database (``jobs``), so it survives restarts and is shared by every
replica on one PostgreSQL. ``JobRunner.submit`` stores it QUEUED with the ``CallContext`` of the
request that started it; the job later runs with that context, so every operation it performs is
authorized with the submitter's scopes and its ledger entries name the submitter.

- **Lease and heartbeat.** A runner claims a job by setting ``lease_owner`` (itself) and
  ``lease_expires`` (now + lease) and extends the lease every third of it while the job runs. A
  runner that dies (kill -9, a lost host) stops extending it; once it has expired, any runner may
  take the job over and run it again. A job taken over ``max_attempts`` times without finishing
  is FAILED with a message saying its worker stopped that many times: never lost in silence,
  never retried forever.
- **At most one runner at a time, by conditional updates.** Claiming is one ``UPDATE ... WHERE
  job_id = ? AND attempts = <as read> AND (QUEUED or lease expired)``, with its row count
  checked; every later write (heartbeat, progress, result page, finish) carries the fence
  ``lease_owner = me AND attempts = my attempt``. Two runners racing for a job: one wins, the
  other's update matches nothing. A runner that stalled past its lease has its writes refused
  and is told to stop (``job.cancelled``, ``JobCancelled``). Portable SQL: the same guarantee on
  SQLite (one writer at a time) and PostgreSQL (row locks, conditions re-checked).
- **Exactly once in effect.** A job's steps may run again after a takeover, so results are
  numbered pages (``job_pages``, primary key (job, page)): a step run again rewrites its page,
  and a kind can resume from the pages already written. Side effects outside the pages must be
  idempotent too (or keyed by the job and step).
- **Pages and expiry.** Results are read back in pages (``JobStore.pages``); a finished job and
  its pages are kept ``result_days`` (Rekognition: 7 days) and then deleted by ``sweep_expired``.
- **Idempotency tokens.** ``ClientRequestToken``: the same (principal, operation, token) with the
  same parameters within 7 days returns the same JobId and starts nothing; with different
  parameters it is ``IdempotentParameterMismatchException``. Past ``max_concurrent`` active jobs
  a submission is ``LimitExceededException``.

Modules: ``store`` (``JobStore``: the rows), ``kinds`` (``@job_kind``, ``RunningJob``),
``runner`` (``JobRunner``: the thread pool, poll and heartbeat loops).
"""

from regard.jobs.kinds import (
           JobCancelled,
           RunningJob,
           get_kind,
           job_kind,
           registered_kinds,
)
from regard.jobs.runner import JobRunner
from regard.jobs.store import FAILED, IN_PROGRESS, QUEUED, SUCCEEDED, Job, JobStore

__all__ = ["FAILED", "IN_PROGRESS", "QUEUED", "SUCCEEDED", "Job", "JobCancelled", "JobRunner",
           "JobStore", "RunningJob", "get_kind", "job_kind", "registered_kinds"]
