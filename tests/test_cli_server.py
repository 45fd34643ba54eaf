"""`regard keys` and `regard serve`: keys issued, listed without secrets and revoked; the first
start of a real server process creates an admin key usable from an AWS credentials file."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest
from typer.testing import CliRunner

from regard.cli import app

from conftest import encode
from live_server import free_port

runner = CliRunner()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    return tmp_path / "home"


def test_keys_create_list_revoke(home):
    created = runner.invoke(app, ["keys", "create", "--json", "--name", "ci",
                                  "--scope", "detect", "--scope", "search",
                                  "--collection", "staff", "--purpose", "access control"])
    assert created.exit_code == 0, created.output
    pair = json.loads(created.stdout)
    assert set(pair) == {"AccessKeyId", "SecretAccessKey"} and len(pair["SecretAccessKey"]) == 40

    listed = runner.invoke(app, ["keys", "list", "--json"])
    (key,) = json.loads(listed.stdout)["AccessKeys"]
    assert key["AccessKeyId"] == pair["AccessKeyId"] and key["Revoked"] is None
    assert key["Scopes"] == ["detect", "search"] and key["Collections"] == ["staff"]
    assert key["DefaultPurpose"] == "access control"
    assert pair["SecretAccessKey"] not in listed.stdout

    assert runner.invoke(app, ["keys", "revoke", pair["AccessKeyId"]]).exit_code == 0
    again = runner.invoke(app, ["keys", "revoke", pair["AccessKeyId"]])
    assert again.exit_code == 1 and "already revoked" in again.output
    assert json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout
                      )["AccessKeys"][0]["Revoked"] is not None
    unknown = runner.invoke(app, ["keys", "revoke", "RGKNOSUCHKEY"])
    assert unknown.exit_code == 1 and "ResourceNotFoundException" in unknown.output
    bad_scope = runner.invoke(app, ["keys", "create", "--scope", "everything"])
    assert bad_scope.exit_code == 1 and "Unknown scope" in bad_scope.output

    exported = runner.invoke(app, ["audit", "export"]).stdout
    entries = [json.loads(line) for line in exported.splitlines() if line.startswith("{")]
    changes = [e for e in entries if e["result"].get("Outcome") == "OK"]
    # refused changes are recorded too, like every other refused operation
    assert [(e["operation"], e["result"].get("Error")) for e in entries if e not in changes] == [
        ("RevokeAccessKey", "InvalidParameterException"),
        ("RevokeAccessKey", "ResourceNotFoundException"),
        ("CreateAccessKey", "InvalidParameterException")]
    assert [(e["operation"], e["result"].get("AccessKeyId")) for e in changes] == [
        ("CreateAccessKey", pair["AccessKeyId"]), ("RevokeAccessKey", pair["AccessKeyId"])]
    assert changes[0]["result"]["Scopes"] == ["detect", "search"]
    assert pair["SecretAccessKey"] not in exported


def test_insecure_mode_only_binds_loopback(home):
    refused = runner.invoke(app, ["serve", "--insecure-local", "--host", "0.0.0.0"])
    assert refused.exit_code == 2 and "loopback" in refused.output


def _start(home: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "REGARD_HOME": str(home)}
    env.pop("REGARD_DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "regard.cli", "serve", "--port", str(port)],
                            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"regard serve did not start: {proc.communicate()[0]}")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=20)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]


@pytest.mark.slow
def test_first_start_creates_an_admin_key_once(home, astronaut, monkeypatch):
    port = free_port()
    proc = _start(home, port)
    try:
        creds = home / "admin-credentials"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
        monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
        session = boto3.Session(profile_name="regard", region_name="us-east-1")
        client = session.client("rekognition", endpoint_url=f"http://127.0.0.1:{port}")
        assert len(client.detect_faces(Image={"Bytes": encode(astronaut)})["FaceDetails"]) == 1
    finally:
        first = _stop(proc)
    key_id = creds.read_text().split("aws_access_key_id = ")[1].split()[0]
    secret = creds.read_text().split("aws_secret_access_key = ")[1].split()[0]
    flat = " ".join(first.split())
    assert f"Created the admin access key {key_id}" in flat and str(creds) in flat.replace(" ", "")
    assert secret not in first  # server output ends up in logs

    proc = _start(home, port)
    second = _stop(proc)
    assert "Created the admin access key" not in second
    listed = json.loads(runner.invoke(app, ["keys", "list", "--json"]).stdout)["AccessKeys"]
    assert [k["AccessKeyId"] for k in listed] == [key_id]


def test_a_replica_with_another_ledger_key_refuses_to_start(home, monkeypatch):
    from regard.governance.ledger import Ledger
    from regard.store.catalog import Catalog

    catalog = Catalog()  # the shared database, written by a replica holding another key
    Ledger(catalog, key=bytes(range(32))).append(principal="replica-a", operation="ListCollections")
    catalog.database.close()
    monkeypatch.setenv("REGARD_LEDGER_KEY", "ab" * 32)
    refused = runner.invoke(app, ["serve", "--port", str(free_port())])
    assert refused.exit_code == 1 and "REGARD_LEDGER_KEY" in refused.output
