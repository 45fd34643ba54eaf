"""What runs in a Ray worker process: one service per process, its work read from the job row.

No Ray import here: Ray calls these functions (``ray_driver`` wraps them as remote tasks), and
tests call them directly. A worker process keeps one ``RegardService`` (one single-threaded
``Engine``, one connection pool to the catalog its node is configured for) across tasks.

The worker trusts its own configuration, not the task: the catalog is its node's
``REGARD_DATABASE_URL`` (with ``REGARD_LEDGER_KEY`` to sign the ledger's head), and the
principal, collection and options are those of the batch's job row in that catalog. A node
pointed at another catalog does not find the job and fails the task with a message saying so,
instead of writing faces where nobody will look for them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from regard import __version__, config
from regard.errors import RegardError, ResourceNotFoundError
from regard.jobs.store import IN_PROGRESS, Job, JobStore

_services: dict[tuple[Any, ...], Any] = {}


class BatchGone(RegardError):
    """The batch's job is not (or no longer) running in this node's catalog."""

    code = "ResourceNotFoundException"
    http_status = 400


def service(detector: str | None = None, min_face_size: int = 0) -> Any:
    """This process's service for the given detector options (made once)."""
    key = (detector, min_face_size)
    svc = _services.get(key)
    if svc is None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        from regard.analysis import Engine
        from regard.service import RegardService

        svc = RegardService(Engine(detector, min_face_size=min_face_size, threads=1))
        _services[key] = svc
    return svc


def running_job(svc: Any, job_id: str) -> Job:
    """The batch's job as this node's catalog has it; ``BatchGone`` when it is not running
    there (another catalog, or the batch ended or was taken over)."""
    try:
        job = JobStore(svc.store.database).get(job_id)
    except ResourceNotFoundError:
        raise BatchGone(
            f"Batch job {job_id} is not in this worker node's catalog: every node needs the "
            "driver's REGARD_DATABASE_URL (and REGARD_LEDGER_KEY)") from None
    if job.state != IN_PROGRESS:
        raise BatchGone(f"Batch job {job_id} is {job.state}, not running")
    return job


def check(job_id: str) -> dict[str, Any]:
    """What this node runs, and that its catalog holds the batch (run once per node by the
    driver before any work: a misconfigured node is named at once)."""
    import socket

    running_job(service(), job_id)
    return {"Version": __version__, "Host": socket.gethostname(), "Pid": os.getpid()}


# -- indexing --------------------------------------------------------------------------------
def index_chunk(job_id: str, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Index each ``(reference, ExternalImageId)`` of a chunk as the batch's principal; one
    outcome per item: ``{"Ref", "Faces", "Unindexed"}``, ``{"Ref", "Skipped": True}`` (the
    collection had the image) or ``{"Ref", "Error", "Message"}``. The chunk fails as a whole
    only when the batch itself is gone (``BatchGone``)."""
    job = running_job(next(iter(_services.values()), None) or service(), job_id)
    svc = service(job.parameters.get("Detector"), int(job.parameters.get("MinFaceSize") or 0))
    from regard.vision.packs import get_pack

    try:
        pack = get_pack(svc.store.catalog.get_collection(
            job.parameters["CollectionId"]).face_model_version)
    except RegardError as exc:
        return [_failure(ref, exc) for ref, _ in items]
    return [_index_one(svc, job, pack, ref, external) for ref, external in items]


def _index_one(svc: Any, job: Job, pack: Any, ref: str, external: str) -> dict[str, Any]:
    from regard.cluster.sources import read_source
    from regard.operations.faces import ALREADY_INDEXED

    p = job.parameters
    collection = p["CollectionId"]
    try:
        data = read_source(ref, svc.objects, config.current().max_image_bytes)
        digest = hashlib.sha256(data).hexdigest()
        if svc.store.catalog.image_known(collection, digest):  # cheap, unlocked: most skips
            return {"Ref": ref, "Skipped": True}
        detected = svc.engine.detect(data, embed=True, pack=pack)
        params: dict[str, Any] = {"CollectionId": collection, "ExternalImageId": external,
                                  "QualityFilter": p.get("QualityFilter", "AUTO")}
        if p.get("MaxFaces") is not None:
            params["MaxFaces"] = int(p["MaxFaces"])
        body = svc.index_detected_faces(detected, digest, job.context, once=True, **params)
    except RegardError as exc:
        return _failure(ref, exc)
    if body.get(ALREADY_INDEXED):
        return {"Ref": ref, "Skipped": True}
    return {"Ref": ref, "Faces": len(body["FaceRecords"]),
            "Unindexed": len(body["UnindexedFaces"])}


def _failure(ref: str, exc: RegardError) -> dict[str, Any]:
    return {"Ref": ref, "Error": exc.code, "Message": exc.message}


# -- videos and redaction: one file per task ----------------------------------------------------
def file_chunk(job_id: str, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Analyse (``VideoBatch``) or redact (``RedactionBatch``) each ``(input, output)`` as the
    batch's principal: ``{"Ref", "Output", "Faces"}``, ``{"Ref", "Skipped": True}`` when the
    output exists, or ``{"Ref", "Error", "Message"}``."""
    from regard.cluster import REDACTION_BATCH

    svc = service()
    job = running_job(svc, job_id)
    try:
        run = _redactor(svc, job) if job.kind == REDACTION_BATCH else _video_analysis(svc, job)
    except RegardError as exc:  # the gate refused (a policy changed since the batch started)
        return [_failure(src, exc) for src, _ in items]
    outcomes = []
    for src, dst in items:
        if os.path.exists(dst):
            outcomes.append({"Ref": src, "Skipped": True})
            continue
        try:
            faces = run(Path(src), Path(dst))
        except RegardError as exc:
            outcomes.append(_failure(src, exc))
            continue
        outcomes.append({"Ref": src, "Output": dst, "Faces": faces})
    return outcomes


def _redactor(svc: Any, job: Job) -> Any:
    from regard.video.files import Redactor
    from regard.video.redact import RedactionOptions

    p = job.parameters
    settings = dict(p["Options"])
    settings["fill"] = tuple(settings.get("fill") or (0, 0, 0))
    redactor = Redactor(svc, job.context, RedactionOptions(**settings),
                        p.get("CollectionId"), p.get("FaceMatchThreshold"))

    def run(src: Path, dst: Path) -> int:
        body = redactor.redact(src, dst)
        return int(body.get("FacesMasked", body.get("Tracks", 0)))

    return run


def _video_analysis(svc: Any, job: Job) -> Any:
    from regard.video.analysis import AnalysisOptions
    from regard.video.files import detect_video, search_options, search_video, write_result_file
    from regard.video.jobs import Spool
    from regard.vision.packs import get_pack

    p = job.parameters
    if p["Api"] == "StartFaceSearch":
        coll, used = search_options(svc, job.context, p["CollectionId"],
                                    p.get("FaceMatchThreshold"))
        options = AnalysisOptions(sample_ms=float(p["SampleMs"]), track=True, embed=True,
                                  pack=get_pack(coll.face_model_version))
    else:
        options = AnalysisOptions(sample_ms=float(p["SampleMs"]), track=False)

    def run(src: Path, dst: Path) -> int:
        with Spool() as spool:
            if p["Api"] == "StartFaceSearch":
                result = search_video(svc, job.context, src, coll.name, used, options, None,
                                      spool)
            else:
                result = detect_video(svc, job.context, src, options, None, spool)
            write_result_file(dst, result)
            return result.count()

    return run


__all__ = ["BatchGone", "check", "file_chunk", "index_chunk", "running_job",
           "service"]
