"""A running stream processor: a live source read in real time, faces found, followed and
searched in a collection, and Rekognition's stream processor records emitted.

Two threads per processor, and nothing that grows with run time:

* the **source reader** (``_Source``, a daemon thread) opens the source with PyAV, decodes every
  frame (inter-frame codecs need them all) and leaves only the newest in a one-slot mailbox; a
  frame replaced before the analysis took it counts as dropped. A local file is played at its own
  pace and looped, so it behaves like a camera. When the source errors, ends or stalls it
  reconnects with exponential backoff (the processor stays RUNNING, as Rekognition's does) and
  gives up after ``fail_after`` seconds of failing in a row (FAILED).
* the **analysis loop** (the caller's thread, ``run_processor``) takes the newest frame, detects
  faces, follows them with a light IoU tracker and embeds and searches only what it must: a
  track's first face, and later a face clearly better than the best one searched (at most
  ``_MAX_SEARCHES`` a track). The matches of a track are reused by its faces in later frames.
  Analysing the newest frame, never a queue of old ones, keeps the latency at about one
  analysis whatever the source's frame rate: a slow machine analyses fewer frames, not older.

Times: ``ServerTimestamp`` is the Unix time the frame was received; ``ProducerTimestamp`` the
Unix time the source's clock puts it at (its presentation time, anchored at the wall-clock time
the current connection's first frame arrived: Rekognition's is a Unix time too, and a camera's
RTSP/HLS clock is seldom one); ``FrameOffsetInSeconds`` the time since the processor's stream
started, by the source's clock; ``FragmentNumber`` the frame's number in the run (decimal).
"""

from __future__ import annotations

import logging
import math
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regard.streams.model import (
    FAILED,
    RUNNING,
    Emit,
    OnMatches,
    OnStatus,
    ProcessorRun,
    ProcessorStats,
    Record,
)

log = logging.getLogger("regard.streams")

_MAX_SEARCHES = 4  # searches per track: the first face, then up to 3 clearly better ones
_IMPROVEMENT = 1.25  # a face is searched again when its quality beats the best searched by this
_TRACK_GONE_S = 1.0  # a track unseen this long ends (its person is searched again if back)
_SEEN_AGAIN_S = 60.0  # a face out of view this long is identified anew when back
_MIN_IOU = 0.2
_MAX_MATCHES = 100  # MatchedFaces per face (a collection policy may lower it)
_PROBE_S = 1.0  # stream probed on opening (FFmpeg's analyzeduration)


# -- frames and the mailbox -----------------------------------------------------------------
@dataclass
class _Frame:
    """A decoded frame (still PyAV's: it is converted to RGB only if analysed) and when and
    where it came from."""

    frame: Any  # av.VideoFrame
    number: int  # in the run, from 1: the record's FragmentNumber
    received: float  # time.monotonic() when decoded: latency starts here
    server_ts: float  # Unix time when decoded
    producer_ts: float  # Unix time by the source's clock
    offset: float  # seconds since the stream started, by the source's clock


class _Mailbox:
    """One slot: the newest frame. ``put`` says whether it replaced one not yet taken."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: _Frame | None = None

    def put(self, item: _Frame) -> bool:
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout: float) -> _Frame | None:
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
        return item

    def clear(self) -> None:
        with self._cond:
            self._item = None


# -- the source -----------------------------------------------------------------------------
def _local_path(url: str) -> str | None:
    """The path of a local file source (a plain path or a ``file:`` URL), else None."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return urllib.parse.unquote(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and Path(url).anchor):  # C:\ on Windows
        return url
    return None


def _open_options(url: str, stall_timeout: float) -> dict[str, str]:
    """FFmpeg options for a network source: TCP for RTSP (no lost UDP packets, passes NAT and
    firewalls), socket timeouts so a stalled camera is noticed (FFmpeg >= 5 names the RTSP one
    ``timeout``, in microseconds; ``stimeout`` is gone), and little buffering or probing so the
    first frame comes fast (1 s of stream probed, not FFmpeg's 5)."""
    us = str(int(stall_timeout * 1_000_000))
    scheme = urllib.parse.urlparse(url).scheme.lower()
    # (not ``fflags=nobuffer``: it throws away the packets read while probing, and with them
    # the keyframe, so the first frame would wait for the next keyframe, seconds away)
    options = {"analyzeduration": str(int(_PROBE_S * 1_000_000))}
    if scheme in ("rtsp", "rtsps"):
        options.update(rtsp_transport="tcp", timeout=us)
    else:  # http(s), HLS, rtmp, srt, udp, tcp: every AVIO protocol takes rw_timeout
        options["rw_timeout"] = us
    return options


