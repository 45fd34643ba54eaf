"""The console's stored-video screens on a real server over HTTP: uploading a video starts a
face detection, face search or redaction job; a job's page shows its progress, then the faces on
a timeline, the people a search matched, or the redaction's report and the redacted video to
download; scopes and ownership are the operations' own; user data is escaped; no object store
gives a clear error. The clips are made from scikit-image's pictures (``video_clips``)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import av
import httpx
import pytest

from aws_clients import rekognition
from conftest import encode
from console_client import ConsoleClient
from live_server import LiveServer
from regard.api.server import ServerSettings
from regard.console.pages.video import (
    BUCKET,
    listed_job,
    safe_name,
    search_view,
    timeline,
)
from regard.object_store import LocalObjectStore
from video_clips import leave_and_return, make_clip

JOB_LINK = re.compile(r"^/console/video/([0-9a-f-]{36})\?kind=(\w+)$")
STATUS = re.compile(r"<dt>Status</dt><dd>([A-Z_]+)</dd>")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Two seconds, 480x270 at 10 frames a second: the astronaut at the left, the cameraman
    at the right."""
    path = tmp_path_factory.mktemp("clip") / "walk.mp4"
    make_clip(path, leave_and_return(), seconds=2.0, fps=10, size=(480, 270), audio=False)
    return path.read_bytes()


@pytest.fixture(scope="module")
def objects_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("s3")  # no regard-console folder: the console makes it


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, engine: Any,
         objects_root: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("home"), engine, ServerSettings(job_workers=2),
                    object_store=LocalObjectStore(objects_root)) as server:
        yield server


@pytest.fixture(scope="module")
def admin(live: LiveServer) -> Iterator[ConsoleClient]:
    key, secret = live.server.keys.create("console admin")
    with ConsoleClient(live.url, key.access_key_id, secret) as client:
        yield client


def _client(live: LiveServer, *scopes: str) -> ConsoleClient:
    key, secret = live.server.keys.create("console " + "+".join(scopes), scopes=scopes)
    return ConsoleClient(live.url, key.access_key_id, secret)


def start(client: ConsoleClient, clip: bytes, kind: str, filename: str = "walk.mp4",
          **fields: str) -> tuple[str, str]:
    """POST the form; returns (job id, job page path)."""
    response = client.post("/console/video", data={"kind": kind, **fields},
                           files={"video": (filename, clip, "video/mp4")})
    assert response.status_code == 303, response.text[-3000:]
    found = JOB_LINK.match(response.headers["location"])
    assert found, response.headers["location"]
    assert found.group(2) == kind
    return found.group(1), response.headers["location"]


