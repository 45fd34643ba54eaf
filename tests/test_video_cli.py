"""`regard video detect | search`: GetFaceDetection / GetFaceSearch bodies with --json, batches
that resume with --out-dir, clear errors for bad files, and the search in the audit ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import encode
from regard.cli import app
from video_clips import leave_and_return, make_clip

runner = CliRunner()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    return tmp_path / "home"


@pytest.fixture()
def clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "walk.mp4", leave_and_return(), seconds=5.0).path


def test_video_detect_json(home: Path, clip: Path) -> None:
    result = runner.invoke(app, ["video", "detect", str(clip), "--json", "--sample-ms", "500"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["JobStatus"] == "SUCCEEDED"
    assert body["VideoMetadata"]["Codec"] == "h264"
    stamps = sorted({f["Timestamp"] for f in body["Faces"]})
    assert stamps[:3] == [0, 520, 1000]  # every 500 ms: the first frame at or after each


def test_video_search_finds_the_enrolled_person(home: Path, clip: Path, tmp_path: Path,
                                                astronaut) -> None:
    photo = tmp_path / "eileen.jpg"
    photo.write_bytes(encode(astronaut))
    assert runner.invoke(app, ["collections", "create", "staff", "--purpose",
                               "testing"]).exit_code == 0
    indexed = runner.invoke(app, ["index", "staff", str(photo), "--workers", "1"])
    assert indexed.exit_code == 0, indexed.output
    result = runner.invoke(app, ["video", "search", str(clip), "-c", "staff", "--json"])
    assert result.exit_code == 0, result.output
    persons = json.loads(result.stdout)["Persons"]
    matched = {p["Person"]["Index"] for p in persons if p["FaceMatches"]}
    assert {p["Person"]["Index"] for p in persons} == {0, 1} and len(matched) == 1
    text = runner.invoke(app, ["video", "search", str(clip), "-c", "staff"])
    assert "eileen" in text.stdout and "no match" in text.stdout
    audit = runner.invoke(app, ["audit", "export"])
    assert audit.exit_code == 0, audit.output
    entries = [json.loads(line) for line in audit.stdout.splitlines() if line.strip()]
    assert sum(e["operation"] == "VideoFaceSearch" for e in entries) == 2
    floor = runner.invoke(app, ["video", "search", str(clip), "-c", "missing"])
    assert floor.exit_code == 1 and "ResourceNotFoundException" in floor.output


def test_batch_resumes_and_bad_files_fail_alone(home: Path, clip: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    out = tmp_path / "results"
    result = runner.invoke(app, ["video", "detect", str(clip), str(bad), "--out-dir", str(out)])
    assert result.exit_code == 1
    assert "bad.mp4" in result.output and "InvalidParameterException" in result.output
    done = out / "walk.mp4.json"
    assert json.loads(done.read_text())["Faces"]
    stamp = done.stat().st_mtime_ns
    again = runner.invoke(app, ["video", "detect", str(clip), "--out-dir", str(out)])
    assert again.exit_code == 0 and "done already" in " ".join(again.output.split())
    assert done.stat().st_mtime_ns == stamp


def test_redact_is_audited(home: Path, clip: Path, tmp_path: Path, astronaut) -> None:
    photo = tmp_path / "eileen.jpg"
    photo.write_bytes(encode(astronaut))
    assert runner.invoke(app, ["collections", "create", "consenting", "--purpose",
                               "testing"]).exit_code == 0
    assert runner.invoke(app, ["index", "consenting", str(photo), "--workers",
                               "1"]).exit_code == 0
    image = runner.invoke(app, ["redact", str(photo), str(tmp_path / "out.jpg")])
    assert image.exit_code == 0, image.output
    video = runner.invoke(app, ["redact", str(clip), str(tmp_path / "out.mp4"),
                                "--keep-collection", "consenting", "--method", "box"])
    assert video.exit_code == 0, video.output
    audit = runner.invoke(app, ["audit", "export"])
    entries = [json.loads(line) for line in audit.stdout.splitlines() if line.strip()]
    ops = [e["operation"] for e in entries]
    assert "RedactFaces" in ops and "StartFaceRedaction" in ops
    search = [e for e in entries if e["operation"] == "VideoFaceSearch"]
    assert len(search) == 1 and len(search[0]["result"]["FaceIds"]) == 1


def test_video_search_refuses_a_threshold_below_the_floor_before_analysing(
        home: Path, clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner.invoke(app, ["collections", "create", "strict", "--purpose", "testing",
                               "--threshold-floor", "95"]).exit_code == 0

    def never(*args: object, **kw: object) -> None:
        raise AssertionError("the video was analysed")

    monkeypatch.setattr("regard.video.files.analyse", never)
    result = runner.invoke(app, ["video", "search", str(clip), "-c", "strict",
                                 "--threshold", "90"])
    assert result.exit_code == 1
    assert "InvalidParameterException" in result.output and "floor" in result.output
