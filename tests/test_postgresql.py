"""The catalog, the collections and the audit ledger on a real PostgreSQL server (started by the
test, see ``postgres_server.py``), including two replicas sharing one database: what
``REGARD_DATABASE_URL=postgresql+psycopg://...`` promises."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from regard.vision.packs import default_pack
from regard.errors import InvalidImageFormatError
from regard.context import CallContext
from regard.governance.gatekeeper import Gatekeeper
from regard.governance.ledger import Ledger, LedgerIntegrityError
from regard.service import RegardService, face_ids
from regard.store import Store
from regard.store.database import Database

from conftest import encode, face_crop, fail_appends

KEY = b"p" * 32
PURPOSE = {"regard:purpose": "door access"}


def replica(engine, url: str) -> RegardService:
    """One Regard process's view of the shared database (its own pool, index and ledger)."""
    store = Store(url, checkpoint_dir=False)
    return RegardService(engine, store, gatekeeper=Gatekeeper(Ledger(store.database, key=KEY)))


@pytest.fixture()
def svc(engine, postgres_url):
    service = replica(engine, postgres_url)
    yield service
    service.store.close()


@pytest.fixture(scope="module")
def images(astronaut, cameraman) -> dict[str, bytes]:
    return {"face": encode(face_crop(astronaut)),
            "flipped": encode(np.ascontiguousarray(face_crop(astronaut)[:, ::-1])),
            "cameraman": encode(cameraman),
            "no face": encode(np.dstack([np.tile(np.linspace(0, 255, 240, dtype=np.uint8),
                                                 (180, 1))] * 3), "PNG")}


def test_collections_end_to_end(svc, images):
    svc.create_collection(CollectionId="c", Tags=PURPOSE)
    alice = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]},
                                     ExternalImageId="alice"))
    alice += face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["flipped"]},
                                      ExternalImageId="alice"))
    bob = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["cameraman"]},
                                   ExternalImageId="bob"))
    assert len(alice) == 2 and len(bob) == 1
    empty = svc.index_faces(CollectionId="c", Image={"Bytes": images["no face"]})
    assert empty["FaceRecords"] == [] and len(svc.store.catalog.image_hashes("c")) == 3
    assert len(svc.store.catalog.images_without_faces("c")) == 1
    found = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["face"]})
    assert {m["Face"]["FaceId"] for m in found["FaceMatches"]} == set(alice)
    svc.create_user(CollectionId="c", UserId="alice")
    svc.associate_faces(CollectionId="c", UserId="alice", FaceIds=alice)
    users = svc.search_users_by_image(CollectionId="c", Image={"Bytes": images["flipped"]})
    assert [m["User"]["UserId"] for m in users["UserMatches"]] == ["alice"]
    page = svc.list_faces(CollectionId="c", MaxResults=2)
    rest = svc.list_faces(CollectionId="c", NextToken=page["NextToken"])
    assert {f["FaceId"] for f in page["Faces"] + rest["Faces"]} == set(alice + bob)
    cid, seq, _ = svc.store.catalog.state("c")
    assert not svc.store.catalog.deleted_since(cid, seq)  # what keeps an index checkpoint
    assert svc.delete_faces(CollectionId="c", FaceIds=bob)["DeletedFaces"] == bob
    assert svc.store.catalog.deleted_since(cid, seq)
    with pytest.raises(InvalidImageFormatError):
        svc.index_faces(CollectionId="c", Image={"Bytes": b"not an image"})
    erased = svc.erase(ExternalImageId="alice")
    assert sorted(erased["FaceIds"]) == sorted(alice) and erased["UserIds"] == ["alice"]
    assert svc.describe_collection(CollectionId="c")["FaceCount"] == 0
    with svc.store.database.engine.connect() as conn:  # the erasure vacuumed the faces table
        assert conn.execute(text("SELECT vacuum_count FROM pg_stat_user_tables "
                                 "WHERE relname = 'faces'")).scalar() >= 1
    assert svc.store.catalog.consistency_problems("c") == []
    report = svc.gate.ledger.verify()
    assert report.ok and report.entries == len(list(svc.gate.ledger.entries()))


