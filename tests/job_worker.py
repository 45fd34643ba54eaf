"""A job runner in its own process, for the job tests that kill runners or run two of them.

``python job_worker.py DB_URL OWNER [LEASE_SECONDS [MAX_ATTEMPTS [WORKERS]]]`` opens the store
at ``DB_URL``, registers the tests' job kinds (``job_kinds``), starts a ``JobRunner`` named
``OWNER`` and prints ``ready`` once it runs; it runs until killed (SIGTERM: a clean stop that
gives unfinished jobs back).
"""

from __future__ import annotations

import signal
import sys
import threading

import job_kinds  # noqa: F401  (registers the kinds)

from regard.governance.gatekeeper import Gatekeeper
from regard.governance.ledger import Ledger
from regard.jobs import JobRunner
from regard.service import RegardService
from regard.store import Store

KEY = b"j" * 32  # the ledger key every process of a test shares


def service_for(url: str) -> RegardService:
    store = Store(url, checkpoint_dir=False)
    return RegardService(None, store, gatekeeper=Gatekeeper(Ledger(store.database, key=KEY)))


def main(url: str, owner: str, lease: float = 1.0, max_attempts: int = 3,
         workers: int = 2) -> None:
    service = service_for(url)
    runner = JobRunner(service, service.store, owner=owner, workers=workers,
                       lease_seconds=lease, poll_seconds=0.1, max_attempts=max_attempts)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    runner.start()
    print("ready", flush=True)
    done.wait()
    runner.stop(timeout=10)
    service.store.close()


if __name__ == "__main__":
    url, owner, *rest = sys.argv[1:]
    main(url, owner, lease=float(rest[0]) if rest else 1.0,
         max_attempts=int(rest[1]) if len(rest) > 1 else 3,
         workers=int(rest[2]) if len(rest) > 2 else 2)
