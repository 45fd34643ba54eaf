"""Rekognition's collection operations as plain Python: every door (Python, CLI, HTTP) calls these.

Requests and responses are dicts with exactly the member names of botocore's Rekognition model
(``CreateCollection`` -> ``{"CollectionArn", "StatusCode", "FaceModelVersion"}``), so a
``RegardService`` reads like a boto3 client::

    svc = RegardService()
    svc.create_collection(CollectionId="staff")
    svc.index_faces(CollectionId="staff", Image={"Bytes": jpeg}, ExternalImageId="alice.jpg")
    svc.search_faces_by_image(CollectionId="staff", Image={"Bytes": probe})["FaceMatches"]

Every operation goes through ``call``: the request is validated against the service model
(``regard.spec``), then run inside ``_authorize_and_audit``, the one seam where scopes,
collection policy and the audit ledger will be enforced. Errors are ``regard.errors`` classes
carrying Rekognition's error names. Nothing here knows about HTTP.

Similarity is the calibrated 0-100 score of the collection's face-model pack
(``regard.vision.packs``): a search threshold is turned into the Euclidean distance at which the
pack's calibrated similarity reaches it. Every search also states the expected false-positive
identification rate at the threshold it used for the collection's current size (a stranger
searched against N faces matches somebody with probability about N x FMR), and a policy's
``regard:max-fpir`` raises that threshold as the collection grows. Users are
matched by their best face: a user's similarity to a probe is the highest similarity of any of
its faces, which keeps the calibration's per-pair meaning (a mean "user vector" would sit closer
to everything and inflate scores).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import dataclasses
import hashlib
import json
import logging
import os
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

import numpy as np

from regard import imaging
from regard.analysis import Engine, Face, ImageFaces
from regard.errors import (
    CatalogCorruptError,
    InvalidPaginationTokenError,
    InvalidParameterError,
    RegardError,
    ResourceNotFoundError,
    ServiceQuotaExceededError,
    UnknownOperationError,
)
from regard.governance import policy as pol
from regard.governance.gatekeeper import LOCAL_CALLER, Caller, CallRecord, Gatekeeper
from regard.governance.ledger import Ledger
from regard.governance.policy import CollectionPolicy
from regard.object_store import MAX_S3_IMAGE_BYTES, ObjectStore, object_store_from_env
from regard.secure_memory import wipe
from regard.spec import validate_request
from regard.store import CollectionInfo, FaceRow, Failure, Hit, NewFace, Store
from regard.store.catalog import MAX_FACES_PER_USER
from regard.vision.packs import FaceModelPack, default_pack, get_pack

# What every search adds to Rekognition's answer (REST: members; Rekognition door: headers).
EXPECTED_FPIR = "ExpectedFalsePositiveIdentificationRate"
EFFECTIVE_THRESHOLD = "EffectiveMatchThreshold"
SEARCH_STATISTICS = (EXPECTED_FPIR, EFFECTIVE_THRESHOLD)
log = logging.getLogger("regard.service")

DEFAULT_FACE_MATCH_THRESHOLD = 80.0  # Rekognition's default
DEFAULT_USER_MATCH_THRESHOLD = 80.0  # SearchUsers / SearchUsersByImage
DEFAULT_ASSOCIATE_THRESHOLD = 75.0  # AssociateFaces' UserMatchThreshold default
# Not documented by AWS; Regard's choices.
DEFAULT_MAX_RESULTS = 1000  # ListCollections, ListFaces
DEFAULT_MAX_USERS_LIST = 500  # ListUsers
DEFAULT_MAX_FACES = 100  # SearchFaces, SearchFacesByImage
DEFAULT_MAX_USERS = 100  # SearchUsers, SearchUsersByImage

Params = dict[str, Any]
Handler = Callable[[Params], Params]


# The audit record of the operation running in this thread (handlers add image hashes to it).
_current: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "regard_call_record", default=None)


class RegardService:
    """The operations over one ``Engine`` (lazy: created on first image), one ``Store`` and the
    object store ``Image.S3Object`` references are read from."""

    def __init__(self, engine: Engine | None = None, store: Store | None = None, *,
                 region: str | None = None, account_id: str | None = None,
                 object_store: ObjectStore | None = None, gatekeeper: Gatekeeper | None = None,
                 default_purpose: str | None = None) -> None:
        self._engine = engine
        self.store = store or Store()
        self.objects = object_store or object_store_from_env()
        self.gate = gatekeeper or Gatekeeper(
            Ledger(self.store.catalog),
            default_purpose=default_purpose or os.environ.get("REGARD_DEFAULT_PURPOSE"),
            audit_detect=os.environ.get("REGARD_AUDIT_DETECT", "1") != "0")
        self.region = region or os.environ.get("REGARD_REGION", "us-east-1")
        self.account_id = account_id or os.environ.get("REGARD_ACCOUNT_ID", "000000000000")
        self._handlers: dict[str, Handler] = {
            "DetectFaces": self._detect_faces,
            "CompareFaces": self._compare_faces,
            "CreateCollection": self._create_collection,
            "ListCollections": self._list_collections,
            "DescribeCollection": self._describe_collection,
            "DeleteCollection": self._delete_collection,
            "IndexFaces": self._index_faces,
            "ListFaces": self._list_faces,
            "DeleteFaces": self._delete_faces,
            "SearchFaces": self._search_faces,
            "SearchFacesByImage": self._search_faces_by_image,
            "CreateUser": self._create_user,
            "DeleteUser": self._delete_user,
            "ListUsers": self._list_users,
            "AssociateFaces": self._associate_faces,
            "DisassociateFaces": self._disassociate_faces,
            "SearchUsers": self._search_users,
            "SearchUsersByImage": self._search_users_by_image,
            "TagResource": self._tag_resource,
            "UntagResource": self._untag_resource,
            "ListTagsForResource": self._list_tags_for_resource,
        }

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine()
        return self._engine

    @property
    def operations(self) -> list[str]:
        return list(self._handlers)

    # -- the one entry point -------------------------------------------------------------------
    def call(self, operation: str, params: Params | None = None,
             caller: Caller = LOCAL_CALLER) -> Params:
        """Run ``operation`` (Rekognition's name) with a request dict; return the response dict."""
        handler = self._handlers.get(operation)
        if handler is None:
            raise UnknownOperationError(f"Unsupported operation {operation}")
        params = dict(params or {})
        validate_request(operation, params)
        return self._authorize_and_audit(operation, params, lambda: handler(params), caller)

    def run_audited(self, operation: str, params: Params, run: Callable[[], Params],
                    caller: Caller = LOCAL_CALLER, image_sha256: Sequence[str] = ()) -> Params:
        """Governance around work done outside ``call`` (the CLI's pooled DetectFaces, whose
        workers have no database): same checks, same ledger entry."""
        return self._authorize_and_audit(operation, params, run, caller, image_sha256)

    def _authorize_and_audit(self, operation: str, params: Params, run: Callable[[], Params],
                             caller: Caller = LOCAL_CALLER,
                             image_sha256: Sequence[str] = ()) -> Params:
        """Governance around ``run``: the caller's scopes and the collection's allow-list, then
        the collection's policy (which may adjust ``params`` in place or refuse), and after it,
        success or failure alike, one audit-ledger entry, committed with the operation's changes
        (one unit of work). Every operation, from every door, passes here."""
        record = CallRecord(operation, caller, self._collection_named(operation, params),
                            image_sha256=list(image_sha256))
        token = _current.set(record)
        try:
            self.gate.authorize(record)
            if record.collection is not None and operation != "CreateCollection":
                record.policy = self._policy_or_none(record.collection)
            self.gate.apply_policy(record, params)
            # The change and its ledger entry commit together: a crash or a failed append
            # leaves neither. A failure is recorded after the rollback, in its own transaction.
            with self.store.catalog.unit_of_work():
                result = run()
                self.gate.record(record, params, result)
        except Exception as exc:
            try:
                self.gate.record(record, params, error=exc)
            except RegardError as unrecorded:  # the database down, the disk full: one line
                log.warning("could not record the failed %s in the audit ledger: %s",
                            operation, unrecorded)
            except Exception:  # a bug: the caller still gets the original error
                log.exception("could not record the failed %s in the audit ledger", operation)
            raise
        finally:
            _current.reset(token)
        return result

    def _collection_named(self, operation: str, params: Params) -> str | None:
        if "ResourceArn" in params:
            return _collection_from_arn(params["ResourceArn"])
        name = params.get("CollectionId")
        return name if isinstance(name, str) else None


    def _policy_or_none(self, collection: str) -> CollectionPolicy | None:
        try:
            info = self.store.catalog.get_collection(collection)
        except ResourceNotFoundError:
            return None  # the operation itself reports it
        return CollectionPolicy.from_tags(info.tags)

    def policy(self, collection: str) -> CollectionPolicy:
        """A collection's policy (the REST door marks matches for human review with it)."""
        return CollectionPolicy.from_tags(self.store.catalog.get_collection(collection).tags)

    # -- boto3-style methods ---------------------------------------------------------------------
    def tag_resource(self, **params: Any) -> Params:
        return self.call("TagResource", params)

    def untag_resource(self, **params: Any) -> Params:
        return self.call("UntagResource", params)

    def list_tags_for_resource(self, **params: Any) -> Params:
        return self.call("ListTagsForResource", params)

    def detect_faces(self, **params: Any) -> Params:
        return self.call("DetectFaces", params)

    def compare_faces(self, **params: Any) -> Params:
        return self.call("CompareFaces", params)

    def create_collection(self, **params: Any) -> Params:
        return self.call("CreateCollection", params)

    def list_collections(self, **params: Any) -> Params:
        return self.call("ListCollections", params)

    def describe_collection(self, **params: Any) -> Params:
        return self.call("DescribeCollection", params)

    def delete_collection(self, **params: Any) -> Params:
        return self.call("DeleteCollection", params)

    def index_faces(self, **params: Any) -> Params:
        return self.call("IndexFaces", params)

    def list_faces(self, **params: Any) -> Params:
        return self.call("ListFaces", params)

    def delete_faces(self, **params: Any) -> Params:
        return self.call("DeleteFaces", params)

    def search_faces(self, **params: Any) -> Params:
        return self.call("SearchFaces", params)

    def search_faces_by_image(self, **params: Any) -> Params:
        return self.call("SearchFacesByImage", params)

    def create_user(self, **params: Any) -> Params:
        return self.call("CreateUser", params)

    def delete_user(self, **params: Any) -> Params:
        return self.call("DeleteUser", params)

    def list_users(self, **params: Any) -> Params:
        return self.call("ListUsers", params)

    def associate_faces(self, **params: Any) -> Params:
        return self.call("AssociateFaces", params)

    def disassociate_faces(self, **params: Any) -> Params:
        return self.call("DisassociateFaces", params)

    def search_users(self, **params: Any) -> Params:
        return self.call("SearchUsers", params)

    def search_users_by_image(self, **params: Any) -> Params:
        return self.call("SearchUsersByImage", params)

    def index_detected_faces(self, detected: ImageFaces, image_sha256: str | None = None, *,
                             caller: Caller = LOCAL_CALLER, **params: Any) -> Params:
        """IndexFaces for faces already detected and embedded (``Engine.detect(embed=True)``),
        e.g. by worker processes in a batch; ``params`` as IndexFaces' without ``Image``."""
        if "Image" in params:
            raise InvalidParameterError("index_detected_faces takes no Image")
        validate_request("IndexFaces", params, exempt=frozenset({"Image"}))
        return self._authorize_and_audit(
            "IndexFaces", params, lambda: self._index(params, detected, image_sha256), caller,
            [image_sha256] if image_sha256 else [])

    # -- single images ---------------------------------------------------------------------------
    def _detect_faces(self, p: Params) -> Params:
        """DetectFaces. ``Attributes`` may ask for ``ALL``: Regard returns the same members either
        way, because the attributes it does not infer (age, gender, emotions) are left out by
        design (DESIGN.md)."""
        rgb, _ = self._image(p)
        return self.engine.detect(rgb).detect_faces_response()

    def _compare_faces(self, p: Params) -> Params:
        source, _ = self._image(p, "SourceImage")
        target, _ = self._image(p, "TargetImage")
        result = self.engine.compare(
            source, target, threshold=p.get("SimilarityThreshold", DEFAULT_FACE_MATCH_THRESHOLD),
            quality_filter=p.get("QualityFilter", "NONE"))
        return result.compare_faces_response()

    # -- collections -----------------------------------------------------------------------------
    def _create_collection(self, p: Params) -> Params:
        name = p["CollectionId"]
        arn = self.collection_arn(name)
        tags = dict(p.get("Tags") or {})
        chosen = tags.pop(pol.FACE_MODEL, None)  # a choice made at creation, not a policy
        pack = get_pack(chosen) if chosen else default_pack()
        if not pack.calibrated:
            raise InvalidParameterError(
                f"Face model {pack.version} is not calibrated: run `regard models calibrate "
                f"{pack.version}` before a collection can use it")
        info = self.store.catalog.create_collection(name, arn, pack.version, tags or None)
        return {"StatusCode": 200, "CollectionArn": info.arn,
                "FaceModelVersion": info.face_model_version}

    def _list_collections(self, p: Params) -> Params:
        limit = p.get("MaxResults") or DEFAULT_MAX_RESULTS
        after = _decode_token(p.get("NextToken"), "collections", int)
        rows = self.store.catalog.list_collections(after or 0, limit + 1)
        page = rows[:limit]
        record = _current.get()
        visible = [c for c in page if record is None or self.gate.may_see(record.caller, c.name)]
        body: Params = {"CollectionIds": [c.name for c in visible],
                        "FaceModelVersions": [c.face_model_version for c in visible]}
        if len(rows) > limit:
            body["NextToken"] = _encode_token("collections", page[-1].id)
        return body

    def _describe_collection(self, p: Params) -> Params:
        info = self.store.catalog.get_collection(p["CollectionId"])
        return {
            "FaceCount": int(info.face_count),
            "UserCount": int(self.store.catalog.user_count(info.id)),
            "FaceModelVersion": info.face_model_version,
            "CollectionARN": info.arn,
            "CreationTimestamp": info.created,
        }

    def _delete_collection(self, p: Params) -> Params:
        self.store.delete_collection(p["CollectionId"])
        self.store.catalog.reclaim_space()  # its embeddings leave no bytes on disk either
        return {"StatusCode": 200}

    # -- tags (and with them the collection's policy) -------------------------------------------
    def _tag_resource(self, p: Params) -> Params:
        coll = self._arn_collection(p["ResourceArn"])
        tags = {**coll.tags, **p["Tags"]}
        if len(tags) > 50:
            raise ServiceQuotaExceededError("A collection holds at most 50 tags")
        CollectionPolicy.from_tags(tags)  # refuse an invalid policy before storing it
        self.store.catalog.set_tags(coll.name, tags)
        return {}

    def _untag_resource(self, p: Params) -> Params:
        coll = self._arn_collection(p["ResourceArn"])
        if pol.PURPOSE in p["TagKeys"]:
            raise InvalidParameterError(
                f"{pol.PURPOSE} cannot be removed: a collection must keep a declared purpose "
                "(change it with TagResource)")
        self.store.catalog.set_tags(coll.name, {k: v for k, v in coll.tags.items()
                                                if k not in set(p["TagKeys"])})
        return {}

    def _list_tags_for_resource(self, p: Params) -> Params:
        return {"Tags": dict(self._arn_collection(p["ResourceArn"]).tags)}

    def _arn_collection(self, arn: str) -> CollectionInfo:
        name = _collection_from_arn(arn)
        try:
            coll = self.store.catalog.get_collection(name or "")
        except ResourceNotFoundError:
            coll = None
        if coll is None or coll.arn != arn:
            raise ResourceNotFoundError(f"The resource {arn} does not exist")
        return coll

    # -- erasure and retention (Regard's own operations, audited like the others) --------------
    def erase(self, *, external_image_id: str | None = None, user_id: str | None = None,
              collection: str | None = None, caller: Caller = LOCAL_CALLER) -> Params:
        """Remove every face, embedding and user of one subject (by ExternalImageId or UserId),
        in one collection or in every collection the caller may use: catalog rows, the
        collection's in-memory index (rebuilt without them) and its checkpoint. Returns what was
        removed, per collection; the audit entry records the same identifiers (no biometrics)."""
        if (external_image_id is None) == (user_id is None):
            raise InvalidParameterError("Erase needs exactly one of ExternalImageId and UserId")
        params: Params = {"ExternalImageId": external_image_id, "UserId": user_id,
                          "CollectionId": collection}
        params = {k: v for k, v in params.items() if v is not None}
        return self._authorize_and_audit("Erase", params, lambda: self._erase(params), caller)

    def _erase(self, p: Params) -> Params:
        record = _current.get()
        if "CollectionId" in p:
            targets = [self._collection(p["CollectionId"])]
        else:
            targets = [c for c in self.all_collections()
                       if record is None or self.gate.may_see(record.caller, c.name)]
        report, all_faces, all_users = [], [], []
        for coll in targets:
            found = self.store.catalog.find_faces(
                coll.id, external_image_id=p.get("ExternalImageId"), user_id=p.get("UserId"))
            faces = [f for f, _ in found]
            users = {u for _, u in found if u is not None}
            if "UserId" in p:
                users.add(p["UserId"])
            else:  # a user all of whose faces are this subject's is this subject
                users = {u for u in users
                         if {f for f, _ in self.store.catalog.find_faces(coll.id, user_id=u)}
                         <= set(faces)}
            gone, users_gone = self.store.erase(coll.name, faces, sorted(users))
            if gone or users_gone:
                report.append({"CollectionId": coll.name, "DeletedFaces": gone,
                               "DeletedUsers": users_gone})
                all_faces += gone
                all_users += users_gone
        self.store.catalog.reclaim_space()
        return {"Collections": report, "FaceIds": all_faces, "UserIds": all_users}

    def sweep_retention(self, caller: Caller = LOCAL_CALLER) -> Params:
        """Delete the faces whose collection's retention period has passed (``regard:retention-
        days``, counted from indexing, or their recorded expiry), one audited entry per
        collection that lost faces. Run by the server periodically and by ``regard retention
        sweep``."""
        removed: list[Params] = []
        for coll in self.all_collections():
            policy = CollectionPolicy.from_tags(coll.tags)
            now = self.gate.now()
            due = {f for f, _ in self.store.catalog.find_faces(coll.id, expires_before=now)}
            if policy.retention_days:
                cutoff = now - timedelta(days=policy.retention_days)
                due |= {f for f, _ in self.store.catalog.find_faces(coll.id,
                                                                     created_before=cutoff)}
            if not due:
                continue
            params = {"CollectionId": coll.name, "RetentionDays": policy.retention_days}
            result = self._authorize_and_audit(
                "RetentionSweep", params,
                lambda c=coll, d=sorted(due): self._expire(c, d), caller)
            removed.append({"CollectionId": coll.name, "DeletedFaces": result["FaceIds"]})
        return {"Collections": removed}

    def _expire(self, coll: CollectionInfo, face_ids: list[str]) -> Params:
        gone, _ = self.store.erase(coll.name, face_ids)
        if gone:
            self.store.catalog.reclaim_space()
        return {"FaceIds": gone, "UserIds": []}

    # -- the ledger, read through the same gate (audit:read; every read is itself recorded) ----
    def audit_entries(self, *, since: datetime | None = None, until: datetime | None = None,
                      after: int = 0, limit: int = 1000,
                      caller: Caller = LOCAL_CALLER) -> Params:
        def run() -> Params:
            entries = []
            for entry in self.gate.ledger.entries(since, until, after=after):
                if len(entries) == limit:
                    return {"Entries": entries, "NextAfter": entries[-1]["seq"]}
                entries.append(entry.to_dict())
            return {"Entries": entries}

        params = {"Since": since.isoformat() if since else None,
                  "Until": until.isoformat() if until else None, "After": after}
        return self._authorize_and_audit("AuditExport", params, run, caller)

    def audit_verify(self, caller: Caller = LOCAL_CALLER) -> Params:
        return self._authorize_and_audit("AuditVerify", {},
                                         lambda: self.gate.ledger.verify().to_dict(), caller)

    def who_searched(self, *, face_ids: Sequence[str] = (), external_image_id: str | None = None,
                     user_id: str | None = None, caller: Caller = LOCAL_CALLER) -> Params:
        """Who searched for this person: the search entries that matched or probed with their
        faces (FaceIds, or those of an ExternalImageId) or user."""
        def run() -> Params:
            faces = set(face_ids)
            if external_image_id:
                faces |= self.face_ids_of(external_image_id)
            users = {user_id} if user_id else set()
            if not faces and not users:
                raise InvalidParameterError(
                    "Name the person: FaceIds, an ExternalImageId with faces, or a UserId")
            return {"Entries": [e.to_dict() for e in self.gate.ledger.who_searched(faces, users)]}

        params = {"FaceIds": list(face_ids), "ExternalImageId": external_image_id,
                  "UserId": user_id}
        return self._authorize_and_audit("WhoSearched", params, run, caller)

    def collection_arn(self, collection: str) -> str:
        return f"arn:aws:rekognition:{self.region}:{self.account_id}:collection/{collection}"

    def face_ids_of(self, external_image_id: str) -> set[str]:
        """FaceIds ever given to an ExternalImageId: those in the catalog now and those that
        erasures removed (their ledger entries keep the identifiers), for ``who-searched``."""
        found = {f for coll in self.all_collections()
                 for f, _ in self.store.catalog.find_faces(coll.id,
                                                           external_image_id=external_image_id)}
        for entry in self.gate.ledger.entries(operations=["Erase"]):
            if entry.result.get("SubjectExternalImageId") == external_image_id:
                found.update(entry.result.get("FaceIds", []))
        return found

    def check_collections(self, collection: str | None = None,
                          caller: Caller = LOCAL_CALLER) -> Params:
        """The database file's integrity (SQLite's ``integrity_check``), then the store's
        invariants, per collection (all the caller may see when none is named): face count = face
        rows, sequence = last change, every embedding whole and matching its checksum, every face
        added by a change still in the log, and the in-memory index caught up and of the same
        size. For operators after a crash, a restore or a disk fault; reports FaceIds and
        counts, never embeddings. A collection whose rows cannot be read is a problem to report,
        not a failure of the check."""
        def run() -> Params:
            database = self.store.catalog.integrity_problems()
            record = _current.get()
            if collection is not None:
                names = [self._collection(collection).name]
            else:
                names = [c.name for c in self.all_collections()
                         if record is None or self.gate.may_see(record.caller, c.name)]
            report = []
            for name in names:
                try:
                    report.append(self._check_collection(name))
                except CatalogCorruptError:
                    report.append({"CollectionId": name, "FaceCount": None, "Problems": [
                        "its rows cannot be read: the database is damaged"]})
            return {"Collections": report, "Database": database,
                    "Ok": not database and all(not r["Problems"] for r in report)}

        params = {"CollectionId": collection} if collection is not None else {}
        return self._authorize_and_audit("CheckCollections", params, run, caller)

    def _check_collection(self, name: str) -> Params:
        problems = self.store.catalog.consistency_problems(name)
        _, seq, count = self.store.catalog.state(name)
        entry = self.store.indexes.synced(name)
        if (entry.seq, len(entry.faces)) != (seq, count):
            problems.append(f"index at change {entry.seq} with {len(entry.faces)} faces, "
                            f"catalog at {seq} with {count}")
        return {"CollectionId": name, "FaceCount": count, "Problems": problems}

    def all_collections(self) -> list[CollectionInfo]:
        """Every collection, in creation order (paged reads)."""
        out: list[CollectionInfo] = []
        while True:
            page = self.store.catalog.list_collections(out[-1].id if out else 0, 1000)
            out += page
            if len(page) < 1000:
                return out

    # -- faces ----------------------------------------------------------------------------------
    def _index_faces(self, p: Params) -> Params:
        self._collection(p["CollectionId"])  # an unknown collection fails before any decoding
        rgb, data = self._image(p)
        detected = self.engine.detect(rgb)
        return self._index(p, detected, hashlib.sha256(data).hexdigest(), rgb)

    def _index(self, p: Params, detected: ImageFaces, image_sha256: str | None,
               rgb: np.ndarray | None = None) -> Params:
        """Index the faces that pass; embeds only those (when ``rgb`` is given) or expects them
        embedded already (faces embedded by a worker process)."""
        coll = self._collection(p["CollectionId"])
        record = _current.get()
        policy = CollectionPolicy.from_tags(coll.tags)
        consent = record.caller.consent if record is not None else None
        expires = (self.gate.now() + timedelta(days=policy.retention_days)
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
            self.engine.embed_faces(rgb, [f for f in passing if f.embedding is None], pack)
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
                               external, image_sha256, expires=expires, consent_ref=consent))
        try:
            rows = self.store.add_faces(coll.name, new) if new else []
        finally:
            if rgb is not None:  # embedded here (a caller's faces stay the caller's)
                wipe(*(face.embedding for face in detected.faces))
        if not rows and image_sha256:
            self.store.catalog.note_image_without_faces(coll.name, image_sha256)
        return {
            "FaceRecords": [{"Face": _face_body(row),
                             "FaceDetail": face.face_detail()}
                            for row, face in zip(rows, passing)],
            "FaceModelVersion": coll.face_model_version,
            "UnindexedFaces": [{"Reasons": reasons, "FaceDetail": face.face_detail()}
                               for face, reasons in unindexed],
        }

    def _list_faces(self, p: Params) -> Params:
        coll = self._collection(p["CollectionId"])
        limit = p.get("MaxResults") or DEFAULT_MAX_RESULTS
        after = _decode_token(p.get("NextToken"), "faces", str)
        rows = self.store.catalog.list_faces(coll.id, after=after, limit=limit + 1,
                                             user_id=p.get("UserId"), face_ids=p.get("FaceIds"))
        page = rows[:limit]
        body: Params = {"Faces": [_face_body(r, coll.face_model_version) for r in page],
                        "FaceModelVersion": coll.face_model_version}
        if len(rows) > limit:
            body["NextToken"] = _encode_token("faces", page[-1].face_id)
        return body

    def _delete_faces(self, p: Params) -> Params:
        deleted, failures = self.store.delete_faces(p["CollectionId"], p["FaceIds"])
        if deleted:
            self.store.catalog.reclaim_space()  # as erasure: no bytes left in the WAL
        return {"DeletedFaces": deleted,
                "UnsuccessfulFaceDeletions": [_failure(f) for f in failures]}

    def _search_faces(self, p: Params) -> Params:
        coll = self._collection(p["CollectionId"])
        face_id = p["FaceId"]
        vector = self._face_vector(coll, face_id)
        matches, statistics = self._face_matches(coll, vector, p, exclude=face_id)
        return {"SearchedFaceId": face_id, "FaceMatches": matches,
                "FaceModelVersion": coll.face_model_version, **statistics}

    def _search_faces_by_image(self, p: Params) -> Params:
        coll = self._collection(p["CollectionId"])
        face, _ = self._probe(p, get_pack(coll.face_model_version))
        matches, statistics = self._face_matches(coll, face.embedding, p)
        return {"SearchedFaceBoundingBox": face.bounding_box(),
                "SearchedFaceConfidence": float(face.confidence),
                "FaceMatches": matches, "FaceModelVersion": coll.face_model_version,
                **statistics}

    def _search_threshold(self, coll: CollectionInfo, pack: FaceModelPack, asked: float,
                          compared: int) -> tuple[float, Params]:
        """The threshold a search uses and what it means for this collection: the policy's
        ``regard:max-fpir`` raises ``asked`` until a stranger's chance of matching one of the
        ``compared`` faces is at most the cap (refused when no calibrated threshold can
        promise it); the answer states that chance at the threshold used."""
        threshold = asked
        cap = CollectionPolicy.from_tags(coll.tags).max_fpir
        if cap is not None:
            needed = pack.threshold_for_fpir(cap, compared)
            if needed is None:
                raise InvalidParameterError(
                    f"Collection {coll.name} holds {compared} faces: no threshold that face "
                    f"model {pack.version} is calibrated for keeps the expected false-positive "
                    f"identification rate under its regard:max-fpir {cap:g}")
            threshold = max(threshold, round(needed + 5e-6, 5))
        return threshold, {EXPECTED_FPIR: pack.expected_fpir(threshold, compared),
                           EFFECTIVE_THRESHOLD: threshold}

    def _face_matches(self, coll: CollectionInfo, vector: np.ndarray, p: Params,
                      exclude: str | None = None) -> tuple[list[Params], Params]:
        pack = get_pack(coll.face_model_version)
        compared = max(0, int(coll.face_count) - (1 if exclude else 0))
        threshold, statistics = self._search_threshold(
            coll, pack, p.get("FaceMatchThreshold", DEFAULT_FACE_MATCH_THRESHOLD), compared)
        k = p.get("MaxFaces", DEFAULT_MAX_FACES)
        hits = self.store.search(coll.name, vector, k + (1 if exclude else 0),
                                 max_distance=pack.match_distance(threshold))[0]
        hits = [h for h in hits if h.face_id != exclude]
        sims = _rounded(pack.similarities([h.distance for h in hits]))
        scored = [(h, sim) for h, sim in zip(hits, sims) if sim >= threshold][:k]
        rows = self.store.catalog.get_faces(coll.id, [h.face_id for h, _ in scored])
        # A face deleted since the index caught up is simply not returned.
        return [{"Similarity": sim, "Face": _face_body(rows[h.face_id], coll.face_model_version)}
                for h, sim in scored if h.face_id in rows], statistics

    # -- users ----------------------------------------------------------------------------------
    def _create_user(self, p: Params) -> Params:
        self.store.catalog.create_user(p["CollectionId"], p["UserId"], p.get("ClientRequestToken"))
        return {}

    def _delete_user(self, p: Params) -> Params:
        self.store.catalog.delete_user(p["CollectionId"], p["UserId"])
        return {}

    def _list_users(self, p: Params) -> Params:
        coll = self._collection(p["CollectionId"])
        limit = p.get("MaxResults") or DEFAULT_MAX_USERS_LIST
        after = _decode_token(p.get("NextToken"), "users", str)
        rows = self.store.catalog.list_users(coll.id, after=after, limit=limit + 1)
        page = rows[:limit]
        body: Params = {"Users": [{"UserId": u.user_id, "UserStatus": u.status} for u in page]}
        if len(rows) > limit:
            body["NextToken"] = _encode_token("users", page[-1].user_id)
        return body

    def _associate_faces(self, p: Params) -> Params:
        threshold = p.get("UserMatchThreshold", DEFAULT_ASSOCIATE_THRESHOLD)
        pack = get_pack(self._collection(p["CollectionId"]).face_model_version)

        def check(current: np.ndarray, candidate: np.ndarray) -> tuple[bool, float | None]:
            distance = float(np.min(np.linalg.norm(current - candidate, axis=1)))
            best = _rounded(pack.similarities([distance]))[0]
            return best >= threshold, best

        done, failures, status = self.store.catalog.associate_faces(
            p["CollectionId"], p["UserId"], p["FaceIds"], check)
        return {"AssociatedFaces": [{"FaceId": f} for f in done],
                "UnsuccessfulFaceAssociations": [_failure(f) for f in failures],
                "UserStatus": status}

    def _disassociate_faces(self, p: Params) -> Params:
        done, failures, status = self.store.catalog.disassociate_faces(
            p["CollectionId"], p["UserId"], p["FaceIds"])
        return {"DisassociatedFaces": [{"FaceId": f} for f in done],
                "UnsuccessfulFaceDisassociations": [_failure(f) for f in failures],
                "UserStatus": status}

    def _search_users(self, p: Params) -> Params:
        coll = self._collection(p["CollectionId"])
        user_id, face_id = p.get("UserId"), p.get("FaceId")
        if (user_id is None) == (face_id is None):
            raise InvalidParameterError("SearchUsers needs exactly one of UserId and FaceId")
        body: Params = {"FaceModelVersion": coll.face_model_version}
        if face_id is not None:
            queries = self._face_vector(coll, face_id)[None, :]
            exclude_faces, exclude_user = {face_id}, None
            body["SearchedFace"] = {"FaceId": face_id}
        else:
            self.store.catalog.get_user(coll.id, user_id)
            own, queries = self.store.catalog.user_embeddings(coll.id, user_id)
            exclude_faces, exclude_user = set(own), user_id
            body["SearchedUser"] = {"UserId": user_id}
        try:
            body["UserMatches"], statistics = self._user_matches(coll, queries, p, exclude_faces,
                                                                 exclude_user)
        finally:
            wipe(queries)
        return {**body, **statistics}

    def _search_users_by_image(self, p: Params) -> Params:
        coll = self._collection(p["CollectionId"])
        face, unsearched = self._probe(p, get_pack(coll.face_model_version))
        matches, statistics = self._user_matches(coll, face.embedding[None, :], p, set(), None)
        return {
            "UserMatches": matches, **statistics,
            "FaceModelVersion": coll.face_model_version,
            "SearchedFace": {"FaceDetail": face.face_detail()},
            "UnsearchedFaces": [{"FaceDetails": f.face_detail(), "Reasons": reasons}
                                for f, reasons in unsearched],
        }

    def _user_matches(self, coll: CollectionInfo, queries: np.ndarray, p: Params,
                      exclude_faces: set[str], exclude_user: str | None
                      ) -> tuple[list[Params], Params]:
        """Users ranked by their best face. Searching the ``max_users * 100`` nearest associated
        faces is enough for an exact ranking: a user has at most 100 faces, so every face nearer
        than the N-th user's best belongs to one of the N-1 users ranked above it."""
        pack = get_pack(coll.face_model_version)
        # Users' faces are the ones compared; each query face is compared with all of them.
        associated = len(self.store.indexes.synced(coll.name).users)
        compared = len(queries) * max(0, associated - len(exclude_faces))
        threshold, statistics = self._search_threshold(
            coll, pack, p.get("UserMatchThreshold", DEFAULT_USER_MATCH_THRESHOLD), compared)
        if not len(queries):
            return [], statistics
        max_users = p.get("MaxUsers", DEFAULT_MAX_USERS)
        k = (max_users + 1) * MAX_FACES_PER_USER + len(exclude_faces)
        hits: list[Hit] = [h for row in self.store.search(
            coll.name, queries, k, users=True, max_distance=pack.match_distance(threshold))
            for h in row if h.face_id not in exclude_faces]
        rows = self.store.catalog.get_faces(coll.id, [h.face_id for h in hits])
        best: dict[str, float] = {}
        for h, sim in zip(hits, _rounded(pack.similarities([h.distance for h in hits]))):
            row = rows.get(h.face_id)
            if row is None or row.user_id is None or row.user_id == exclude_user:
                continue
            if sim >= threshold and sim > best.get(row.user_id, -1.0):
                best[row.user_id] = sim
        ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:max_users]
        users = self.store.catalog.get_users(coll.id, [u for u, _ in ranked])
        return [{"Similarity": sim, "User": {"UserId": u, "UserStatus": users[u].status}}
                for u, sim in ranked if u in users], statistics

    # -- helpers --------------------------------------------------------------------------------
    def _image(self, p: Params, member: str = "Image") -> tuple[np.ndarray, bytes]:
        """Decode ``p[member]`` (inline ``Bytes`` or an ``S3Object`` from the object store) to
        upright RGB; also return the bytes (their SHA-256 keys resumable indexing and the audit
        ledger)."""
        rgb, data = self._decode_image(p, member)
        record = _current.get()
        if record is not None:
            record.image_sha256.append(hashlib.sha256(data).hexdigest())
        return rgb, data

    def _decode_image(self, p: Params, member: str) -> tuple[np.ndarray, bytes]:
        image = p[member]
        if image.get("Bytes") is not None and image.get("S3Object") is not None:
            raise InvalidParameterError(f"{member}: send either Bytes or S3Object, not both")
        if image.get("Bytes") is not None:
            data = bytes(image["Bytes"])
            return self.engine.load(data), data
        ref = image.get("S3Object")
        if ref is None:
            raise InvalidParameterError(f"{member} needs Bytes or S3Object")
        if not ref.get("Bucket") or not ref.get("Name"):
            raise InvalidParameterError(f"{member}.S3Object needs Bucket and Name")
        data = self.objects.get(ref["Bucket"], ref["Name"], ref.get("Version"))
        limits = dataclasses.replace(self.engine.limits or imaging.ImageLimits.from_env(),
                                     max_bytes=MAX_S3_IMAGE_BYTES)
        return imaging.load(data, limits).pixels, data

    def _collection(self, name: str) -> CollectionInfo:
        """The collection, once its face model is known to be installed here."""
        coll = self.store.catalog.get_collection(name)
        get_pack(coll.face_model_version)
        return coll

    def _face_vector(self, coll: CollectionInfo, face_id: str) -> np.ndarray:
        row = self.store.catalog.get_faces(coll.id, [face_id], embeddings=True).get(face_id)
        if row is None or row.embedding is None:
            raise InvalidParameterError(f"The face id {face_id} does not exist in {coll.name}")
        return row.embedding

    def _probe(self, p: Params, pack: FaceModelPack) -> tuple[Face, list[tuple[Face, list[str]]]]:
        """The largest face passing ``QualityFilter`` (default NONE), and the others with why
        they were not searched."""
        level = p.get("QualityFilter", "NONE")
        rgb, _ = self._image(p)
        faces = self.engine.detect(rgb).faces  # largest first
        chosen: Face | None = None
        unsearched: list[tuple[Face, list[str]]] = []
        for face in faces:
            reasons = face.quality_reasons(level)
            if reasons:
                unsearched.append((face, reasons))
            elif chosen is None:
                chosen = face
            else:
                unsearched.append((face, ["FACE_NOT_LARGEST"]))
        if chosen is None:
            raise InvalidParameterError("There are no faces in the image. Should be at least 1.")
        self.engine.embed_faces(rgb, [chosen], pack)
        return chosen, unsearched