def wait_done(client: ConsoleClient, path: str, timeout: float = 120.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        page = client.get(path)
        assert page.status_code == 200, page.text[-2000:]
        status = STATUS.search(page.text)
        assert status, page.text[-2000:]
        if status.group(1) not in ("IN_PROGRESS", "QUEUED"):
            return page
        assert 'data-refresh="3"' in page.text and "<progress" in page.text
        assert time.monotonic() < deadline, f"{path} still in progress"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def staff(live: LiveServer, astronaut: Any) -> str:
    key, secret = live.server.keys.create("indexer")
    client = rekognition(live.url, key.access_key_id, secret)
    client.create_collection(CollectionId="staff", Tags={"regard:purpose": "console tests"})
    client.index_faces(CollectionId="staff", Image={"Bytes": encode(astronaut)},
                       ExternalImageId="eileen")
    return "staff"


@pytest.fixture(scope="module")
def redaction(live: LiveServer, clip: bytes) -> Iterator[tuple[ConsoleClient, str, str]]:
    """A redaction job of a key with the detect scope only, finished."""
    with _client(live, "detect") as owner:
        job, path = start(owner, clip, "redaction", method="mosaic", purpose="publish")
        page = wait_done(owner, path)
        assert "SUCCEEDED" in page.text, page.text[-3000:]
        yield owner, job, path


# -- the pieces ---------------------------------------------------------------------------------
def test_safe_names() -> None:
    assert safe_name("holiday clip (1).MP4") == "holiday_clip_1.MP4"
    assert safe_name("..\\..\\etc/passwd") == "passwd"
    assert safe_name("<script>alert(1)</script>.mp4") == "script.mp4"
    assert safe_name("<>.mp4") == "video.mp4"
    assert safe_name("") == "video.mp4"
    assert safe_name("réunion.webm") == "r_union.webm"


def test_listed_progress_and_timeline() -> None:
    job = listed_job({"JobId": "j", "API": "StartFaceSearch", "JobStatus": "IN_PROGRESS",
                      "Queued": False, "Owner": "k", "Created": "2024-05-01T10:00:00+00:00",
                      "Video": {"S3Object": {"Bucket": "b", "Name": "uploads/x/a.mp4"}},
                      "Progress": {"done": 1500, "total": 6000}})
    assert job["kind"] == "search" and job["video_name"] == "a.mp4"
    assert job["progress"]["percent"] == 25 and job["created"] == "2024-05-01 10:00:00 UTC"
    chart = timeline(2000, [("Faces", [(0, "seg"), (200, "seg"), (1800, "seg")])], "s")
    xs = [x for x, _, _ in chart.lanes[0].marks]
    assert xs[0] == chart.left and xs[1] < xs[2] < chart.right
    assert [label for _, label in chart.ticks][:3] == ["0 s", "0.5 s", "1 s"]
    view = search_view({"VideoMetadata": {"DurationMillis": 1000}, "Persons": [
        {"Timestamp": 0, "Person": {"Index": 1}, "FaceMatches": []},
        {"Timestamp": 200, "Person": {"Index": 0}, "FaceMatches": [
            {"Similarity": 91.0, "Face": {"FaceId": "f", "ExternalImageId": "<b>x</b>"}}]}]})
    assert [p["index"] for p in view["persons"]] == [0, 1]
    assert view["persons"][0]["name"] == "<b>x</b>" and view["matched"] == 1


# -- jobs -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_detection_job_shows_progress_then_faces(tmp_path: Path, engine: Any,
                                                  clip: bytes) -> None:
    """On a server whose job runner has not started, the job waits (queued, the page refreshes
    itself); once the runner runs it, the faces are on a timeline and in a table."""
    root = tmp_path / "s3"
    root.mkdir()
    with LiveServer(tmp_path, engine, ServerSettings(job_workers=0),
                    object_store=LocalObjectStore(root)) as live:
        key, secret = live.server.keys.create("admin")
        try:
            with ConsoleClient(live.url, key.access_key_id, secret) as client:
                job, path = start(client, clip, "detection", job_tag="walk-1",
                                  purpose="console test", case="CASE-7")
                stored = list((root / BUCKET / "uploads").glob("*/walk.mp4"))
                assert len(stored) == 1 and stored[0].read_bytes() == clip
                page = client.get(path)
                assert page.status_code == 200
                assert STATUS.search(page.text).group(1) == "QUEUED"
                assert 'data-refresh="3"' in page.text and "<progress" in page.text
                assert "walk-1" in page.text and "walk.mp4" in page.text
                listing = client.get("/console/video")
                assert listing.status_code == 200 and job in listing.text
                assert "Face detection" in listing.text and "waiting for a worker" in listing.text

                live.server.jobs.start()
                page = wait_done(client, path)
                assert STATUS.search(page.text).group(1) == "SUCCEEDED", page.text[-3000:]
                # the uploaded video goes when its job ends (the results stay)
                deadline = time.monotonic() + 10
                while stored[0].exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert not stored[0].exists() and not stored[0].parent.exists()
                assert 'data-refresh' not in page.text
                assert '<svg class="timeline"' in page.text and 'role="img"' in page.text
                assert re.search(r'aria-label="Timeline of a 2\.0 s video: \d+ faces detected',
                                 page.text)
                assert page.text.count('<rect class="seg"') >= 5
                rows = re.findall(r'<th scope="row">(\d+\.\d) s</th>', page.text)
                assert len(rows) >= 10 and rows == sorted(rows, key=float)
                assert "<caption>Faces detected" in page.text
                listing = client.get("/console/video")
                assert "SUCCEEDED" in listing.text and "<span>done</span>" in listing.text
        finally:
            live.server.jobs.stop(timeout=10)
        entries = [e for e in live.server.service.gate.ledger.entries(
            operations=["StartFaceDetection"])]
        assert [(e.purpose, e.case_ref) for e in entries] == [("console test", "CASE-7")]


