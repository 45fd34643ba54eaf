"""The server's periodic tasks: a transient failure (the database down) makes the retention
sweeper retry within a minute and the index refresh skip a round, without stopping either."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from regard.api import app as app_module
from regard.errors import DatabaseUnavailableError


class Pool:
    """Fails the first ``failures`` calls, then runs them."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    async def run(self, fn, *args):
        self.calls += 1
        if self.calls <= self.failures:
            raise DatabaseUnavailableError("down")
        return fn(*args)


def run_rounds(task, server, rounds: int, monkeypatch) -> list[float]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) >= rounds:
            raise asyncio.CancelledError

    monkeypatch.setattr(app_module.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(task(server))
    return waits


def test_the_retention_sweeper_retries_soon_after_an_outage(monkeypatch):
    swept = []
    server = SimpleNamespace(
        settings=SimpleNamespace(retention_sweep_seconds=3600.0),
        light_pool=Pool(failures=2),
        service=SimpleNamespace(sweep_retention=lambda caller: swept.append(caller)))
    waits = run_rounds(app_module._sweep_forever, server, 3, monkeypatch)
    assert waits == [60.0, 60.0, 3600.0] and len(swept) == 1


def test_the_index_refresh_goes_on_after_an_outage(monkeypatch):
    refreshed = []
    server = SimpleNamespace(
        settings=SimpleNamespace(index_refresh_seconds=60.0),
        light_pool=Pool(failures=1),
        service=SimpleNamespace(store=SimpleNamespace(
            indexes=SimpleNamespace(refresh=lambda: refreshed.append(1)))))
    waits = run_rounds(app_module._refresh_indexes_forever, server, 3, monkeypatch)
    assert waits == [60.0, 60.0, 60.0] and refreshed == [1]
