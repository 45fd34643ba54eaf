"""Per-key request rates: a token bucket for each access key that has ``max_tps``.

Why keys have rates: a key that may search can otherwise identify a whole archive or crowd as fast
as the hardware allows; a rate makes bulk identification with a key issued for, say, a door or a
newsroom desk slow and visible, and keeps one client from starving the others. A key with
``max_tps`` R may make bursts of up to max(1, R) requests and R per second on average; beyond that
the request is refused with Rekognition's ``ProvisionedThroughputExceededException``, which the AWS
SDKs retry with backoff. Refusals are counted in the server's metrics, not written to the audit
ledger (a flood of refused requests must not become a flood of ledger writes).

The buckets live in the serving process: with several replicas, each enforces the rate on its own.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from regard.errors import ProvisionedThroughputExceededError


class RateLimiter:
    """Token buckets keyed by access key id; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def admit(self, key_id: str, max_tps: float | None) -> None:
        """Take one request from the key's bucket, or refuse it."""
        if max_tps is None:
            return
        burst = max(1.0, max_tps)
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key_id, (burst, now))
            tokens = min(burst, tokens + (now - last) * max_tps)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                wait = (1.0 - tokens) / max_tps
                raise ProvisionedThroughputExceededError(
                    f"The access key {key_id} may make {max_tps:g} request(s) per second; "
                    f"retry with backoff (a request is admitted again in {wait:.2f} s)")
            self._buckets[key_id] = (tokens - 1.0, now)
