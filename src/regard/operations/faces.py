"""Faces in images and in collections: DetectFaces, CompareFaces, IndexFaces, ListFaces,
DeleteFaces."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING

import numpy as np

from regard.analysis import Face, ImageFaces
from regard.config import DEFAULT_MATCH_THRESHOLD
from regard.errors import InvalidParameterError
from regard.governance.policy import CollectionPolicy
from regard.operations.common import (
    DEFAULT_MAX_RESULTS,
    collection,
    decode_token,
    encode_token,
    face_body,
    failure,
    image,
)
from regard.operations.registry import Call, Params, operation
from regard.secure_memory import wipe
from regard.store import NewFace
from regard.vision.packs import get_pack

if TYPE_CHECKING:
    from regard.service import RegardService


def _detected(params: Params, result: Params) -> Params:
    return {"Faces": len(result.get("FaceDetails", []))}


@operation("DetectFaces", scope="detect", pool="image", summary=_detected, optional_audit=True)
def detect_faces(svc: RegardService, call: Call) -> Params:
    """``Attributes`` may ask for ``ALL``: Regard returns the same members either way, because
    the attributes it does not infer (age, gender, emotions) are left out by design
    (DESIGN.md)."""
    rgb, _ = image(svc, call)
    return svc.engine.detect(rgb).detect_faces_response()


def _compared(params: Params, result: Params) -> Params:
    matches = result.get("FaceMatches", [])
    return {"Threshold": params.get("SimilarityThreshold", DEFAULT_MATCH_THRESHOLD),
            "Matches": len(matches), "Unmatched": len(result.get("UnmatchedFaces", [])),
            "TopSimilarity": max((m["Similarity"] for m in matches), default=None)}


@operation("CompareFaces", scope="compare", pool="image", summary=_compared)
def compare_faces(svc: RegardService, call: Call) -> Params:
    source, _ = image(svc, call, "SourceImage")
    target, _ = image(svc, call, "TargetImage")
    result = svc.engine.compare(
        source, target, threshold=call.params.get("SimilarityThreshold", DEFAULT_MATCH_THRESHOLD),
        quality_filter=call.params.get("QualityFilter", "NONE"))
    return result.compare_faces_response()


# A batch's IndexFaces for an image the collection already has (``index_detected(once=True)``):
# nothing is stored, and the answer (and its ledger entry) says so.
ALREADY_INDEXED = "AlreadyIndexed"


def _indexed(params: Params, result: Params) -> Params:
    summary = {"FaceIds": [r["Face"]["FaceId"] for r in result.get("FaceRecords", [])],
               "Unindexed": len(result.get("UnindexedFaces", []))}
    if result.get(ALREADY_INDEXED):
        summary[ALREADY_INDEXED] = True
    return summary


@operation("IndexFaces", scope="faces:write", pool="image", summary=_indexed,
           consent_member=True)
def index_faces(svc: RegardService, call: Call) -> Params:
    collection(svc, call.params["CollectionId"])  # an unknown collection fails before decoding
    rgb, data = image(svc, call)
    detected = svc.engine.detect(rgb)
    return index_detected(svc, call, detected, hashlib.sha256(data).hexdigest(), rgb)


def index_detected(svc: RegardService, call: Call, detected: ImageFaces,
                   image_sha256: str | None, rgb: np.ndarray | None = None, *,
                   once: bool = False) -> Params:
    """Index the faces that pass; embeds only those (when ``rgb`` is given) or expects them
    embedded already (faces embedded by a worker process of a batch). ``once``: an image the
    collection already has (by ``image_sha256``) stores nothing and answers ``AlreadyIndexed``;
    the check holds the collection's row lock until the call's unit of work commits."""
    p = call.params
    coll = collection(svc, p["CollectionId"])
    if once and image_sha256 and svc.store.catalog.image_known(coll.name, image_sha256,
                                                               lock=True):
        return {"FaceRecords": [], "FaceModelVersion": coll.face_model_version,
                "UnindexedFaces": [], ALREADY_INDEXED: True}
    policy = CollectionPolicy.from_tags(coll.tags)
    expires = (svc.gate.now() + timedelta(days=policy.retention_days)
               if policy.retention_days else None)
    level = p.get("QualityFilter", "AUTO")
    max_faces = p.get("MaxFaces")
    passing: list[Face] = []
    unindexed: list[tuple[Face, list[str]]] = []
    for face in detected.faces:  # largest first
        reasons = face.quality_reasons(level)
        if reasons:
            unindexed.append((face, reasons))
        elif max_faces is not None and len(passing) >= max_faces:
            unindexed.append((face, ["EXCEEDS_MAX_FACES"]))
        else:
            passing.append(face)
    pack = get_pack(coll.face_model_version)
    if rgb is not None:
        svc.engine.embed_faces(rgb, [f for f in passing if f.embedding is None], pack)
    elif passing and detected.face_model_version != pack.version:
        raise InvalidParameterError(
            f"Collection {coll.name} holds face model {pack.version} embeddings; these "
            f"faces carry {detected.face_model_version or 'none'}")
    image_id = str(uuid.uuid4())
    external = p.get("ExternalImageId")
    new = []
    for face in passing:
        if face.embedding is None:
            raise InvalidParameterError("IndexFaces needs faces detected with embed=True")
        box = face.bounding_box()
        new.append(NewFace(face.embedding, (box["Left"], box["Top"], box["Width"],
                                            box["Height"]), float(face.confidence), image_id,
                           external, image_sha256, expires=expires,
                           consent_ref=call.context.consent))
    try:
        rows = svc.store.add_faces(coll.name, new) if new else []
    finally:
        if rgb is not None:  # embedded here (a caller's faces stay the caller's)
            wipe(*(face.embedding for face in detected.faces))
    if not rows and image_sha256:
        svc.store.catalog.note_image_without_faces(coll.name, image_sha256)
    return {
        "FaceRecords": [{"Face": face_body(row), "FaceDetail": face.face_detail()}
                        for row, face in zip(rows, passing)],
        "FaceModelVersion": coll.face_model_version,
        "UnindexedFaces": [{"Reasons": reasons, "FaceDetail": face.face_detail()}
                           for face, reasons in unindexed],
    }


@operation("ListFaces", scope="collections:read")
def list_faces(svc: RegardService, call: Call) -> Params:
    p = call.params
    coll = collection(svc, p["CollectionId"])
    limit = p.get("MaxResults") or DEFAULT_MAX_RESULTS
    after = decode_token(p.get("NextToken"), "faces", str)
    rows = svc.store.catalog.list_faces(coll.name, after=after, limit=limit + 1,
                                        user_id=p.get("UserId"), face_ids=p.get("FaceIds"))
    page = rows[:limit]
    body: Params = {"Faces": [face_body(r, coll.face_model_version) for r in page],
                    "FaceModelVersion": coll.face_model_version}
    if len(rows) > limit:
        body["NextToken"] = encode_token("faces", page[-1].face_id)
    return body


def _deleted(params: Params, result: Params) -> Params:
    return {"FaceIds": list(result.get("DeletedFaces", []))}


@operation("DeleteFaces", scope="faces:write", summary=_deleted)
def delete_faces(svc: RegardService, call: Call) -> Params:
    deleted, failures = svc.store.delete_faces(call.params["CollectionId"],
                                               call.params["FaceIds"])
    if deleted:
        svc.store.database.reclaim_space()  # as erasure: no bytes left in the WAL
    return {"DeletedFaces": deleted,
            "UnsuccessfulFaceDeletions": [failure(f) for f in failures]}


@operation("DescribeFaces", scope="collections:read", rekognition=False)
def describe_faces(svc: RegardService, call: Call) -> Params:
    """Regard's own ListFaces for people who oversee a collection: each face with what
    Rekognition's ``Face`` has plus when it was indexed, when it expires under the retention
    policy and its consent reference; optionally only one ``ExternalImageId`` or ``UserId``.
    ``MaxResults`` default 50, at most 1000; ``NextToken`` as ListFaces."""
    p = call.params
    coll = collection(svc, p["CollectionId"])
    limit = int(p.get("MaxResults") or 50)
    if not 1 <= limit <= 1000:
        raise InvalidParameterError("MaxResults must be between 1 and 1000")
    after = decode_token(p.get("NextToken"), "faces", str)
    rows = svc.store.catalog.list_faces(coll.name, after=after, limit=limit + 1,
                                        user_id=p.get("UserId"),
                                        external_image_id=p.get("ExternalImageId"))
    page = rows[:limit]
    body: Params = {"Faces": [{**face_body(r, coll.face_model_version),
                               "IndexedAt": r.created.isoformat(),
                               "Expires": r.expires.isoformat() if r.expires else None,
                               "ConsentReference": r.consent_ref} for r in page],
                    "FaceModelVersion": coll.face_model_version}
    if len(rows) > limit:
        body["NextToken"] = encode_token("faces", page[-1].face_id)
    return body
