"""The stored-video job kinds (``regard.jobs``): face detection, face search and redaction, their
result pages, and the completion notification.

A job reads its video from the object store as it decodes it (``ObjectStore.open``), analyses it
(``regard.video.analysis``) and writes its results as numbered pages of at most ``CHUNK`` items:
page 0 the summary (VideoMetadata, item count), pages 1.. the items by timestamp and, for face
search, pages ``INDEX_BASE`` + 1.. the same items by person index; Get* pages through them
without loading a job's whole result. A job run again after a takeover starts over and rewrites
the same page numbers. The identifications of a face search (or of a redaction that keeps or
redacts one collection's people) are recorded in the audit ledger when its job ends, as one
``VideoFaceSearch`` entry; an erasure removes the erased faces from every stored result
(``purge_faces``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
from sqlalchemy import select, update

from regard import config
from regard.errors import InvalidParameterError, RegardError
from regard.jobs.kinds import RunningJob, job_kind, on_finish
from regard.jobs.store import Job, JobStore
from regard.store import schema as s

if TYPE_CHECKING:
    from regard.service import RegardService

log = logging.getLogger("regard.video")

FACE_DETECTION = "FaceDetection"
FACE_SEARCH = "FaceSearch"
FACE_REDACTION = "FaceRedaction"
CHUNK = 500  # items per result page
INDEX_BASE = 1_000_000  # first page number of the by-person-index copy
MAX_MATCHES = 100  # face matches kept per person (a collection policy may lower it)
PROGRESS_SECONDS = 2.0


# -- notification ----------------------------------------------------------------------------------
def check_channel(channel: Any) -> str:
    """The webhook a NotificationChannel's topic is mapped to (``REGARD_SNS_WEBHOOKS``); the
    ARNs' shapes were checked against the service model already."""
    if not isinstance(channel, dict) or not channel.get("SNSTopicArn") \
            or not channel.get("RoleArn"):
        raise InvalidParameterError("NotificationChannel needs SNSTopicArn and RoleArn")
    url = (config.current().sns_webhooks or {}).get(channel["SNSTopicArn"])
    if url is None:
        raise InvalidParameterError(
            f"SNS topic {channel['SNSTopicArn']} is not known to this server: its operator maps "
            "topics to webhooks with REGARD_SNS_WEBHOOKS")
    return url


def completion_message(job: Job) -> dict[str, Any]:
    """Rekognition Video's completion status, as it publishes it to the SNS topic."""
    obj = (job.parameters.get("Video") or {}).get("S3Object") or {}
    finished = job.finished or datetime.now(timezone.utc)
    message: dict[str, Any] = {
        "JobId": job.job_id, "Status": job.state, "API": job.parameters.get("API", job.kind),
        "Timestamp": int(finished.timestamp() * 1000),
        "Video": {"S3ObjectName": obj.get("Name"), "S3Bucket": obj.get("Bucket")}}
    if job.job_tag:
        message["JobTag"] = job.job_tag
    if job.status_message:
        message["Message"] = job.status_message
    return message


def deliver(url: str, topic: str, message: dict[str, Any], *, attempts: int = 4,
            timeout: float = 5.0) -> bool:
    """POST Amazon SNS's HTTP notification envelope (unsigned) with ``message`` as its Message;
    retried with backoff. True when the webhook answered 2xx."""
    envelope = {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic,
                "Message": json.dumps(message),
                "Timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
                + "Z", "SignatureVersion": "1"}
    data = json.dumps(envelope).encode()
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "Notification", "x-amz-sns-topic-arn": topic,
            "x-amz-sns-message-id": envelope["MessageId"]})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                if 200 <= response.status < 300:
                    return True
        except OSError as exc:
            log.warning("notification of job %s to %s failed (attempt %d): %s",
                        message.get("JobId"), url, attempt + 1, exc)
        time.sleep(min(30.0, 0.5 * 2 ** attempt))
    return False


def _notify(job: Job, service: Any) -> None:
    channel = job.parameters.get("NotificationChannel")
    if not channel:
        return
    url = (config.current().sns_webhooks or {}).get(channel["SNSTopicArn"])
    if url is None:
        log.warning("job %s: topic %s is no longer mapped to a webhook", job.job_id,
                    channel["SNSTopicArn"])
        return
    threading.Thread(target=deliver, args=(url, channel["SNSTopicArn"], completion_message(job)),
                     name="regard-notify", daemon=True).start()


