"""The one place every operation passes before and after it runs (``RegardService`` calls it from
every door): scopes and collection allow-lists, collection policy, and the audit entry.

Before: the caller's scopes (``scopes.check``), then the collection's policy adjusts or refuses
the request (purpose required on creation, the threshold floor, the match cap, the consent
reference). After, success or failure alike: one ledger entry with a result summary. Refusals are
logged too; an operation whose entry cannot be written fails and its changes are rolled back (the
service commits an operation's changes and its entry in one unit of work), so there is no
unrecorded identification and no unrecorded change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from regard.errors import InvalidParameterError, RegardError
from regard.governance import policy as pol
from regard.governance import scopes
from regard.governance.ledger import Ledger
from regard.governance.policy import CollectionPolicy

log = logging.getLogger("regard.governance")

REKOGNITION_DEFAULT_THRESHOLD = 80.0
# Request member holding the match threshold / the match count, per search operation.
THRESHOLD_MEMBER = {"SearchFaces": "FaceMatchThreshold", "SearchFacesByImage": "FaceMatchThreshold",
                    "SearchUsers": "UserMatchThreshold", "SearchUsersByImage": "UserMatchThreshold"}
MAX_MEMBER = {"SearchFaces": "MaxFaces", "SearchFacesByImage": "MaxFaces",
              "SearchUsers": "MaxUsers", "SearchUsersByImage": "MaxUsers"}


@dataclass(frozen=True)
class Caller:
    """Who is asking and why. Each door fills it in: the HTTP APIs from the verified access key
    (principal, scopes, allow-list) and the ``X-Regard-Purpose`` / ``X-Regard-Case`` /
    ``X-Regard-Consent`` headers; the CLI from its options. ``scopes=None``: an unrestricted
    in-process caller (audited all the same)."""

    principal: str = "local"
    source: str | None = None
    purpose: str | None = None
    case: str | None = None
    consent: str | None = None
    scopes: tuple[str, ...] | None = None
    collections: tuple[str, ...] | None = None


LOCAL_CALLER = Caller()


@dataclass
class CallRecord:
    """What one operation accumulates for its audit entry while it runs."""

    operation: str
    caller: Caller
    collection: str | None
    policy: CollectionPolicy | None = None
    image_sha256: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Gatekeeper:
    def __init__(self, ledger: Ledger, *, default_purpose: str | None = None,
                 audit_detect: bool = True,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.ledger = ledger
        self.default_purpose = default_purpose
        self.audit_detect = audit_detect
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        ledger.clock = self.clock

    def now(self) -> datetime:
        return self.clock()

    # -- before ---------------------------------------------------------------------------------
    def authorize(self, record: CallRecord) -> None:
        scopes.check(record.operation, record.caller.scopes, record.caller.collections,
                     record.collection)

    def may_see(self, caller: Caller, collection: str) -> bool:
        """For filtering listings (ListCollections) by the allow-list."""
        return caller.collections is None or collection in caller.collections

    def apply_policy(self, record: CallRecord, params: dict[str, Any]) -> None:
        """Adjust ``params`` in place to the collection's policy, or refuse the request."""
        op, policy = record.operation, record.policy
        if op == "CreateCollection":
            tags = dict(params.get("Tags") or {})
            # the face-model choice is made here, not kept as a policy tag
            declared = CollectionPolicy.from_tags(
                {k: v for k, v in tags.items() if k != pol.FACE_MODEL})
            if declared.purpose is None:
                if not self.default_purpose:
                    raise InvalidParameterError(
                        "A collection needs a declared purpose: tag it regard:purpose (the CLI's "
                        "--purpose, the REST API's Purpose), or start the server with "
                        "--default-purpose")
                tags[pol.PURPOSE] = self.default_purpose
                params["Tags"] = tags
            return
        if policy is None:
            return
        if op in THRESHOLD_MEMBER and policy.threshold_floor is not None:
            member = THRESHOLD_MEMBER[op]
            asked = params.get(member)
            if asked is None:
                params[member] = max(policy.threshold_floor, REKOGNITION_DEFAULT_THRESHOLD)
            elif asked < policy.threshold_floor:
                raise InvalidParameterError(
                    f"{member} {asked:g} is below the threshold floor "
                    f"{policy.threshold_floor:g} of collection {record.collection}")
        if op in MAX_MEMBER and policy.max_matches is not None:
            member = MAX_MEMBER[op]
            params[member] = min(params.get(member) or policy.max_matches, policy.max_matches)
        if op == "IndexFaces" and policy.consent_required and not record.caller.consent:
            raise InvalidParameterError(
                f"Collection {record.collection} requires a consent reference for IndexFaces: "
                "send X-Regard-Consent (REST/Rekognition) or --consent (CLI)")

    # -- after ----------------------------------------------------------------------------------
    def record(self, record: CallRecord, params: dict[str, Any],
               result: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        if record.operation == "DetectFaces" and not self.audit_detect:
            return
        if error is not None:
            summary: dict[str, Any] = {
                "Error": error.code if isinstance(error, RegardError) else "InternalServerError"}
            if isinstance(error, RegardError) and error.code == "AccessDeniedException":
                summary["Scope"] = scopes.required_scope(record.operation)
            if record.operation in THRESHOLD_MEMBER:  # e.g. refused for being below the floor
                summary["Threshold"] = params.get(THRESHOLD_MEMBER[record.operation])
        else:
            summary = summarize(record.operation, params, result or {})
        summary.update(record.extra)
        caller = record.caller
        self.ledger.append(
            principal=caller.principal, operation=record.operation,
            collection=record.collection, purpose=caller.purpose, case_ref=caller.case,
            image_sha256=record.image_sha256 or None, result=summary, client=caller.source)


def summarize(op: str, params: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The result summary an audit entry keeps: identifiers and scores, never biometric data."""
    out: dict[str, Any] = {"Outcome": "OK"}
    if op in THRESHOLD_MEMBER:
        out["Threshold"] = params.get(THRESHOLD_MEMBER[op], REKOGNITION_DEFAULT_THRESHOLD)
        if op == "SearchFaces":
            out["ProbeFaceId"] = params.get("FaceId")
        if op == "SearchUsers":
            out["ProbeFaceId" if params.get("FaceId") else "ProbeUserId"] = (
                params.get("FaceId") or params.get("UserId"))
        if op.startswith("SearchFaces"):
            matches = result.get("FaceMatches", [])
            out["FaceIds"] = [m["Face"]["FaceId"] for m in matches]
        else:
            matches = result.get("UserMatches", [])
            out["UserIds"] = [m["User"]["UserId"] for m in matches]
        out["TopSimilarity"] = max((m["Similarity"] for m in matches), default=None)
    elif op == "CompareFaces":
        matches = result.get("FaceMatches", [])
        out.update(Threshold=params.get("SimilarityThreshold", REKOGNITION_DEFAULT_THRESHOLD),
                   Matches=len(matches), Unmatched=len(result.get("UnmatchedFaces", [])),
                   TopSimilarity=max((m["Similarity"] for m in matches), default=None))
    elif op == "DetectFaces":
        out["Faces"] = len(result.get("FaceDetails", []))
    elif op == "CheckCollections":
        out["Problems"] = {c["CollectionId"]: len(c["Problems"])
                           for c in result.get("Collections", []) if c["Problems"]}
        if result.get("Database"):
            out["DatabaseProblems"] = len(result["Database"])
    elif op == "IndexFaces":
        out.update(FaceIds=[r["Face"]["FaceId"] for r in result.get("FaceRecords", [])],
                   Unindexed=len(result.get("UnindexedFaces", [])))
    elif op == "DeleteFaces":
        out["FaceIds"] = list(result.get("DeletedFaces", []))
    elif op in ("CreateUser", "DeleteUser"):
        out["UserId"] = params.get("UserId")
    elif op == "AssociateFaces":
        out.update(UserId=params.get("UserId"),
                   FaceIds=[f["FaceId"] for f in result.get("AssociatedFaces", [])])
    elif op == "DisassociateFaces":
        out.update(UserId=params.get("UserId"),
                   FaceIds=[f["FaceId"] for f in result.get("DisassociatedFaces", [])])
    elif op in ("CreateCollection", "TagResource"):
        out["Tags"] = dict(params.get("Tags") or {})
    elif op == "UntagResource":
        out["TagKeys"] = list(params.get("TagKeys") or [])
    elif op in ("CreateAccessKey", "RevokeAccessKey"):
        out.update({k: v for k, v in result.items() if k != "SecretAccessKey"})
    elif op in ("Erase", "RetentionSweep"):
        out.update(FaceIds=result.get("FaceIds", []), UserIds=result.get("UserIds", []))
        if op == "Erase":  # which collection each face and user was erased from
            out["Collections"] = result.get("Collections", [])
        for member in ("ExternalImageId", "UserId", "RetentionDays"):
            if params.get(member) is not None:
                out["Subject" + member if member != "RetentionDays" else member] = params[member]
    return out