def test_two_replicas_write_and_search_one_collection_concurrently(engine, postgres_url, images):
    a, b = replica(engine, postgres_url), replica(engine, postgres_url)
    try:
        a.create_collection(CollectionId="c", Tags=PURPOSE)
        errors: list[BaseException] = []
        per_thread = 4

        def worker(service: RegardService, n: int) -> None:
            try:
                for i in range(per_thread):
                    who = CallContext(principal=f"replica-{n}", case=f"{n}-{i}")
                    image = images["cameraman" if i % 2 else "face"]
                    service.call("IndexFaces", {"CollectionId": "c", "Image": {"Bytes": image},
                                                "ExternalImageId": f"{n}-{i}"}, who)
                    service.call("SearchFacesByImage",
                                 {"CollectionId": "c", "Image": {"Bytes": images["flipped"]}},
                                 who)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(svc, n))
                   for n, svc in enumerate([a, b, a, b, a, b])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        n_index = len(threads) * per_thread
        assert a.store.catalog.consistency_problems("c") == []
        assert a.describe_collection(CollectionId="c")["FaceCount"] == n_index
        # each replica's index caught up with the other's writes through the change log
        for service in (a, b):
            hits = service.search_faces_by_image(CollectionId="c", MaxFaces=100,
                                                 Image={"Bytes": images["face"]})
            assert len(hits["FaceMatches"]) == n_index // 2
        # one gap-free chain, every operation recorded once, from both replicas
        entries = list(a.gate.ledger.entries())
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        cases = sorted(e.case_ref for e in entries if e.operation == "IndexFaces")
        assert cases == sorted(f"{n}-{i}" for n in range(len(threads))
                               for i in range(per_thread))
        assert a.gate.ledger.verify().ok and b.gate.ledger.verify().ok
    finally:
        a.store.close()
        b.store.close()


def test_a_change_whose_entry_cannot_be_written_is_rolled_back(svc, images, monkeypatch):
    for name in ("c", "d"):
        svc.create_collection(CollectionId=name, Tags=PURPOSE)
        svc.index_faces(CollectionId=name, Image={"Bytes": images["face"]},
                        ExternalImageId="alice")
    fail_appends(monkeypatch, "IndexFaces")
    with pytest.raises(OSError):
        svc.index_faces(CollectionId="c", Image={"Bytes": images["cameraman"]})
    fail_appends(monkeypatch, "Erase")
    with pytest.raises(OSError):
        svc.erase(ExternalImageId="alice")
    for name in ("c", "d"):
        assert svc.describe_collection(CollectionId=name)["FaceCount"] == 1
        assert svc.store.catalog.consistency_problems(name) == []
    failed = [e for e in svc.gate.ledger.entries(operations=["IndexFaces", "Erase"])][-2:]
    assert [(e.operation, e.result.get("Error")) for e in failed] == [
        ("IndexFaces", "InternalServerError"), ("Erase", "InternalServerError")]
    monkeypatch.undo()
    assert len(svc.erase(ExternalImageId="alice")["FaceIds"]) == 2
    assert svc.gate.ledger.verify().ok


def test_tampering_is_found_and_blocks_appends(svc, images):
    svc.create_collection(CollectionId="c", Tags=PURPOSE)
    svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]})
    for _ in range(3):
        svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]})
    with svc.store.database.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET principal = 'someone-else' WHERE seq = 3"))
    report = svc.gate.ledger.verify()
    assert not report.ok and report.first_bad_seq == 3
    with svc.store.database.engine.begin() as conn:  # re-chain the tail without the key
        conn.execute(text("UPDATE audit_head SET seq = seq - 1"))
    with pytest.raises(LedgerIntegrityError):
        svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["face"]})


def test_embedding_checksums_are_filled_on_upgrade_and_find_a_zeroed_embedding(svc, images):
    svc.create_collection(CollectionId="c", Tags=PURPOSE)
    [face] = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["face"]}))
    catalog = svc.store.catalog
    with catalog.database.engine.begin() as conn:  # as Regard with schema 4 left it
        conn.execute(text("ALTER TABLE faces DROP COLUMN embedding_sha256"))
        conn.execute(text("UPDATE schema_version SET version = 4"))
    Database(catalog.database.url).close()  # the upgrade to schema 5 computes the missing checksums
    assert catalog.consistency_problems("c") == []
    with catalog.database.engine.begin() as conn:
        conn.execute(text("UPDATE faces SET embedding = :zero WHERE face_id = :face"),
                     {"zero": bytes(4 * default_pack().embedding_size), "face": face})
    assert [p for p in catalog.consistency_problems("c") if face in p] == [
        f"1 face(s) with an all-zero embedding: {face}",
        f"1 face(s) whose embedding fails its checksum (damaged or swapped): {face}"]


