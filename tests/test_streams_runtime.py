"""The stream processor runtime (``regard.streams.runtime``) on live sources made here, offline:
a clip file played at its own pace (looped, as a camera), a live MPEG-TS stream over HTTP from a
server in this process that is killed and restarted, a file removed and put back, a source that
does not exist, and an RTSP "camera" that accepts the connection and never answers.

No Debian package is needed: FFmpeg comes with PyAV's wheels, and the live HTTP stream is a
Python ``http.server`` writing a ``.ts`` clip at its byte rate (Debian's ``ffmpeg`` cannot serve
RTSP to clients, and no RTSP server is packaged in Debian's main archive)."""

from __future__ import annotations

import http.server
import shutil
import socket
import socketserver
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import encode
from regard.service import RegardService
from regard.store import Store
from regard.streams.model import ProcessorRun, ProcessorStats
from regard.streams.runtime import run_processor
from video_clips import make_clip, moving_and_scaling

pytestmark = pytest.mark.slow
SIZE = (480, 270)
FPS = 10


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The astronaut walking left to right and growing, the cameraman standing at the right."""
    folder = tmp_path_factory.mktemp("clips")
    made = {}
    for name, seconds in (("walk.mp4", 4.0), ("walk.ts", 4.0), ("short.mp4", 2.0)):
        clip = make_clip(folder / name, moving_and_scaling(seconds), seconds=seconds, fps=FPS,
                         size=SIZE, audio=False)
        made[name] = clip.path
    return made


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, engine: Any, astronaut: Any) -> Any:
    """A collection holding the astronaut, indexed from the whole picture (the clip shows a
    crop of it, rescaled)."""
    home = tmp_path_factory.mktemp("home")
    store = Store(f"sqlite:///{home / 'regard.db'}", checkpoint_dir=home / "index")
    svc = RegardService(engine, store, default_purpose="stream tests")
    svc.create_collection(CollectionId="people")
    indexed = svc.index_faces(CollectionId="people", Image={"Bytes": encode(astronaut)},
                              ExternalImageId="astronaut.jpg")
    svc.astronaut_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
    yield svc
    store.close()


class Processor:
    """``run_processor`` in a thread, with everything it reports kept."""

    def __init__(self, service: Any, url: str, *, max_duration: float | None = None,
                 **options: Any) -> None:
        self.run = ProcessorRun(name="door",
                                arn="arn:aws:rekognition:eu-west-1:1:streamprocessor/door",
                                session_id="s-1", source_url=url,
                                source_arn="arn:aws:kinesisvideo:eu-west-1:1:stream/door/1",
                                collection="people", threshold=80.0,
                                max_duration_seconds=max_duration)
        self.stats = ProcessorStats()
        self.stop = threading.Event()
        self.records: list[dict[str, Any]] = []
        self.matches: list[dict[str, float]] = []
        self.statuses: list[tuple[str, str | None, float]] = []
        self.returned: float | None = None
        self._thread = threading.Thread(target=self._run, args=(service, options), daemon=True)

    def _run(self, service: Any, options: dict[str, Any]) -> None:
        run_processor(self.run, service=service, context=None, emit=self.records.append,
                      on_matches=lambda run, found: self.matches.append(found),
                      on_status=lambda s, m: self.statuses.append((s, m, time.monotonic())),
                      stop=self.stop, stats=self.stats, **options)
        self.returned = time.monotonic()

    def __enter__(self) -> Processor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=10)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "run_processor did not return"

    def wait_for(self, condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: " \
                f"{self.statuses} {self.stats.snapshot()}"
            time.sleep(0.05)


def _astronaut_faces(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for r in records for f in r["FaceSearchResponse"]
            if f["DetectedFace"]["BoundingBox"]["Left"] < 0.7]


# -- a file played at its own pace ---------------------------------------------------------
def test_a_file_source_gives_rekognition_records_in_real_time(service: Any,
                                                             clips: dict[str, Path]) -> None:
    began = time.time()
    with Processor(service, str(clips["walk.mp4"]), max_duration=3.0) as proc:
        proc.join(8)
    took = proc.returned - proc.stats.started
    assert 2.9 < took < 4.0  # played at its own pace, ended by MaxDurationInSeconds
    assert proc.statuses[0][:2] == ("RUNNING", None)
    assert [s for s in proc.statuses if s[0] != "RUNNING"] == []
    stats = proc.stats.snapshot()
    # 10 fps for 3 s, each analysed (a 480x270 frame takes far less than 100 ms)
    assert 25 <= stats["FramesRead"] <= 32 and stats["FramesAnalysed"] >= 25
    assert stats["Records"] == len(proc.records) == stats["FramesAnalysed"]
    assert stats["LatencyP50Ms"] is not None and stats["LatencyP50Ms"] < 150
    assert len(proc.stats.latencies_ms) == stats["FramesAnalysed"]

    first = proc.records[0]
    assert set(first) == {"InputInformation", "StreamProcessorInformation",
                          "FaceSearchResponse"}
    assert first["StreamProcessorInformation"] == {"Status": "RUNNING"}
    kinesis = first["InputInformation"]["KinesisVideo"]
    assert set(kinesis) == {"StreamArn", "FragmentNumber", "ServerTimestamp",
                            "ProducerTimestamp", "FrameOffsetInSeconds"}
    assert kinesis["StreamArn"] == proc.run.source_arn
    assert isinstance(kinesis["FragmentNumber"], str) and kinesis["FragmentNumber"].isdigit()
    assert began - 1 < kinesis["ServerTimestamp"] < began + 2
    assert abs(kinesis["ProducerTimestamp"] - kinesis["ServerTimestamp"]) < 1
    offsets = [r["InputInformation"]["KinesisVideo"]["FrameOffsetInSeconds"]
               for r in proc.records]
    assert offsets == sorted(offsets) and 2.3 < offsets[-1] - offsets[0] < 3.1
    numbers = [int(r["InputInformation"]["KinesisVideo"]["FragmentNumber"])
               for r in proc.records]
    assert numbers == sorted(set(numbers))

    for record in proc.records:
        assert len(record["FaceSearchResponse"]) == 2  # the astronaut and the cameraman
        for found in record["FaceSearchResponse"]:
            detected = found["DetectedFace"]
            assert set(detected) == {"BoundingBox", "Confidence", "Landmarks", "Pose",
                                     "Quality"}
            assert set(detected["BoundingBox"]) == {"Width", "Height", "Left", "Top"}
            assert set(detected["Pose"]) == {"Roll", "Yaw", "Pitch"}
            assert set(detected["Quality"]) == {"Brightness", "Sharpness"}
            assert {m["Type"] for m in detected["Landmarks"]} >= {"eyeLeft", "eyeRight",
                                                                 "nose"}
            if detected["BoundingBox"]["Left"] > 0.7:
                assert found["MatchedFaces"] == []  # the cameraman is nobody known
    for found in _astronaut_faces(proc.records):
        (match,) = found["MatchedFaces"]
        assert match["Similarity"] > 90
        assert match["Face"]["FaceId"] == service.astronaut_id
        assert match["Face"]["ExternalImageId"] == "astronaut.jpg"
        assert set(match["Face"]) >= {"BoundingBox", "FaceId", "Confidence", "ImageId",
                                      "ExternalImageId"}
    # one identification for the whole walk, not one a frame
    assert len(proc.matches) == 1 and list(proc.matches[0]) == [service.astronaut_id]
    assert stats["Matches"] == 1


def test_slow_analysis_drops_frames_and_keeps_the_newest(service: Any,
                                                         clips: dict[str, Path]) -> None:
    engine = service.engine

    class Slow:
        def detect(self, rgb: Any) -> Any:
            time.sleep(0.3)
            return engine.detect(rgb)

        def embed_faces(self, *args: Any, **kw: Any) -> None:
            engine.embed_faces(*args, **kw)

    slow = SimpleNamespace(engine=Slow(), store=service.store)
    with Processor(slow, str(clips["walk.mp4"]), max_duration=2.5) as proc:
        proc.join(8)
    s = proc.stats
    assert s.frames_read >= 20
    assert 5 <= s.frames_analysed <= 9  # about 3 a second
    assert s.frames_dropped >= 10
    # at most the one left in the mailbox and one decoded as it stopped were never analysed
    assert s.frames_read - s.frames_analysed - s.frames_dropped in (0, 1, 2)
    # the newest frame is analysed: latency is about one analysis, not a growing queue
    assert max(s.latencies_ms) < 800
    assert proc.records and len(proc.matches) == 1


def test_stop_is_prompt_and_a_file_loops(service: Any, clips: dict[str, Path]) -> None:
    with Processor(service, str(clips["short.mp4"])) as proc:  # 2 s, looped
        proc.wait_for(lambda: proc.stats.frames_read > 30, 8, "the second pass")
        proc.stop.set()
        stopped = time.monotonic()
        proc.join(3)
    assert proc.returned - stopped < 1.0
    offsets = [r["InputInformation"]["KinesisVideo"]["FrameOffsetInSeconds"]
               for r in proc.records]
    assert offsets == sorted(offsets) and offsets[-1] > 2.5  # the loop goes on in time
    assert proc.stats.reconnects == 0
    assert [s[:2] for s in proc.statuses] == [("RUNNING", None)]
    # seen again after the loop (a new track, searched again), the astronaut is no new
    # identification: she was in view a moment ago
    assert proc.matches == [{service.astronaut_id: proc.matches[0][service.astronaut_id]}]


# -- sources that fail -------------------------------------------------------------------------
def test_a_source_that_does_not_exist_fails_after_retrying(service: Any,
                                                           tmp_path: Path) -> None:
    with Processor(service, str(tmp_path / "nothing.mp4"), reconnect_initial=0.1,
                   reconnect_max=0.4, fail_after=1.5) as proc:
        proc.join(6)
    assert proc.stats.reconnects >= 3  # 0.1, 0.2, 0.4, 0.4, ...
    assert proc.statuses[0][0] == "RUNNING"
    assert proc.statuses[0][1].startswith("Reconnecting to the source: ")
    assert "No such file" in proc.statuses[0][1]
    status, message, when = proc.statuses[-1]
    assert status == "FAILED" and "No such file" in message
    assert 1.4 < when - proc.stats.started < 2.5
    assert proc.records == [] and proc.stats.frames_read == 0


def test_a_file_removed_and_put_back_reconnects(service: Any, clips: dict[str, Path],
                                                tmp_path: Path) -> None:
    path = tmp_path / "camera.mp4"
    shutil.copy(clips["short.mp4"], path)
    with Processor(service, str(path), reconnect_initial=0.1, reconnect_max=0.2,
                   fail_after=30) as proc:
        proc.wait_for(lambda: proc.records, 5, "a first record")
        path.unlink()  # read to its end, it cannot be opened again
        proc.wait_for(lambda: proc.stats.reconnects >= 2, 6, "reconnect attempts")
        before = proc.stats.frames_read
        shutil.copy(clips["short.mp4"], path)
        proc.wait_for(lambda: proc.stats.frames_read > before + 5, 5, "frames again")
    messages = [m for _, m, _ in proc.statuses]
    assert messages[0] is None and "No such file" in messages[1] and messages[-1] is None
    assert all(s == "RUNNING" for s, _, _ in proc.statuses)


class _LiveTs(http.server.BaseHTTPRequestHandler):
    """A "camera" streaming a .ts clip forever at its byte rate (loop after loop)."""

    data = b""
    seconds = 1.0

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "video/mp2t")
        self.end_headers()
        chunk = 188 * 20
        pause = self.seconds * chunk / len(self.data)
        try:
            while not self.server.closing:  # type: ignore[attr-defined]
                for start in range(0, len(self.data), chunk):
                    self.wfile.write(self.data[start:start + chunk])
                    time.sleep(pause)
                    if self.server.closing:  # type: ignore[attr-defined]
                        return
        except OSError:
            return

    def log_message(self, *args: object) -> None:
        pass


class _Camera:
    def __init__(self, clip: Path, port: int) -> None:
        handler = type("Handler", (_LiveTs,), {"data": clip.read_bytes(), "seconds": 4.0})
        socketserver.TCPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.closing = False  # type: ignore[attr-defined]
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kill(self) -> None:
        self.server.closing = True  # type: ignore[attr-defined]
        self.server.shutdown()
        self.server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_live_http_stream_that_goes_away_reconnects_and_continues(
        service: Any, clips: dict[str, Path]) -> None:
    port = _free_port()
    camera = _Camera(clips["walk.ts"], port)
    try:
        with Processor(service, f"http://127.0.0.1:{port}/live.ts", reconnect_initial=0.2,
                       reconnect_max=0.4, fail_after=30, stall_timeout=2.0) as proc:
            proc.wait_for(lambda: len(proc.records) >= 5, 10, "records from the stream")
            camera.kill()
            proc.wait_for(lambda: proc.stats.reconnects >= 2, 10, "reconnect attempts")
            count = len(proc.records)
            camera = _Camera(clips["walk.ts"], port)
            proc.wait_for(lambda: len(proc.records) >= count + 5, 10, "records again")
    finally:
        camera.kill()
    statuses = [(s, m) for s, m, _ in proc.statuses]
    assert statuses[0] == ("RUNNING", None) and statuses[-1] == ("RUNNING", None)
    assert any(m and m.startswith("Reconnecting to the source: ") for _, m in statuses)
    assert all(s == "RUNNING" for s, _ in statuses)
    assert [list(m) for m in proc.matches] == [[service.astronaut_id]]
    assert _astronaut_faces(proc.records)[-1]["MatchedFaces"][0]["Face"]["FaceId"] == \
        service.astronaut_id


@pytest.fixture()
def silent_camera() -> Any:
    """A TCP port that accepts connections and never says anything (a hung camera)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    closing = threading.Event()

    def accept() -> None:
        while not closing.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"rtsp://127.0.0.1:{listener.getsockname()[1]}/stream"
    closing.set()
    listener.close()
    for conn in accepted:
        conn.close()


