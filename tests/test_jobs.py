"""Durable background jobs (``regard.jobs``): submission and ClientRequestToken, the concurrent-job
limit, running with the submitter's CallContext (audited under its principal), failures, leases
and takeover after a runner is killed with SIGKILL, the attempt limit, two runner processes on
one PostgreSQL, and expiry. The job kinds are the tests' own (``job_kinds.py``); runner
processes run ``job_worker.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from job_kinds import COUNT, CRASH, FAIL
from job_worker import service_for

from regard.context import CallContext
from regard.errors import (
    IdempotentParameterMismatchError,
    LimitExceededError,
    ResourceNotFoundError,
)
from regard.jobs import (
    FAILED,
    IN_PROGRESS,
    QUEUED,
    SUCCEEDED,
    JobCancelled,
    JobRunner,
    JobStore,
)
from regard.jobs import kinds
from regard.jobs.kinds import RunningJob, on_finish
from regard.store import schema as s

TESTS = Path(__file__).parent
ALICE = CallContext(principal="alice", purpose="testing jobs", case="case-7", client="10.0.0.1")
BOB = CallContext(principal="bob", purpose="testing jobs")


class Clock:
    """A UTC clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture()
def url(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    return f"sqlite:///{tmp_path / 'regard.db'}"


@pytest.fixture()
def service(url):
    svc = service_for(url)
    yield svc
    svc.store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def any_service(request, url):
    """A service on SQLite, and on a PostgreSQL database (skipped when PostgreSQL is absent)."""
    svc = service_for(url if request.param == "sqlite"
                      else request.getfixturevalue("postgres_url"))
    yield svc
    svc.store.close()


@pytest.fixture()
def runner(service):
    r = JobRunner(service, service.store.database, lease_seconds=1.0, poll_seconds=0.05)
    r.start()
    yield r
    r.stop(timeout=10)


def ledger_ops(service, principal: str, operation: str = "ListCollections") -> list:
    return [e for e in service.gate.ledger.entries()
            if e.principal == principal and e.operation == operation]


# -- schema -------------------------------------------------------------------------------------
def test_a_version_5_catalog_gets_the_job_tables_like_a_fresh_one(tmp_path, url):
    from sqlalchemy import create_engine, inspect

    from regard.store import Store

    job_tables = ("jobs", "job_pages", "idempotency_tokens")
    old = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(old)
    with engine.begin() as conn:
        s.metadata.create_all(conn, tables=[t for t in s.metadata.sorted_tables
                                            if t.name not in job_tables])
        conn.execute(s.schema_version.insert().values(version=5, instance_id="x"))
        conn.execute(s.audit_head.insert().values(id=1, seq=0, hash="0" * 64, signature=""))
    engine.dispose()

    def shape(db_url: str) -> dict:
        Store(db_url, checkpoint_dir=False).close()
        insp = inspect(create_engine(db_url))
        return {t: ({c["name"] for c in insp.get_columns(t)},
                    {i["name"] for i in insp.get_indexes(t)}) for t in insp.get_table_names()}

    upgraded, fresh = shape(old), shape(url)
    assert upgraded == fresh
    assert fresh["jobs"][1] >= {"ix_jobs_claim", "ix_jobs_expires", "ix_jobs_owner_created"}
    assert "ix_idempotency_tokens_expires" in fresh["idempotency_tokens"][1]


# -- running ------------------------------------------------------------------------------------
def test_a_job_runs_to_success_with_pages_and_progress_audited_as_its_submitter(service):
    # a lease long enough that a loaded machine cannot make it lapse: attempts must be 1
    runner = JobRunner(service, service.store.database, lease_seconds=30.0, poll_seconds=0.05)
    runner.start()
    try:
        _runs_to_success(runner, service)
    finally:
        runner.stop(timeout=10)


def _runs_to_success(runner, service):
    job_id = runner.submit(COUNT, ALICE, {"N": 4}, job_tag="tag-1")
    job = runner.wait(job_id, timeout=20)
    assert job.state == SUCCEEDED and job.status_message is None
    assert job.progress == {"done": 4, "total": 4} and job.result_pages == 4
    assert job.attempts == 1 and job.lease_owner == runner.owner and job.lease_expires is None
    assert job.owner == "alice" and job.purpose == "testing jobs" and job.job_tag == "tag-1"
    assert job.context == ALICE  # the stored context, request id included
    assert job.created <= job.started <= job.finished  # type: ignore[operator]
    assert job.expires == job.finished + timedelta(days=7)  # type: ignore[operator]
    pages = runner.store.pages(job_id)
    assert [n for n, _ in pages] == [0, 1, 2, 3]
    assert [b["Step"] for _, b in pages] == [0, 1, 2, 3]
    assert runner.store.pages(job_id, after=1, limit=1) == [pages[2]]
    # the job's work ran as alice, with her purpose, case and client address
    entries = ledger_ops(service, "alice")
    assert len(entries) == 4
    assert {(e.purpose, e.case_ref, e.client) for e in entries} == {
        ("testing jobs", "case-7", "10.0.0.1")}
    assert [j.job_id for j in runner.store.list(owner="alice")] == [job_id]
    assert runner.store.list(owner="bob") == []


def test_a_job_runs_with_the_submitters_scopes_not_more(runner, service):
    limited = CallContext(principal="RGKLIMITED", scopes=("faces:search",))
    job = runner.wait(runner.submit(COUNT, limited, {"N": 2}), timeout=20)
    assert job.state == FAILED and "collections:read" in (job.status_message or "")
    [refused] = ledger_ops(service, "RGKLIMITED")
    assert refused.result["Error"] == "AccessDeniedException"


def test_failures_end_the_job_failed_and_never_the_runner(runner, caplog):
    failed = runner.wait(runner.submit(FAIL, ALICE, {"What": "the impossible"}), timeout=20)
    assert failed.state == FAILED and failed.status_message == "cannot do the impossible"
    crashed = runner.wait(runner.submit(CRASH, ALICE, {}), timeout=20)
    assert crashed.state == FAILED and crashed.status_message == "internal error"
    assert "secret detail" in caplog.text  # in the log, not in the job
    assert runner.wait(runner.submit(COUNT, ALICE, {"N": 1}), timeout=20).state == SUCCEEDED


def test_unknown_kinds_and_jobs_without_a_context_are_refused(service):
    runner = JobRunner(service, service.store.database)
    with pytest.raises(ValueError, match="No job kind"):
        runner.submit("tests.NoSuchKind", ALICE, {})
    with pytest.raises(TypeError):
        runner.submit(COUNT, None, {"N": 1})  # type: ignore[arg-type]
    assert runner.store.count_active() == 0
    with pytest.raises(ResourceNotFoundError):
        runner.store.get("no-such-job")


def test_a_stopping_runner_gives_its_jobs_back_and_another_finishes_them(service):
    first = JobRunner(service, service.store.database, lease_seconds=1.0, poll_seconds=0.05)
    first.start()
    job_id = first.submit(COUNT, ALICE, {"N": 30, "Delay": 0.05})
    deadline = time.monotonic() + 20
    while first.store.get(job_id).result_pages < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.stop(timeout=10)
    job = first.store.get(job_id)
    assert job.state == QUEUED and job.attempts == 0 and 3 <= job.result_pages < 30
    with JobRunner(service, service.store.database, lease_seconds=1.0,
                   poll_seconds=0.05) as second:
        job = second.wait(job_id, timeout=20)
    assert job.state == SUCCEEDED and job.attempts == 1 and job.lease_owner == second.owner
    assert [n for n, _ in second.store.pages(job_id)] == list(range(30))


# -- ClientRequestToken and the limit -----------------------------------------------------------
def test_client_request_token_returns_the_same_job_and_refuses_other_parameters(service):
    clock = Clock()
    runner = JobRunner(service, service.store.database, clock=clock)  # not started: jobs wait
    first = runner.submit(COUNT, ALICE, {"N": 2}, client_token="tok-1",
                          operation="StartFaceDetection")
    again = runner.submit(COUNT, ALICE, {"N": 2}, client_token="tok-1",
                          operation="StartFaceDetection")
    assert again == first and runner.store.count_active() == 1
    with pytest.raises(IdempotentParameterMismatchError) as mismatch:
        runner.submit(COUNT, ALICE, {"N": 3}, client_token="tok-1",
                      operation="StartFaceDetection")
    assert mismatch.value.code == "IdempotentParameterMismatchException"
    # the token is the principal's and the operation's
    assert runner.submit(COUNT, BOB, {"N": 2}, client_token="tok-1",
                         operation="StartFaceDetection") != first
    assert runner.submit(COUNT, ALICE, {"N": 2}, client_token="tok-1",
                         operation="StartFaceSearch") != first
    assert runner.submit(COUNT, ALICE, {"N": 2}) != first  # no token: a new job every time
    clock.advance(days=6, hours=23)
    assert runner.submit(COUNT, ALICE, {"N": 2}, client_token="tok-1",
                         operation="StartFaceDetection") == first
    clock.advance(hours=2)  # past 7 days: the token is free again
    renewed = runner.submit(COUNT, ALICE, {"N": 3}, client_token="tok-1",
                            operation="StartFaceDetection")
    assert renewed != first
    assert runner.submit(COUNT, ALICE, {"N": 3}, client_token="tok-1",
                         operation="StartFaceDetection") == renewed


def test_concurrent_submissions_with_one_token_make_one_job_and_respect_the_cap(any_service):
    runner = JobRunner(any_service, any_service.store.database, max_concurrent=5)
    results: list[tuple[str, str | None]] = []  # (token, JobId or None when refused)

    def submit(token: str) -> None:
        try:
            results.append((token, runner.submit(COUNT, ALICE, {"N": 1}, client_token=token)))
        except LimitExceededError:
            results.append((token, None))

    threads = [threading.Thread(target=submit, args=(token,))
               for token in ["same"] * 8 + [f"t{i}" for i in range(8)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 16
    same = {job_id for token, job_id in results if token == "same"}
    assert len(same) == 1  # one job for the token (or, all refused, none)
    created = {job_id for _, job_id in results if job_id is not None}
    assert len(created) == 5 and runner.store.count_active() == 5  # never past the cap


def test_limit_exceeded_past_the_concurrent_jobs_cap(service):
    runner = JobRunner(service, service.store.database, max_concurrent=3,
                       max_concurrent_per_principal=2)
    a1 = runner.submit(COUNT, ALICE, {"N": 1}, client_token="a1")
    runner.submit(COUNT, ALICE, {"N": 2})
    with pytest.raises(LimitExceededError) as mine:
        runner.submit(COUNT, ALICE, {"N": 3})  # alice's two
    assert mine.value.code == "LimitExceededException" and mine.value.http_status == 400
    runner.submit(COUNT, BOB, {"N": 1})
    with pytest.raises(LimitExceededError):
        runner.submit(COUNT, BOB, {"N": 2})  # three in all
    # an idempotent repeat starts nothing, so the cap does not refuse it
    assert runner.submit(COUNT, ALICE, {"N": 1}, client_token="a1") == a1
    assert runner.store.count_active() == 3 and runner.store.count_active("alice") == 2
    with runner:  # they run, and then there is room again
        for job in runner.store.list():
            runner.wait(job.job_id, timeout=20)
    runner.submit(COUNT, BOB, {"N": 1})


# -- leases -------------------------------------------------------------------------------------
def test_a_claimed_job_is_no_one_elses_and_a_lapsed_owner_is_fenced_off(any_service):
    service = any_service
    clock = Clock()
    store = JobStore(service.store.database, clock=clock)
    job_id = store.submit(COUNT, ALICE, {"N": 5})
    [a] = store.claim("A", lease_seconds=30)
    assert a.job_id == job_id and a.state == IN_PROGRESS and a.attempts == 1
    assert a.lease_expires == clock.now + timedelta(seconds=30)
    assert store.claim("B", lease_seconds=30) == []  # held
    assert store.heartbeat(job_id, "A", 1, 30) and store.add_page(job_id, "A", 1, 0, {"x": 0})
    clock.advance(seconds=29)
    assert store.claim("B", lease_seconds=30) == []  # the heartbeat extended it
    clock.advance(seconds=2)
    [b] = store.claim("B", lease_seconds=30)  # lapsed: taken over
    assert b.lease_owner == "B" and b.attempts == 2 and b.result_pages == 1
    # A is fenced off: none of its writes land
    assert not store.heartbeat(job_id, "A", 1, 30)
    assert not store.progress(job_id, "A", 1, 3, 5)
    assert not store.add_page(job_id, "A", 1, 1, {"x": "A"})
    assert not store.finish(job_id, "A", 1, SUCCEEDED)
    assert not store.add_page(job_id, "B", 1, 1, {"x": "old attempt"})  # the attempt is fenced
    running = RunningJob(a, store, service, runner="A", lease_seconds=30)
    with pytest.raises(JobCancelled):
        running.add_page({"x": "A"}, page=1)
    assert running.cancelled and not running.heartbeat()
    # B's land; a page written again is overwritten, not added
    assert store.add_page(job_id, "B", 2, 1, {"x": "B"})
    assert store.add_page(job_id, "B", 2, 1, {"x": "B again"})
    assert store.pages(job_id) == [(0, {"x": 0}), (1, {"x": "B again"})]
    assert store.page_writers(job_id) == {0: "A", 1: "B"}
    assert store.finish(job_id, "B", 2, SUCCEEDED)
    done = store.get(job_id)
    assert done.state == SUCCEEDED and done.result_pages == 2 and done.lease_owner == "B"
    assert store.claim("C", lease_seconds=30) == []


def test_threads_racing_to_claim_take_each_job_once(any_service):
    store = JobStore(any_service.store.database)
    ids = {store.submit(COUNT, ALICE, {"N": i}) for i in range(40)}
    taken: list[tuple[str, str]] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while True:
            jobs = store.claim(name, lease_seconds=60, limit=2)
            if not jobs and not store.list(states=[QUEUED], limit=1):
                return
            with lock:
                taken.extend((j.job_id, name) for j in jobs)

    threads = [threading.Thread(target=claimer, args=(f"T{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(j for j, _ in taken) == sorted(ids)  # every job, each once
    assert all(store.get(j).lease_owner == name and store.get(j).attempts == 1
               for j, name in taken)


def test_a_job_whose_runners_keep_dying_fails_after_max_attempts(service):
    store = JobStore(service.store.database)
    job_id = store.submit(COUNT, ALICE, {"N": 3})
    for attempt in (1, 2):  # two runners claim it and die (no heartbeat, no finish)
        [dead] = store.claim(f"dead-{attempt}", lease_seconds=0.2, max_attempts=2)
        assert dead.attempts == attempt
        time.sleep(0.25)
    finished: list[tuple[str, str]] = []
    on_finish(COUNT)(lambda job, svc: finished.append((job.job_id, job.state)))
    try:
        with JobRunner(service, service.store.database, lease_seconds=1.0, poll_seconds=0.05,
                       max_attempts=2) as runner:
            job = runner.wait(job_id, timeout=20)
            deadline = time.monotonic() + 5
            while not finished and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        kinds._FINISHED.pop(COUNT, None)
    # given up on by the claim, not by a runner: its completion hook (a notification) runs too
    assert finished == [(job_id, FAILED)]
    assert job.state == FAILED and job.attempts == 2 and job.lease_owner == "dead-2"
    assert "stopped 2 times" in (job.status_message or "")
    assert job.expires is not None and runner.store.pages(job_id) == []
    assert ledger_ops(service, "alice") == []  # it never ran again


# -- expiry -------------------------------------------------------------------------------------
def test_sweep_deletes_expired_results_and_tokens(service):
    clock = Clock()
    runner = JobRunner(service, service.store.database, clock=clock, result_days=2,
                       token_days=3)
    store = runner.store
    old = runner.submit(COUNT, ALICE, {"N": 1}, client_token="old")
    [claimed] = store.claim("R", lease_seconds=30)
    store.add_page(old, "R", claimed.attempts, 0, {"n": 1})
    store.finish(old, "R", claimed.attempts, SUCCEEDED)
    waiting = runner.submit(COUNT, ALICE, {"N": 2}, client_token="waiting")
    clock.advance(days=1)
    assert runner.sweep_expired() == {"jobs": 0, "pages": 0, "tokens": 0}
    clock.advance(days=1, seconds=1)
    assert runner.sweep_expired() == {"jobs": 1, "pages": 1, "tokens": 1}
    with pytest.raises(ResourceNotFoundError):
        store.get(old)
    assert store.pages(old) == []
    assert runner.submit(COUNT, ALICE, {"N": 1}, client_token="old") != old  # token gone too
    assert store.get(waiting).state == QUEUED  # unfinished jobs stay
    clock.advance(days=1)
    assert runner.sweep_expired()["tokens"] == 1  # the waiting job's token, 3 days old
    assert store.get(waiting).state == QUEUED
    with service.store.database.read_transaction() as conn:
        assert conn.execute(s.job_pages.select()).all() == []


# -- runner processes ---------------------------------------------------------------------------
def start_worker(url: str, owner: str, home: Path, lease: float = 1.0, max_attempts: int = 3,
                 workers: int = 2) -> subprocess.Popen:
    env = dict(os.environ, REGARD_HOME=str(home), PYTHONUNBUFFERED="1")
    env.pop("REGARD_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "job_worker.py"), url, owner, str(lease),
         str(max_attempts), str(workers)],
        cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"worker {owner} did not start: {line}{proc.stderr.read()}")
    return proc


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.mark.slow
def test_a_runner_killed_mid_job_is_taken_over_after_its_lease(url, service, tmp_path):
    N = 40
    store = JobStore(service.store.database)
    a = start_worker(url, "runner-A", tmp_path / "home")
    b = None
    try:
        job_id = store.submit(COUNT, ALICE, {"N": N, "Delay": 0.2})
        owners: list[tuple[str | None, int, int, datetime | None]] = []  # what was seen
        watching = True

        def watch() -> None:
            while watching:
                j = store.get(job_id)
                owners.append((j.lease_owner, j.attempts, j.result_pages, j.lease_expires))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        deadline = time.monotonic() + 30
        while store.get(job_id).result_pages < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        b = start_worker(url, "runner-B", tmp_path / "home")
        time.sleep(2.5)  # both alive, 2.5 leases: A's heartbeats keep the job A's
        held = store.get(job_id)
        assert held.lease_owner == "runner-A" and held.attempts == 1 and held.state == IN_PROGRESS
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        killed_at = datetime.now(timezone.utc)
        by_a = store.get(job_id).result_pages
        assert 3 <= by_a < N  # killed mid-job
        job = None
        while time.monotonic() < deadline + 30:
            job = store.get(job_id)
            if job.done:
                break
            time.sleep(0.05)
        watching = False
        watcher.join()
        assert job is not None and job.state == SUCCEEDED
        assert job.attempts == 2 and job.lease_owner == "runner-B"
        # each step's page once: A's first, then B's from where A stopped, none twice
        pages = store.pages(job_id)
        assert [n for n, _ in pages] == list(range(N)) and job.result_pages == N
        writers = store.page_writers(job_id)
        assert [writers[n] for n in range(N)] == ["runner-A"] * by_a + ["runner-B"] * (N - by_a)
        assert all(b_["Attempt"] == (1 if n < by_a else 2) for n, b_ in pages)
        # the lease changed hands once, A -> B, and only after A's had expired
        seen = [o for o, *_ in owners]
        changes = [o for i, o in enumerate(seen) if i == 0 or o != seen[i - 1]]
        assert changes == [None, "runner-A", "runner-B"] or changes == ["runner-A", "runner-B"]
        a_last_lease = max(e for o, _, _, e in owners if o == "runner-A" and e is not None)
        with service.store.database.read_transaction() as conn:
            first_b = conn.execute(s.job_pages.select().where(
                s.job_pages.c.job_id == job_id, s.job_pages.c.written_by == "runner-B")
                .order_by(s.job_pages.c.page)).first()
            last_a = conn.execute(s.job_pages.select().where(
                s.job_pages.c.job_id == job_id, s.job_pages.c.written_by == "runner-A")
                .order_by(s.job_pages.c.page.desc())).first()
        first_b_time = first_b.written.replace(tzinfo=timezone.utc)
        assert first_b_time >= a_last_lease > last_a.written.replace(tzinfo=timezone.utc)
        assert first_b_time >= killed_at
        # every step's operation was audited as alice; a step cut short may have run twice
        assert N <= len(ledger_ops(service, "alice")) <= N + 1
    finally:
        stop_worker(a)
        if b is not None:
            stop_worker(b)


@pytest.mark.slow
def test_two_runner_processes_on_one_postgresql_share_a_batch_once_each(postgres_url,
                                                                         tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    service = service_for(postgres_url)  # creates the schema
    store = JobStore(service.store.database)
    workers = [start_worker(postgres_url, f"pg-{n}", tmp_path / "home") for n in "AB"]
    try:
        contexts = [CallContext(principal=f"user-{i}") for i in range(12)]
        ids = [store.submit(COUNT, c, {"N": 3, "Delay": 0.05}) for c in contexts]
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not all(store.get(j).done for j in ids):
            time.sleep(0.1)
        jobs = [store.get(j) for j in ids]
        assert [j.state for j in jobs] == [SUCCEEDED] * 12
        assert all(j.attempts == 1 for j in jobs)  # claimed once each
        assert {j.lease_owner for j in jobs} == {"pg-A", "pg-B"}  # both took part
        for j, ctx in zip(jobs, contexts, strict=True):
            assert set(store.page_writers(j.job_id).values()) == {j.lease_owner}
            assert [n for n, _ in store.pages(j.job_id)] == [0, 1, 2]
            # run exactly once: three audited steps under its own principal, no more
            assert len(ledger_ops(service, ctx.principal)) == 3
    finally:
        for w in workers:
            stop_worker(w)
        service.store.close()