@pytest.mark.slow
def test_face_search_shows_the_match(live: LiveServer, admin: ConsoleClient, clip: bytes,
                                     staff: str) -> None:
    page = admin.get("/console/video")
    assert '<option value="staff"' in page.text  # the collections to choose from
    job, path = start(admin, clip, "search", collection=staff, threshold="80",
                      purpose="find Eileen")
    page = wait_done(admin, path)
    assert STATUS.search(page.text).group(1) == "SUCCEEDED", page.text[-3000:]
    assert "<caption>People followed" in page.text
    assert re.search(r"<td class=\"wrap\">eileen</td>\s*<td class=\"mono\">[0-9a-f-]{36}</td>",
                     page.text)
    assert '<rect class="seg match"' in page.text and ": eileen</text>" in page.text
    assert "no match" in page.text  # the cameraman is not in the collection
    # without the kind in the link, the page finds it
    bare = admin.get(f"/console/video/{job}")
    assert bare.status_code == 200 and "Face search job" in bare.text


@pytest.mark.slow
def test_redaction_downloads_a_video(live: LiveServer, redaction: Any, tmp_path: Path) -> None:
    owner, job, path = redaction
    page = owner.get(path)
    assert "Redaction report" in page.text and "Frames with a face hidden" in page.text
    assert f'href="/console/video/{job}/redacted"' in page.text
    download = owner.get(f"/console/video/{job}/redacted")
    assert download.status_code == 200
    assert download.headers["content-type"] == "video/mp4"
    assert download.headers["content-disposition"] == \
        'attachment; filename="redacted-walk.mp4"'
    assert download.headers["cache-control"] == "no-store"
    assert int(download.headers["content-length"]) == len(download.content) > 1000
    target = tmp_path / "redacted.mp4"
    target.write_bytes(download.content)
    with av.open(str(target)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 20


@pytest.mark.slow
def test_other_keys_cannot_see_or_download(live: LiveServer, redaction: Any,
                                           admin: ConsoleClient) -> None:
    _, job, path = redaction
    with _client(live, "detect", "search") as other:
        for target in (path, f"/console/video/{job}", f"/console/video/{job}/redacted"):
            refused = other.get(target)
            assert refused.status_code == 404, (target, refused.status_code)
            assert "ResourceNotFoundException" in refused.text
        assert job not in other.get("/console/video").text
    assert admin.get(path).status_code == 200  # an administrator sees every job
    assert job in admin.get("/console/video").text


def test_scopes_are_the_operations(live: LiveServer, clip: bytes, objects_root: Path) -> None:
    before = sorted((objects_root / BUCKET).rglob("*")) if (objects_root / BUCKET).exists() \
        else []
    with _client(live, "collections:read") as reader:
        page = reader.get("/console/video")
        assert page.status_code == 403 and "AccessDeniedException" in page.text
        refused = reader.post("/console/video", data={"kind": "detection"},
                              files={"video": ("a.mp4", clip, "video/mp4")})
        assert refused.status_code == 403 and "AccessDeniedException" in refused.text
    with _client(live, "search") as searcher:  # may start a face search, not list jobs
        page = searcher.get("/console/video")
        assert page.status_code == 403 and "AccessDeniedException" in page.text
        assert 'value="search"' in page.text and 'value="detection"' not in page.text
        refused = searcher.post("/console/video", data={"kind": "redaction"},
                                files={"video": ("a.mp4", clip, "video/mp4")})
        assert refused.status_code == 403 and "AccessDeniedException" in refused.text
    after = sorted((objects_root / BUCKET).rglob("*")) if (objects_root / BUCKET).exists() \
        else []
    assert after == before  # a refused key stored nothing
    refusals = [e for e in live.server.service.gate.ledger.entries(
        operations=["StartFaceDetection", "StartFaceRedaction"])
        if e.result.get("Error") == "AccessDeniedException"]
    assert len(refusals) >= 2  # the refusals are in the ledger


def test_user_data_is_escaped(live: LiveServer, admin: ConsoleClient, clip: bytes,
                              objects_root: Path) -> None:
    _, path = start(admin, clip, "detection", filename="<script>alert(1)</script>.mp4",
                      job_tag="esc-1")
    for page in (admin.get(path), admin.get("/console/video")):
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "script.mp4" in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
    # Rekognition's model refuses a JobTag with markup; the message quoting it is escaped,
    # and nothing was uploaded for it
    folder = objects_root / BUCKET / "uploads"
    uploads = set(folder.iterdir()) if folder.exists() else set()
    tag = '<b>tag</b><script>alert(2)</script>'
    page = admin.post("/console/video", data={"kind": "detection", "job_tag": tag},
                      files={"video": ("a.mp4", clip, "video/mp4")})
    assert page.status_code == 400 and "ValidationException" in page.text
    assert "<b>tag</b>" not in page.text and "<script>alert" not in page.text
    assert "&lt;b&gt;tag&lt;/b&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in page.text
    # (a job ending meanwhile removes its own upload: nothing new is the point)
    assert (set(folder.iterdir()) if folder.exists() else set()) <= uploads


def test_results_are_escaped(live: LiveServer) -> None:
    """What the models would refuse but a stored result might hold (an ExternalImageId, a
    JobTag, a status message) is text in every page, the timeline's SVG included."""
    from regard.console.pages.video import KINDS, redaction_view
    from regard.console.web import Console

    console = Console(live.server)
    evil = '"><script>alert(3)</script>'
    body = {"JobStatus": "SUCCEEDED", "JobTag": evil, "VideoMetadata": {"DurationMillis": 1000},
            "Video": {"S3Object": {"Bucket": "b", "Name": f"u/{evil}.mp4"}},
            "Persons": [{"Timestamp": 0, "Person": {"Index": 0}, "FaceMatches": [
                {"Similarity": 99.0, "Face": {"FaceId": evil, "ExternalImageId": evil}}]}]}
    common: dict[str, Any] = {"refresh": 3,
        "request": None, "visitor": None, "csrf": "", "path": "/console/video/j", "job_id": "j",
        "body": body, "listed": None, "video_name": evil, "video_ref": evil, "meta": {},
        "duration": None, "job_tag": evil, "message": evil, "next_token": None,
        "finished": None, "here": "/console/video/j",
        "page_href": "/console/video/j?kind=search", "paged": False}
    template = console.templates.get_template("video_job.html")
    pages = [template.render(kind=KINDS["search"], job_status="SUCCEEDED",
                             view=search_view(body), **common),
             template.render(kind=KINDS["detection"], job_status="FAILED", view={}, **common),
             template.render(kind=KINDS["redaction"], job_status="SUCCEEDED", view=redaction_view(
                 {"Report": {"Codec": evil}, "Output": {"S3Object": {"Bucket": "b",
                                                                     "Name": evil}}}),
                             **common)]
    listed = listed_job({"JobId": "j", "API": "StartFaceSearch", "JobStatus": "IN_PROGRESS",
                         "Queued": False, "Owner": evil, "Created": evil,
                         "Progress": {"done": 3000, "total": 4000}})
    pages.append(template.render(kind=KINDS["search"], job_status="IN_PROGRESS", view={},
                                 **{**common, "listed": listed}))
    assert '<progress id="job-progress" max="4000" value="3000"' in pages[-1]
    assert "75% (3.0 s of 4.0 s of video analysed)" in pages[-1]
    assert 'data-refresh="3"' in pages[-1]
    for page in pages:
        assert "<script>alert(3)" not in page
        assert "&#34;&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in page
    assert 'aria-label="Timeline of a 1.0 s video: 1 person tracked, 1 matched' in pages[0]


@pytest.mark.slow
def test_pages_of_jobs_and_of_results(live: LiveServer, admin: ConsoleClient, clip: bytes,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from regard.console.pages import video

    job, path = start(admin, clip, "detection")
    first = wait_done(admin, path)
    faces = re.findall(r'<th scope="row">(\d+\.\d) s</th>', first.text)
    assert len(faces) > 12
    monkeypatch.setattr(video, "RESULTS_PAGE", 5)
    page = admin.get(path)
    assert len(re.findall(r'<th scope="row">(\d+\.\d) s</th>', page.text)) == 5
    link = re.search(r'<a href="(/console/video/[^"]+&amp;next=[^"]+)">More faces', page.text)
    assert link, page.text[-3000:]
    second = admin.get(link.group(1).replace("&amp;", "&"))
    assert second.status_code == 200 and "a later page of the results" in second.text
    assert re.findall(r'<th scope="row">(\d+\.\d) s</th>', second.text) == faces[5:10]

    monkeypatch.setattr(video, "LIST_PAGE", 1)
    listing = admin.get("/console/video")
    assert job in listing.text  # the newest first
    older = re.search(r'<a href="(/console/video\?next=[^"]+)">Older jobs', listing.text)
    assert older
    later = admin.get(older.group(1))
    assert later.status_code == 200 and job not in later.text
    assert "a later page" in later.text


def test_bad_forms_show_the_error(live: LiveServer, admin: ConsoleClient, clip: bytes) -> None:
    page = admin.post("/console/video", data={"kind": "detection", "job_tag": "kept"})
    assert page.status_code == 400 and "Choose a video file" in page.text
    assert 'value="kept"' in page.text  # the form keeps what was typed
    page = admin.post("/console/video", data={"kind": "search", "collection": "nowhere"},
                      files={"video": ("a.mp4", clip, "video/mp4")})
    assert page.status_code == 404 and "ResourceNotFoundException" in page.text
    page = admin.post("/console/video", data={"kind": "search", "collection": "x",
                                              "threshold": "lots"},
                      files={"video": ("a.mp4", clip, "video/mp4")})
    assert page.status_code == 400 and "threshold" in page.text
    missing = admin.get("/console/video/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert admin.get("/console/video", params={"next": "nonsense"}).status_code in (200, 400)


def test_no_object_store_says_how_to_configure_one(tmp_path: Path, engine: Any,
                                                   clip: bytes) -> None:
    with LiveServer(tmp_path, engine, ServerSettings(job_workers=0)) as live:
        key, secret = live.server.keys.create("admin")
        with ConsoleClient(live.url, key.access_key_id, secret) as client:
            page = client.get("/console/video")
            assert page.status_code == 200 and "REGARD_S3_ROOT" in page.text
            refused = client.post("/console/video", data={"kind": "detection"},
                                  files={"video": ("a.mp4", clip, "video/mp4")})
            assert refused.status_code == 400
            assert "InvalidS3ObjectException" in refused.text
            assert "no object store" in refused.text and "REGARD_S3_ROOT" in refused.text


def test_upload_limit(live: LiveServer, admin: ConsoleClient, clip: bytes,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    from regard.console.pages import video

    limit = video.upload_bytes(live.server)
    assert limit == video.MAX_UPLOAD_BYTES == 2 * 1024 ** 3  # streamed: not held in memory
    assert f"Up to {limit // 1024 ** 2} MiB" in admin.get("/console/video").text
    # larger than any request body the server holds in memory: streamed to a temporary file
    big = b"\0" * (3 * live.server.max_body_bytes)
    accepted = admin.post("/console/video", data={"kind": "detection"},
                          files={"video": ("big.mp4", big, "video/mp4")})
    assert accepted.status_code == 303, accepted.text[:500]
    assert live.server.bodies.held == 0
    monkeypatch.setattr(video, "MAX_UPLOAD_BYTES", 10_000)
    refused = admin.post("/console/video", data={"kind": "detection"},
                         files={"video": ("a.mp4", clip, "video/mp4")})
    assert refused.status_code == 413 and "ImageTooLargeException" in refused.text
    # the same body sent chunked (no Content-Length): counted as it streams
    encoded = httpx.Request("POST", live.url, data={"kind": "detection",
                                                    "csrf_token": admin.csrf},
                            files={"video": ("a.mp4", clip, "video/mp4")})
    body = encoded.read()
    chunked = admin.http.post("/console/video", content=iter([body[:5000], body[5000:]]),
                              headers={"Content-Type": encoded.headers["Content-Type"],
                                       "Origin": live.url})
    assert chunked.status_code == 413 and "ImageTooLargeException" in chunked.text
    assert live.server.bodies.held == 0


def test_a_file_that_is_no_video_fails_with_its_reason(live: LiveServer,
                                                       admin: ConsoleClient) -> None:
    _, path = start(admin, b"<html>not a video</html>" * 100, "detection",
                      filename="notes.mp4")
    page = wait_done(admin, path)
    assert STATUS.search(page.text).group(1) == "FAILED"
    assert '<div class="alert bad" role="alert"><p><strong>The job failed</strong>: ' in page.text
    assert "<html>" not in page.text.split("<main", 1)[1]


@pytest.mark.slow
def test_in_a_browser(live: LiveServer, clip: bytes, tmp_path: Path) -> None:
    """The real form in Chromium: the upload starts a job, the job page reloads itself until
    the faces show; no Content-Security-Policy violation, and axe-core finds no problem."""
    import os
    import shutil

    chromium = os.environ.get("REGARD_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium to drive (apt install chromium, or set REGARD_CHROMIUM)")
    playwright = pytest.importorskip("playwright.sync_api")
    from axe_playwright_python.sync_playwright import Axe

    def axe(page: Any) -> list[str]:
        found = Axe().run(page, options={"runOnly": {"type": "tag", "values": [
            "wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}})
        return [f"{page.url}: {v['id']}: {v['help']}" for v in found.response["violations"]]

    video = tmp_path / "walk.mp4"
    video.write_bytes(clip)
    key, secret = live.server.keys.create("browser")
    problems: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_context(base_url=live.url).new_page()
            page.on("console", lambda m: problems.append(m.text)
                    if "Content Security Policy" in m.text or m.type == "error" else None)
            page.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))
            page.goto("/console/sign-in")
            page.get_by_label("Access key id").fill(key.access_key_id)
            page.get_by_label("Secret").fill(secret)
            page.get_by_role("button", name="Sign in").click()
            page.goto("/console/video")
            problems += axe(page)
            page.get_by_label("Video file").set_input_files(str(video))
            page.get_by_label("Face detection", exact=True).check()
            page.get_by_label("Job tag").fill("browser-1")
            page.get_by_label("Purpose").fill("browser test")
            page.get_by_role("button", name="Upload and start").click()
            page.wait_for_url(re.compile(r"/console/video/[0-9a-f-]{36}\?kind=detection"))
            # console.js reloads the page while the job runs
            page.get_by_role("heading", name="Faces").wait_for(timeout=60_000)
            assert page.get_by_role("img", name=re.compile("Timeline of a 2.0 s video")) \
                .is_visible()
            problems += axe(page)
        finally:
            browser.close()
    assert problems == []


def test_a_running_job_page_reloads_less_often_as_the_job_ages() -> None:
    """Each reload is two audited reads: a long job must not flood the ledger."""
    from datetime import datetime, timedelta, timezone

    from regard.console.pages.video import refresh_seconds

    def aged(seconds: float) -> dict[str, Any]:
        created = datetime.now(timezone.utc) - timedelta(seconds=seconds)
        return {"Created": created.isoformat()}

    assert refresh_seconds(None) == 3 and refresh_seconds({"Created": "nonsense"}) == 3
    assert refresh_seconds(aged(5)) == 3
    assert refresh_seconds(aged(150)) == 15
    assert refresh_seconds(aged(3600)) == 30