def test_a_silent_rtsp_camera_times_out_and_fails(service: Any, silent_camera: str) -> None:
    with Processor(service, silent_camera, reconnect_initial=0.1, reconnect_max=0.2,
                   fail_after=2.0, stall_timeout=0.8) as proc:
        proc.join(8)
    assert proc.statuses[0][1].startswith("Reconnecting to the source: no answer within 0.8 s")
    assert proc.statuses[-1][0] == "FAILED" and "no answer" in proc.statuses[-1][1]
    assert 1.9 < proc.statuses[-1][2] - proc.stats.started < 3.5
    assert proc.stats.reconnects >= 1


def test_stop_while_blocked_on_a_silent_camera_is_prompt(service: Any,
                                                         silent_camera: str) -> None:
    with Processor(service, silent_camera, stall_timeout=5.0) as proc:
        time.sleep(0.5)  # blocked opening it
        proc.stop.set()
        stopped = time.monotonic()
        proc.join(3)
    assert proc.returned - stopped < 1.0
    assert proc.statuses == []


def test_a_collection_that_does_not_exist_fails_at_once(service: Any,
                                                        clips: dict[str, Path]) -> None:
    proc = Processor(service, str(clips["walk.mp4"]))
    proc.run.collection = "nobody"
    with proc:
        proc.join(3)
    ((status, message, _),) = proc.statuses
    assert status == "FAILED" and "nobody" in message
