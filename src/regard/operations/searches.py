"""Identification: SearchFaces, SearchFacesByImage, SearchUsers, SearchUsersByImage.

Similarity is the calibrated 0-100 score of the collection's face-model pack
(``regard.vision.packs``): a threshold is turned into the Euclidean distance at which the pack's
calibrated similarity reaches it. Every search also states the expected false-positive
identification rate at the threshold it used for the collection's current size (a stranger
searched against N faces matches somebody with probability about N x FMR); a policy's
``regard:max-fpir`` raises that threshold as the collection grows, and a policy asking for human
review marks the answer ``HumanReviewRequired``. Users are matched by their best face: a user's
similarity to a probe is the highest similarity of any of its faces, which keeps the
calibration's per-pair meaning (a mean "user vector" would sit closer to everything and inflate
scores).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from regard.config import DEFAULT_MATCH_THRESHOLD
from regard.errors import InvalidParameterError
from regard.governance.policy import CollectionPolicy
from regard.operations.common import (
    DEFAULT_MAX_FACES,
    DEFAULT_MAX_USERS,
    collection,
    face_body,
    face_vector,
    probe,
    rounded,
)
from regard.operations.registry import Call, Params, operation
from regard.secure_memory import wipe
from regard.store import CollectionInfo, Hit
from regard.store.catalog import MAX_FACES_PER_USER
from regard.vision.packs import FaceModelPack, get_pack

if TYPE_CHECKING:
    from regard.service import RegardService

# What every search adds to Rekognition's answer (REST: members; Rekognition door: headers).
EXPECTED_FPIR = "ExpectedFalsePositiveIdentificationRate"
EFFECTIVE_THRESHOLD = "EffectiveMatchThreshold"
SEARCH_STATISTICS = (EXPECTED_FPIR, EFFECTIVE_THRESHOLD)  # in every search's answer
HUMAN_REVIEW = "HumanReviewRequired"  # present (true) only when the policy asks for it


def _face_search(params: Params, result: Params) -> Params:
    matches = result.get("FaceMatches", [])
    out: Params = {"Threshold": params.get("FaceMatchThreshold", DEFAULT_MATCH_THRESHOLD)}
    if "FaceId" in params:
        out["ProbeFaceId"] = params["FaceId"]
    out["FaceIds"] = [m["Face"]["FaceId"] for m in matches]
    out["TopSimilarity"] = max((m["Similarity"] for m in matches), default=None)
    return out


def _user_search(params: Params, result: Params) -> Params:
    matches = result.get("UserMatches", [])
    out: Params = {"Threshold": params.get("UserMatchThreshold", DEFAULT_MATCH_THRESHOLD)}
    if params.get("FaceId"):
        out["ProbeFaceId"] = params["FaceId"]
    elif "UserId" in params:
        out["ProbeUserId"] = params["UserId"]
    out["UserIds"] = [m["User"]["UserId"] for m in matches]
    out["TopSimilarity"] = max((m["Similarity"] for m in matches), default=None)
    return out


_FACE_SEARCH = dict(scope="search", summary=_face_search, threshold_member="FaceMatchThreshold",
                    max_member="MaxFaces", identifies=True)
_USER_SEARCH = dict(scope="search", summary=_user_search, threshold_member="UserMatchThreshold",
                    max_member="MaxUsers", identifies=True)


@operation("SearchFaces", **_FACE_SEARCH)  # type: ignore[arg-type]
def search_faces(svc: RegardService, call: Call) -> Params:
    coll = collection(svc, call.params["CollectionId"])
    face_id = call.params["FaceId"]
    vector = face_vector(svc, coll, face_id)
    matches, statistics = _face_matches(svc, coll, vector, call.params, exclude=face_id)
    return {"SearchedFaceId": face_id, "FaceMatches": matches,
            "FaceModelVersion": coll.face_model_version, **statistics}


@operation("SearchFacesByImage", pool="image", **_FACE_SEARCH)  # type: ignore[arg-type]
def search_faces_by_image(svc: RegardService, call: Call) -> Params:
    coll = collection(svc, call.params["CollectionId"])
    face, _ = probe(svc, call, get_pack(coll.face_model_version))
    matches, statistics = _face_matches(svc, coll, face.embedding, call.params)
    return {"SearchedFaceBoundingBox": face.bounding_box(),
            "SearchedFaceConfidence": float(face.confidence),
            "FaceMatches": matches, "FaceModelVersion": coll.face_model_version,
            **statistics}


@operation("SearchUsers", **_USER_SEARCH)  # type: ignore[arg-type]
def search_users(svc: RegardService, call: Call) -> Params:
    p = call.params
    coll = collection(svc, p["CollectionId"])
    user_id, face_id = p.get("UserId"), p.get("FaceId")
    if (user_id is None) == (face_id is None):
        raise InvalidParameterError("SearchUsers needs exactly one of UserId and FaceId")
    body: Params = {"FaceModelVersion": coll.face_model_version}
    if face_id is not None:
        queries = face_vector(svc, coll, face_id)[None, :]
        exclude_faces, exclude_user = {face_id}, None
        body["SearchedFace"] = {"FaceId": face_id}
    else:
        svc.store.catalog.get_user(coll.name, user_id)
        own, queries = svc.store.catalog.user_embeddings(coll.name, user_id)
        exclude_faces, exclude_user = set(own), user_id
        body["SearchedUser"] = {"UserId": user_id}
    try:
        body["UserMatches"], statistics = _user_matches(svc, coll, queries, p, exclude_faces,
                                                        exclude_user)
    finally:
        wipe(queries)
    return {**body, **statistics}


@operation("SearchUsersByImage", pool="image", **_USER_SEARCH)  # type: ignore[arg-type]
def search_users_by_image(svc: RegardService, call: Call) -> Params:
    coll = collection(svc, call.params["CollectionId"])
    face, unsearched = probe(svc, call, get_pack(coll.face_model_version))
    matches, statistics = _user_matches(svc, coll, face.embedding[None, :], call.params, set(),
                                        None)
    return {
        "UserMatches": matches, **statistics,
        "FaceModelVersion": coll.face_model_version,
        "SearchedFace": {"FaceDetail": face.face_detail()},
        "UnsearchedFaces": [{"FaceDetails": f.face_detail(), "Reasons": reasons}
                            for f, reasons in unsearched],
    }


def search_threshold(coll: CollectionInfo, pack: FaceModelPack, asked: float, compared: int
                     ) -> tuple[float, Params]:
    """The threshold a search uses and what it means for this collection: the policy's
    ``regard:max-fpir`` raises ``asked`` until a stranger's chance of matching one of the
    ``compared`` faces is at most the cap (refused when no calibrated threshold can promise it);
    the answer states that chance at the threshold used, and whether a person must review the
    matches before anyone acts on them."""
    threshold = asked
    policy = CollectionPolicy.from_tags(coll.tags)
    if policy.max_fpir is not None:
        needed = pack.threshold_for_fpir(policy.max_fpir, compared)
        if needed is None:
            raise InvalidParameterError(
                f"Collection {coll.name} holds {compared} faces: no threshold that face "
                f"model {pack.version} is calibrated for keeps the expected false-positive "
                f"identification rate under its regard:max-fpir {policy.max_fpir:g}")
        threshold = max(threshold, round(needed + 5e-6, 5))
    statistics: Params = {EXPECTED_FPIR: pack.expected_fpir(threshold, compared),
                          EFFECTIVE_THRESHOLD: threshold}
    if policy.human_review:
        statistics[HUMAN_REVIEW] = True
    return threshold, statistics


def _face_matches(svc: RegardService, coll: CollectionInfo, vector: np.ndarray, p: Params,
                  exclude: str | None = None) -> tuple[list[Params], Params]:
    pack = get_pack(coll.face_model_version)
    compared = max(0, int(coll.face_count) - (1 if exclude else 0))
    threshold, statistics = search_threshold(
        coll, pack, p.get("FaceMatchThreshold", DEFAULT_MATCH_THRESHOLD), compared)
    k = p.get("MaxFaces", DEFAULT_MAX_FACES)
    hits = svc.store.search(coll.name, vector, k + (1 if exclude else 0),
                            max_distance=pack.match_distance(threshold))[0]
    hits = [h for h in hits if h.face_id != exclude]
    sims = rounded(pack.similarities([h.distance for h in hits]))
    scored = [(h, sim) for h, sim in zip(hits, sims) if sim >= threshold][:k]
    rows = svc.store.catalog.get_faces(coll.name, [h.face_id for h, _ in scored])
    # A face deleted since the index caught up is simply not returned.
    return [{"Similarity": sim, "Face": face_body(rows[h.face_id], coll.face_model_version)}
            for h, sim in scored if h.face_id in rows], statistics


def _user_matches(svc: RegardService, coll: CollectionInfo, queries: np.ndarray, p: Params,
                  exclude_faces: set[str], exclude_user: str | None
                  ) -> tuple[list[Params], Params]:
    """Users ranked by their best face. Searching the ``max_users * 100`` nearest associated
    faces is enough for an exact ranking: a user has at most 100 faces, so every face nearer
    than the N-th user's best belongs to one of the N-1 users ranked above it."""
    pack = get_pack(coll.face_model_version)
    # Users' faces are the ones compared; each query face is compared with all of them.
    associated = len(svc.store.indexes.synced(coll.name).users)
    compared = len(queries) * max(0, associated - len(exclude_faces))
    threshold, statistics = search_threshold(
        coll, pack, p.get("UserMatchThreshold", DEFAULT_MATCH_THRESHOLD), compared)
    if not len(queries):
        return [], statistics
    max_users = p.get("MaxUsers", DEFAULT_MAX_USERS)
    k = (max_users + 1) * MAX_FACES_PER_USER + len(exclude_faces)
    hits: list[Hit] = [h for row in svc.store.search(
        coll.name, queries, k, users=True, max_distance=pack.match_distance(threshold))
        for h in row if h.face_id not in exclude_faces]
    rows = svc.store.catalog.get_faces(coll.name, [h.face_id for h in hits])
    best: dict[str, float] = {}
    for h, sim in zip(hits, rounded(pack.similarities([h.distance for h in hits]))):
        row = rows.get(h.face_id)
        if row is None or row.user_id is None or row.user_id == exclude_user:
            continue
        if sim >= threshold and sim > best.get(row.user_id, -1.0):
            best[row.user_id] = sim
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:max_users]
    users = svc.store.catalog.get_users(coll.name, [u for u, _ in ranked])
    return [{"Similarity": sim, "User": {"UserId": u, "UserStatus": users[u].status}}
            for u, sim in ranked if u in users], statistics