# Videos uploaded through the web console for one job: the console puts them here, and they are
# deleted when that job ends, succeeded or not (a video of people is kept no longer than its
# job needs it; what stays is the job's results, and a redaction's redacted copy).
CONSOLE_BUCKET = "regard-console"
CONSOLE_UPLOADS = "uploads/"


def _remove_upload(job: Job, service: Any) -> None:
    source = (job.parameters.get("Video") or {}).get("S3Object") or {}
    if source.get("Bucket") == CONSOLE_BUCKET and str(source.get("Name", "")).startswith(
            CONSOLE_UPLOADS):
        try:
            service.objects.delete(source["Bucket"], source["Name"])
        except RegardError as exc:
            log.warning("job %s: its uploaded video could not be deleted: %s", job.job_id,
                        exc.message)


for _kind in (FACE_DETECTION, FACE_SEARCH, FACE_REDACTION):
    on_finish(_kind)(_notify)
    on_finish(_kind)(_remove_upload)


# -- result pages ----------------------------------------------------------------------------------
def write_results(job: RunningJob, metadata: dict[str, Any], items: Iterable[dict[str, Any]],
                  by_index: Iterable[dict[str, Any]] | None = None) -> None:
    """The result pages, streamed (``items`` may be generators): pages 1.. in ``items``' order,
    ``INDEX_BASE`` + 1.. in ``by_index``'s, and the summary (page 0) last."""
    count = _write_chunks(job, items, 1)
    if by_index is not None:
        _write_chunks(job, by_index, INDEX_BASE + 1)
    job.add_page({"VideoMetadata": metadata, "Count": count, "Chunk": CHUNK}, page=0)


