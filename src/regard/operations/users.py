"""Users (one person's faces under one id): CreateUser, DeleteUser, ListUsers, AssociateFaces,
DisassociateFaces."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from regard.operations.common import (
    DEFAULT_ASSOCIATE_THRESHOLD,
    DEFAULT_MAX_USERS_LIST,
    collection,
    decode_token,
    encode_token,
    failure,
    rounded,
)
from regard.operations.registry import Call, Params, operation
from regard.vision.packs import get_pack

if TYPE_CHECKING:
    from regard.service import RegardService


def _user(params: Params, result: Params) -> Params:
    return {"UserId": params.get("UserId")}


@operation("CreateUser", scope="faces:write", summary=_user)
def create_user(svc: RegardService, call: Call) -> Params:
    p = call.params
    svc.store.catalog.create_user(p["CollectionId"], p["UserId"], p.get("ClientRequestToken"))
    return {}


@operation("DeleteUser", scope="faces:write", summary=_user)
def delete_user(svc: RegardService, call: Call) -> Params:
    svc.store.catalog.delete_user(call.params["CollectionId"], call.params["UserId"])
    return {}


@operation("ListUsers", scope="collections:read")
def list_users(svc: RegardService, call: Call) -> Params:
    p = call.params
    coll = collection(svc, p["CollectionId"])
    limit = p.get("MaxResults") or DEFAULT_MAX_USERS_LIST
    after = decode_token(p.get("NextToken"), "users", str)
    rows = svc.store.catalog.list_users(coll.name, after=after, limit=limit + 1)
    page = rows[:limit]
    body: Params = {"Users": [{"UserId": u.user_id, "UserStatus": u.status} for u in page]}
    if len(rows) > limit:
        body["NextToken"] = encode_token("users", page[-1].user_id)
    return body


def _associated(params: Params, result: Params) -> Params:
    return {"UserId": params.get("UserId"),
            "FaceIds": [f["FaceId"] for f in result.get("AssociatedFaces", [])]}


@operation("AssociateFaces", scope="faces:write", summary=_associated)
def associate_faces(svc: RegardService, call: Call) -> Params:
    p = call.params
    threshold = p.get("UserMatchThreshold", DEFAULT_ASSOCIATE_THRESHOLD)
    pack = get_pack(collection(svc, p["CollectionId"]).face_model_version)

    def check(current: np.ndarray, candidate: np.ndarray) -> tuple[bool, float | None]:
        distance = float(np.min(np.linalg.norm(current - candidate, axis=1)))
        best = rounded(pack.similarities([distance]))[0]
        return best >= threshold, best

    done, failures, status = svc.store.catalog.associate_faces(
        p["CollectionId"], p["UserId"], p["FaceIds"], check)
    return {"AssociatedFaces": [{"FaceId": f} for f in done],
            "UnsuccessfulFaceAssociations": [failure(f) for f in failures],
            "UserStatus": status}


def _disassociated(params: Params, result: Params) -> Params:
    return {"UserId": params.get("UserId"),
            "FaceIds": [f["FaceId"] for f in result.get("DisassociatedFaces", [])]}


@operation("DisassociateFaces", scope="faces:write", summary=_disassociated)
def disassociate_faces(svc: RegardService, call: Call) -> Params:
    p = call.params
    done, failures, status = svc.store.catalog.disassociate_faces(
        p["CollectionId"], p["UserId"], p["FaceIds"])
    return {"DisassociatedFaces": [{"FaceId": f} for f in done],
            "UnsuccessfulFaceDisassociations": [failure(f) for f in failures],
            "UserStatus": status}
