"""What several operations share: reading images, finding collections, Rekognition's ``Face``
body, pagination tokens, and Regard's defaults for Rekognition's optional members."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from regard import imaging
from regard.analysis import Face
from regard.errors import InvalidPaginationTokenError, InvalidParameterError
from regard.object_store import MAX_S3_IMAGE_BYTES
from regard.operations.registry import Call, Params
from regard.store import CollectionInfo, FaceRow, Failure
from regard.vision.packs import FaceModelPack, get_pack

if TYPE_CHECKING:
    from regard.service import RegardService

# Not documented by AWS; Regard's choices.
DEFAULT_MAX_RESULTS = 1000  # ListCollections, ListFaces
DEFAULT_MAX_USERS_LIST = 500  # ListUsers
DEFAULT_MAX_FACES = 100  # SearchFaces, SearchFacesByImage
DEFAULT_MAX_USERS = 100  # SearchUsers, SearchUsersByImage
DEFAULT_ASSOCIATE_THRESHOLD = 75.0  # AssociateFaces' UserMatchThreshold default (AWS's)


def image(svc: RegardService, call: Call, member: str = "Image") -> tuple[np.ndarray, bytes]:
    """Decode ``call.params[member]`` (inline ``Bytes`` or an ``S3Object`` from the object store)
    to upright RGB; also return the bytes, whose SHA-256 the audit entry records (and resumable
    indexing keys on)."""
    spec = call.params[member]
    if spec.get("Bytes") is not None and spec.get("S3Object") is not None:
        raise InvalidParameterError(f"{member}: send either Bytes or S3Object, not both")
    if spec.get("Bytes") is not None:
        data = bytes(spec["Bytes"])
        rgb = svc.engine.load(data)
    else:
        ref = spec.get("S3Object")
        if ref is None:
            raise InvalidParameterError(f"{member} needs Bytes or S3Object")
        if not ref.get("Bucket") or not ref.get("Name"):
            raise InvalidParameterError(f"{member}.S3Object needs Bucket and Name")
        data = svc.objects.get(ref["Bucket"], ref["Name"], ref.get("Version"))
        limits = dataclasses.replace(svc.engine.limits or imaging.ImageLimits.from_env(),
                                     max_bytes=MAX_S3_IMAGE_BYTES)
        rgb = imaging.load(data, limits).pixels
    call.image_sha256.append(hashlib.sha256(data).hexdigest())
    return rgb, data


def collection(svc: RegardService, name: str) -> CollectionInfo:
    """The collection, once its face model is known to be installed here."""
    coll = svc.store.catalog.get_collection(name)
    get_pack(coll.face_model_version)
    return coll


def face_vector(svc: RegardService, coll: CollectionInfo, face_id: str) -> np.ndarray:
    row = svc.store.catalog.get_faces(coll.name, [face_id], embeddings=True).get(face_id)
    if row is None or row.embedding is None:
        raise InvalidParameterError(f"The face id {face_id} does not exist in {coll.name}")
    return row.embedding


def probe(svc: RegardService, call: Call, pack: FaceModelPack
          ) -> tuple[Face, list[tuple[Face, list[str]]]]:
    """The largest face passing ``QualityFilter`` (default NONE), embedded, and the others with
    why they were not searched."""
    level = call.params.get("QualityFilter", "NONE")
    rgb, _ = image(svc, call)
    chosen: Face | None = None
    unsearched: list[tuple[Face, list[str]]] = []
    for face in svc.engine.detect(rgb).faces:  # largest first
        reasons = face.quality_reasons(level)
        if reasons:
            unsearched.append((face, reasons))
        elif chosen is None:
            chosen = face
        else:
            unsearched.append((face, ["FACE_NOT_LARGEST"]))
    if chosen is None:
        raise InvalidParameterError("There are no faces in the image. Should be at least 1.")
    svc.engine.embed_faces(rgb, [chosen], pack)
    return chosen, unsearched


def collection_from_arn(arn: str) -> str | None:
    """``arn:aws:rekognition:<region>:<account>:collection/<name>`` -> name."""
    head, sep, name = arn.rpartition(":collection/")
    return name if sep and head.startswith("arn:") and name else None


def rounded(similarities: np.ndarray | list[float]) -> list[float]:
    return [round(float(x), 5) for x in np.atleast_1d(similarities)]


def face_body(row: FaceRow, model_version: str | None = None) -> Params:
    """Rekognition ``Face``."""
    left, top, width, height = row.bbox
    body: Params = {
        "FaceId": row.face_id,
        "BoundingBox": {"Width": float(width), "Height": float(height), "Left": float(left),
                        "Top": float(top)},
        "ImageId": row.image_id,
        "Confidence": float(row.confidence),
    }
    if row.external_image_id is not None:
        body["ExternalImageId"] = row.external_image_id
    if model_version is not None:  # IndexFaces' own records leave it out, as Rekognition does
        body["IndexFacesModelVersion"] = model_version
    if row.user_id is not None:
        body["UserId"] = row.user_id
    return body


def failure(f: Failure) -> Params:
    body: Params = {"FaceId": f.face_id, "Reasons": list(f.reasons)}
    if f.user_id is not None:
        body["UserId"] = f.user_id
    if f.confidence is not None:
        body["Confidence"] = float(f.confidence)
    return body


def encode_token(kind: str, after: int | str) -> str:
    raw = json.dumps({"k": kind, "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str | None, kind: str, position: type) -> Any:
    """The listing position a NextToken encodes (of type ``position``); tokens of another listing,
    or with a position of another type, are refused."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidPaginationTokenError("Invalid pagination token") from exc
    if not isinstance(data, dict) or data.get("k") != kind or "a" not in data:
        raise InvalidPaginationTokenError("Invalid pagination token")
    if not isinstance(data["a"], position) or isinstance(data["a"], bool):
        raise InvalidPaginationTokenError("Invalid pagination token")
    return data["a"]