def _write_chunks(job: RunningJob, items: Iterable[dict[str, Any]], first_page: int) -> int:
    chunk: list[dict[str, Any]] = []
    count = 0
    for item in items:
        chunk.append(item)
        if len(chunk) == CHUNK:
            job.add_page(chunk, page=first_page + count // CHUNK)
            count += len(chunk)
            chunk = []
    if chunk:
        job.add_page(chunk, page=first_page + count // CHUNK)
        count += len(chunk)
    return count


class Spool:
    """A running job's observations on disk (a temporary SQLite file), so that a long video's
    faces are never all in memory: appended frame by frame, read back in time order or by
    person. Holds boxes, landmarks, pose and quality (never embeddings); deleted on close."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="regard-video-")
        self.db = sqlite3.connect(Path(self._dir.name) / "observations.db")
        self.db.execute("CREATE TABLE obs (seq INTEGER PRIMARY KEY, ts INTEGER, "
                        "track INTEGER, face TEXT)")

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()
        self._dir.cleanup()

    def add(self, observations: list[Any]) -> None:
        self.db.executemany("INSERT INTO obs (ts, track, face) VALUES (?, ?, ?)", [
            (o.timestamp_ms, o.track, json.dumps(o.face.face_detail())) for o in observations])

    def in_time_order(self) -> Iterator[tuple[int, int | None, dict[str, Any]]]:
        """(timestamp, track, FaceDetail) as analysed."""
        for ts, track, face in self.db.execute("SELECT ts, track, face FROM obs ORDER BY seq"):
            yield ts, track, json.loads(face)

    def by_person(self, person_of: dict[int, int]
                  ) -> Iterator[tuple[int, int, dict[str, Any]]]:
        """(timestamp, person Index, FaceDetail) by person, then time."""
        self.db.execute("CREATE TEMP TABLE person_of (track INTEGER PRIMARY KEY, person INTEGER)")
        self.db.executemany("INSERT INTO person_of VALUES (?, ?)", person_of.items())
        for ts, person, face in self.db.execute(
                "SELECT o.ts, p.person, o.face FROM obs o JOIN person_of p ON o.track = p.track "
                "ORDER BY p.person, o.ts, o.seq"):
            yield ts, person, json.loads(face)


def read_results(store: JobStore, job_id: str, sort: str, offset: int, limit: int
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary and ``limit`` items from ``offset`` in ``sort`` order (TIMESTAMP | INDEX)."""
    first = store.pages(job_id, after=-1, limit=1)
    if not first or first[0][0] != 0:
        return {"VideoMetadata": None, "Count": 0}, []
    summary = first[0][1]
    chunk = int(summary.get("Chunk", CHUNK))
    base = INDEX_BASE if sort == "INDEX" else 0
    start_page = base + 1 + offset // chunk
    wanted = -(-(offset % chunk + limit) // chunk)
    pages = [body for number, body in store.pages(job_id, after=start_page - 1, limit=wanted)
             if start_page <= number < start_page + wanted]
    items = [item for body in pages for item in body]
    skip = offset % chunk
    return summary, items[skip:skip + limit]


def purge_faces(store: JobStore, face_ids: set[str]) -> int:
    """Remove ``face_ids`` from the matches of every stored face search result (an erasure must
    not leave a person's FaceId in a job's answer); how many pages changed."""
    if not face_ids:
        return 0
    changed = 0
    with store.db.write_transaction() as conn:
        jobs = list(conn.execute(select(s.jobs.c.job_id).where(
            s.jobs.c.kind == FACE_SEARCH)).scalars())
        for job_id in jobs:
            rows = conn.execute(select(s.job_pages.c.page, s.job_pages.c.body).where(
                s.job_pages.c.job_id == job_id, s.job_pages.c.page > 0)).all()
            for row in rows:
                body = row.body
                if not isinstance(body, list):
                    continue
                dirty = False
                for item in body:
                    kept = [m for m in item.get("FaceMatches", [])
                            if m["Face"]["FaceId"] not in face_ids]
                    if len(kept) != len(item.get("FaceMatches", [])):
                        item["FaceMatches"] = kept
                        dirty = True
                if dirty:
                    conn.execute(update(s.job_pages).where(
                        s.job_pages.c.job_id == job_id,
                        s.job_pages.c.page == row.page).values(body=body))
                    changed += 1
    return changed


# -- running ---------------------------------------------------------------------------------------
class _Progress:
    """Job progress in video milliseconds, written at most every few seconds."""

    def __init__(self, job: RunningJob) -> None:
        self.job, self.last = job, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self.job.progress(done, total)


@contextmanager
def _opened(svc: RegardService, video: dict[str, Any]) -> Iterator[Any]:
    """The job's video as a ``VideoReader`` streaming from the object store; closed after."""
    from regard.video.decode import VideoReader

    obj = video["S3Object"]
    with svc.objects.open(obj["Bucket"], obj["Name"], obj.get("Version")) as fh, \
            VideoReader(fh) as reader:
        yield reader


def _sample_ms() -> float:
    return float(config.current().video_sample_ms)


@job_kind(FACE_DETECTION)
def run_face_detection(job: RunningJob) -> None:
    from regard.video.analysis import AnalysisOptions, analyze_video

    svc = job.service
    with Spool() as spool:
        with _opened(svc, job.parameters["Video"]) as reader:
            analysis = analyze_video(reader, svc.engine,
                                     AnalysisOptions(sample_ms=_sample_ms(), track=False),
                                     progress=_Progress(job), check=job.check, sink=spool.add)
        write_results(job, analysis.metadata.to_aws(),
                      ({"Timestamp": ts, "Face": face} for ts, _, face in spool.in_time_order()))


def person_item(timestamp: int, person: int, face: dict[str, Any],
                found: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """One of GetFaceSearch's ``Persons``: every tracked person in every analysed frame, with
    that person's matches (``[]`` when none), as Rekognition lists them. The person's
    ``BoundingBox`` is the face's: Regard tracks faces, not bodies."""
    return {"Timestamp": timestamp,
            "Person": {"Index": person, "BoundingBox": face["BoundingBox"], "Face": face},
            "FaceMatches": found.get(person, [])}


def person_matches(svc: RegardService, collection: str, threshold: float,
                   embeddings: dict[int, list[np.ndarray]], max_matches: int = MAX_MATCHES
                   ) -> dict[int, list[dict[str, Any]]]:
    """Each person's matches in ``collection``: its best similarity to each face, from any of
    its embeddings, at ``threshold`` or above (raised by the policy's regard:max-fpir as for
    every search), best first."""
    from regard.operations.common import face_body
    from regard.operations.searches import search_threshold
    from regard.vision.packs import get_pack

    coll = svc.store.catalog.get_collection(collection)
    pack = get_pack(coll.face_model_version)
    vectors = [v for vs in embeddings.values() for v in vs]
    threshold, _ = search_threshold(coll, pack, threshold,
                                    int(coll.face_count) * max(1, len(vectors)))
    best: dict[int, dict[str, float]] = {}
    for person, vecs in embeddings.items():
        scores: dict[str, float] = {}
        for vector in vecs:
            hits = svc.store.search(coll.name, vector, max_matches,
                                    max_distance=pack.match_distance(threshold))[0]
            sims = pack.similarities([h.distance for h in hits])
            for hit, sim in zip(hits, sims):
                sim = round(float(sim), 5)
                if sim >= threshold and sim > scores.get(hit.face_id, -1.0):
                    scores[hit.face_id] = sim
        best[person] = scores
    rows = svc.store.catalog.get_faces(coll.name, sorted({f for sc in best.values() for f in sc}))
    out: dict[int, list[dict[str, Any]]] = {}
    for person, scores in best.items():
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:max_matches]
        # A face erased since the search is simply not returned.
        out[person] = [{"Similarity": sim, "Face": face_body(rows[f], coll.face_model_version)}
                       for f, sim in ranked if f in rows]
    return out


def as_matches(matched: dict[str, float]) -> dict[int, list[dict[str, Any]]]:
    """Faces a redaction matched (FaceId: similarity) in ``record_search``'s shape."""
    return {0: [{"Face": {"FaceId": face}, "Similarity": sim} for face, sim in matched.items()]}


def record_search(svc: RegardService, context: Any, job_id: str, collection: str,
                  threshold: float, matches: Callable[[], dict[int, list[dict[str, Any]]]]
                  ) -> None:
    """One VideoFaceSearch ledger entry for a video's identifications, under the principal who
    asked (the search runs inside it: refused, it does not run)."""
    def summary() -> dict[str, Any]:
        found = matches()
        face_ids = sorted({m["Face"]["FaceId"] for ms in found.values() for m in ms})
        sims = [m["Similarity"] for ms in found.values() for m in ms]
        return {"Persons": len(found), "FaceIds": face_ids,
                "TopSimilarity": max(sims) if sims else None}

    svc.run_audited("VideoFaceSearch", {"CollectionId": collection,
                                        "FaceMatchThreshold": threshold, "JobId": job_id},
                    context, summary)


def identify_persons(svc: RegardService, context: Any, job_id: str, collection: str,
                     threshold: float, analysis: Any) -> dict[int, list[dict[str, Any]]]:
    """Each tracked person's matches in ``collection`` (at most the policy's max matches),
    searched inside one audited ``VideoFaceSearch`` (refused, nothing is searched)."""
    from regard.governance.policy import CollectionPolicy

    policy = CollectionPolicy.from_tags(svc.store.catalog.get_collection(collection).tags)
    embeddings = {i: person.embeddings for i, person in analysis.persons.items()}
    found: dict[int, list[dict[str, Any]]] = {}

    def search() -> dict[int, list[dict[str, Any]]]:
        found.update(person_matches(svc, collection, threshold, embeddings,
                                    policy.max_matches or MAX_MATCHES))
        return found

    record_search(svc, context, job_id, collection, threshold, search)
    return found


def persons_by_time(spool: Spool, person_of: dict[int, int],
                    found: dict[int, list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """GetFaceSearch's ``Persons`` in time order, from a spool."""
    return (person_item(ts, person_of[track], face, found)
            for ts, track, face in spool.in_time_order() if track is not None)


@job_kind(FACE_SEARCH)
def run_face_search(job: RunningJob) -> None:
    with Spool() as spool:
        _face_search(job, spool)


def _face_search(job: RunningJob, spool: Spool) -> None:
    from regard.video.analysis import AnalysisOptions, analyze_video
    from regard.vision.packs import get_pack

    svc = job.service
    p = job.parameters
    coll = svc.store.catalog.get_collection(p["CollectionId"])
    with _opened(svc, p["Video"]) as reader:
        analysis = analyze_video(
            reader, svc.engine,
            AnalysisOptions(sample_ms=_sample_ms(), track=True, embed=True,
                            pack=get_pack(coll.face_model_version)),
            progress=_Progress(job), check=job.check, sink=spool.add)
    found = identify_persons(svc, job.context, job.job_id, coll.name, p["FaceMatchThreshold"],
                             analysis)
    person_of = analysis.person_of
    write_results(job, analysis.metadata.to_aws(), persons_by_time(spool, person_of, found),
                  (person_item(ts, person, face, found)
                   for ts, person, face in spool.by_person(person_of)))
    # An erasure that committed while these pages were being written did not see them: its
    # faces are taken out now (one committing later purges the written pages itself).
    matched = {m["Face"]["FaceId"] for ms in found.values() for m in ms}
    if matched:
        gone = matched - set(svc.store.catalog.get_faces(coll.name, sorted(matched)))
        purge_faces(svc.jobs.store, gone)


# -- redaction -------------------------------------------------------------------------------------
_OPTION_MEMBERS = {"Method": "method", "Shape": "shape", "Scale": "scale", "Codec": "codec",
                   "Crf": "crf", "Preset": "preset", "DetectEvery": "detect_every",
                   "PadMillis": "pad_ms"}


def redaction_options(given: dict[str, Any]) -> dict[str, Any]:
    """The redaction ``Options`` a job stores (their request members), checked now: a bad one
    fails the request, not the job."""
    if not isinstance(given, dict):
        raise InvalidParameterError("Options must be an object")
    unknown = sorted(set(given) - set(_OPTION_MEMBERS))
    if unknown:
        raise InvalidParameterError(f"Unknown redaction option(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(_OPTION_MEMBERS)}")
    options_from_request(given)
    return dict(given)


def options_from_request(given: dict[str, Any]) -> Any:
    """``RedactionOptions`` from the request members (``Method``, ``Shape``, ``Scale``,
    ``Codec``, ``Crf``, ``Preset``, ``DetectEvery``, ``PadMillis``)."""
    from regard.video.redact import RedactionOptions

    try:
        return RedactionOptions(**{_OPTION_MEMBERS[k]: v for k, v in given.items()
                                   if k in _OPTION_MEMBERS and v is not None})
    except TypeError as exc:
        raise InvalidParameterError(f"Invalid redaction options: {exc}") from None


@job_kind(FACE_REDACTION)
def run_face_redaction(job: RunningJob) -> None:
    from regard.video.redact import collection_identifier, redact_video

    svc = job.service
    p = job.parameters
    options = options_from_request(p.get("Options") or {})
    named = p.get("KeepCollectionId") or p.get("OnlyCollectionId")
    identify = None
    matched: dict[str, float] = {}
    if named:
        identify = collection_identifier(svc, named, job.context,
                                         threshold=p["FaceMatchThreshold"], matched=matched)
        options = dataclasses.replace(options, keep_matched=bool(p.get("KeepCollectionId")),
                                      only_matched=bool(p.get("OnlyCollectionId")))
    out = p["Output"]["S3Object"]
    source = p["Video"]["S3Object"]
    suffix = Path(source["Name"]).suffix or ".mp4"
    with tempfile.TemporaryDirectory(prefix="regard-redact-") as tmp:
        # Redaction reads the video twice (detect, then write): a local copy, streamed in.
        local = Path(tmp) / f"source{suffix}"
        with svc.objects.open(source["Bucket"], source["Name"], source.get("Version")) as fh, \
                open(local, "wb") as copy:
            shutil.copyfileobj(fh, copy, 1024 * 1024)
        target = Path(tmp) / f"redacted{Path(out['Name']).suffix or suffix}"
        try:
            report = redact_video(local, target, options, identify=identify,
                                  progress=_Progress(job), check=job.check)
        except RegardError as exc:  # name the video, not this server's temporary copy
            exc.message = exc.message.replace(str(local), f"s3://{source['Bucket']}/"
                                                          f"{source['Name']}")
            exc.args = (exc.message,)
            raise
        finally:
            if named:
                record_search(svc, job.context, job.job_id, named, p["FaceMatchThreshold"],
                              lambda: as_matches(matched))
        svc.objects.put_file(out["Bucket"], out["Name"], target)
        size = os.path.getsize(target)
    body = report.to_dict() if hasattr(report, "to_dict") else dict(vars(report))
    body["OutputBytes"] = size
    write_results(job, body.pop("VideoMetadata", None) or {}, [body])


__all__ = ["CHUNK", "FACE_DETECTION", "FACE_REDACTION", "FACE_SEARCH", "INDEX_BASE", "Spool",
           "as_matches", "check_channel", "completion_message", "deliver", "identify_persons",
           "person_item", "person_matches", "persons_by_time", "purge_faces", "read_results",
           "record_search", "redaction_options", "write_results"]
