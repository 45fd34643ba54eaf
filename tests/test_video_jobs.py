"""Stored-video jobs through boto3 and the REST API, on a real server on loopback: StartFaceDetection
/ GetFaceDetection, StartFaceSearch / GetFaceSearch, their errors, idempotency, paging, the
notification webhook, erasure of stored results, scopes, and a job surviving a server restart.
The clips are made by the tests from scikit-image's pictures (``video_clips``)."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from aws_clients import error_code, rekognition
from conftest import encode
from live_server import LiveServer
from regard.api.server import ServerSettings
from regard.object_store import LocalObjectStore
from video_clips import leave_and_return, make_clip

pytestmark = pytest.mark.slow
BUCKET = "videos"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:regard-jobs"
ROLE = "arn:aws:iam::123456789012:role/regard"


def _video(name: str) -> dict[str, Any]:
    return {"S3Object": {"Bucket": BUCKET, "Name": name}}


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("s3")
    folder = root / BUCKET
    folder.mkdir()
    clip = make_clip(folder / "walk.mp4", leave_and_return(), seconds=5.0)
    data = clip.path.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "corrupt.mp4").write_bytes(bytes(range(256)) * 200)  # no container FFmpeg knows
    (folder / "empty.mp4").write_bytes(b"")
    with open(folder / "huge.mp4", "wb") as fh:  # sparse: 10 GB + 1 byte, no disk used
        fh.truncate(10 * 1024 ** 3 + 1)
    return root


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                              "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def webhook() -> Any:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, engine: Any, bucket: Path,
         webhook: str) -> Any:
    os.environ["REGARD_SNS_WEBHOOKS"] = f"{TOPIC}={webhook}"
    home = tmp_path_factory.mktemp("home")
    try:
        with LiveServer(home, engine, ServerSettings(job_workers=2),
                        object_store=LocalObjectStore(bucket)) as server:
            yield server
    finally:
        os.environ.pop("REGARD_SNS_WEBHOOKS", None)


@pytest.fixture(scope="module")
def client(live: Any) -> Any:
    key, secret = live.server.keys.create("video tests")
    return rekognition(live.url, key.access_key_id, secret)


@pytest.fixture(scope="module")
def staff(client: Any, astronaut: Any) -> str:
    client.create_collection(CollectionId="staff", Tags={"regard:purpose": "video tests"})
    face = client.index_faces(CollectionId="staff", Image={"Bytes": encode(astronaut)},
                              ExternalImageId="eileen")["FaceRecords"][0]["Face"]["FaceId"]
    return face


def _wait(get: Any, job_id: str, timeout: float = 120.0, **kw: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = get(JobId=job_id, **kw)
        if body["JobStatus"] != "IN_PROGRESS":
            return body
        assert time.monotonic() < deadline, f"job {job_id} still IN_PROGRESS"
        time.sleep(0.2)


def test_face_detection_job(client: Any) -> None:
    job = client.start_face_detection(Video=_video("walk.mp4"), JobTag="walk-1")["JobId"]
    first = client.get_face_detection(JobId=job)
    assert first["JobStatus"] in ("IN_PROGRESS", "SUCCEEDED")
    body = _wait(client.get_face_detection, job)
    assert body["JobStatus"] == "SUCCEEDED", body.get("StatusMessage")
    assert body["JobId"] == job and body["JobTag"] == "walk-1"
    assert body["Video"] == _video("walk.mp4")
    meta = body["VideoMetadata"]
    assert meta["Codec"] == "h264" and meta["Format"] == "QuickTime / MOV"
    assert (meta["FrameWidth"], meta["FrameHeight"]) == (640, 360)
    assert meta["FrameRate"] == 25.0 and 4900 <= meta["DurationMillis"] <= 5100
    assert meta["ColorRange"] == "LIMITED"
    faces = body["Faces"]
    stamps = sorted({f["Timestamp"] for f in faces})
    # 5 analysed frames a second; the astronaut is away from 2.0 to 3.0 s
    assert 20 <= len(stamps) <= 26
    assert all(0 < b - a <= 240 for a, b in zip(stamps, stamps[1:]))
    per_frame = {t: sum(f["Timestamp"] == t for f in faces) for t in stamps}
    assert per_frame[0] == 2 and per_frame[2400] == 1 and per_frame[4000] == 2
    assert all(0 <= f["Face"]["BoundingBox"]["Left"] <= 1 for f in faces)
    assert {"Landmarks", "Pose", "Quality", "Confidence"} <= set(faces[0]["Face"])


def test_pages_and_tokens(client: Any) -> None:
    job = client.start_face_detection(Video=_video("walk.mp4"))["JobId"]
    everything = _wait(client.get_face_detection, job)["Faces"]
    seen, token = [], None
    while True:
        page = client.get_face_detection(JobId=job, MaxResults=7,
                                         **({"NextToken": token} if token else {}))
        assert len(page["Faces"]) <= 7
        seen += page["Faces"]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == everything
    big = client.get_face_detection(JobId=job, MaxResults=5000)  # clamped to 1000
    assert big["Faces"] == everything
    with pytest.raises(ClientError) as bad:
        client.get_face_detection(JobId=job, NextToken="bm90IGEgdG9rZW4=")
    assert error_code(bad) == "InvalidPaginationTokenException"
    with pytest.raises(ClientError) as missing:
        client.get_face_detection(JobId="0f0e0d0c-0000-4000-8000-000000000000")
    assert error_code(missing) == "ResourceNotFoundException"


def test_client_request_token(client: Any) -> None:
    a = client.start_face_detection(Video=_video("walk.mp4"), ClientRequestToken="same-1")
    b = client.start_face_detection(Video=_video("walk.mp4"), ClientRequestToken="same-1")
    assert a["JobId"] == b["JobId"]
    with pytest.raises(ClientError) as changed:
        client.start_face_detection(Video=_video("walk.mp4"), ClientRequestToken="same-1",
                                    FaceAttributes="ALL")
    assert error_code(changed) == "IdempotentParameterMismatchException"


@pytest.mark.parametrize(("name", "code"), [("nothing-here.mp4", "InvalidS3ObjectException"),
                                            ("huge.mp4", "VideoTooLargeException")])
def test_start_refusals(client: Any, name: str, code: str) -> None:
    with pytest.raises(ClientError) as refused:
        client.start_face_detection(Video=_video(name))
    assert error_code(refused) == code


@pytest.mark.parametrize(("name", "words"), [("corrupt.mp4", "corrupt"),
                                             ("truncated.mp4", "FFmpeg cannot open"),
                                             ("empty.mp4", "empty")])
def test_bad_videos_fail_the_job_clearly(client: Any, name: str, words: str) -> None:
    job = client.start_face_detection(Video=_video(name))["JobId"]
    body = _wait(client.get_face_detection, job)
    assert body["JobStatus"] == "FAILED"
    assert words in body["StatusMessage"]
    assert "Faces" not in body


def test_face_search_job_and_erasure(live: Any, client: Any, staff: str) -> None:
    job = client.start_face_search(Video=_video("walk.mp4"), CollectionId="staff")["JobId"]
    body = _wait(client.get_face_search, job)
    assert body["JobStatus"] == "SUCCEEDED", body.get("StatusMessage")
    persons = body["Persons"]
    indexes = {p["Person"]["Index"] for p in persons}
    assert indexes == {0, 1}  # the astronaut keeps her Index when she comes back
    matched = {p["Person"]["Index"] for p in persons if p["FaceMatches"]}
    assert len(matched) == 1
    eileen = next(p for p in persons if p["FaceMatches"])
    assert eileen["FaceMatches"][0]["Face"]["FaceId"] == staff
    assert eileen["FaceMatches"][0]["Face"]["ExternalImageId"] == "eileen"
    assert eileen["FaceMatches"][0]["Similarity"] >= 80
    other = next(p for p in persons if not p["FaceMatches"])  # listed, unmatched
    assert other["FaceMatches"] == []
    stamps = [p["Timestamp"] for p in persons]
    assert stamps == sorted(stamps)
    by_index = client.get_face_search(JobId=job, SortBy="INDEX")["Persons"]
    assert [p["Person"]["Index"] for p in by_index] == sorted(p["Person"]["Index"]
                                                              for p in by_index)
    assert sorted(map(json.dumps, by_index)) == sorted(map(json.dumps, persons))
    # the identification is in the ledger, and who-searched finds it
    service = live.server.service
    entries = service.gate.ledger.entries(operations=["VideoFaceSearch"])
    assert any(e.result.get("JobId") == job and staff in e.result["FaceIds"] for e in entries)
    assert any(e["operation"] == "VideoFaceSearch"
               for e in service.who_searched(ExternalImageId="eileen")["Entries"])
    # erasing her removes her FaceId from the stored result
    service.erase(ExternalImageId="eileen")
    after = client.get_face_search(JobId=job)["Persons"]
    assert all(p["FaceMatches"] == [] for p in after)
    assert len(after) == len(persons)


def test_face_search_refusals(live: Any, client: Any, staff: str) -> None:
    with pytest.raises(ClientError) as missing:
        client.start_face_search(Video=_video("walk.mp4"), CollectionId="nobody")
    assert error_code(missing) == "ResourceNotFoundException"
    client.create_collection(CollectionId="strict", Tags={
        "regard:purpose": "video tests", "regard:threshold-floor": "95"})
    with pytest.raises(ClientError) as low:
        client.start_face_search(Video=_video("walk.mp4"), CollectionId="strict",
                                 FaceMatchThreshold=90)
    assert error_code(low) == "InvalidParameterException"
    detect_only, secret = live.server.keys.create("detect only", scopes=["detect"])
    narrow = rekognition(live.url, detect_only.access_key_id, secret)
    with pytest.raises(ClientError) as denied:
        narrow.start_face_search(Video=_video("walk.mp4"), CollectionId="staff")
    assert error_code(denied) == "AccessDeniedException"
    # a job is not visible to another principal
    job = client.start_face_detection(Video=_video("walk.mp4"))["JobId"]
    with pytest.raises(ClientError) as hidden:
        narrow.get_face_detection(JobId=job)
    assert error_code(hidden) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as wrong_kind:
        client.get_face_search(JobId=job)
    assert error_code(wrong_kind) == "InvalidParameterException"


def test_limit_exceeded(live: Any, client: Any) -> None:
    runner = live.server.jobs
    saved = runner.max_concurrent
    runner.max_concurrent = 0
    try:
        with pytest.raises(ClientError) as limited:
            client.start_face_detection(Video=_video("walk.mp4"))
        assert error_code(limited) == "LimitExceededException"
    finally:
        runner.max_concurrent = saved


def test_notification_channel(client: Any) -> None:
    Hook.received.clear()
    with pytest.raises(ClientError) as unknown:
        client.start_face_detection(Video=_video("walk.mp4"), NotificationChannel={
            "SNSTopicArn": "arn:aws:sns:eu-west-1:123456789012:unmapped", "RoleArn": ROLE})
    assert error_code(unknown) == "InvalidParameterException"
    with pytest.raises(ClientError) as malformed:
        client.start_face_detection(Video=_video("walk.mp4"), NotificationChannel={
            "SNSTopicArn": "not-an-arn", "RoleArn": ROLE})
    assert error_code(malformed) in ("ValidationException", "InvalidParameterException")
    job = client.start_face_detection(Video=_video("walk.mp4"), JobTag="notify-me",
                                      NotificationChannel={"SNSTopicArn": TOPIC,
                                                           "RoleArn": ROLE})["JobId"]
    _wait(client.get_face_detection, job)
    deadline = time.monotonic() + 10
    while not Hook.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Hook.received, "no notification arrived"
    note = Hook.received[-1]
    assert note["headers"]["x-amz-sns-message-type"] == "Notification"
    assert note["body"]["TopicArn"] == TOPIC
    message = json.loads(note["body"]["Message"])
    assert message["JobId"] == job and message["Status"] == "SUCCEEDED"
    assert message["API"] == "StartFaceDetection" and message["JobTag"] == "notify-me"
    assert message["Video"] == {"S3ObjectName": "walk.mp4", "S3Bucket": BUCKET}
    assert isinstance(message["Timestamp"], int)


def test_rest_door(live: Any, staff: str) -> None:
    key, secret = live.server.keys.create("rest video")
    headers = {"Authorization": f"Bearer {key.access_key_id}:{secret}"}
    with httpx.Client(base_url=live.url + "/v1", headers=headers, timeout=60) as http:
        started = http.post("/video/face-search", json={"Video": _video("walk.mp4"),
                                                        "CollectionId": "staff"})
        assert started.status_code == 200, started.text
        job = started.json()["JobId"]
        deadline = time.monotonic() + 120
        while True:
            body = http.get(f"/video/face-search/{job}", params={"sort_by": "INDEX"}).json()
            if body["JobStatus"] != "IN_PROGRESS" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert body["JobStatus"] == "SUCCEEDED"
        assert {p["Person"]["Index"] for p in body["Persons"]} == {0, 1}
        refused = http.post("/video/face-detection", json={"Video": _video("huge.mp4")})
        assert refused.status_code == 400
        assert refused.json()["__type"] == "VideoTooLargeException"
        unknown = http.post("/video/face-detection", json={"Video": _video("walk.mp4"),
                                                           "Bogus": 1})
        assert unknown.status_code == 400


def test_job_survives_a_server_restart(tmp_path: Path, engine: Any, bucket: Path) -> None:
    """A job accepted by a server that runs none (or stops before running it) is run by the
    next server on the same catalog."""
    first = LiveServer(tmp_path, engine, ServerSettings(job_workers=0),
                       object_store=LocalObjectStore(bucket))
    with first:
        key, secret = first.server.keys.create("restart")
        job = rekognition(first.url, key.access_key_id, secret).start_face_detection(
            Video=_video("walk.mp4"))["JobId"]
        time.sleep(0.5)
        assert rekognition(first.url, key.access_key_id, secret).get_face_detection(
            JobId=job)["JobStatus"] == "IN_PROGRESS"
    with LiveServer(tmp_path, engine, ServerSettings(job_workers=1),
                    object_store=LocalObjectStore(bucket)) as second:
        body = _wait(rekognition(second.url, key.access_key_id, secret).get_face_detection,
                     job)
        assert body["JobStatus"] == "SUCCEEDED" and body["Faces"]


def _faces_in(path: Path, engine: Any) -> list[int]:
    """Faces the detector finds in each frame of a video (every 5th frame)."""
    from regard.video.decode import VideoReader

    with VideoReader(path) as reader:
        return [len(engine.detect(f.rgb).faces) for f in reader.frames() if f.index % 5 == 0]


def test_redaction_job_and_image_redaction(live: Any, bucket: Path, engine: Any,
                                           astronaut: Any) -> None:
    import av

    key, secret = live.server.keys.create("redaction")
    headers = {"Authorization": f"Bearer {key.access_key_id}:{secret}"}
    client = rekognition(live.url, key.access_key_id, secret)
    client.create_collection(CollectionId="consenting", Tags={"regard:purpose": "video tests"})
    client.index_faces(CollectionId="consenting", Image={"Bytes": encode(astronaut)},
                       ExternalImageId="eileen")
    with httpx.Client(base_url=live.url + "/v1", headers=headers, timeout=60) as http:
        jobs = {}
        for name, extra in [("all.mp4", {}), ("kept.mp4", {"KeepCollectionId": "consenting"})]:
            started = http.post("/video/redaction", json={
                "Video": _video("walk.mp4"), "Output": {"S3Object": {
                    "Bucket": BUCKET, "Name": f"out/{name}"}},
                "Options": {"Method": "box"}, **extra})
            assert started.status_code == 200, started.text
            jobs[name] = started.json()["JobId"]
        for name, job in jobs.items():
            deadline = time.monotonic() + 180
            while True:
                body = http.get(f"/video/redaction/{job}").json()
                if body["JobStatus"] != "IN_PROGRESS" or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert body["JobStatus"] == "SUCCEEDED", body
            assert body["Report"]["Frames"] == 125 and body["Report"]["AudioCopied"] is True
            assert body["Output"] == {"S3Object": {"Bucket": BUCKET, "Name": f"out/{name}"}}
        everyone = _faces_in(bucket / BUCKET / "out" / "all.mp4", engine)
        assert everyone and max(everyone) == 0  # no face left anywhere
        kept = _faces_in(bucket / BUCKET / "out" / "kept.mp4", engine)
        assert max(kept) == 1  # the consenting astronaut stays visible, the other is hidden
        with av.open(str(bucket / BUCKET / "out" / "all.mp4")) as out:
            assert out.streams.audio and out.streams.video[0].average_rate == 25
        entries = live.server.service.gate.ledger.entries(operations=["VideoFaceSearch"])
        assert any(e.result.get("JobId") == jobs["kept.mp4"] and e.result["FaceIds"]
                   for e in entries)
        bad = http.post("/video/redaction", json={
            "Video": _video("walk.mp4"), "Output": {"S3Object": {"Bucket": BUCKET,
                                                                 "Name": "out/x.mp4"}},
            "Options": {"Scale": 9}})
        assert bad.status_code == 400
        same = http.post("/video/redaction", json={
            "Video": _video("walk.mp4"), "Output": {"S3Object": {"Bucket": BUCKET,
                                                                 "Name": "walk.mp4"}}})
        assert same.status_code == 400 and "never overwritten" in same.json()["message"]
        client.create_collection(CollectionId="floored", Tags={
            "regard:purpose": "video tests", "regard:threshold-floor": "95"})
        low = http.post("/video/redaction", json={
            "Video": _video("walk.mp4"), "Output": {"S3Object": {"Bucket": BUCKET,
                                                                 "Name": "out/y.mp4"}},
            "KeepCollectionId": "floored", "FaceMatchThreshold": 90})
        assert low.status_code == 400 and "floor" in low.json()["message"]  # at Start
        # one image: the same redaction, synchronously
        image = http.post("/redact", files={"image": ("a.jpg", encode(astronaut), "image/jpeg")},
                          data={"method": "box"})
        assert image.status_code == 200, image.text
        assert image.headers["content-type"] == "image/jpeg"
        assert int(image.headers["x-regard-faces-redacted"]) >= 1
        assert engine.detect(image.content).faces == []
        junk = http.post("/redact", files={"image": ("a.jpg", b"junk" * 100, "image/jpeg")})
        assert junk.status_code == 400


def test_an_erasure_racing_a_finishing_search_still_removes_the_face(
        tmp_path: Path, engine: Any, bucket: Path, astronaut: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The person is erased just before the job writes its pages (the erasure's purge sees no
    pages yet): the job takes the erased face out of what it wrote."""
    from regard.jobs import JobRunner
    from regard.service import RegardService
    from regard.store import Store
    from regard.video import jobs as video_jobs

    service = RegardService(engine, Store(f"sqlite:///{tmp_path / 'c.db'}",
                                          checkpoint_dir=False),
                            object_store=LocalObjectStore(bucket), default_purpose="tests")
    service.create_collection(CollectionId="staff")
    service.index_faces(CollectionId="staff", Image={"Bytes": encode(astronaut)},
                        ExternalImageId="eileen")
    original = video_jobs.write_results

    def erase_first(*args: Any, **kw: Any) -> None:
        service.erase(ExternalImageId="eileen")
        original(*args, **kw)

    monkeypatch.setattr(video_jobs, "write_results", erase_first)
    with JobRunner(service, service.store.database, poll_seconds=0.05) as runner:
        service.jobs = runner
        job = service.start_face_search(Video=_video("walk.mp4"), CollectionId="staff")["JobId"]
        assert runner.wait(job, timeout=120).state == "SUCCEEDED"
    persons = service.get_face_search(JobId=job)["Persons"]
    assert persons and all(p["FaceMatches"] == [] for p in persons)
    service.store.close()


