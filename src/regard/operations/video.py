"""Stored video: Rekognition Video's StartFaceDetection / GetFaceDetection and StartFaceSearch /
GetFaceSearch, and Regard's face redaction jobs (StartFaceRedaction / GetFaceRedaction).

A Start* request is checked as AWS checks it (the video readable from the object store and
within 10 GB, the collection there, the notification topic known), then queued as a durable job
(``regard.jobs``: same ClientRequestToken and parameters -> same JobId for 7 days) that the
server's job runner runs (``regard.video.jobs``). Get* reads the job's state and its result
pages: ``JobStatus`` IN_PROGRESS (a queued job too: Rekognition has no QUEUED), SUCCEEDED or
FAILED with ``StatusMessage``; results paged by ``MaxResults`` (default and maximum 1000) and
``NextToken``. A job is visible to the principal who started it and to administrators.

The identifications of a face search are recorded when its job ends, as one ``VideoFaceSearch``
ledger entry naming the matched FaceIds (who-searched and the transparency report read it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TYPE_CHECKING, Any

from regard.config import DEFAULT_MATCH_THRESHOLD
from regard.errors import (
    InvalidPaginationTokenError,
    InvalidParameterError,
    ResourceNotFoundError,
)
from regard.jobs.store import FAILED, SUCCEEDED, Job
from regard.operations.common import collection
from regard.operations.registry import ADMIN, Call, Params, operation
from regard.video import jobs as video_jobs
from regard.video.decode import check_size

if TYPE_CHECKING:
    from regard.service import RegardService

MAX_RESULTS = 1000  # Rekognition Video's default and largest page


def _started(params: Params, result: Params) -> Params:
    out: Params = {"JobId": result.get("JobId")}
    video = (params.get("Video") or {}).get("S3Object") or {}
    if video:
        out["Video"] = f"s3://{video.get('Bucket')}/{video.get('Name')}"
    elif params.get("File"):  # `regard video` on a local file
        out["File"] = params["File"]
    if "FaceMatchThreshold" in params:
        out["Threshold"] = params["FaceMatchThreshold"]
    return out


def _got(params: Params, result: Params) -> Params:
    return {"JobId": params.get("JobId"), "JobStatus": result.get("JobStatus")}


def _video_search(params: Params, result: Params) -> Params:
    return {"JobId": params.get("JobId"),
            "Threshold": params.get("FaceMatchThreshold", DEFAULT_MATCH_THRESHOLD),
            "Persons": result.get("Persons", 0), "FaceIds": result.get("FaceIds", []),
            "TopSimilarity": result.get("TopSimilarity")}


# -- starting ------------------------------------------------------------------------------------
def _check_video(svc: RegardService, video: Any) -> dict[str, str]:
    """The S3 object AWS would read: present, readable and within 10 GB (checked now, as AWS
    does, so that a typo fails the request rather than the job)."""
    if not isinstance(video, dict) or not isinstance(video.get("S3Object"), dict):
        raise InvalidParameterError("Video.S3Object is required (Bucket and Name)")
    obj = video["S3Object"]
    if not obj.get("Bucket") or not obj.get("Name"):
        raise InvalidParameterError("Video.S3Object needs Bucket and Name")
    with svc.objects.open(obj["Bucket"], obj["Name"], obj.get("Version")) as fh:
        check_size(fh)
    return {k: obj[k] for k in ("Bucket", "Name", "Version") if obj.get(k)}


def _submit(svc: RegardService, call: Call, kind: str, parameters: Params) -> Params:
    p = call.params
    if p.get("NotificationChannel"):
        video_jobs.check_channel(p["NotificationChannel"])
        parameters["NotificationChannel"] = p["NotificationChannel"]
    parameters["API"] = call.name
    job_id = svc.jobs.submit(kind, call.context, parameters,
                             client_token=p.get("ClientRequestToken"), job_tag=p.get("JobTag"),
                             operation=call.name)
    return {"JobId": job_id}


@operation("StartFaceDetection", scope="detect", summary=_started)
def start_face_detection(svc: RegardService, call: Call) -> Params:
    p = call.params
    return _submit(svc, call, video_jobs.FACE_DETECTION, {
        "Video": {"S3Object": _check_video(svc, p.get("Video"))},
        "FaceAttributes": p.get("FaceAttributes", "DEFAULT")})


@operation("StartFaceSearch", scope="search", summary=_started,
           threshold_member="FaceMatchThreshold")
def start_face_search(svc: RegardService, call: Call) -> Params:
    p = call.params
    coll = collection(svc, p["CollectionId"])
    return _submit(svc, call, video_jobs.FACE_SEARCH, {
        "Video": {"S3Object": _check_video(svc, p.get("Video"))},
        "CollectionId": coll.name,
        "FaceMatchThreshold": float(p.get("FaceMatchThreshold", DEFAULT_MATCH_THRESHOLD))})


@operation("StartFaceRedaction", scope="detect", summary=_started, rekognition=False)
def start_face_redaction(svc: RegardService, call: Call) -> Params:
    """Regard's own: redact every face of a stored video into ``Output.S3Object`` (see
    ``regard.video.redact``). ``KeepCollectionId`` leaves people who match that collection
    visible, ``OnlyCollectionId`` redacts only them: both identify people, so they need the
    ``search`` scope and the collection's allow-list, and are recorded as a ``VideoFaceSearch``."""
    p = call.params
    video = _check_video(svc, p.get("Video"))
    output = (p.get("Output") or {}).get("S3Object") or {}
    if not output.get("Bucket") or not output.get("Name"):
        raise InvalidParameterError("Output.S3Object needs Bucket and Name: where the redacted "
                                    "video is written")
    if (output["Bucket"], output["Name"]) == (video["Bucket"], video["Name"]):
        raise InvalidParameterError("Output.S3Object must differ from Video.S3Object: the "
                                    "original is never overwritten")
    keep, only = p.get("KeepCollectionId"), p.get("OnlyCollectionId")
    if keep and only:
        raise InvalidParameterError("Give KeepCollectionId or OnlyCollectionId, not both")
    parameters: Params = {"Video": {"S3Object": video},
                          "Output": {"S3Object": {"Bucket": output["Bucket"],
                                                  "Name": output["Name"]}},
                          "Options": video_jobs.redaction_options(p.get("Options") or {})}
    named = keep or only
    if named:
        # the identification the job will record, checked now by the same gate: scopes, the
        # collection allow-list, its threshold floor
        asked = {"CollectionId": named, "FaceMatchThreshold": p.get("FaceMatchThreshold")}
        checked = svc.preflight("VideoFaceSearch",
                                {k: v for k, v in asked.items() if v is not None}, call.context)
        coll = collection(svc, named)
        parameters["KeepCollectionId" if keep else "OnlyCollectionId"] = coll.name
        parameters["FaceMatchThreshold"] = float(checked.get("FaceMatchThreshold",
                                                             DEFAULT_MATCH_THRESHOLD))
    return _submit(svc, call, video_jobs.FACE_REDACTION, parameters)