def _redacted(url: str) -> str:
    """``url`` without its password (cameras' URLs often carry one), for the log."""
    parsed = urllib.parse.urlparse(url)
    if parsed.password is None:
        return url
    host = parsed.netloc.rsplit("@", 1)[1]
    return parsed._replace(netloc=f"{parsed.username}:***@{host}").geturl()


def _rotation(frame: Any) -> int:
    return round(float(getattr(frame, "rotation", 0) or 0) / 90.0) * 90 % 360


def _upright(frame: Any) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    turns = (_rotation(frame) // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


class _SourceError(Exception):
    pass


class _Source(threading.Thread):
    """Reads the source into the mailbox until ``done`` is set, reconnecting as needed.
    ``failure``: why it gave up (set once it failed for ``fail_after`` seconds in a row);
    ``ended``: a file source not looped has been played to its end."""

    def __init__(self, url: str, mailbox: _Mailbox, stats: ProcessorStats,
                 done: threading.Event, on_status: OnStatus, *, reconnect_initial: float,
                 reconnect_max: float, fail_after: float, stall_timeout: float,
                 loop: bool) -> None:
        super().__init__(name="regard-stream-source", daemon=True)
        self.url = url
        self.path = _local_path(url)
        self.mailbox, self.stats, self.done, self.on_status = mailbox, stats, done, on_status
        self.reconnect_initial = max(0.01, reconnect_initial)
        self.reconnect_max = max(self.reconnect_initial, reconnect_max)
        self.fail_after = fail_after
        self.stall_timeout = stall_timeout
        self.loop = loop
        self.failure: str | None = None
        self.ended = False
        self._began = time.monotonic()
        self._number = 0
        self._reported: str | None = "STARTING"  # the last status message we gave (None: ok)
        self._had_frames = False  # this connection delivered a frame

    # -- the reconnect loop ----------------------------------------------------------------
    def run(self) -> None:
        backoff = self.reconnect_initial
        failing_since: float | None = None
        while not self.done.is_set():
            try:
                self._play()
                if not self._had_frames:
                    raise _SourceError("the source ended before its first frame")
                if self.path is not None and not self.loop:
                    self.ended = True
                    return
                if self.path is not None:
                    continue  # played to its end: again from the start, as a camera goes on
                raise _SourceError("the stream ended")
            except Exception as exc:  # every failure of a source is a reason to reconnect
                if self.done.is_set():
                    return
                reason = _reason(exc)
            if self._had_frames:
                failing_since, backoff = None, self.reconnect_initial
            now = time.monotonic()
            failing_since = failing_since if failing_since is not None else now
            if now - failing_since >= self.fail_after:
                self.failure = (f"The source has failed for {now - failing_since:.0f} s: "
                                f"{reason}")
                return
            log.info("stream source %s: %s; reconnecting in %.1f s", _redacted(self.url),
                     reason, backoff)
            self._report(f"Reconnecting to the source: {reason}")
            self.stats.reconnects += 1
            self.done.wait(min(backoff, max(0.0, failing_since + self.fail_after - now)))
            backoff = min(backoff * 2, self.reconnect_max)

    def _report(self, message: str | None) -> None:
        if message != self._reported:
            self._reported = message
            self.on_status(RUNNING, message)

    # -- one connection ----------------------------------------------------------------------
    def _open(self) -> Any:
        import av

        if self.path is not None:
            return av.open(self.path, metadata_errors="ignore")
        if self.url.startswith("/dev/"):
            return av.open(self.url, format="v4l2")
        # PyAV's (open, read) timeout interrupts a blocked open or read through FFmpeg's
        # interrupt callback: a silent camera raises here instead of hanging the thread
        began = time.monotonic()
        try:
            return av.open(self.url, options=_open_options(self.url, self.stall_timeout),
                           timeout=(self.stall_timeout + _PROBE_S + 1.0, self.stall_timeout),
                           metadata_errors="ignore")
        except av.error.ExitError:
            raise _SourceError(f"no answer within {self.stall_timeout + _PROBE_S + 1.0:g} s "
                               "(timed out)") from None
        except av.FFmpegError as exc:
            if time.monotonic() - began < self.stall_timeout * 0.9:
                raise
            # FFmpeg's RTSP client says a silent server's timeout as "Invalid data"
            raise _SourceError(f"no answer within {self.stall_timeout:g} s "
                               f"({_reason(exc)})") from None

    def _play(self) -> None:
        """One connection (or one pass over a file), until it ends, fails or ``done``."""
        import av

        self._had_frames = False
        container = self._open()
        try:
            if not container.streams.video:
                raise _SourceError("the source holds no video stream")
            stream = container.streams.video[0]
            # slice threads only: frame threads would hold back a frame per thread (latency)
            stream.thread_type = "SLICE"
            rate = stream.average_rate or stream.guessed_rate
            step = 1.0 / float(rate) if rate else 0.04
            anchor: tuple[float, float, float, float] | None = None  # mono, epoch, pts, offset
            last_pts: float | None = None
            last_frame = time.monotonic()
            for packet in _timed(container.demux(stream), self.stall_timeout):
                if self.done.is_set():
                    return
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    frames = []  # a damaged packet: the decoder recovers at the next keyframe
                now = time.monotonic()
                if not frames:
                    if self.path is None and now - last_frame > self.stall_timeout:
                        raise _SourceError(
                            f"no frame for {now - last_frame:.0f} s")
                    continue
                for frame in frames:
                    pts = frame.time if frame.time is not None else (
                        last_pts + step if last_pts is not None else 0.0)
                    # a first frame, or the source's clock jumped (a wrap, a discontinuity, a
                    # loop): the stream goes on from here
                    if anchor is None or last_pts is None or not (-1.0 < pts - last_pts < 10.0):
                        mono = time.monotonic()
                        anchor = (mono, time.time(), pts, mono - self._began)
                    last_pts = pts
                    since = pts - anchor[2]
                    if self.path is not None:  # a file plays at its own pace
                        delay = anchor[0] + since - time.monotonic()
                        if delay > 1.0 or delay < -1.0:  # paused or far behind: start over
                            mono = time.monotonic()
                            anchor = (mono, time.time(), pts, mono - self._began)
                            since = 0.0
                        elif delay > 0 and self.done.wait(delay):
                            return
                    self._deliver(frame, anchor, since)
                    last_frame = time.monotonic()
        finally:
            container.close()

    def _deliver(self, frame: Any, anchor: tuple[float, float, float, float],
                 since: float) -> None:
        if not self._had_frames:
            self._had_frames = True
            self._report(None)  # (re)connected: RUNNING, no message
        self._number += 1
        self.stats.frames_read += 1
        item = _Frame(frame, self._number, time.monotonic(), time.time(),
                      anchor[1] + since, anchor[3] + since)
        if self.mailbox.put(item):
            self.stats.frames_dropped += 1


def _timed(packets: Any, stall_timeout: float) -> Any:
    """``packets``, a read interrupted by PyAV's read timeout said as such."""
    import av

    try:
        yield from packets
    except av.error.ExitError:
        raise _SourceError(f"no data for {stall_timeout:g} s (timed out)") from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    text = str(text).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# -- following and identifying faces -------------------------------------------------------
@dataclass
class _Person:
    """A live track and what it is known to be. ``matches``: MatchedFaces (never mutated:
    records share it)."""

    track: Any  # regard.video.tracking.Track
    searched_quality: float = -1.0
    searches: int = 0
    matches: list[dict[str, Any]] = field(default_factory=list)


class _Sightings:
    """When each identified face was last in view, to tell a new identification from the same
    person seen again: a track lost and found again (a jump in the stream, a face turned away,
    a loop of a file) is searched again, but its FaceIds are a new identification only if they
    were out of view for ``_SEEN_AGAIN_S``. Bounded by the faces seen in that window."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self._pruned = 0.0

    def new(self, matches: list[dict[str, Any]], now: float) -> dict[str, float]:
        return {m["Face"]["FaceId"]: m["Similarity"] for m in matches
                if now - self.last.get(m["Face"]["FaceId"], -math.inf) > _SEEN_AGAIN_S}

    def seen(self, people: list[_Person], now: float) -> None:
        for person in people:
            for m in person.matches:
                self.last[m["Face"]["FaceId"]] = now
        if now - self._pruned > _SEEN_AGAIN_S:
            self._pruned = now
            self.last = {f: t for f, t in self.last.items() if now - t <= _SEEN_AGAIN_S}


class _Follower:
    """Faces of consecutive analysed frames assigned to live tracks (the stored-video
    tracker's motion model and assignment, without its re-identification gallery, which grows
    with every track: a processor runs for days). Only live tracks are kept."""

    def __init__(self) -> None:
        self.live: dict[int, _Person] = {}
        self._next = 0

    def update(self, now_ms: int, faces: list[Any]) -> list[_Person]:
        """The person of each face (in the faces' order)."""
        from regard.video.tracking import Observation, Track, iou_matrix, match, nearness

        observations = [Observation(now_ms, 0, None, f) for f in faces]
        assigned: list[_Person | None] = [None] * len(faces)
        people = list(self.live.values())
        if people and faces:
            predicted = np.stack([p.track.predict(now_ms, 1000.0) for p in people])
            last = np.stack([_corners(p.track.box) for p in people])  # where last seen
            boxes = np.array([[f.left, f.top, f.right, f.bottom] for f in faces])
            scores = np.maximum(iou_matrix(predicted, boxes), iou_matrix(last, boxes))
            fresh = np.array([p.track.velocity is None for p in people])
            if fresh.any():
                scores = np.where(fresh[:, None], np.maximum(scores, nearness(last, boxes)),
                                  scores)
            for ti, fi in match(scores, _MIN_IOU):
                people[ti].track.update(observations[fi])
                assigned[fi] = people[ti]
        for fi, obs in enumerate(observations):
            if assigned[fi] is None:
                person = _Person(Track(self._next, obs))
                self.live[self._next] = person
                self._next += 1
                assigned[fi] = person
        for key in [k for k, p in self.live.items()
                    if now_ms - p.track.last_ms > _TRACK_GONE_S * 1000]:
            del self.live[key]
        return [p for p in assigned if p is not None]


def _corners(box: np.ndarray) -> np.ndarray:
    cx, cy, w, h = box
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class _Searcher:
    """The collection search of stored video (``video.jobs.person_matches``: the collection's
    pack, its policy's regard:max-fpir threshold and max matches, erased faces left out)."""

    def __init__(self, service: Any, run: ProcessorRun) -> None:
        from regard.governance.policy import CollectionPolicy
        from regard.vision.packs import get_pack

        self.service, self.run = service, run
        coll = service.store.catalog.get_collection(run.collection)
        self.pack = get_pack(coll.face_model_version)
        limit = CollectionPolicy.from_tags(coll.tags).max_matches
        self.max_matches = min(limit or _MAX_MATCHES, _MAX_MATCHES)

    def search(self, rgb: np.ndarray, wanted: list[tuple[_Person, Any]]
               ) -> dict[int, list[dict[str, Any]]]:
        from regard.video.jobs import person_matches

        faces = [face for _, face in wanted]
        self.service.engine.embed_faces(rgb, faces, self.pack)
        embeddings = {person.track.id: [face.embedding] for person, face in wanted}
        found = person_matches(self.service, self.run.collection, self.run.threshold,
                               embeddings, self.max_matches)
        for face in faces:
            face.embedding = None  # not kept: the track keeps its matches, not its vectors
        return found


def _to_search(person: _Person, quality: float) -> bool:
    if person.searches == 0:
        return True
    return person.searches < _MAX_SEARCHES and quality > person.searched_quality * _IMPROVEMENT


def _merged(old: list[dict[str, Any]], new: list[dict[str, Any]], limit: int
            ) -> list[dict[str, Any]]:
    """Best similarity per FaceId of both searches, best first."""
    best: dict[str, dict[str, Any]] = {}
    for m in (*old, *new):
        face_id = m["Face"]["FaceId"]
        if face_id not in best or m["Similarity"] > best[face_id]["Similarity"]:
            best[face_id] = m
    return sorted(best.values(), key=lambda m: (-m["Similarity"], m["Face"]["FaceId"]))[:limit]


def _record(run: ProcessorRun, item: _Frame, response: list[dict[str, Any]]) -> Record:
    return {"InputInformation": {"KinesisVideo": {
                "StreamArn": run.source_arn, "FragmentNumber": str(item.number),
                "ServerTimestamp": round(item.server_ts, 3),
                "ProducerTimestamp": round(item.producer_ts, 3),
                "FrameOffsetInSeconds": round(item.offset, 3)}},
            "StreamProcessorInformation": {"Status": RUNNING},
            "FaceSearchResponse": response}


# -- the processor ----------------------------------------------------------------------------
def run_processor(run: ProcessorRun, *, service: Any, context: Any, emit: Emit,
                  on_matches: OnMatches, on_status: OnStatus, stop: threading.Event,
                  stats: ProcessorStats, reconnect_initial: float = 0.5,
                  reconnect_max: float = 10.0, fail_after: float = 300.0,
                  stall_timeout: float = 5.0, loop: bool = True) -> None:
    """Run one processor session until ``stop`` is set, ``run.max_duration_seconds`` pass, a
    file source not looped ends, or the processor fails; meant to run in its own thread.

    ``emit(record)``: each analysed frame with faces, as Rekognition's record (must not block
    long). ``on_matches(run, {FaceId: Similarity})``: once per new identification, not per frame: a
    face matched that was not in view in the last minute (``_Sightings``); raising there (the
    audit refusing) fails the processor: identifications are never made unrecorded.
    ``on_status``: ``("RUNNING", None)`` on every (re)connection,
    ``("RUNNING", "Reconnecting to the source: ...")`` while reconnecting and ``("FAILED",
    why)`` just before returning when the source failed for ``fail_after`` seconds in a row,
    the collection is gone or the analysis broke. A stop or the maximum duration returns
    without a status (the caller says STOPPED).

    ``reconnect_initial`` / ``reconnect_max``: the backoff between attempts, doubling.
    ``stall_timeout``: a network source silent this long (opening, or between frames) counts as
    failed. ``loop``: a file source starts over at its end (default), as a camera goes on.
    ``context``: the caller's; the searches run under the caller's own audit (``on_matches``).

    Returns within about 0.2 s of ``stop``; the reader thread closes its container at once
    when it is reading, or when a blocked network call is interrupted (``stall_timeout``)."""
    del context  # the operations audit the processor's start and its identifications
    started = time.monotonic()
    deadline = started + run.max_duration_seconds if run.max_duration_seconds else math.inf
    try:
        searcher = _Searcher(service, run)
    except Exception as exc:
        on_status(FAILED, f"Cannot search collection {run.collection}: {_reason(exc)}")
        return
    from regard.video.tracking import face_quality

    engine = service.engine
    mailbox = _Mailbox()
    done = threading.Event()
    source = _Source(run.source_url, mailbox, stats, done, on_status,
                     reconnect_initial=reconnect_initial, reconnect_max=reconnect_max,
                     fail_after=fail_after, stall_timeout=stall_timeout, loop=loop)
    follower, sightings = _Follower(), _Sightings()
    source.start()
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            if source.failure is not None:
                on_status(FAILED, source.failure)
                return
            item = mailbox.take(0.1)
            if item is None:
                if source.ended:
                    return
                if not source.is_alive() and source.failure is None:
                    on_status(FAILED, "The source reader stopped unexpectedly")
                    return
                continue
            try:
                _analyse(run, item, engine, searcher, follower, sightings, face_quality,
                         emit, on_matches, stats)
            except Exception as exc:
                log.exception("stream processor %s: the analysis failed", run.name)
                on_status(FAILED, f"The analysis failed: {_reason(exc)}")
                return
    finally:
        done.set()
        mailbox.clear()
        source.join(timeout=0.1)


def _analyse(run: ProcessorRun, item: _Frame, engine: Any, searcher: _Searcher,
             follower: _Follower, sightings: _Sightings, face_quality: Any, emit: Emit,
             on_matches: OnMatches, stats: ProcessorStats) -> None:
    rgb = _upright(item.frame)
    item.frame = None  # the decoder's buffer goes back now
    faces = engine.detect(rgb).faces
    now = time.monotonic()
    people = follower.update(int(item.received * 1000), faces)
    wanted: list[tuple[_Person, Any]] = []
    for person, face in zip(people, faces):
        quality = face_quality(face)
        if _to_search(person, quality):
            person.searches += 1
            person.searched_quality = max(person.searched_quality, quality)
            wanted.append((person, face))
    if wanted:
        found = searcher.search(rgb, wanted)
        for person, _ in wanted:
            new = found.get(person.track.id, [])
            if not new:
                continue
            person.matches = _merged(person.matches, new, searcher.max_matches)
            fresh = sightings.new(person.matches, now)
            if fresh:
                sightings.seen([person], now)
                stats.matches += len(fresh)
                on_matches(run, fresh)
    sightings.seen(people, now)
    if faces:
        record = _record(run, item, [{"DetectedFace": face.face_detail(),
                                      "MatchedFaces": person.matches}
                                     for person, face in zip(people, faces)])
        latency = (time.monotonic() - item.received) * 1000
        try:
            emit(record)
        except Exception:  # a sink's failure is the sink's to count; the analysis goes on
            log.exception("stream processor %s: a sink refused a record", run.name)
        stats.records += 1
    else:
        latency = (time.monotonic() - item.received) * 1000
    stats.analysed(latency)


__all__ = ["run_processor"]