def test_jobs_spool_observations_to_disk_not_memory(engine: Any, bucket: Path) -> None:
    """A job's observations go to a temporary SQLite file frame by frame (the analysis keeps
    none), come back in time order and by person, and the file is gone after."""
    from regard.video.analysis import AnalysisOptions, analyze_video
    from regard.video.decode import VideoReader
    from regard.video.jobs import Spool
    from regard.vision.packs import default_pack

    with VideoReader(bucket / BUCKET / "walk.mp4") as reader, Spool() as spool:
        analysis = analyze_video(reader, engine, AnalysisOptions(
            track=True, embed=True, pack=default_pack()), sink=spool.add)
        folder = Path(spool._dir.name)
        assert analysis.observations == [] and folder.exists()
        timeline = list(spool.in_time_order())
        people = list(spool.by_person(analysis.person_of))
    assert not folder.exists()
    assert len(timeline) == len(people) == sum(p.observations
                                               for p in analysis.persons.values())
    stamps = [ts for ts, _, _ in timeline]
    assert stamps == sorted(stamps)
    assert [(p, ts) for ts, p, _ in people] == sorted((p, ts) for ts, p, _ in people)
    assert {p for _, p, _ in people} == {0, 1}
    assert {"BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"} <= set(timeline[0][2])


def test_the_aws_cli_starts_and_reads_a_job(live: Any) -> None:
    """`aws rekognition start-face-detection` / `get-face-detection` unchanged, with an
    endpoint URL (what existing scripts do)."""
    import subprocess
    import sys

    key, secret = live.server.keys.create("aws cli")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key.access_key_id,
           "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": "eu-west-1",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    aws = [str(Path(sys.executable).parent / "aws"), "rekognition", "--endpoint-url", live.url,
           "--output", "json"]

    def run(*args: str) -> dict[str, Any]:
        done = subprocess.run([*aws, *args], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    job = run("start-face-detection", "--video",
              f"S3Object={{Bucket={BUCKET},Name=walk.mp4}}", "--job-tag", "cli")["JobId"]
    deadline = time.monotonic() + 120
    while (body := run("get-face-detection", "--job-id", job, "--max-results", "10")
           )["JobStatus"] == "IN_PROGRESS":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert body["JobStatus"] == "SUCCEEDED" and len(body["Faces"]) == 10 and body["NextToken"]
    assert body["VideoMetadata"]["Codec"] == "h264"