@operation("VideoFaceSearch", scope="search", summary=_video_search, rekognition=False,
           threshold_member="FaceMatchThreshold", identifies=True)
def video_face_search(svc: RegardService, call: Call) -> Params:
    """The ledger's record of a video job's identifications, written by the job when it ends
    (``RegardService.run_audited``); there is nothing to call."""
    raise InvalidParameterError("VideoFaceSearch is recorded by face search and redaction "
                                "jobs; start one with StartFaceSearch")


def _redacted(params: Params, result: Params) -> Params:
    out = {"Faces": result.get("FaceCount", result.get("FacesMasked")),
           "Format": result.get("Format")}
    if params.get("File"):  # `regard redact` on a local file
        out["File"] = params["File"]
    return out


@operation("RedactFaces", scope="detect", pool="image", summary=_redacted, rekognition=False,
           optional_audit=True)
def redact_faces(svc: RegardService, call: Call) -> Params:
    """Regard's own: every face of an image hidden (``regard.video.redact``), the image returned
    in its own format, upright and without its EXIF/XMP metadata."""
    from regard.video.redact import redact_image_bytes

    spec = call.params.get("Image") or {}
    if spec.get("Bytes") is None:
        raise InvalidParameterError("Image.Bytes is required")
    data = bytes(spec["Bytes"])
    call.image_sha256.append(hashlib.sha256(data).hexdigest())
    options = video_jobs.options_from_request(
        video_jobs.redaction_options(call.params.get("Options") or {}))
    encoded, report = redact_image_bytes(data, options)
    return {"Image": encoded, "ContentType": f"image/{report.format.lower()}",
            "Format": report.format, "FaceCount": report.masked}


# -- results -------------------------------------------------------------------------------------
def _job(svc: RegardService, call: Call, kind: str) -> Job:
    context = call.context
    owner = None if context.scopes is None or ADMIN in context.scopes else context.principal
    try:
        job = svc.jobs.get(call.params["JobId"], owner=owner)
    except ResourceNotFoundError:
        raise ResourceNotFoundError(f"Job {call.params['JobId']} does not exist (or its "
                                    "results have expired)") from None
    if job.kind != kind:
        raise InvalidParameterError(f"Job {job.job_id} is not a {call.name[3:]} job")
    return job


