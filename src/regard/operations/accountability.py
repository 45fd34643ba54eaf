"""Regard's own operations, audited like Rekognition's: erasure of a person, the retention sweep,
reading and verifying the audit ledger, who searched for a person, the catalog's integrity check,
and issuing and revoking access keys (rule changes, so each is a ledger entry written in the
same unit of work as the change)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from regard.errors import CatalogCorruptError, InvalidParameterError
from regard.governance.policy import CollectionPolicy
from regard.operations.common import collection
from regard.operations.registry import Call, Params, operation
from regard.store import CollectionInfo

if TYPE_CHECKING:
    from regard.service import RegardService


def _erased(params: Params, result: Params) -> Params:
    out: Params = {"FaceIds": result.get("FaceIds", []), "UserIds": result.get("UserIds", []),
                   "Collections": result.get("Collections", [])}
    for member in ("ExternalImageId", "UserId"):
        if params.get(member) is not None:
            out["Subject" + member] = params[member]
    return out


@operation("Erase", scope="faces:write", summary=_erased, rekognition=False)
def erase(svc: RegardService, call: Call) -> Params:
    """Remove every face, embedding and user of one subject (by ExternalImageId or UserId), in
    one collection or in every collection the caller may use: catalog rows, the collection's
    in-memory index (rebuilt without them) and its checkpoint. Returns what was removed, per
    collection; the audit entry records the same identifiers (no biometrics)."""
    p = call.params
    if (p.get("ExternalImageId") is None) == (p.get("UserId") is None):
        raise InvalidParameterError("Erase needs exactly one of ExternalImageId and UserId")
    if p.get("CollectionId") is not None:
        targets = [collection(svc, p["CollectionId"])]
    else:
        targets = [c for c in svc.all_collections() if call.context.may_see(c.name)]
    report, all_faces, all_users = [], [], []
    for coll in targets:
        found = svc.store.catalog.find_faces(
            coll.name, external_image_id=p.get("ExternalImageId"), user_id=p.get("UserId"))
        faces = [f for f, _ in found]
        users = {u for _, u in found if u is not None}
        if p.get("UserId") is not None:
            users.add(p["UserId"])
        else:  # a user all of whose faces are this subject's is this subject
            users = {u for u in users
                     if {f for f, _ in svc.store.catalog.find_faces(coll.name, user_id=u)}
                     <= set(faces)}
        gone, users_gone = svc.store.erase(coll.name, faces, sorted(users))
        if gone or users_gone:
            report.append({"CollectionId": coll.name, "DeletedFaces": gone,
                           "DeletedUsers": users_gone})
            all_faces += gone
            all_users += users_gone
    # Stored video face search results name FaceIds too: the erased ones leave them.
    from regard.video.jobs import purge_faces

    purged = purge_faces(svc.jobs.store, set(all_faces))
    # running stream processors stop naming them at once here (elsewhere: from this entry)
    svc.store.database.after_commit(lambda: svc.streams.forget(all_faces))
    svc.store.database.reclaim_space()
    return {"Collections": report, "FaceIds": all_faces, "UserIds": all_users,
            "VideoResultPagesUpdated": purged}


def due_faces(svc: RegardService, coll: CollectionInfo) -> list[str]:
    """Faces of ``coll`` past its retention period (``regard:retention-days``, counted from
    indexing) or their recorded expiry."""
    now = svc.gate.now()
    due = {f for f, _ in svc.store.catalog.find_faces(coll.name, expires_before=now)}
    days = CollectionPolicy.from_tags(coll.tags).retention_days
    if days:
        due |= {f for f, _ in svc.store.catalog.find_faces(
            coll.name, created_before=now - timedelta(days=days))}
    return sorted(due)


def _expired(params: Params, result: Params) -> Params:
    out: Params = {"FaceIds": result.get("FaceIds", []), "UserIds": result.get("UserIds", [])}
    if params.get("RetentionDays") is not None:
        out["RetentionDays"] = params["RetentionDays"]
    return out


@operation("RetentionSweep", scope="admin", summary=_expired, rekognition=False)
def retention_sweep(svc: RegardService, call: Call) -> Params:
    """Delete one collection's faces that are past retention (``RegardService.sweep_retention``
    runs it for every collection that has some)."""
    coll = collection(svc, call.params["CollectionId"])
    call.params.setdefault("RetentionDays",
                           CollectionPolicy.from_tags(coll.tags).retention_days)
    gone, _ = svc.store.erase(coll.name, due_faces(svc, coll))
    if gone:
        svc.store.database.reclaim_space()
    return {"FaceIds": gone, "UserIds": []}


@operation("AuditExport", scope="audit:read", rekognition=False)
def audit_export(svc: RegardService, call: Call) -> Params:
    """Ledger entries in order, ``Limit`` at a time from after ``After`` (``NextAfter`` resumes),
    between ``Since`` (inclusive) and ``Until`` (exclusive). Reading is itself recorded."""
    p = call.params
    limit = int(p.get("Limit") or 1000)
    if not 1 <= limit <= 10000:
        raise InvalidParameterError("Limit must be between 1 and 10000")
    entries = []
    for entry in svc.gate.ledger.entries(_when(p, "Since"), _when(p, "Until"),
                                         after=int(p.get("After") or 0)):
        if len(entries) == limit:
            return {"Entries": entries, "NextAfter": entries[-1]["seq"]}
        entries.append(entry.to_dict())
    return {"Entries": entries}


def _when(p: Params, member: str) -> datetime | None:
    value: Any = p.get(member)
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(f"{member} must be an ISO 8601 time") from exc


@operation("AuditVerify", scope="audit:read", rekognition=False)
def audit_verify(svc: RegardService, call: Call) -> Params:
    return svc.gate.ledger.verify().to_dict()


@operation("WhoSearched", scope="audit:read", rekognition=False)
def who_searched(svc: RegardService, call: Call) -> Params:
    """Who searched for this person: the search entries that matched or probed with their faces
    (``FaceIds``, or those ever given to an ``ExternalImageId``) or their user (``UserId``, or
    the users those faces belong or belonged to)."""
    p = call.params
    faces = set(p.get("FaceIds") or ())
    users = {p["UserId"]} if p.get("UserId") else set()
    if p.get("ExternalImageId"):
        subject_faces, subject_users = svc.subject_of(p["ExternalImageId"])
        faces |= subject_faces
        users |= subject_users
    if not faces and not users:
        raise InvalidParameterError(
            "Name the person: FaceIds, an ExternalImageId with faces, or a UserId")
    return {"Entries": [e.to_dict() for e in svc.gate.ledger.who_searched(faces, users)]}


def _checked(params: Params, result: Params) -> Params:
    out: Params = {"Problems": {c["CollectionId"]: len(c["Problems"])
                                for c in result.get("Collections", []) if c["Problems"]}}
    if result.get("Database"):
        out["DatabaseProblems"] = len(result["Database"])
    return out


@operation("CheckCollections", scope="collections:read", summary=_checked, rekognition=False)
def check_collections(svc: RegardService, call: Call) -> Params:
    """The database file's integrity (SQLite's ``integrity_check``), then the store's invariants,
    per collection (all the caller may see when none is named): face count = face rows,
    sequence = last change, every embedding whole and matching its checksum, every face added
    by a change still in the log, and the in-memory index caught up and of the same size. For
    operators after a crash, a restore or a disk fault; reports FaceIds and counts, never
    embeddings. A collection whose rows cannot be read is a problem to report, not a failure of
    the check."""
    database = svc.store.database.integrity_problems()
    name = call.params.get("CollectionId")
    if name is not None:
        names = [collection(svc, name).name]
    else:
        names = [c.name for c in svc.all_collections() if call.context.may_see(c.name)]
    report = []
    for each in names:
        try:
            report.append(_check_collection(svc, each))
        except CatalogCorruptError:
            report.append({"CollectionId": each, "FaceCount": None, "Problems": [
                "its rows cannot be read: the database is damaged"]})
    return {"Collections": report, "Database": database,
            "Ok": not database and all(not r["Problems"] for r in report)}


def _check_collection(svc: RegardService, name: str) -> Params:
    problems = svc.store.catalog.consistency_problems(name)
    _, seq, count = svc.store.catalog.state(name)
    entry = svc.store.indexes.synced(name)
    if (entry.seq, len(entry.faces)) != (seq, count):
        problems.append(f"index at change {entry.seq} with {len(entry.faces)} faces, "
                        f"catalog at {seq} with {count}")
    return {"CollectionId": name, "FaceCount": count, "Problems": problems}


def _key_change(params: Params, result: Params) -> Params:
    return {k: v for k, v in result.items() if k != "SecretAccessKey"}  # never the secret


def _key_body(key: Any) -> Params:
    return {"AccessKeyId": key.access_key_id, "Name": key.name, "Scopes": list(key.scopes),
            "Collections": list(key.collections) if key.collections is not None else None,
            "MaxTps": key.max_tps}


@operation("CreateAccessKey", scope="admin", summary=_key_change, rekognition=False)
def create_access_key(svc: RegardService, call: Call) -> Params:
    """Issue a key (``Name``, ``Scopes`` (default admin), ``Collections``, ``DefaultPurpose``,
    ``MaxTps``); the answer holds its secret, shown once, never recorded."""
    p = call.params
    key, secret = svc.keys.create(p.get("Name"), p.get("Scopes") or ("admin",),
                                  p.get("Collections"), p.get("DefaultPurpose"), p.get("MaxTps"))
    return {**_key_body(key), "SecretAccessKey": secret}


@operation("RevokeAccessKey", scope="admin", summary=_key_change, rekognition=False)
def revoke_access_key(svc: RegardService, call: Call) -> Params:
    return _key_body(svc.keys.revoke(call.params["AccessKeyId"]))


@operation("ListAccessKeys", scope="admin", rekognition=False)
def list_access_keys(svc: RegardService, call: Call) -> Params:
    """Every key (revoked ones too, unless ``IncludeRevoked`` is false), never a secret."""
    include = call.params.get("IncludeRevoked", True)
    return {"AccessKeys": [k.to_dict() for k in svc.keys.list(include_revoked=bool(include))]}


@operation("AuditBrowse", scope="audit:read", rekognition=False)
def audit_browse(svc: RegardService, call: Call) -> Params:
    """One page of ledger entries, newest first (``Before``: a sequence number, ``Limit`` up to
    500), optionally of one ``Operation``, ``Principal`` or ``Collection``; ``NextBefore``
    continues. Reading is itself recorded."""
    p = call.params
    limit = int(p.get("Limit") or 50)
    if not 1 <= limit <= 500:
        raise InvalidParameterError("Limit must be between 1 and 500")
    before = p.get("Before")
    entries = svc.gate.ledger.browse(
        before=int(before) if before is not None else None, limit=limit + 1,
        operation=p.get("Operation") or None, principal=p.get("Principal") or None,
        collection=p.get("Collection") or None)
    out: Params = {"Entries": [e.to_dict() for e in entries[:limit]]}
    if len(entries) > limit:
        out["NextBefore"] = entries[limit - 1].seq
    return out


SUMMARY_DAYS = 14


@operation("AuditSummary", scope="audit:read", rekognition=False)
def audit_summary(svc: RegardService, call: Call) -> Params:
    """The ledger at a glance for the console's overview: per day of the last ``Days`` (default
    14, at most 366), its entries, searches and refused or failed requests, and whether its
    signed head verifies (the whole chain is checked by AuditVerify, which reads every entry)."""
    days = int(call.params.get("Days") or SUMMARY_DAYS)
    if not 1 <= days <= 366:
        raise InvalidParameterError("Days must be between 1 and 366")
    today = svc.gate.now().date()
    first = today - timedelta(days=days - 1)
    counts = svc.gate.ledger.daily_counts(datetime(first.year, first.month, first.day,
                                                   tzinfo=svc.gate.now().tzinfo))
    empty = {"Entries": 0, "Searches": 0, "Refused": 0}
    per_day = [{"Date": (first + timedelta(days=i)).isoformat(),
                **counts.get((first + timedelta(days=i)).isoformat(), empty)}
               for i in range(days)]
    head = svc.gate.ledger.head()
    return {"Days": per_day, "HeadSeq": head["seq"], "HeadSignatureOk": head["signature_ok"]}


@operation("TransparencyReport", scope="audit:read", rekognition=False)
def transparency_report(svc: RegardService, call: Call) -> Params:
    """The transparency report (``regard report``) as one HTML page, of one ``CollectionId`` or
    of all. A key limited to some collections must name one: the whole report shows all."""
    from regard.governance.report import build_report
    from regard.errors import AccessDeniedError

    name = call.params.get("CollectionId")
    if name is None and call.context.collections is not None:
        raise AccessDeniedError("This access key may use only some collections: name one "
                                "for its report")
    return {"Html": build_report(svc, name)}