def test_two_servers_on_one_database_are_one_service(engine, postgres_url, images, tmp_path):
    """Replicas behind a load balancer: a key issued by one works on the other, a face indexed
    through one is found through the other, and both write one audit chain."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    from live_server import LiveServer

    with LiveServer(tmp_path / "a", engine, database_url=postgres_url) as a, \
            LiveServer(tmp_path / "b", engine, database_url=postgres_url) as b:
        key, secret = a.server.keys.create("shared admin")

        def client(url: str):
            return boto3.client("rekognition", endpoint_url=url, region_name="us-east-1",
                                aws_access_key_id=key.access_key_id,
                                aws_secret_access_key=secret,
                                config=Config(retries={"max_attempts": 1}))

        rek_a, rek_b = client(a.url), client(b.url)
        rek_a.create_collection(CollectionId="staff")
        indexed = rek_a.index_faces(CollectionId="staff", Image={"Bytes": images["face"]},
                                    ExternalImageId="eileen")
        face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
        found = rek_b.search_faces_by_image(CollectionId="staff",
                                            Image={"Bytes": images["flipped"]})
        assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [face_id]
        rek_b.delete_faces(CollectionId="staff", FaceIds=[face_id])
        assert rek_a.search_faces_by_image(CollectionId="staff",
                                           Image={"Bytes": images["face"]})["FaceMatches"] == []
        ledger = a.server.service.gate.ledger
        ops = [(e.operation, e.principal) for e in ledger.entries()
               if e.operation in ("IndexFaces", "SearchFacesByImage", "DeleteFaces")]
        assert ops == [("IndexFaces", key.access_key_id),
                       ("SearchFacesByImage", key.access_key_id),
                       ("DeleteFaces", key.access_key_id),
                       ("SearchFacesByImage", key.access_key_id)]
        assert ledger.verify().ok and b.server.service.gate.ledger.verify().ok
        b.server.keys.revoke(key.access_key_id)  # revoked through one, refused by the other
        with pytest.raises(ClientError) as refused:
            rek_a.list_collections()
        assert refused.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_a_database_outage_is_a_retryable_error_and_the_server_recovers(engine, images,
                                                                        tmp_path):
    """The database crashes under a live server: requests fail with a 500 that boto3 retries
    (not a hang, not a dropped connection), and once it is back the same server serves again,
    with every acknowledged face and an intact ledger."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    from live_server import LiveServer
    from postgres_server import PostgresServer, unavailable_reason

    if unavailable_reason():
        pytest.skip(unavailable_reason())
    database = PostgresServer()  # its own server: this test crashes it
    database.start()
    try:
        with LiveServer(tmp_path, engine, database_url=database.new_database()) as live:
            key, secret = live.server.keys.create("admin")
            rek = boto3.client("rekognition", endpoint_url=live.url, region_name="us-east-1",
                               aws_access_key_id=key.access_key_id,
                               aws_secret_access_key=secret,
                               config=Config(retries={"max_attempts": 1}, read_timeout=30))
            rek.create_collection(CollectionId="staff", Tags=PURPOSE)
            face_id = rek.index_faces(CollectionId="staff", Image={"Bytes": images["face"]},
                                      ExternalImageId="eileen")["FaceRecords"][0]["Face"]["FaceId"]
            database.crash()
            for call in (lambda: rek.search_faces_by_image(CollectionId="staff",
                                                          Image={"Bytes": images["flipped"]}),
                         lambda: rek.list_collections()):
                with pytest.raises(ClientError) as down:
                    call()
                error = down.value.response
                assert error["ResponseMetadata"]["HTTPStatusCode"] == 500
                assert error["Error"]["Code"] == "InternalServerError"
                assert "database" in error["Error"]["Message"].lower()
            health = httpx.get(live.url + "/healthz")
            assert health.status_code == 503 and health.json()["database"] == "unreachable"
            database.restart()
            assert httpx.get(live.url + "/healthz").json()["database"] == "ok"
            found = rek.search_faces_by_image(CollectionId="staff",
                                              Image={"Bytes": images["flipped"]})
            assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [face_id]
            assert live.server.service.gate.ledger.verify().ok
            assert live.server.service.store.catalog.consistency_problems("staff") == []
    finally:
        database.stop()
