"""The job runner ``regard serve`` starts: two real servers on one PostgreSQL database, one of
them killed with SIGKILL while it runs a job, the other taking the job over once its lease has
expired and finishing it, each result page written once, every step audited as the principal who
started the job. The servers are the ``regard`` command itself, with the tests' job kinds
(``job_kinds.py``) imported first, as a video job kind will be by the package."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from job_kinds import COUNT
from live_server import free_port
from regard.context import CallContext
from regard.governance.ledger import Ledger
from regard.jobs import IN_PROGRESS, SUCCEEDED, JobStore
from regard.store import Database

TESTS = Path(__file__).parent
KEY = "5a" * 32
SUBMITTER = CallContext("RGKARCHIVIST", scopes=("collections:read",), purpose="archive audit",
                        case="A-17", client="10.0.0.9")


def start_server(home: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import job_kinds; "
            "from regard.cli.common import main; "
            "sys.argv = ['regard', 'serve', '--port', sys.argv[2], '--insecure-local', "
            "'--job-workers', '1', '--retention-sweep-seconds', '0', "
            "'--index-refresh-seconds', '0', '--log-level', 'warning']; main()")
    env = {**os.environ, "REGARD_HOME": str(home), "REGARD_DATABASE_URL": url,
           "REGARD_LEDGER_KEY": KEY, "REGARD_JOB_LEASE_SECONDS": "3",
           "REGARD_CLEARING_ALLOCATOR": "0"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(TESTS), str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("regard serve did not start")


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_killed_servers_job_is_taken_over_by_another_server(tmp_path, postgres_url):
    database = Database(postgres_url)
    jobs = JobStore(database)
    first, _ = start_server(tmp_path / "a", postgres_url)
    second = None
    try:
        job_id = jobs.submit(COUNT, SUBMITTER, {"N": 30, "Delay": 0.15})
        running = wait_for(lambda: (j := jobs.get(job_id)).state == IN_PROGRESS
                           and len(jobs.pages(job_id)) >= 3 and j, 30, "server A to run it")
        assert f":{first.pid}:" in running.lease_owner  # the server's own runner took it
        second, _ = start_server(tmp_path / "b", postgres_url)
        first.send_signal(signal.SIGKILL)  # mid-job: no clean stop, the lease just lapses
        first.wait(10)
        killed_at = time.monotonic()
        done = wait_for(lambda: (j := jobs.get(job_id)).state == SUCCEEDED and j, 60,
                        "server B to finish it")
        taken_over_after = time.monotonic() - killed_at
        assert f":{second.pid}:" in done.lease_owner and done.attempts == 2
        assert done.progress == {"done": 30, "total": 30}
        writers = jobs.page_writers(job_id)
        assert sorted(writers) == list(range(30))  # every step's page, once
        by_a = [p for p, w in sorted(writers.items()) if f":{first.pid}:" in w]
        by_b = [p for p, w in sorted(writers.items()) if f":{second.pid}:" in w]
        assert by_a == list(range(len(by_a))) and by_b == list(range(len(by_a), 30))
        assert len(by_a) >= 3 and by_b and taken_over_after >= 1.0
        # each step's audited operation names the principal who started the job
        steps = [e for e in Ledger(database, key=bytes.fromhex(KEY)).entries()
                 if e.operation == "ListCollections"]
        assert 30 <= len(steps) <= 31  # a step cut short by the kill may run again
        assert {(e.principal, e.purpose, e.case_ref, e.client) for e in steps} == {
            ("RGKARCHIVIST", "archive audit", "A-17", "10.0.0.9")}
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        database.close()
