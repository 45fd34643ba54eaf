"""Per-key request rates: the token bucket itself (with a clock the test moves), and a live server
refusing a key past its rate on both doors while other keys go on, boto3's retries getting a
limited key's requests through, and ``regard keys create --max-tps``."""

from __future__ import annotations

import json

import httpx
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from regard.errors import ProvisionedThroughputExceededError
from regard.governance.ratelimit import RateLimiter

from live_server import LiveServer
from aws_clients import rekognition


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_admits_a_burst_then_the_rate():
    clock = Clock()
    rates = RateLimiter(clock)
    for _ in range(3):
        rates.admit("k", 3.0)  # a burst of up to max_tps
    with pytest.raises(ProvisionedThroughputExceededError) as refused:
        rates.admit("k", 3.0)
    assert refused.value.code == "ProvisionedThroughputExceededException"
    assert "3 request(s) per second" in str(refused.value)
    rates.admit("other", 3.0)  # each key has its own bucket
    clock.now += 0.34  # one request's worth of refill
    rates.admit("k", 3.0)
    with pytest.raises(ProvisionedThroughputExceededError):
        rates.admit("k", 3.0)
    clock.now += 60  # refills up to the burst, not beyond
    for _ in range(3):
        rates.admit("k", 3.0)
    with pytest.raises(ProvisionedThroughputExceededError):
        rates.admit("k", 3.0)
    for _ in range(1000):
        rates.admit("unlimited", None)


def test_a_rate_below_one_per_second_allows_one_request_per_period():
    clock = Clock()
    rates = RateLimiter(clock)
    rates.admit("k", 0.5)
    clock.now += 1.9
    with pytest.raises(ProvisionedThroughputExceededError) as refused:
        rates.admit("k", 0.5)
    assert "again in 0.10 s" in str(refused.value)
    clock.now += 0.11
    rates.admit("k", 0.5)


@pytest.mark.slow
def test_a_live_server_holds_each_key_to_its_rate(tmp_path, engine):
    with LiveServer(tmp_path, engine) as srv:
        slow, slow_secret = srv.server.keys.create("slow", max_tps=0.2)  # one per 5 s
        free, free_secret = srv.server.keys.create("free")
        limited = rekognition(srv.url, slow.access_key_id, slow_secret)

        def outcome() -> str:
            try:
                limited.list_collections()
                return "OK"
            except ClientError as exc:
                assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
                return str(exc.response["Error"]["Code"])

        assert [outcome() for _ in range(4)] == ["OK"] + [
            "ProvisionedThroughputExceededException"] * 3
        unlimited = rekognition(srv.url, free.access_key_id, free_secret)
        for _ in range(10):
            unlimited.list_collections()
        # the native REST door answers the same key with 429 and Retry-After
        answer = httpx.get(srv.url + "/v1/collections",
                           headers={"X-Api-Key": f"{slow.access_key_id}:{slow_secret}"})
        assert answer.status_code == 429 and answer.headers["Retry-After"]
        assert answer.json()["__type"] == "ProvisionedThroughputExceededException"
        # the SDK's standard retries back off and get every request of a limited key through
        steady, steady_secret = srv.server.keys.create("steady", max_tps=5)
        patient = rekognition(srv.url, steady.access_key_id, steady_secret,
                              retries={"max_attempts": 10, "mode": "standard"})
        for _ in range(12):
            assert patient.list_collections()["CollectionIds"] == []
        metrics = httpx.get(srv.url + "/metrics").text
        assert 'outcome="ProvisionedThroughputExceededException"' in metrics


def test_keys_create_takes_a_rate(tmp_path, monkeypatch):
    from regard.cli import app

    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    runner = CliRunner()
    made = runner.invoke(app, ["keys", "create", "--scope", "search", "--max-tps", "2.5",
                               "--json"])
    assert made.exit_code == 0, made.output
    key_id = json.loads(made.stdout)["AccessKeyId"]
    listed = json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout)["AccessKeys"]
    assert [(k["AccessKeyId"], k["MaxTps"]) for k in listed] == [(key_id, 2.5)]
    refused = runner.invoke(app, ["keys", "create", "--max-tps", "0"])
    assert refused.exit_code == 1 and "max_tps" in refused.output
