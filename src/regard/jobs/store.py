"""The jobs' rows: submission with idempotency tokens, leases, progress, result pages, expiry.

Every method is one short transaction on the catalog database (``write_transaction`` /
``read_transaction`` of a ``Database``), portable SQL
only, so the same code is correct on SQLite and on a PostgreSQL shared by several replicas:

- ``claim`` reads candidates without locking, then takes each with one conditional ``UPDATE``
  (``WHERE job_id = ? AND attempts = <as read> AND (QUEUED, or IN_PROGRESS with an expired
  lease)``) and checks the row count. Of two runners racing for a job, one updates the row and
  the other's condition no longer matches (PostgreSQL re-checks the condition on the row it
  waited for; SQLite's write lock serializes the two), so a job is never handed to two at once.
- Every later write of a runner (heartbeat, progress, page, finish, release) is fenced the same
  way: ``WHERE lease_owner = <runner> AND attempts = <its attempt> AND state = 'IN_PROGRESS'``.
  A runner that lost its lease (it stalled past ``lease_expires`` and another took the job over)
  has its writes refused (the methods answer ``False``) instead of mixing them with the new
  owner's.

Times are UTC from the store's clock; replicas sharing a database must keep their clocks in sync
(NTP) to well within a lease.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, text, update

from regard.context import CallContext
from regard.errors import (
    IdempotentParameterMismatchError,
    InvalidParameterError,
    LimitExceededError,
    ResourceNotFoundError,
)
from regard.store import schema as s
from regard.store.database import as_utc, database_of, utcnow

QUEUED = "QUEUED"
IN_PROGRESS = "IN_PROGRESS"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
ACTIVE_STATES = (QUEUED, IN_PROGRESS)
FINISHED_STATES = (SUCCEEDED, FAILED)

DEFAULT_RESULT_DAYS = 7.0  # Rekognition keeps a job's results for 7 days
DEFAULT_TOKEN_DAYS = 7.0  # and honours a ClientRequestToken for 7 days
MAX_TOKEN = 64  # ClientRequestToken's maximum length
MAX_JOB_TAG = 1024
MAX_MESSAGE = 1024
MAX_LIST = 1000
_PG_SUBMIT_LOCK = 0x5245_4a42  # "REJB": serializes submissions (the cap and the tokens)


def canonical_parameters(parameters: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The parameters as stored (a JSON round trip) and their SHA-256 over sorted-key JSON."""
    if not isinstance(parameters, dict):
        raise InvalidParameterError("Job parameters must be a JSON object")
    try:
        encoded = json.dumps(parameters, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"Job parameters must be plain JSON: {exc}") from None
    return json.loads(encoded), hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True)
class Job:
    """One job row. ``progress`` is ``{"done": n, "total": m}`` once reported; ``lease_owner``
    is the runner holding the job while IN_PROGRESS (afterwards, the one that last held it);
    ``expires`` is set when it finishes: its row and pages are deleted after that."""

    job_id: str
    kind: str
    owner: str
    purpose: str | None
    context: CallContext
    parameters: dict[str, Any]
    parameters_hash: str
    client_token: str | None
    job_tag: str | None
    state: str
    status_message: str | None
    progress: dict[str, Any] | None
    lease_owner: str | None
    lease_expires: datetime | None
    attempts: int
    created: datetime
    started: datetime | None
    finished: datetime | None
    expires: datetime | None
    result_pages: int

    @property
    def done(self) -> bool:
        return self.state in FINISHED_STATES


def _job(row: Any) -> Job:
    m = row._mapping
    return Job(
        job_id=m["job_id"], kind=m["kind"], owner=m["owner"], purpose=m["purpose"],
        context=CallContext.from_json(json.dumps(m["context"])),
        parameters=m["parameters"], parameters_hash=m["parameters_hash"],
        client_token=m["client_token"], job_tag=m["job_tag"], state=m["state"],
        status_message=m["status_message"], progress=m["progress"],
        lease_owner=m["lease_owner"], lease_expires=as_utc(m["lease_expires"]),
        attempts=m["attempts"], created=as_utc(m["created"]),  # type: ignore[arg-type]
        started=as_utc(m["started"]), finished=as_utc(m["finished"]), expires=as_utc(m["expires"]),
        result_pages=m["result_pages"])


