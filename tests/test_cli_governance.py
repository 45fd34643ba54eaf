"""`regard audit | erase | retention | collections policy` and the CLI's --purpose / --case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from regard.cli import app

from conftest import encode, face_crop

runner = CliRunner()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    monkeypatch.delenv("REGARD_LEDGER_KEY", raising=False)
    return tmp_path / "home"


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def exported() -> list[dict]:
    code, output = run("audit", "export")
    assert code == 0
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_the_cli_is_audited_and_can_be_audited(home, tmp_path, astronaut, cameraman):
    face, other = tmp_path / "eileen.jpg", tmp_path / "ansel.jpg"
    face.write_bytes(encode(face_crop(astronaut)))
    other.write_bytes(encode(cameraman))
    assert run("collections", "create", "c")[0] == 2  # --purpose is required
    assert run("collections", "create", "c", "--purpose", "door access",
               "--threshold-floor", "85", "--retention-days", "30")[0] == 0
    assert run("index", "c", str(face), str(other), "--purpose", "enrolment",
               "--case", "HR-1", "--workers", "1")[0] == 0
    code, output = run("search", "c", str(face), "--purpose", "tailgating check",
                       "--case", "SEC-9", "--json")
    assert code == 0 and json.loads(output)["FaceMatches"]
    code, output = run("search", "c", str(face), "--threshold", "50")
    assert code == 1 and "threshold floor 85" in output
    assert run("detect", str(face), "--purpose", "demo", "--json")[0] == 0

    entries = exported()
    ops = [(e["operation"], e["purpose"], e["case_ref"]) for e in entries]
    assert ops[:5] == [("CreateCollection", "door access", None),
                       ("IndexFaces", "enrolment", "HR-1"), ("IndexFaces", "enrolment", "HR-1"),
                       ("SearchFacesByImage", "tailgating check", "SEC-9"),
                       ("SearchFacesByImage", None, None)]
    assert ops[5] == ("DetectFaces", "demo", None)
    assert all(e["principal"].startswith("local:") for e in entries)

    code, output = run("audit", "who-searched", "--external-image-id", "eileen.jpg", "--json")
    assert code == 0
    assert [json.loads(line)["case_ref"] for line in output.splitlines()] == ["SEC-9"]

    code, output = run("collections", "policy", "c", "--human-review", "--max-matches", "3",
                       "--json")
    assert code == 0 and json.loads(output)["HumanReview"] is True

    code, output = run("erase", "--external-image-id", "eileen.jpg", "--purpose",
                       "erasure request", "--json")
    assert code == 0 and len(json.loads(output)["FaceIds"]) == 1
    assert run("retention", "sweep")[0] == 0
    assert run("audit", "verify")[0] == 0
    head = json.loads(run("audit", "head")[1])
    assert head["signature_ok"] and head["seq"] == len(exported())  # the export's own entry
    assert exported()[-1]["operation"] == "AuditExport"             # follows what it exported

    since = exported()[-1]["time"]
    assert run("audit", "export", "--since", "not a date")[0] == 2
    assert len([ln for ln in run("audit", "export", "--since", since)[1].splitlines()
                if ln.startswith("{")]) >= 1

    db = create_engine(f"sqlite:///{home / 'regard.db'}")
    with db.begin() as conn:
        conn.execute(text("UPDATE audit_log SET purpose = 'routine' WHERE seq = 4"))
    code, output = run("audit", "verify")
    assert code == 1 and "entry 4 was altered" in output
