"""Accountability in the domain layer: the tamper-evident ledger, policies, scopes, retention and
erasure, on real images and a real SQLite catalog."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, text

from regard.errors import AccessDeniedError, InvalidParameterError, RegardError
from regard.context import CallContext
from regard.governance.gatekeeper import Gatekeeper
from regard.governance.ledger import Ledger, LedgerIntegrityError, chain_hash
from regard.service import RegardService, face_ids
from regard.store import Store
from regard.store import schema as s
from regard.store.catalog import Catalog

from conftest import encode, face_crop, fail_appends

KEY = b"k" * 32


class Clock:
    """A controllable clock for retention tests."""

    def __init__(self) -> None:
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def svc(tmp_path: Path, engine, clock) -> RegardService:
    store = Store(f"sqlite:///{tmp_path / 'regard.db'}", checkpoint_dir=tmp_path / "index")
    gate = Gatekeeper(Ledger(store.database, key=KEY), clock=clock)
    service = RegardService(engine, store, gatekeeper=gate)
    yield service
    store.close()


@pytest.fixture(scope="module")
def images(astronaut, cameraman) -> dict[str, bytes]:
    return {
        "astronaut": encode(astronaut),
        "face": encode(face_crop(astronaut)),
        "flipped": encode(np.ascontiguousarray(astronaut[:, ::-1])),
        "cameraman": encode(cameraman),
    }


def entries(svc: RegardService, operation: str | None = None) -> list:
    return [e for e in svc.gate.ledger.entries()
            if operation is None or e.operation == operation]


def create(svc: RegardService, name: str = "c", **policy: str) -> None:
    svc.create_collection(CollectionId=name, Tags={"regard:purpose": "door access", **policy})


# -- the ledger: tamper evidence ----------------------------------------------------------------
@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger(Catalog(f"sqlite:///{tmp_path / 'l.db'}"), key=KEY)
    for i in range(10):
        ledger.append(principal=f"key{i % 3}", operation="SearchFacesByImage", collection="c",
                      purpose="investigation", case_ref=f"T-{i}", image_sha256=["ab" * 32],
                      result={"FaceIds": [f"face-{i}"], "TopSimilarity": 90.0 + i,
                              "Threshold": 80.0}, client="10.0.0.1")
    assert ledger.verify().ok
    return ledger


def sql(ledger: Ledger, statement: str, **params: object) -> None:
    with ledger.database.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_an_edited_entry_is_found(ledger):
    sql(ledger, "UPDATE audit_log SET result = :r WHERE seq = 4", r=json.dumps({"FaceIds": []}))
    report = ledger.verify()
    assert not report.ok and report.first_bad_seq == 4
    assert "entry 4 was altered" in report.problems[0]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(ledger):
    entry = next(e for e in ledger.entries() if e.seq == 4)
    forged = {**entry.content(), "purpose": "routine"}
    sql(ledger, "UPDATE audit_log SET purpose = 'routine', hash = :h WHERE seq = 4",
        h=chain_hash(entry.prev_hash, forged))
    report = ledger.verify()
    assert report.first_bad_seq == 5 and "entry 5 does not follow entry 4" in report.problems[0]


def test_a_deleted_entry_is_found(ledger):
    sql(ledger, "DELETE FROM audit_log WHERE seq = 6")
    report = ledger.verify()
    assert report.first_bad_seq == 6 and "entry 6 missing (deleted)" in report.problems[0]


def test_swapped_entries_are_found(ledger):
    rows = {e.seq: e for e in ledger.entries() if e.seq in (3, 7)}
    for seq, other in ((3, rows[7]), (7, rows[3])):
        sql(ledger, "UPDATE audit_log SET principal = :p, case_ref = :c, result = :r, "
                    "time = :t, prev_hash = :ph, hash = :h WHERE seq = :seq",
            p=other.principal, c=other.case_ref, r=json.dumps(other.result), t=other.time,
            ph=other.prev_hash, h=other.hash, seq=seq)
    report = ledger.verify()
    assert report.first_bad_seq == 3 and "entry 3 was altered" in report.problems[0]


def test_a_truncated_tail_is_found(ledger):
    sql(ledger, "DELETE FROM audit_log WHERE seq >= 8")
    report = ledger.verify()
    assert report.first_bad_seq == 8
    assert "ends at entry 7 but its signed head is at entry 10" in report.problems[-1]


def test_a_forged_head_is_found_and_blocks_appends(ledger):
    last = next(e for e in ledger.entries() if e.seq == 7)
    sql(ledger, "DELETE FROM audit_log WHERE seq >= 8")
    sql(ledger, "UPDATE audit_head SET seq = 7, hash = :h, signature = :sig",
        h=last.hash, sig="0" * 64)
    report = ledger.verify()
    assert not report.ok and "signed head does not verify" in report.problems[-1]
    with pytest.raises(LedgerIntegrityError):
        ledger.append(principal="x", operation="SearchFaces")


def test_entries_appended_outside_regard_are_found(ledger):
    last = next(e for e in ledger.entries() if e.seq == 10)
    extra = {**last.content(), "seq": 11, "prev_hash": last.hash, "principal": "intruder"}
    extra["hash"] = chain_hash(last.hash, extra)
    extra["result"] = json.dumps(extra["result"])
    extra["image_sha256"] = json.dumps(extra["image_sha256"])
    with ledger.database.engine.begin() as conn:
        conn.execute(s.audit_log.insert().values(
            **{**extra, "result": json.loads(extra["result"]),
               "image_sha256": json.loads(extra["image_sha256"])}))
    report = ledger.verify()
    assert report.first_bad_seq == 11 and "follow the signed head" in report.problems[-1]


def test_another_key_does_not_verify(ledger):
    assert not Ledger(ledger.database, key=b"x" * 32).verify().ok


# -- every operation is recorded ----------------------------------------------------------------
def test_operations_are_recorded_with_who_why_and_what(svc, images):
    alice = CallContext(principal="RGKALICE", client="10.1.2.3", purpose="door access",
                        case="T-7")
    create(svc)
    indexed = svc.call("IndexFaces", {"CollectionId": "c", "Image": {"Bytes": images["face"]},
                                      "ExternalImageId": "eileen"}, alice)
    found = svc.call("SearchFacesByImage",
                     {"CollectionId": "c", "Image": {"Bytes": images["flipped"]}}, alice)
    with pytest.raises(RegardError):
        svc.call("DescribeCollection", {"CollectionId": "nope"}, alice)

    ops = [e.operation for e in entries(svc)]
    assert ops == ["CreateCollection", "IndexFaces", "SearchFacesByImage", "DescribeCollection"]
    index, search, missing = entries(svc)[1:]
    import hashlib

    assert index.principal == "RGKALICE" and index.client == "10.1.2.3"
    assert (index.purpose, index.case_ref) == ("door access", "T-7")
    assert index.image_sha256 == [hashlib.sha256(images["face"]).hexdigest()]
    assert index.result["FaceIds"] == face_ids(indexed)
    assert search.result["FaceIds"] == face_ids(indexed)
    assert search.result["TopSimilarity"] == found["FaceMatches"][0]["Similarity"]
    assert search.result["Threshold"] == 80.0
    assert search.image_sha256 == [hashlib.sha256(images["flipped"]).hexdigest()]
    assert missing.result == {"Error": "ResourceNotFoundException"}
    # identifiers and scores only: no image bytes, no embedding
    dumped = json.dumps([e.to_dict() for e in entries(svc)])
    assert len(dumped) < 6000 and "[0." not in dumped and "-0." not in dumped
    assert svc.gate.ledger.verify().ok


def test_concurrent_searches_are_each_recorded_once(svc, images):
    create(svc)
    svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]})
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                svc.call("SearchFacesByImage",
                         {"CollectionId": "c", "Image": {"Bytes": images["flipped"]}},
                         CallContext(principal=f"worker-{n}", case=f"{n}-{i}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    searches = entries(svc, "SearchFacesByImage")
    assert sorted(e.case_ref for e in searches) == sorted(f"{n}-{i}" for n in range(8)
                                                          for i in range(5))
    seqs = [e.seq for e in entries(svc)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert svc.gate.ledger.verify().ok


# -- policies -----------------------------------------------------------------------------------
def test_a_collection_needs_a_purpose(svc, engine, tmp_path):
    with pytest.raises(InvalidParameterError, match="purpose"):
        svc.create_collection(CollectionId="c")
    assert entries(svc)[-1].result["Error"] == "InvalidParameterException"
    create(svc)
    lenient = RegardService(engine, svc.store, default_purpose="archive search",
                            gatekeeper=Gatekeeper(svc.gate.ledger, default_purpose="archive"))
    lenient.create_collection(CollectionId="d")
    tags = svc.list_tags_for_resource(ResourceArn=svc.collection_arn("d"))["Tags"]
    assert tags["regard:purpose"] == "archive"


def test_threshold_floor_and_match_cap(svc, images):
    create(svc, **{"regard:threshold-floor": "90", "regard:max-matches": "1"})
    for image in ("face", "astronaut"):
        svc.index_faces(CollectionId="c", Image={"Bytes": images[image]})
    with pytest.raises(InvalidParameterError, match="below the threshold floor 90"):
        svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]},
                                  FaceMatchThreshold=80)
    refused = entries(svc, "SearchFacesByImage")[-1]
    assert refused.result["Error"] == "InvalidParameterException"
    found = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]})
    assert len(found["FaceMatches"]) == 1  # capped: both faces match
    assert entries(svc, "SearchFacesByImage")[-1].result["Threshold"] == 90
    assert svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]},
                                     FaceMatchThreshold=95, MaxFaces=10)["FaceMatches"]


def test_consent_reference_required_and_stored(svc, images):
    create(svc, **{"regard:consent-required": "true"})
    with pytest.raises(InvalidParameterError, match="consent"):
        svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]})
    body = svc.call("IndexFaces", {"CollectionId": "c", "Image": {"Bytes": images["face"]}},
                    CallContext.operator(consent="form-2026-118"))
    with svc.store.database.engine.connect() as conn:
        stored = conn.execute(select(s.faces.c.consent_ref)).scalars().all()
    assert stored == ["form-2026-118"] and len(face_ids(body)) == 1


def test_policy_changes_go_through_tags_and_are_validated(svc):
    create(svc)
    arn = svc.collection_arn("c")
    svc.tag_resource(ResourceArn=arn, Tags={"regard:threshold-floor": "95", "owner": "it"})
    assert svc.list_tags_for_resource(ResourceArn=arn)["Tags"]["regard:threshold-floor"] == "95"
    for bad in ({"regard:threshold-floor": "high"}, {"regard:retention-days": "0"},
                {"regard:color": "blue"}, {"regard:human-review": "yes"}):
        with pytest.raises(InvalidParameterError):
            svc.tag_resource(ResourceArn=arn, Tags=bad)
    with pytest.raises(InvalidParameterError, match="purpose"):
        svc.untag_resource(ResourceArn=arn, TagKeys=["regard:purpose"])
    svc.untag_resource(ResourceArn=arn, TagKeys=["owner"])
    assert "owner" not in svc.list_tags_for_resource(ResourceArn=arn)["Tags"]
    with pytest.raises(RegardError) as exc:
        svc.list_tags_for_resource(ResourceArn=arn.replace("/c", "/nope"))
    assert exc.value.code == "ResourceNotFoundException"
    changes = entries(svc, "TagResource")
    assert changes[0].result["Tags"] == {"regard:threshold-floor": "95", "owner": "it"}


# -- scopes -------------------------------------------------------------------------------------
def test_scopes_and_allow_lists(svc, images):
    create(svc, "c")
    create(svc, "d")
    searcher = CallContext(principal="RGKSEARCH", scopes=("search",), collections=("c",))
    with pytest.raises(AccessDeniedError, match="faces:write"):
        svc.call("IndexFaces", {"CollectionId": "c", "Image": {"Bytes": images["face"]}},
                 searcher)
    with pytest.raises(AccessDeniedError, match="may not use the collection 'd'"):
        svc.call("SearchFacesByImage", {"CollectionId": "d",
                                        "Image": {"Bytes": images["face"]}}, searcher)
    reader = CallContext(principal="RGKREAD", scopes=("collections:read",), collections=("d",))
    assert svc.call("ListCollections", {}, reader)["CollectionIds"] == ["d"]
    denied = [e for e in entries(svc) if e.result.get("Error") == "AccessDeniedException"]
    assert [(e.principal, e.operation, e.result["Scope"]) for e in denied] == [
        ("RGKSEARCH", "IndexFaces", "faces:write"), ("RGKSEARCH", "SearchFacesByImage", "search")]


# -- retention ----------------------------------------------------------------------------------
def test_retention_sweep_with_a_controlled_clock(svc, images, clock):
    create(svc, "short", **{"regard:retention-days": "30"})
    create(svc, "forever")
    old = face_ids(svc.index_faces(CollectionId="short", Image={"Bytes": images["face"]}))
    keep = face_ids(svc.index_faces(CollectionId="forever", Image={"Bytes": images["face"]}))
    assert svc.sweep_retention(svc.context) == {"Collections": []}
    clock.now += timedelta(days=29)
    assert svc.sweep_retention(svc.context) == {"Collections": []}
    clock.now += timedelta(days=2)
    swept = svc.sweep_retention(svc.context)
    assert swept == {"Collections": [{"CollectionId": "short", "DeletedFaces": old}]}
    assert svc.list_faces(CollectionId="short")["Faces"] == []
    assert face_ids({"FaceRecords": [{"Face": f} for f in
                                     svc.list_faces(CollectionId="forever")["Faces"]]}) == keep
    assert svc.search_faces_by_image(CollectionId="short",
                                     Image={"Bytes": images["face"]})["FaceMatches"] == []
    (entry,) = entries(svc, "RetentionSweep")
    assert entry.result["FaceIds"] == old and entry.result["RetentionDays"] == 30


def test_deleted_faces_and_collections_leave_no_bytes_on_disk(svc, images, tmp_path):
    """DeleteFaces and DeleteCollection, not only erasure: the deleted embeddings are in
    neither the database file, its write-ahead log nor an index checkpoint."""
    create(svc)
    face = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]}))
    other = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["cameraman"]}))
    svc.store.indexes.checkpoint("c")
    with svc.store.database.engine.connect() as conn:
        blobs = dict(conn.execute(select(s.faces.c.face_id, s.faces.c.embedding)).all())

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in [*tmp_path.glob("regard.db*"),
                                                 *(tmp_path / "index").glob("*")])

    assert blobs[face[0]] in on_disk()
    svc.delete_faces(CollectionId="c", FaceIds=face)
    disk = on_disk()
    assert blobs[face[0]] not in disk and blobs[other[0]] in disk
    svc.delete_collection(CollectionId="c")
    assert blobs[other[0]] not in on_disk()


def test_shortening_retention_applies_to_faces_already_indexed(svc, images, clock):
    create(svc)
    svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]})
    clock.now += timedelta(days=10)
    svc.tag_resource(ResourceArn=svc.collection_arn("c"), Tags={"regard:retention-days": "7"})
    assert len(svc.sweep_retention(svc.context)["Collections"][0]["DeletedFaces"]) == 1


# -- erasure ------------------------------------------------------------------------------------
def test_erasure_leaves_nothing_of_the_subject(svc, images, tmp_path):
    create(svc)
    alice = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]},
                                     ExternalImageId="alice"))
    alice += face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["flipped"]},
                                      ExternalImageId="alice"))
    bob = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["cameraman"]},
                                   ExternalImageId="bob"))
    svc.create_user(CollectionId="c", UserId="alice-user")
    svc.associate_faces(CollectionId="c", UserId="alice-user", FaceIds=alice)
    svc.call("SearchFacesByImage", {"CollectionId": "c", "Image": {"Bytes": images["face"]}},
             CallContext(principal="RGKPOLICE", purpose="investigation", case="C-1"))
    checkpoint = svc.store.indexes.checkpoint("c")  # the index, loaded, also on disk
    with svc.store.database.engine.connect() as conn:
        blobs = conn.execute(select(s.faces.c.embedding).where(
            s.faces.c.face_id.in_(alice))).scalars().all()
    assert len(blobs) == 2
    erased = [np.frombuffer(b, np.float32) for b in blobs]
    loaded = svc.store.indexes.synced("c")
    assert any(np.array_equal(row, e) for row in loaded.users.stored_vectors() for e in erased)

    dpo = CallContext.operator("local:dpo", purpose="GDPR art. 17 request", case="E-9")
    body = svc.acting_as(dpo).erase(ExternalImageId="alice")
    assert body["Collections"] == [{"CollectionId": "c", "DeletedFaces": sorted(alice),
                                    "DeletedUsers": ["alice-user"]}]
    # the loaded index, before any search: the vectors are overwritten, not merely hidden
    for stored in (loaded.faces.stored_vectors(), loaded.users.stored_vectors()):
        assert not any(np.allclose(row, e) for row in stored for e in erased)
    assert checkpoint is not None and not checkpoint.exists()  # it held the vectors
    # catalog rows
    catalog = svc.store.catalog
    assert catalog.find_faces("c", external_image_id="alice") == []
    assert [f["FaceId"] for f in svc.list_faces(CollectionId="c")["Faces"]] == bob
    assert svc.list_users(CollectionId="c")["Users"] == []
    # search results and index entries
    found = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["face"]},
                                      FaceMatchThreshold=0)
    assert {m["Face"]["FaceId"] for m in found["FaceMatches"]} == set(bob)
    index = svc.store.indexes.synced("c")
    assert set(index.faces.face_ids()) == set(bob)
    assert index.users.face_ids() == []
    # the bytes on disk (database, write-ahead log, index checkpoint)
    disk = b"".join(p.read_bytes() for p in [*tmp_path.glob("regard.db*"),
                                             *(tmp_path / "index").glob("*")])
    assert all(blob not in disk for blob in blobs)
    # the erasure is recorded, by identifiers only, and who searched for alice stays answerable
    erased = entries(svc, "Erase")[-1]
    assert erased.result["FaceIds"] == sorted(alice)
    assert erased.result["SubjectExternalImageId"] == "alice"
    assert (erased.purpose, erased.case_ref) == ("GDPR art. 17 request", "E-9")
    who = svc.who_searched(ExternalImageId="alice")["Entries"]
    assert [(e["principal"], e["purpose"], e["case_ref"]) for e in who] == [
        ("RGKPOLICE", "investigation", "C-1")]
    assert svc.gate.ledger.verify().ok


def test_erasure_by_user_and_its_errors(svc, images):
    create(svc, "c")
    create(svc, "d")
    faces = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]}))
    svc.index_faces(CollectionId="d", Image={"Bytes": images["face"]}, ExternalImageId="x")
    svc.create_user(CollectionId="c", UserId="u")
    svc.associate_faces(CollectionId="c", UserId="u", FaceIds=faces)
    body = svc.erase(UserId="u")
    assert body["FaceIds"] == faces and body["UserIds"] == ["u"]
    assert svc.describe_collection(CollectionId="d")["FaceCount"] == 1
    with pytest.raises(InvalidParameterError):
        svc.erase()
    with pytest.raises(InvalidParameterError):
        svc.erase(UserId="u", ExternalImageId="x")
    limited = svc.acting_as(CallContext("local", scopes=("faces:write",), collections=("c",)))
    assert limited.erase(ExternalImageId="x")["FaceIds"] == []  # d not allowed
    with pytest.raises(AccessDeniedError):
        limited.erase(ExternalImageId="x", CollectionId="d")


# -- an operation's changes and its ledger entry commit together ----------------------------------
def test_a_change_whose_entry_cannot_be_written_is_rolled_back(svc, images, monkeypatch):
    create(svc)
    kept = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["cameraman"]}))
    seq = svc.store.catalog.state("c")[1]
    fail_appends(monkeypatch, "IndexFaces")
    with pytest.raises(OSError):
        svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]})
    assert [f["FaceId"] for f in svc.list_faces(CollectionId="c")["Faces"]] == kept
    assert svc.store.catalog.state("c")[1] == seq  # no change reached the change log either
    found = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["face"]},
                                      FaceMatchThreshold=0)
    assert {m["Face"]["FaceId"] for m in found["FaceMatches"]} <= set(kept)
    failed = entries(svc, "IndexFaces")[-1]
    assert failed.result["Error"] == "InternalServerError"  # the failure itself is recorded
    monkeypatch.undo()
    assert len(face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]}))) == 1
    assert svc.gate.ledger.verify().ok


def test_an_erasure_is_whole_or_not_at_all(svc, images, monkeypatch):
    for name in ("c", "d"):
        create(svc, name)
        svc.index_faces(CollectionId=name, Image={"Bytes": images["face"]},
                        ExternalImageId="alice")
    fail_appends(monkeypatch, "Erase")
    with pytest.raises(OSError):
        svc.erase(ExternalImageId="alice")
    for name in ("c", "d"):  # nothing was erased unrecorded: the request can simply be retried
        assert svc.describe_collection(CollectionId=name)["FaceCount"] == 1
    monkeypatch.undo()
    assert len(svc.erase(ExternalImageId="alice")["FaceIds"]) == 2
    assert [svc.describe_collection(CollectionId=n)["FaceCount"] for n in ("c", "d")] == [0, 0]
    assert entries(svc, "Erase")[-1].result["Outcome"] == "OK"


CRASH_BEFORE_ENTRY = """
import os, sys
from regard.governance.gatekeeper import Gatekeeper
from regard.governance.ledger import Ledger
from regard.service import RegardService
from regard.store import Store