# -- module helpers -----------------------------------------------------------------------------
def _collection_from_arn(arn: str) -> str | None:
    """``arn:aws:rekognition:<region>:<account>:collection/<name>`` -> name."""
    head, sep, name = arn.rpartition(":collection/")
    return name if sep and head.startswith("arn:") and name else None


def _rounded(similarities: np.ndarray) -> list[float]:
    return [round(float(x), 5) for x in np.atleast_1d(similarities)]


def _face_body(row: FaceRow, model_version: str | None = None) -> Params:
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


def _failure(f: Failure) -> Params:
    body: Params = {"FaceId": f.face_id, "Reasons": list(f.reasons)}
    if f.user_id is not None:
        body["UserId"] = f.user_id
    if f.confidence is not None:
        body["Confidence"] = float(f.confidence)
    return body


def _encode_token(kind: str, after: int | str) -> str:
    raw = json.dumps({"k": kind, "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str | None, kind: str, position: type) -> Any:
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


def face_ids(response: Params) -> list[str]:
    """FaceIds of an IndexFaces response (a small convenience for callers and tests)."""
    return [r["Face"]["FaceId"] for r in response.get("FaceRecords", [])]


__all__: Sequence[str] = ["LOCAL_CALLER", "Caller", "RegardService",
                          "face_ids"]