def _message(text_: str | None) -> str | None:
    if text_ is None or len(text_) <= MAX_MESSAGE:
        return text_
    return text_[:MAX_MESSAGE - 3] + "..."


class JobStore:
    """Jobs in the catalog database. ``db``: a ``Database`` (or a ``Store`` holding one);
    ``result_days``: how long a finished job's row and pages are kept (Rekognition: 7 days);
    ``token_days``: how long a ClientRequestToken is honoured (Rekognition: 7 days);
    ``clock``: the UTC time source (tests move it)."""

    def __init__(self, db: Any, *, result_days: float = DEFAULT_RESULT_DAYS,
                 token_days: float = DEFAULT_TOKEN_DAYS,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.db = database_of(db)
        self.result_days = result_days
        self.token_days = token_days
        self.clock = clock or utcnow

    # -- submission ----------------------------------------------------------------------------
    def submit(self, kind: str, context: CallContext, parameters: dict[str, Any], *,
               client_token: str | None = None, job_tag: str | None = None,
               operation: str | None = None, max_concurrent: int | None = None,
               max_concurrent_per_principal: int | None = None) -> str:
        """Queue a job run with ``context``; its JobId.

        ClientRequestToken semantics (Rekognition's): the same ``(principal, operation,
        client_token)`` with the same parameters within ``token_days`` returns the first
        request's JobId and queues nothing; with other parameters it raises
        ``IdempotentParameterMismatchError``. ``operation`` names the request the token belongs
        to (default: ``kind``). Past ``max_concurrent`` jobs QUEUED or IN_PROGRESS (all
        principals: Rekognition's per-account limit), or ``max_concurrent_per_principal`` of this
        principal's, it raises ``LimitExceededError``; an idempotent repeat is answered first.
        """
        if not isinstance(context, CallContext):
            raise TypeError("A job is submitted with the CallContext of the request that "
                            "starts it")
        if not kind or len(kind) > 64:
            raise InvalidParameterError("A job kind is 1 to 64 characters")
        if client_token is not None and not 1 <= len(client_token) <= MAX_TOKEN:
            raise InvalidParameterError(f"ClientRequestToken is 1 to {MAX_TOKEN} characters")
        if job_tag is not None and not 1 <= len(job_tag) <= MAX_JOB_TAG:
            raise InvalidParameterError(f"JobTag is 1 to {MAX_JOB_TAG} characters")
        stored, digest = canonical_parameters(parameters)
        operation = operation or kind
        job_id = str(uuid.uuid4())
        with self.db.write_transaction() as conn:
            if conn.dialect.name == "postgresql":
                # One submission at a time: the count below and the token row stay true until
                # this commits (SQLite's BEGIN IMMEDIATE already serializes writers).
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SUBMIT_LOCK})
            now = self.clock()
            if client_token is not None:
                earlier = self._token(conn, context.principal, operation, client_token, now)
                if earlier is not None:
                    if earlier.parameters_hash != digest:
                        raise IdempotentParameterMismatchError(
                            f"ClientRequestToken {client_token} was used with other parameters "
                            f"for {operation}")
                    if earlier.job_id is not None:
                        return str(earlier.job_id)
            self._check_limits(conn, context.principal, max_concurrent,
                               max_concurrent_per_principal)
            conn.execute(insert(s.jobs).values(
                job_id=job_id, kind=kind, owner=context.principal, purpose=context.purpose,
                context=json.loads(context.to_json()), parameters=stored,
                parameters_hash=digest, client_token=client_token, job_tag=job_tag,
                state=QUEUED, status_message=None, progress=None, lease_owner=None,
                lease_expires=None, attempts=0, created=now, started=None, finished=None,
                expires=None, result_pages=0))
            if client_token is not None:
                conn.execute(insert(s.idempotency_tokens).values(
                    principal=context.principal, operation=operation, token=client_token,
                    parameters_hash=digest, job_id=job_id, result=None, created=now,
                    expires=now + timedelta(days=self.token_days)))
        return job_id

    @staticmethod
    def _token(conn: Connection, principal: str, operation: str, token: str,
               now: datetime) -> Any:
        """The live token row, or None (an expired one is deleted: the token is free again)."""
        where = and_(s.idempotency_tokens.c.principal == principal,
                     s.idempotency_tokens.c.operation == operation,
                     s.idempotency_tokens.c.token == token)
        row = conn.execute(select(s.idempotency_tokens).where(where)).first()
        if row is None:
            return None
        if as_utc(row.expires) > now:  # type: ignore[operator]
            return row
        conn.execute(delete(s.idempotency_tokens).where(where))
        return None

    @staticmethod
    def _check_limits(conn: Connection, principal: str, max_concurrent: int | None,
                      per_principal: int | None) -> None:
        active = s.jobs.c.state.in_(ACTIVE_STATES)
        if max_concurrent is not None:
            n = conn.execute(select(func.count()).select_from(s.jobs).where(active)).scalar_one()
            if n >= max_concurrent:
                raise LimitExceededError(
                    f"{n} jobs are queued or in progress, the limit is {max_concurrent}: "
                    "retry when some have finished")
        if per_principal is not None:
            n = conn.execute(select(func.count()).select_from(s.jobs).where(
                and_(active, s.jobs.c.owner == principal))).scalar_one()
            if n >= per_principal:
                raise LimitExceededError(
                    f"{n} of this caller's jobs are queued or in progress, the limit is "
                    f"{per_principal}: retry when some have finished")

    # -- reading -------------------------------------------------------------------------------
    def get(self, job_id: str, *, owner: str | None = None) -> Job:
        """The job; ``ResourceNotFoundError`` when there is none (or, with ``owner``, when
        another principal submitted it: its existence is not revealed)."""
        with self.db.read_transaction() as conn:
            row = conn.execute(select(s.jobs).where(s.jobs.c.job_id == job_id)).first()
        if row is None or (owner is not None and row.owner != owner):
            raise ResourceNotFoundError(f"Job {job_id} does not exist (or its results have "
                                        "expired)")
        return _job(row)

    def list(self, owner: str | None = None, *, kind: str | None = None,
             states: Iterable[str] | None = None, after: str | None = None,
             limit: int = 100, newest_first: bool = False) -> list[Job]:
        """Jobs oldest first (by creation, then JobId; ``newest_first``: the other way),
        ``limit`` at most; ``after``: the last JobId of the previous page."""
        limit = max(1, min(limit, MAX_LIST))
        stmt = select(s.jobs)
        if owner is not None:
            stmt = stmt.where(s.jobs.c.owner == owner)
        if kind is not None:
            stmt = stmt.where(s.jobs.c.kind == kind)
        if states is not None:
            stmt = stmt.where(s.jobs.c.state.in_(list(states)))
        with self.db.read_transaction() as conn:
            if after is not None:
                created = conn.execute(select(s.jobs.c.created).where(
                    s.jobs.c.job_id == after)).scalar_one_or_none()
                if created is None:
                    raise InvalidParameterError("The page token names no job")
                if newest_first:
                    stmt = stmt.where(or_(s.jobs.c.created < created, and_(
                        s.jobs.c.created == created, s.jobs.c.job_id < after)))
                else:
                    stmt = stmt.where(or_(s.jobs.c.created > created, and_(
                        s.jobs.c.created == created, s.jobs.c.job_id > after)))
            order = ((s.jobs.c.created.desc(), s.jobs.c.job_id.desc()) if newest_first
                     else (s.jobs.c.created, s.jobs.c.job_id))
            rows = conn.execute(stmt.order_by(*order).limit(limit)).all()
        return [_job(r) for r in rows]

    def count_active(self, owner: str | None = None) -> int:
        """Jobs QUEUED or IN_PROGRESS (of ``owner`` when given)."""
        stmt = select(func.count()).select_from(s.jobs).where(s.jobs.c.state.in_(ACTIVE_STATES))
        if owner is not None:
            stmt = stmt.where(s.jobs.c.owner == owner)
        with self.db.read_transaction() as conn:
            return int(conn.execute(stmt).scalar_one())

    def pages(self, job_id: str, after: int | None = None, limit: int = 100
              ) -> list[tuple[int, dict[str, Any]]]:
        """Result pages ``(number, body)`` in order, numbers above ``after`` (from the first
        when None), ``limit`` at most."""
        stmt = select(s.job_pages.c.page, s.job_pages.c.body).where(
            s.job_pages.c.job_id == job_id)
        if after is not None:
            stmt = stmt.where(s.job_pages.c.page > after)
        with self.db.read_transaction() as conn:
            rows = conn.execute(stmt.order_by(s.job_pages.c.page)
                                .limit(max(1, min(limit, MAX_LIST)))).all()
        return [(r.page, r.body) for r in rows]

    def page_writers(self, job_id: str) -> dict[int, str]:
        """Which runner wrote each page (for checks and forensics)."""
        with self.db.read_transaction() as conn:
            rows = conn.execute(select(s.job_pages.c.page, s.job_pages.c.written_by).where(
                s.job_pages.c.job_id == job_id)).all()
        return {r.page: r.written_by for r in rows}

    # -- the runner's side ---------------------------------------------------------------------
    def _claimable(self, now: datetime) -> Any:
        return or_(s.jobs.c.state == QUEUED,
                   and_(s.jobs.c.state == IN_PROGRESS, s.jobs.c.lease_expires < now))

    def claim(self, owner: str, *, lease_seconds: float, kinds: Sequence[str] | None = None,
              limit: int = 1, max_attempts: int = 3, exclude: Iterable[str] = (),
              failed: list[str] | None = None) -> list[Job]:
        """Take up to ``limit`` jobs for runner ``owner`` (oldest first): QUEUED ones, and
        IN_PROGRESS ones whose lease expired (their runner died or stalled). Each is IN_PROGRESS
        with ``lease_owner=owner``, ``lease_expires=now+lease_seconds`` and one more attempt. A
        job with an expired lease that has already been started ``max_attempts`` times is marked
        FAILED with a message saying so instead (never silently lost, never retried forever).
        ``kinds``: only these (the kinds this process can run); ``exclude``: JobIds not to take
        (the runner's own, still running); ``failed``: a list the JobIds this call marked
        FAILED are appended to (their completion hooks are the caller's to run)."""
        if limit < 1:
            return []
        skip = set(exclude)
        now = self.clock()
        stmt = select(s.jobs.c.job_id, s.jobs.c.state, s.jobs.c.attempts).where(
            self._claimable(now))
        if kinds is not None:
            if not kinds:
                return []
            stmt = stmt.where(s.jobs.c.kind.in_(list(kinds)))
        if skip:
            stmt = stmt.where(s.jobs.c.job_id.not_in(list(skip)))
        with self.db.read_transaction() as conn:
            candidates = conn.execute(stmt.order_by(s.jobs.c.created, s.jobs.c.job_id)
                                      .limit(limit + 8)).all()
        claimed: list[Job] = []
        for cand in candidates:
            if len(claimed) >= limit:
                break
            job = self._claim_one(cand.job_id, cand.state, cand.attempts, owner,
                                  lease_seconds, max_attempts)
            if job is None:
                continue
            if job.state == FAILED:
                if failed is not None:
                    failed.append(job.job_id)
            else:
                claimed.append(job)
        return claimed

    def claim_job(self, job_id: str, owner: str, *, lease_seconds: float,
                  max_attempts: int = 3) -> Job | None:
        """Take this one job (QUEUED, or IN_PROGRESS with an expired lease) like ``claim``: the
        job taken, the job given up on (FAILED), or None while another holds its lease. For a
        driver that resumes the batch it started (``regard.cluster``)."""
        job = self.get(job_id)
        if job.done:
            return job
        return self._claim_one(job.job_id, job.state, job.attempts, owner, lease_seconds,
                               max_attempts)

    def _claim_one(self, job_id: str, state: str, attempts: int, owner: str,
                   lease_seconds: float, max_attempts: int) -> Job | None:
        """The job taken (IN_PROGRESS), or the job given up on (FAILED), or None (another
        runner was first)."""
        with self.db.write_transaction() as conn:
            now = self.clock()
            # As read, and still claimable: a runner that raced us changed attempts or state.
            as_read = and_(s.jobs.c.job_id == job_id, s.jobs.c.attempts == attempts,
                           self._claimable(now))
            if state == IN_PROGRESS and attempts >= max_attempts:
                gave_up = conn.execute(update(s.jobs).where(as_read).values(
                    state=FAILED, lease_expires=None, finished=now,
                    expires=now + timedelta(days=self.result_days),
                    status_message=_message(
                        f"The job's worker stopped {attempts} times before finishing it (a "
                        "crash, a kill, or a lost database connection each time); it is not "
                        "tried again"))).rowcount
                if gave_up != 1:
                    return None
                return _job(conn.execute(select(s.jobs).where(s.jobs.c.job_id == job_id)).one())
            taken = conn.execute(update(s.jobs).where(as_read).values(
                state=IN_PROGRESS, lease_owner=owner,
                lease_expires=now + timedelta(seconds=lease_seconds),
                attempts=s.jobs.c.attempts + 1,
                started=func.coalesce(s.jobs.c.started, now))).rowcount
            if taken != 1:
                return None
            return _job(conn.execute(select(s.jobs).where(s.jobs.c.job_id == job_id)).one())

    @staticmethod
    def _held(job_id: str, owner: str, attempt: int) -> Any:
        """The fence: the runner still holds this attempt's lease."""
        return and_(s.jobs.c.job_id == job_id, s.jobs.c.lease_owner == owner,
                    s.jobs.c.attempts == attempt, s.jobs.c.state == IN_PROGRESS)

    def heartbeat(self, job_id: str, owner: str, attempt: int, lease_seconds: float) -> bool:
        """Extend the lease to now + ``lease_seconds``; False when the runner no longer holds it
        (then it must stop: another runner may have the job)."""
        with self.db.write_transaction() as conn:
            now = self.clock()
            return conn.execute(update(s.jobs).where(self._held(job_id, owner, attempt)).values(
                lease_expires=now + timedelta(seconds=lease_seconds))).rowcount == 1

    def progress(self, job_id: str, owner: str, attempt: int, done: int,
                 total: int | None, detail: dict[str, Any] | None = None) -> bool:
        """Record ``{"done", "total"}`` and any plain-JSON ``detail`` (a batch's faces,
        failures and rate); False when the lease is lost."""
        progress = {**(detail or {}), "done": int(done),
                    "total": None if total is None else int(total)}
        with self.db.write_transaction() as conn:
            return conn.execute(update(s.jobs).where(self._held(job_id, owner, attempt)).values(
                progress=progress)).rowcount == 1

    def add_page(self, job_id: str, owner: str, attempt: int, page: int,
                 body: dict[str, Any]) -> bool:
        """Write result page ``page`` (0, 1, ...); a page that exists is overwritten, so a step
        run again after a takeover leaves one page, not two. False when the lease is lost."""
        if page < 0:
            raise ValueError("Page numbers start at 0")
        # A body that is not plain JSON is the kind's bug: TypeError/ValueError ("internal error")
        stored = json.loads(json.dumps(body, ensure_ascii=False, allow_nan=False))
        with self.db.write_transaction() as conn:
            now = self.clock()
            # Locks the job row (PostgreSQL) and checks the fence in one statement.
            if conn.execute(update(s.jobs).where(self._held(job_id, owner, attempt)).values(
                    result_pages=s.jobs.c.result_pages)).rowcount != 1:
                return False
            page_of = and_(s.job_pages.c.job_id == job_id, s.job_pages.c.page == page)
            rewritten = conn.execute(update(s.job_pages).where(page_of).values(
                body=stored, written=now, written_by=owner)).rowcount
            if rewritten == 0:
                conn.execute(insert(s.job_pages).values(job_id=job_id, page=page, body=stored,
                                                        written=now, written_by=owner))
                conn.execute(update(s.jobs).where(s.jobs.c.job_id == job_id).values(
                    result_pages=s.jobs.c.result_pages + 1))
        return True

    def finish(self, job_id: str, owner: str, attempt: int, state: str,
               message: str | None = None) -> bool:
        """End the job SUCCEEDED or FAILED (with ``message``); its results are kept
        ``result_days`` from now. Only by the lease owner: False otherwise."""
        if state not in FINISHED_STATES:
            raise ValueError(f"A job finishes {SUCCEEDED} or {FAILED}, not {state}")
        with self.db.write_transaction() as conn:
            now = self.clock()
            return conn.execute(update(s.jobs).where(self._held(job_id, owner, attempt)).values(
                state=state, status_message=_message(message), lease_expires=None,
                finished=now, expires=now + timedelta(days=self.result_days))).rowcount == 1

    def release(self, job_id: str, owner: str, attempt: int) -> bool:
        """Give the job back (QUEUED) without counting the attempt: its runner is shutting down
        cleanly; another (or the restarted one) takes it and runs its steps again."""
        with self.db.write_transaction() as conn:
            return conn.execute(update(s.jobs).where(self._held(job_id, owner, attempt)).values(
                state=QUEUED, lease_expires=None, attempts=s.jobs.c.attempts - 1)).rowcount == 1

    # -- expiry --------------------------------------------------------------------------------
    def delete_expired(self, now: datetime | None = None, *, batch: int = 500) -> dict[str, int]:
        """Delete finished jobs whose results expired (with their pages and the tokens that
        named them) and expired idempotency tokens; counts of each."""
        now = now or self.clock()
        counts = {"jobs": 0, "pages": 0, "tokens": 0}
        while True:
            with self.db.write_transaction() as conn:
                ids = list(conn.execute(select(s.jobs.c.job_id).where(and_(
                    s.jobs.c.expires.is_not(None), s.jobs.c.expires < now)).limit(batch)
                ).scalars())
                if not ids:
                    break
                counts["pages"] += conn.execute(delete(s.job_pages).where(
                    s.job_pages.c.job_id.in_(ids))).rowcount
                counts["tokens"] += conn.execute(delete(s.idempotency_tokens).where(
                    s.idempotency_tokens.c.job_id.in_(ids))).rowcount
                counts["jobs"] += conn.execute(delete(s.jobs).where(
                    s.jobs.c.job_id.in_(ids))).rowcount
            if len(ids) < batch:
                break
        with self.db.write_transaction() as conn:
            counts["tokens"] += conn.execute(delete(s.idempotency_tokens).where(
                s.idempotency_tokens.c.expires < now)).rowcount
        return counts


__all__ = [
    "ACTIVE_STATES",
    "FAILED",
    "FINISHED_STATES",
    "IN_PROGRESS",
    "QUEUED",
    "SUCCEEDED",
    "Job",
    "JobStore",
    "canonical_parameters",
]