def append(self, **kw):
    if kw["operation"] == "IndexFaces":
        os._exit(9)  # killed after the faces were written, before their entry
    return original(self, **kw)

original, Ledger.append = Ledger.append, append
db, index, image = sys.argv[1:]
store = Store(f"sqlite:///{db}", checkpoint_dir=index)
service = RegardService(None, store, gatekeeper=Gatekeeper(Ledger(store.database, key=b"k" * 32)))
service.index_faces(CollectionId="c", Image={"Bytes": open(image, "rb").read()})
"""


@pytest.mark.slow
def test_a_crash_between_change_and_entry_leaves_neither(svc, images, tmp_path):
    import subprocess
    import sys

    create(svc)
    image = tmp_path / "face.jpg"
    image.write_bytes(images["face"])
    done = subprocess.run([sys.executable, "-c", CRASH_BEFORE_ENTRY, str(tmp_path / "regard.db"),
                           str(tmp_path / "index"), str(image)], capture_output=True, timeout=120)
    assert done.returncode == 9, done.stderr.decode()
    assert svc.list_faces(CollectionId="c")["Faces"] == []
    assert svc.store.catalog.state("c")[1:] == (0, 0)
    assert entries(svc, "IndexFaces") == [] and svc.gate.ledger.verify().ok
    assert len(face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]}))) == 1


# -- the call context: explicit, and failing closed ---------------------------------------------
def test_a_call_without_a_context_is_refused_and_runs_nothing(svc, images):
    create(svc)
    before = len(entries(svc))
    for attempt in (lambda: svc.call("IndexFaces", {"CollectionId": "c",
                                                    "Image": {"Bytes": images["face"]}}),
                    lambda: svc.call("ListCollections", {}, None),
                    lambda: svc.run_audited("DetectFaces", {}, None, lambda: {}),
                    lambda: svc.sweep_retention(None)):
        with pytest.raises(AccessDeniedError, match="CallContext"):
            attempt()
    assert len(entries(svc)) == before  # nobody to record: nothing ran
    assert svc.describe_collection(CollectionId="c")["FaceCount"] == 0


def test_the_methods_run_as_the_services_context_or_another(svc, images):
    create(svc)
    svc.list_collections()
    auditor = CallContext("RGKAUDITOR", scopes=("audit:read",), purpose="quarterly audit")
    assert svc.acting_as(auditor).audit_verify()["ok"]
    with pytest.raises(AccessDeniedError, match="collections:read"):
        svc.acting_as(auditor).list_collections()
    ops = [(e.principal, e.operation, e.purpose) for e in entries(svc)][-3:]
    assert ops == [("local", "ListCollections", None),
                   ("RGKAUDITOR", "AuditVerify", "quarterly audit"),
                   ("RGKAUDITOR", "ListCollections", "quarterly audit")]


def test_human_review_is_marked_by_the_service(svc, images):
    create(svc, **{"regard:human-review": "true"})
    create(svc, "plain")
    for name in ("c", "plain"):
        svc.index_faces(CollectionId=name, Image={"Bytes": images["face"]})
    reviewed = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]})
    plain = svc.search_faces_by_image(CollectionId="plain", Image={"Bytes": images["flipped"]})
    assert reviewed["HumanReviewRequired"] is True and reviewed["FaceMatches"]
    assert "HumanReviewRequired" not in plain


def test_who_searched_by_external_image_id_finds_searches_of_their_user(svc, images):
    """A SearchUsersByImage match names the user, not the face: asking by the person's
    ExternalImageId must find it too, before and after the person is erased."""
    create(svc, "c")
    (face,) = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]},
                                       ExternalImageId="carol"))
    svc.create_user(CollectionId="c", UserId="u-carol")
    svc.associate_faces(CollectionId="c", UserId="u-carol", FaceIds=[face])
    svc.search_users_by_image(CollectionId="c", Image={"Bytes": images["face"]})
    who = svc.who_searched(ExternalImageId="carol")["Entries"]
    assert [e["operation"] for e in who] == ["SearchUsersByImage"]
    svc.erase(ExternalImageId="carol")
    assert [e["operation"] for e in svc.who_searched(ExternalImageId="carol")["Entries"]] == [
        "SearchUsersByImage"]