def _token(job_id: str, sort: str, offset: int) -> str:
    raw = json.dumps({"j": job_id, "s": sort, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _offset(token: str | None, job_id: str, sort: str) -> int:
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset = int(data["o"])
        if data["j"] != job_id or data["s"] != sort or offset < 0:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidPaginationTokenError(
            "Invalid NextToken: it must come from the previous page of the same job, same "
            "SortBy") from None
    return offset


def _results(svc: RegardService, call: Call, kind: str, member: str, sort: str) -> Params:
    job = _job(svc, call, kind)
    body: Params = {"JobStatus": SUCCEEDED if job.state == SUCCEEDED
                    else FAILED if job.state == FAILED else "IN_PROGRESS"}
    if job.status_message:
        body["StatusMessage"] = job.status_message
    if job.state != SUCCEEDED:
        body["JobId"] = job.job_id
        if job.job_tag:
            body["JobTag"] = job.job_tag
        body["Video"] = job.parameters.get("Video")
        return body
    limit = min(call.params.get("MaxResults") or MAX_RESULTS, MAX_RESULTS)
    offset = _offset(call.params.get("NextToken"), job.job_id, sort)
    summary, items = video_jobs.read_results(svc.jobs.store, job.job_id, sort, offset, limit)
    body["VideoMetadata"] = summary["VideoMetadata"]
    body[member] = items
    if offset + len(items) < summary["Count"]:
        body["NextToken"] = _token(job.job_id, sort, offset + len(items))
    body["JobId"] = job.job_id
    body["Video"] = job.parameters.get("Video")
    if job.job_tag:
        body["JobTag"] = job.job_tag
    return body


@operation("GetFaceDetection", scope="detect", summary=_got)
def get_face_detection(svc: RegardService, call: Call) -> Params:
    return _results(svc, call, video_jobs.FACE_DETECTION, "Faces", "TIMESTAMP")


@operation("GetFaceSearch", scope="search", summary=_got)
def get_face_search(svc: RegardService, call: Call) -> Params:
    return _results(svc, call, video_jobs.FACE_SEARCH, "Persons",
                    call.params.get("SortBy") or "TIMESTAMP")


@operation("GetFaceRedaction", scope="detect", summary=_got, rekognition=False)
def get_face_redaction(svc: RegardService, call: Call) -> Params:
    """The redaction job's state, and once SUCCEEDED where the redacted video is and what was
    done (frames, masked frames, tracks, whether the audio was copied)."""
    job = _job(svc, call, video_jobs.FACE_REDACTION)
    body = _results(svc, call, video_jobs.FACE_REDACTION, "Report", "TIMESTAMP")
    if job.state == SUCCEEDED:
        body["Report"] = body["Report"][0] if body.get("Report") else {}
        body["Output"] = job.parameters["Output"]
    return body


VIDEO_KINDS = (video_jobs.FACE_DETECTION, video_jobs.FACE_SEARCH, video_jobs.FACE_REDACTION)


@operation("ListVideoJobs", scope="detect", rekognition=False)
def list_video_jobs(svc: RegardService, call: Call) -> Params:
    """Stored-video jobs newest first (the caller's own; an administrator's: everyone's), with
    their progress, ``MaxResults`` (default 50, at most 100) at a time from ``NextToken``, or
    only the one ``JobId``.
    Rekognition has no such listing; the console shows jobs with it."""
    context = call.context
    owner = None if context.scopes is None or ADMIN in context.scopes else context.principal
    if call.params.get("JobId"):  # just this one (a job page's progress)
        try:
            job = svc.jobs.get(call.params["JobId"], owner=owner)
        except ResourceNotFoundError:
            return {"Jobs": []}
        return {"Jobs": [_listed(job)] if job.kind in VIDEO_KINDS else []}
    limit = int(call.params.get("MaxResults") or 50)
    if not 1 <= limit <= 100:
        raise InvalidParameterError("MaxResults must be between 1 and 100")
    found: list[Job] = []
    after = call.params.get("NextToken") or None
    while len(found) <= limit:  # other kinds of jobs share the table: skip them
        batch = svc.jobs.store.list(owner, after=after, limit=limit + 1, newest_first=True)
        found += [j for j in batch if j.kind in VIDEO_KINDS]
        if len(batch) <= limit:
            break
        after = batch[-1].job_id
    out: Params = {"Jobs": [_listed(j) for j in found[:limit]]}
    if len(found) > limit:
        out["NextToken"] = found[limit - 1].job_id
    return out


def _listed(job: Job) -> Params:
    status = (SUCCEEDED if job.state == SUCCEEDED else FAILED if job.state == FAILED
              else "IN_PROGRESS")
    out: Params = {"JobId": job.job_id, "API": job.parameters.get("API") or job.kind,
                   "JobStatus": status, "Queued": job.state == "QUEUED",
                   "Owner": job.owner, "Created": job.created.isoformat(),
                   "Video": job.parameters.get("Video"), "Progress": job.progress}
    for member, value in (("Finished", job.finished and job.finished.isoformat()),
                          ("StatusMessage", job.status_message), ("JobTag", job.job_tag),
                          ("CollectionId", job.parameters.get("CollectionId")),
                          ("Output", job.parameters.get("Output"))):
        if value:
            out[member] = value
    return out
