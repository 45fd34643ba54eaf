"""Stored video: the list of video jobs, starting one by uploading a video, a job's progress and
results (faces on a timeline, the people a face search found, a redaction's report) and the
download of a redacted video.

Every step is an operation through the service gate as the signed-in key: ``ListVideoJobs``,
``StartFaceDetection`` / ``StartFaceSearch`` / ``StartFaceRedaction`` (with the purpose and
case the form gives, recorded in the ledger), ``GetFaceDetection`` / ``GetFaceSearch`` /
``GetFaceRedaction``. A job is visible to the key that started it and to administrators (the
operations decide; another key gets ResourceNotFoundException, shown as a 404 page).

An uploaded video is kept in the server's object store (``REGARD_S3_ROOT`` or
``REGARD_S3_ENDPOINT_URL``), bucket ``regard-console``, as ``uploads/<uuid>/<name>`` (the
name reduced to ASCII letters, digits, ``.``, ``_`` and ``-``); a redaction writes
``redacted/<uuid>/<name>`` there. With a local object store the bucket folder is created when
missing; an S3-compatible store needs the bucket made by its operator. The download reads only
the job's own ``Output``, never a path from the request.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import UploadFile

from regard.api.rest import status_of
from regard.api.server import Server
from regard.config import DEFAULT_MATCH_THRESHOLD
from regard.console.web import PAGE_CACHE, PREFIX, Console, form_text, upload_limit
from regard.errors import (
    AccessDeniedError,
    ConflictError,
    InvalidParameterError,
    InvalidS3ObjectError,
    RegardError,
    ResourceNotFoundError,
    ValidationError,
)
from regard.object_store import LocalObjectStore, NoObjectStore
from regard.operations import registry
from regard.spec import validate_request
from regard.video.jobs import CONSOLE_BUCKET, CONSOLE_UPLOADS, redaction_options

BUCKET = CONSOLE_BUCKET
UPLOADS = CONSOLE_UPLOADS.rstrip("/")  # deleted when their job ends (video.jobs)
REDACTED = "redacted"
LIST_PAGE = 25  # jobs per page of the list
RESULTS_PAGE = 1000  # results per page of a job (Rekognition's largest page)
# The most a video upload may carry: the form parser streams it to a temporary file
# (``web.streamed_form``), so it never sits in memory.
MAX_UPLOAD_BYTES = 2 * 1024 ** 3
METHODS = ("blur", "mosaic", "box")
MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
               ".webm": "video/webm", ".mkv": "video/x-matroska", ".avi": "video/x-msvideo",
               ".mpg": "video/mpeg", ".mpeg": "video/mpeg", ".ts": "video/mp2t"}
NO_STORE = ("This Regard server has no object store, so it cannot keep an uploaded video: set "
            "REGARD_S3_ROOT (a local folder of buckets) or REGARD_S3_ENDPOINT_URL (an "
            "S3-compatible server) and restart it.")


@dataclass(frozen=True)
class Kind:
    key: str  # detection | search | redaction (the ``kind`` query parameter)
    label: str
    start: str
    get: str


KINDS = {k.key: k for k in (
    Kind("detection", "Face detection", "StartFaceDetection", "GetFaceDetection"),
    Kind("search", "Face search", "StartFaceSearch", "GetFaceSearch"),
    Kind("redaction", "Redaction", "StartFaceRedaction", "GetFaceRedaction"))}
# ListVideoJobs' ``API`` (the Start operation; the job kind for jobs started before it was kept)
KIND_OF_API = {"StartFaceDetection": "detection", "FaceDetection": "detection",
               "StartFaceSearch": "search", "FaceSearch": "search",
               "StartFaceRedaction": "redaction", "FaceRedaction": "redaction"}


def upload_bytes(server: Server) -> int:
    """The largest video upload (streamed to a temporary file, see ``web.streamed_form``)."""
    return MAX_UPLOAD_BYTES


def safe_name(filename: str | None, default: str = "video.mp4") -> str:
    """A file name usable as an object name and in a Content-Disposition header: its last path
    segment, ASCII letters, digits, ``.``, ``_`` and ``-`` only, the extension kept."""
    base = re.split(r"[\\/]", filename or "")[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:100]
    ext = re.sub(r"[^A-Za-z0-9]+", "", ext)[:10]
    if not stem:
        return default
    return f"{stem}.{ext}" if ext else stem


def media_type(name: str) -> str:
    return MEDIA_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def _when(value: str | None) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS UTC`` (the value itself when not ISO)."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    zone = " UTC" if moment.utcoffset() is not None and not moment.utcoffset() else ""
    return moment.strftime("%Y-%m-%d %H:%M:%S") + zone


def _seconds(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms / 1000:.1f} s" if ms < 60_000 else \
        f"{int(ms // 60_000)}:{(ms % 60_000) / 1000:04.1f}"


def _video_name(video: Any) -> tuple[str, str]:
    """(short name, s3:// reference) of a job's ``Video``."""
    obj = (video.get("S3Object") if isinstance(video, dict) else None) or {}
    name = str(obj.get("Name") or "")
    return (name.rsplit("/", 1)[-1] or name, f"s3://{obj.get('Bucket', '')}/{name}" if obj
            else "")


def _progress(progress: Any) -> dict[str, Any] | None:
    """``{"done", "total", "percent"}`` of a ListVideoJobs ``Progress`` (None: not reported)."""
    if not isinstance(progress, dict) or progress.get("done") is None:
        return None
    done, total = int(progress["done"]), progress.get("total")
    if not total:
        return {"done": done, "total": None, "percent": None, "done_s": _seconds(done),
                "total_s": None}
    done = min(done, int(total))
    return {"done": done, "total": int(total), "percent": round(100 * done / int(total)),
            "done_s": _seconds(done), "total_s": _seconds(int(total))}


def listed_job(job: dict[str, Any]) -> dict[str, Any]:
    kind = KIND_OF_API.get(str(job.get("API")))
    name, ref = _video_name(job.get("Video"))
    optional = dict.fromkeys(("Finished", "StatusMessage", "JobTag", "CollectionId", "Output"))
    return {**optional, **job, "kind": kind,
            "label": KINDS[kind].label if kind else str(job.get("API")),
            "video_name": name, "video_ref": ref, "created": _when(job.get("Created")),
            "finished": _when(job.get("Finished")), "progress": _progress(job.get("Progress"))}


def refresh_seconds(listed: dict[str, Any] | None) -> int:
    """How often a running job's page reloads: every 3 s at first, then a tenth of the job's
    age, at most every 30 s. Each reload is two audited reads, so watching an hour-long job
    adds some 250 ledger entries, not 2,400."""
    created = listed.get("Created") if listed else None
    try:
        age = (datetime.now(timezone.utc) - datetime.fromisoformat(str(created))
               ).total_seconds()
    except ValueError:
        return 3
    return int(min(30, max(3, age / 10)))


# -- timelines ------------------------------------------------------------------------------------
@dataclass
class Lane:
    label: str
    y: float
    marks: list[tuple[float, float, str]] = field(default_factory=list)  # x, width, class


@dataclass
class Timeline:
    """An SVG timeline (x: time) of one or more lanes of marks; drawn by video_job.html."""

    summary: str
    lanes: list[Lane]
    ticks: list[tuple[float, str]]
    axis_y: float
    height: float
    width: int = 1000
    left: int = 170
    right: int = 975


LANE, GAP, TOP = 22, 8, 8
TICK_STEPS = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


def _step_ms(timestamps: list[int]) -> int:
    """The analysis' sampling interval as the results show it (200 ms when they cannot tell)."""
    unique = sorted(set(timestamps))
    diffs = [b - a for a, b in itertools.pairwise(unique) if b > a]
    return min(diffs) if diffs else 200


def timeline(duration_ms: float | None, lanes: list[tuple[str, list[tuple[int, str]]]],
             summary: str) -> Timeline:
    """``lanes``: (label, [(timestamp ms, class)]); one mark per timestamp, as wide as the
    sampling interval, so that a face seen throughout draws one bar."""
    every = [ts for _, marks in lanes for ts, _ in marks]
    step = _step_ms(every)
    duration = max(float(duration_ms or 0), (max(every) + step) if every else 1.0, 1.0)
    chart = Timeline(summary=summary, lanes=[], ticks=[], axis_y=0, height=0)
    span = chart.right - chart.left
    scale = span / duration
    width = max(2.0, step * scale)
    for i, (label, marks) in enumerate(lanes):
        lane = Lane(label=label if len(label) <= 24 else label[:23] + "…",
                    y=TOP + i * (LANE + GAP))
        for ts, css in marks:
            x = chart.left + ts * scale
            lane.marks.append((round(x, 1), round(min(width, chart.right - x), 1) or 1.0, css))
        chart.lanes.append(lane)
    chart.axis_y = TOP + max(1, len(lanes)) * (LANE + GAP)
    chart.height = chart.axis_y + 22
    seconds = duration / 1000
    tick = next((s for s in TICK_STEPS if seconds / s <= 8), TICK_STEPS[-1])
    t = 0.0
    while t <= seconds + 1e-9:
        label = f"{t:g} s" if t < 60 else f"{int(t // 60)}:{int(t % 60):02d}"
        chart.ticks.append((round(chart.left + t * 1000 * scale, 1), label))
        t += tick
    return chart


def detection_view(body: dict[str, Any]) -> dict[str, Any]:
    faces = body.get("Faces") or []
    meta = body.get("VideoMetadata") or {}
    moments = sorted({int(f["Timestamp"]) for f in faces})
    rows = [{"time": _seconds(f["Timestamp"]), "ms": f["Timestamp"],
             "box": f["Face"].get("BoundingBox") or {},
             "confidence": f["Face"].get("Confidence")} for f in faces]
    where = (f", from {_seconds(moments[0])} to {_seconds(moments[-1])}" if moments else "")
    summary = (f"Timeline of a {_seconds(meta.get('DurationMillis'))} video: {len(faces)} "
               f"face{'s' if len(faces) != 1 else ''} detected at {len(moments)} moment"
               f"{'s' if len(moments) != 1 else ''}{where}"
               f"{' (this page of the results)' if body.get('NextToken') else ''}.")
    chart = timeline(meta.get("DurationMillis"),
                     [("Faces", [(ts, "seg") for ts in moments])], summary)
    return {"faces": rows, "timeline": chart, "moments": len(moments)}


def search_view(body: dict[str, Any]) -> dict[str, Any]:
    items = body.get("Persons") or []
    meta = body.get("VideoMetadata") or {}
    people: dict[int, dict[str, Any]] = {}
    for item in items:
        index = int(item["Person"]["Index"])
        ts = int(item["Timestamp"])
        person = people.setdefault(index, {"index": index, "first": ts, "last": ts,
                                           "seen": 0, "marks": [], "best": None})
        person["first"], person["last"] = min(person["first"], ts), max(person["last"], ts)
        person["seen"] += 1
        matches = item.get("FaceMatches") or []
        person["marks"].append((ts, "seg match" if matches else "seg"))
        for match in matches:
            if person["best"] is None or match["Similarity"] > person["best"]["Similarity"]:
                person["best"] = match
    ordered = [people[i] for i in sorted(people)]
    for person in ordered:
        best = person["best"]
        face = (best or {}).get("Face") or {}
        person["name"] = face.get("ExternalImageId") or (face.get("FaceId") if best else None)
        person["first_s"], person["last_s"] = _seconds(person["first"]), _seconds(person["last"])
    matched = sum(1 for p in ordered if p["best"])
    summary = (f"Timeline of a {_seconds(meta.get('DurationMillis'))} video: {len(ordered)} "
               f"person{'s' if len(ordered) != 1 else ''} tracked, {matched} matched a face of "
               f"the collection"
               f"{' (this page of the results)' if body.get('NextToken') else ''}. "
               + " ".join(f"Person {p['index']}"
                          + (f" ({p['name']})" if p["name"] else "")
                          + f" from {p['first_s']} to {p['last_s']}." for p in ordered[:20]))
    lanes = [(f"Person {p['index']}" + (f": {p['name']}" if p["name"] else ""), p["marks"])
             for p in ordered]
    return {"persons": ordered, "timeline": timeline(meta.get("DurationMillis"), lanes, summary),
            "matched": matched}


REPORT_LABELS = {"Frames": "Frames", "FramesWithMasks": "Frames with a face hidden",
                 "Tracks": "Faces followed (tracks)", "TracksVisible": "Tracks left visible",
                 "Detections": "Detections", "Seconds": "Processing time (seconds)",
                 "FramesPerSecond": "Frames processed a second", "AudioCopied": "Audio copied",
                 "Codec": "Codec", "DetectEvery": "Detected every n-th frame",
                 "OutputBytes": "Size of the redacted video"}


def redaction_view(body: dict[str, Any]) -> dict[str, Any]:
    report = body.get("Report") or {}
    facts = []
    for key, value in report.items():
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif key == "OutputBytes" and isinstance(value, int):
            value = f"{value:,} bytes"
        elif isinstance(value, float):
            value = f"{value:,.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        facts.append((REPORT_LABELS.get(key, key), value))
    out = ((body.get("Output") or {}).get("S3Object") or {})
    name = str(out.get("Name") or "")
    return {"facts": facts, "output": f"s3://{out.get('Bucket', '')}/{name}" if out else "",
            "download_name": safe_name(name.rsplit("/", 1)[-1], "redacted.mp4")}


# -- the object store -----------------------------------------------------------------------------
def store_upload(objects: Any, source: IO[bytes], name: str) -> None:
    """Copy the uploaded file (spooled by the form parser) into the object store, by a
    temporary file on disk (``put_file`` takes a path), 1 MiB at a time."""
    if isinstance(objects, NoObjectStore):
        raise InvalidS3ObjectError(NO_STORE)
    if isinstance(objects, LocalObjectStore):
        (objects.root / BUCKET).mkdir(exist_ok=True)  # the console's own bucket
    with tempfile.TemporaryDirectory(prefix="regard-console-") as tmp:
        path = Path(tmp) / "upload"
        source.seek(0)
        with open(path, "wb") as copy:
            shutil.copyfileobj(source, copy, 1024 * 1024)
        objects.put_file(BUCKET, name, path)


def open_output(objects: Any, bucket: str, name: str) -> tuple[IO[bytes], int]:
    fh = objects.open(bucket, name)
    try:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(0)
    except BaseException:
        fh.close()
        raise
    return fh, size


def _chunks(fh: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := fh.read(1024 * 1024):
            yield chunk
    finally:
        fh.close()


# -- the pages ------------------------------------------------------------------------------------
def routes(console: Console, router: APIRouter) -> None:
    server = console.server
    service = server.service

    def may_start(visitor: Any) -> list[Kind]:
        return [k for k in KINDS.values() if visitor.may(k.start)]

    async def list_page(request: Request, next_token: str | None = None,
                        error: RegardError | None = None, status: int = 200,
                        values: dict[str, Any] | None = None) -> Response:
        visitor = request.state.visitor
        kinds = may_start(visitor)
        jobs: dict[str, Any] | None = None
        list_error: RegardError | None = None
        try:
            jobs = await console.call(request, "ListVideoJobs",
                                      {"MaxResults": LIST_PAGE, "NextToken": next_token})
        except AccessDeniedError as exc:
            if not kinds:
                raise  # nothing on this page this key may use: the 403 page
            list_error = exc
            status = max(status, status_of(exc))
        except RegardError as exc:
            list_error = exc
            status = max(status, status_of(exc))
        collections: list[str] | None = None
        if any(k.key == "search" for k in kinds) and visitor.may("DescribeCollections"):
            try:
                described = await console.call(request, "DescribeCollections",
                                               {"MaxResults": 100})
                collections = [c["CollectionId"] for c in described["Collections"]]
            except RegardError:
                collections = None  # typed in instead
        return console.render(
            request, "video.html", status=status, error=error, list_error=list_error,
            jobs=[listed_job(j) for j in jobs["Jobs"]] if jobs else None,
            next_token=(jobs or {}).get("NextToken"), paged=bool(next_token), kinds=kinds,
            collections=collections, methods=METHODS,
            no_store=isinstance(service.objects, NoObjectStore), bucket=BUCKET,
            limit_mib=upload_bytes(server) // (1024 * 1024),
            values={"kind": kinds[0].key if kinds else "", "threshold": DEFAULT_MATCH_THRESHOLD,
                    "method": "blur", "collection": None, "job_tag": None, "purpose": None,
                    "case": None, **{k: v for k, v in (values or {}).items() if v}})

    @router.get("/video")
    async def video_jobs(request: Request, next: str | None = None) -> Response:
        return await list_page(request, next_token=next)

    @router.post("/video")
    @upload_limit(upload_bytes)
    async def start_job(request: Request) -> Response:
        upload = request.state.form.get("video")
        values: dict[str, Any] = {}
        try:
            values = {"kind": form_text(request, "kind", default="detection", max_length=32),
                      "collection": form_text(request, "collection", max_length=255),
                      "threshold": form_text(request, "threshold", max_length=32),
                      "method": form_text(request, "method", default="blur", max_length=16),
                      "job_tag": form_text(request, "job_tag", max_length=1024),
                      "purpose": form_text(request, "purpose", max_length=1024),
                      "case": form_text(request, "case", max_length=1024)}
            kind, job_id = await start(request, upload, values)
        except AccessDeniedError as exc:
            return console.problem(request, exc)
        except RegardError as exc:
            return await list_page(request, error=exc, status=status_of(exc), values=values)
        finally:
            if isinstance(upload, UploadFile):
                await upload.close()
        return console.redirect(f"/video/{quote(job_id, safe='')}", kind=kind)

    async def start(request: Request, upload: Any, values: dict[str, Any]) -> tuple[str, str]:
        kind = KINDS.get(values["kind"] or "")
        if kind is None:
            raise ValidationError("Choose what the job does: face detection, face search or "
                                  "redaction")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise ValidationError("Choose a video file to upload")
        if upload.size == 0:
            raise ValidationError("The uploaded file is empty")
        params: dict[str, Any] = {"JobTag": values["job_tag"]}
        if kind.key == "search":
            if not values["collection"]:
                raise ValidationError("A face search needs the collection to search")
            params["CollectionId"] = values["collection"]
            try:
                threshold = float(values["threshold"]) if values["threshold"] \
                    else DEFAULT_MATCH_THRESHOLD
            except ValueError:
                raise ValidationError("The match threshold is a number from 0 to 100") from None
            if not 0 <= threshold <= 100:
                raise ValidationError("The match threshold is a number from 0 to 100")
            params["FaceMatchThreshold"] = threshold
        folder = str(uuid.uuid4())
        name = safe_name(upload.filename)
        params["Video"] = {"S3Object": {"Bucket": BUCKET, "Name": f"{UPLOADS}/{folder}/{name}"}}
        if kind.key == "redaction":
            if values["method"] not in METHODS:
                raise ValidationError(f"The redaction method is one of {', '.join(METHODS)}")
            params["Options"] = {"Method": values["method"]}
            params["Output"] = {"S3Object": {"Bucket": BUCKET,
                                             "Name": f"{REDACTED}/{folder}/{name}"}}
        audit = {"purpose": values["purpose"], "case": values["case"]}
        given = {k: v for k, v in params.items() if v is not None}
        # What the operation would refuse before running, checked before the upload is kept:
        # the request's shape (Rekognition's model: JobTag's pattern, ...) ...
        if registry.get(kind.start).rekognition:
            validate_request(kind.start, given)
        else:
            redaction_options(params["Options"])
        # ... and the gate's answer (scopes, allow-list, policy): a refused key stores nothing.
        # The refusal itself is then recorded by making the call, which the gate refuses again.
        context = console.context(request, request.state.visitor, audit)
        try:
            await server.blocking(service.preflight, kind.start, given, context)
        except RegardError:
            await console.call(request, kind.start, params, audit)
            raise
        stored = params["Video"]["S3Object"]["Name"]
        await server.blocking(store_upload, service.objects, upload.file, stored)
        try:
            result = await console.call(request, kind.start, params, audit)
        except RegardError:  # no job will ever read it
            await server.blocking(service.objects.delete, BUCKET, stored)
            raise
        return kind.key, str(result["JobId"])

    async def fetch(request: Request, job_id: str, hint: str | None,
                    next_token: str | None) -> tuple[Kind, dict[str, Any]]:
        """The job's Get* answer: the kind the link names first, then the others (each Get*
        refuses a job of another kind with InvalidParameterException)."""
        order = [KINDS[hint]] if hint in KINDS else []
        order += [k for k in KINDS.values() if k not in order]
        refused: RegardError | None = None
        for kind in order:
            params: dict[str, Any] = {"JobId": job_id}
            if kind.key != "redaction":
                params.update(MaxResults=RESULTS_PAGE, NextToken=next_token)
            if kind.key == "search":
                params["SortBy"] = "TIMESTAMP"
            try:
                return kind, await console.call(request, kind.get, params)
            except AccessDeniedError as exc:
                refused = exc
            except InvalidParameterError as exc:
                if "is not a" not in exc.message:
                    raise
                refused = refused if isinstance(refused, AccessDeniedError) else exc
        raise refused or ResourceNotFoundError(f"Job {job_id} does not exist")

    async def find_listed(request: Request, job_id: str) -> dict[str, Any] | None:
        """The job as ListVideoJobs shows it (its progress)."""
        if not request.state.visitor.may("ListVideoJobs"):
            return None
        try:
            jobs = await console.call(request, "ListVideoJobs", {"JobId": job_id})
        except RegardError:
            return None
        return next((listed_job(j) for j in jobs["Jobs"] if j["JobId"] == job_id), None)

    @router.get("/video/{job_id}")
    async def video_job(request: Request, job_id: str, kind: str | None = None,
                        next: str | None = None) -> Response:
        found, body = await fetch(request, job_id, kind, next)
        status = body.get("JobStatus")
        listed = await find_listed(request, job_id) if status == "IN_PROGRESS" else None
        view: dict[str, Any] = {}
        if status == "SUCCEEDED":
            view = (detection_view if found.key == "detection" else search_view
                    if found.key == "search" else redaction_view)(body)
        name, ref = _video_name(body.get("Video"))
        here = f"{PREFIX}/video/{quote(job_id, safe='')}"
        meta = body.get("VideoMetadata") or {}
        return console.render(
            request, "video_job.html", job_id=job_id, kind=found, body=body, job_status=status,
            listed=listed, view=view, video_name=name, video_ref=ref, meta=meta,
            job_tag=body.get("JobTag"), message=body.get("StatusMessage"),
            next_token=body.get("NextToken"), finished=listed["finished"] if listed else None,
            duration=_seconds(meta.get("DurationMillis")) if meta else None,
            here=here, page_href=f"{here}?kind={found.key}", paged=bool(next),
            refresh=refresh_seconds(listed))

    @router.get("/video/{job_id}/redacted")
    async def redacted(request: Request, job_id: str) -> Response:
        body = await console.call(request, "GetFaceRedaction", {"JobId": job_id})
        if body.get("JobStatus") != "SUCCEEDED":
            raise ConflictError(f"The redacted video of job {job_id} is not ready: the job is "
                                f"{body.get('JobStatus')}")
        out = body["Output"]["S3Object"]
        fh, size = await server.blocking(open_output, service.objects, out["Bucket"],
                                         out["Name"])
        filename = "redacted-" + safe_name(str(out["Name"]).rsplit("/", 1)[-1], "video.mp4")
        return StreamingResponse(_chunks(fh), media_type=media_type(filename), headers={
            **PAGE_CACHE, "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{filename}"'})
