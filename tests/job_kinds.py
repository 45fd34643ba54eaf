"""Job kinds for the job tests (registered on import; the package ships no kind of its own).

``tests.Count`` counts to ``N``: each step runs an audited operation as the job's principal
(``ListCollections``), writes page ``i`` (``{"Step": i, "Runner": ..., "Attempt": ...}``),
reports progress and sleeps ``Delay`` seconds, so a kill lands mid-job. It resumes after the
pages an earlier attempt wrote, so each step's page is written once per job.
"""

from __future__ import annotations

import time

from regard.errors import InvalidParameterError
from regard.jobs import RunningJob, job_kind

COUNT = "tests.Count"
FAIL = "tests.Fail"
CRASH = "tests.Crash"


@job_kind(COUNT)
def count(job: RunningJob) -> None:
    n = int(job.parameters["N"])
    delay = float(job.parameters.get("Delay", 0.0))
    for i in range(job.pages_written, n):
        job.check()
        job.call("ListCollections", {})
        job.add_page({"Step": i, "Runner": job.runner, "Attempt": job.attempt}, page=i)
        job.progress(i + 1, n)
        if delay:
            time.sleep(delay)


@job_kind(FAIL)
def fail(job: RunningJob) -> None:
    job.progress(0, 1)
    raise InvalidParameterError(f"cannot do {job.parameters.get('What', 'it')}")


@job_kind(CRASH)
def crash(job: RunningJob) -> None:
    raise RuntimeError("secret detail that must stay in the log")
