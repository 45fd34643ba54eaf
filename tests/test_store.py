"""The catalog (SQLAlchemy Core on SQLite WAL), schema migrations and the FAISS vector indexes:
exactness against brute force, deletions, flat -> HNSW, catch-up across Store instances (as
another process would write), and index checkpoints."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, func, inspect, select, text

from regard.errors import (
    ConflictError,
    ResourceAlreadyExistsError,
    ResourceNotFoundError,
    SchemaVersionError,
    ServiceQuotaExceededError,
)
from regard.store import IndexOptions, NewFace, Store, VectorIndex
from regard.store.index import SCRUBBED
from regard.store import schema as s
from regard.store.catalog import Catalog
from regard.store.database import Database
from regard.store.migrations import migrate

from store_workers import random_faces


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'regard.db'}"


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    st = Store(_url(tmp_path), checkpoint_dir=tmp_path / "index")
    st.catalog.create_collection("c", "arn:c", "1.0")
    yield st
    st.close()


def _brute(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(np.linalg.norm(vectors - query, axis=1), kind="stable")[:k]


# -- catalog ------------------------------------------------------------------------------------
def test_default_location_is_regard_home_in_wal_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    db = Database()
    assert (tmp_path / "home" / "regard.db").is_file()
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.close()
    monkeypatch.setenv("REGARD_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    Database().close()
    assert (tmp_path / "other.db").is_file()


def test_collections_crud(store):
    cat = store.catalog
    with pytest.raises(ResourceAlreadyExistsError):
        cat.create_collection("c", "arn:c", "1.0")
    cat.create_collection("d", "arn:d", "1.0", {"team": "x"})
    assert [c.name for c in cat.list_collections()] == ["c", "d"]
    first = cat.list_collections(limit=1)[0]
    assert [c.name for c in cat.list_collections(after_id=first.id)] == ["d"]
    assert cat.get_collection("d").tags == {"team": "x"}
    assert cat.get_collection("d").created.tzinfo is not None
    cat.delete_collection("d")
    with pytest.raises(ResourceNotFoundError):
        cat.get_collection("d")
    with pytest.raises(ResourceNotFoundError):
        cat.delete_collection("d")


def test_faces_are_stored_whole_and_counted(store):
    faces = random_faces(5, seed=1)
    rows = store.add_faces("c", faces)
    assert [r.face_id for r in rows] == [f.face_id for f in faces]
    info = store.catalog.get_collection("c")
    assert (info.face_count, info.seq) == (5, 5)
    got = store.catalog.get_faces("c", [faces[2].face_id], embeddings=True)[faces[2].face_id]
    np.testing.assert_array_equal(got.embedding, faces[2].embedding)
    assert got.bbox == pytest.approx(faces[2].bbox)
    with pytest.raises(ResourceNotFoundError):
        store.add_faces("nope", faces)
    assert store.catalog.consistency_problems("c") == []


def test_list_faces_paginates_and_filters(store):
    faces = random_faces(7, seed=2)
    store.add_faces("c", faces)
    ids = sorted(f.face_id for f in faces)
    page1 = store.catalog.list_faces("c", limit=4)
    page2 = store.catalog.list_faces("c", after=page1[-1].face_id, limit=4)
    assert [r.face_id for r in page1 + page2] == ids
    assert [r.face_id for r in store.catalog.list_faces("c", face_ids=ids[:2])] == ids[:2]


def test_delete_faces_and_users(store):
    faces = random_faces(4, seed=3)
    store.add_faces("c", faces)
    cat = store.catalog
    cat.create_user("c", "u1")
    with pytest.raises(ConflictError):
        cat.create_user("c", "u1")
    cat.create_user("c", "u2", token="t1")
    cat.create_user("c", "u2", token="t1")  # idempotent retry
    accept = lambda current, candidate: (True, None)  # noqa: E731
    done, failures, status = cat.associate_faces("c", "u1", [faces[0].face_id], accept)
    assert done == [faces[0].face_id] and not failures and status == "ACTIVE"
    missing = str(uuid.uuid4())
    deleted, failures = cat.delete_faces("c", [faces[0].face_id, faces[1].face_id, missing])
    assert deleted == [faces[1].face_id]
    assert {f.face_id: f.reasons for f in failures} == {
        faces[0].face_id: ["ASSOCIATED_TO_AN_EXISTING_USER"], missing: ["FACE_NOT_FOUND"]}
    _, failures, _ = cat.associate_faces("c", "u2", [faces[0].face_id], accept)
    assert failures[0].reasons == ["ASSOCIATED_TO_A_DIFFERENT_USER"]
    cat.delete_user("c", "u1")  # disassociates, keeps the face
    assert cat.get_faces("c", [faces[0].face_id])[faces[0].face_id].user_id is None
    with pytest.raises(ResourceNotFoundError):
        cat.delete_user("c", "u1")
    assert cat.consistency_problems("c") == []


def test_user_face_quota(store):
    faces = random_faces(101, seed=4)
    store.add_faces("c", faces)
    store.catalog.create_user("c", "u")
    accept = lambda current, candidate: (True, None)  # noqa: E731
    store.catalog.associate_faces("c", "u", [f.face_id for f in faces[:100]], accept)
    with pytest.raises(ServiceQuotaExceededError):
        store.catalog.associate_faces("c", "u", [faces[100].face_id], accept)


def test_image_hashes(store):
    store.add_faces("c", random_faces(2, seed=5, sha="a" * 64))
    assert store.catalog.image_hashes("c") == {"a" * 64}


# -- migrations ---------------------------------------------------------------------------------
def _columns(url: str) -> dict[str, set[str]]:
    insp = inspect(create_engine(url))
    return {t: {c["name"] for c in insp.get_columns(t)} for t in insp.get_table_names()}


def test_migration_steps_run_in_order_once(tmp_path):
    engine = create_engine(_url(tmp_path))
    with engine.begin() as conn:
        assert migrate(conn, target=1) == 1
    ran = []

    def step2(conn):
        ran.append(2)
        conn.execute(text("ALTER TABLE faces ADD COLUMN note VARCHAR(10)"))

    def step3(conn):
        ran.append(3)
        conn.execute(text("CREATE INDEX ix_faces_note ON faces (note)"))

    with engine.begin() as conn:
        assert migrate(conn, target=3, migrations={2: step2, 3: step3}) == 3
    with engine.begin() as conn:
        assert migrate(conn, target=3, migrations={2: step2, 3: step3}) == 3
        assert conn.execute(select(s.schema_version.c.version)).scalar_one() == 3
    assert ran == [2, 3]
    assert "note" in _columns(_url(tmp_path))["faces"]
    with engine.begin() as conn, pytest.raises(SchemaVersionError):
        migrate(conn, target=1)  # a newer catalog is refused, not guessed at


def test_version_1_catalog_upgrades_to_the_fresh_schema(tmp_path):
    """A catalog written before access keys (and the ledger, and the images stored without
    faces) existed gets them, and ends up like a fresh one."""
    old = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{old}")
    with engine.begin() as conn:
        s.metadata.create_all(conn, tables=[
            t for t in s.metadata.sorted_tables
            if t.name not in ("access_keys", "audit_log", "audit_head",
                              "images_without_faces")])
        conn.execute(s.schema_version.insert().values(version=1, instance_id="x"))
    engine.dispose()
    Database(f"sqlite:///{old}").close()
    Database(_url(tmp_path)).close()
    assert _columns(f"sqlite:///{old}") == _columns(_url(tmp_path))


def test_a_database_locked_past_the_busy_timeout_is_a_typed_retryable_error(tmp_path):
    from regard.errors import DatabaseUnavailableError

    cat = Catalog(Database(_url(tmp_path), busy_timeout_ms=200))
    cat.create_collection("c", "arn:c", "1.0")
    blocker = create_engine(_url(tmp_path))
    with blocker.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(DatabaseUnavailableError) as busy:
            cat.add_faces("c", random_faces(1, seed=60))
        assert busy.value.code == "InternalServerError" and busy.value.http_status == 500
        assert "retry" in str(busy.value) and str(tmp_path) not in str(busy.value)
        conn.exec_driver_sql("ROLLBACK")
    blocker.dispose()
    assert len(cat.add_faces("c", random_faces(1, seed=60))) == 1  # and then it works
    cat.database.close()


def test_version_3_catalog_upgrades_to_the_fresh_schema(tmp_path):
    """A catalog from before the images stored without faces and the keys' rates (version 3),
    with a key in it, ends up like a fresh one and keeps its key."""
    old = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{old}")
    with engine.begin() as conn:
        s.metadata.create_all(conn, tables=[
            t for t in s.metadata.sorted_tables
            if t.name not in ("access_keys", "images_without_faces")])
        conn.exec_driver_sql(
            "CREATE TABLE access_keys (access_key_id VARCHAR(32) PRIMARY KEY, "
            "secret VARCHAR(128) NOT NULL, name VARCHAR(128), created DATETIME NOT NULL, "
            "revoked DATETIME, scopes JSON NOT NULL, collections JSON, "
            "default_purpose VARCHAR(512))")
        conn.exec_driver_sql(
            "INSERT INTO access_keys VALUES ('RGKOLD', 's', 'old', '2026-01-01 00:00:00', NULL, "
            "'[\"search\"]', NULL, NULL)")
        conn.execute(s.schema_version.insert().values(version=3, instance_id="x"))
        conn.execute(s.audit_head.insert().values(id=1, seq=0, hash="0" * 64, signature=""))
    engine.dispose()
    from regard.governance.keys import KeyStore

    upgraded = Database(f"sqlite:///{old}")
    [key] = KeyStore(upgraded).list()
    assert key.access_key_id == "RGKOLD" and key.scopes == ("search",) and key.max_tps is None
    upgraded.close()
    Database(_url(tmp_path)).close()
    assert _columns(f"sqlite:///{old}") == _columns(_url(tmp_path))


def test_fresh_schema_has_every_table(tmp_path):
    Database(_url(tmp_path)).close()
    cols = _columns(_url(tmp_path))
    assert {"schema_version", "collections", "faces", "users", "changes"} <= set(cols)
    assert {"face_id", "image_id", "external_image_id", "embedding", "created", "expires",
            "consent_ref", "user_id", "seq", "bbox_left", "confidence"} <= cols["faces"]


def test_one_database_under_the_catalog_keys_and_ledger(tmp_path):
    """A store opens one ``Database``; the catalog, the access keys and the audit ledger are
    repositories over it, so one unit of work spans all three. The forms that predate the split
    still work: a URL for the catalog, a catalog for ``KeyStore`` and ``Ledger``."""
    from regard.governance.keys import KeyStore
    from regard.governance.ledger import Ledger

    st = Store(_url(tmp_path), checkpoint_dir=False)
    assert st.catalog.database is st.database and st.keys.database is st.database
    ledger = Ledger(st.catalog, key=b"k" * 32)
    assert ledger.database is st.database and KeyStore(st.catalog).database is st.database
    with pytest.raises(RuntimeError), st.database.unit_of_work():
        st.catalog.create_collection("c", "arn:c", "1.0")
        st.keys.create(name="k")
        ledger.append(principal="test", operation="CreateCollection", collection="c")
        raise RuntimeError("the operation failed after its writes")
    assert st.catalog.list_collections() == [] and st.keys.list() == []
    assert ledger.head()["seq"] == 0
    with st.database.unit_of_work():
        st.catalog.create_collection("c", "arn:c", "1.0")
        ledger.append(principal="test", operation="CreateCollection", collection="c")
    assert [c.name for c in st.catalog.list_collections()] == ["c"]
    assert ledger.head()["seq"] == 1 and ledger.verify().ok
    st.database.ping()
    assert st.database.integrity_problems(quick=True) == []

    own = Catalog(_url(tmp_path), busy_timeout_ms=100)  # compatibility: opens its own Database
    assert own.database is not st.database and own.database.url == st.database.url
    assert own.database.instance_id == st.database.instance_id
    assert [c.name for c in own.list_collections()] == ["c"]
    with pytest.raises(TypeError):
        Catalog(st.database, busy_timeout_ms=100)  # the timeout is the Database's
    with pytest.raises(TypeError):
        KeyStore(object())  # neither a Database nor anything holding one
    own.database.close()
    st.close()


def test_schema_compiles_for_postgresql():
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialect = postgresql.dialect()
    for table in s.metadata.sorted_tables:
        sql = str(CreateTable(table).compile(dialect=dialect))
        assert "AUTOINCREMENT" not in sql.upper()
        for index in table.indexes:
            str(CreateIndex(index).compile(dialect=dialect))


# -- vector index -------------------------------------------------------------------------------
def test_flat_index_is_exact_and_filters_deletions():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(500, 128)).astype(np.float32)
    ids = [str(uuid.uuid4()) for _ in vecs]
    index = VectorIndex(128, options=IndexOptions(compact_fraction=0.5))
    index.add(ids, vecs)
    assert index.kind == "flat" and len(index) == 500
    q = rng.normal(size=128).astype(np.float32)
    assert [h.face_id for h in index.search(q, 5)[0]] == [ids[i] for i in _brute(vecs, q, 5)]
    gone = [ids[i] for i in _brute(vecs, q, 3)]
    assert index.remove(gone + [str(uuid.uuid4())]) == 3
    assert index.dead == 3 and len(index) == 497
    keep = np.array([i for i in range(500) if ids[i] not in gone])
    expect = [ids[keep[i]] for i in _brute(vecs[keep], q, 5)]
    assert [h.face_id for h in index.search(q, 5)[0]] == expect
    hit = index.search(vecs[keep[0]], 1)[0][0]
    assert hit.face_id == ids[keep[0]] and hit.distance == pytest.approx(0.0, abs=1e-3)


def test_compaction_and_switch_to_hnsw():
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(400, 128)).astype(np.float32)
    ids = [str(uuid.uuid4()) for _ in vecs]
    index = VectorIndex(128, options=IndexOptions(hnsw_threshold=300, compact_fraction=0.1))
    index.add(ids[:200], vecs[:200])
    assert index.kind == "flat"
    index.add(ids[200:], vecs[200:])
    assert index.kind == "hnsw" and len(index) == 400
    index.remove(ids[:30])  # 7.5 %: tombstones
    assert index.dead == 30 and len(index) == 370
    index.remove(ids[30:120])  # 30 %: compacted, and small enough to go back to flat
    assert index.dead == 0 and len(index) == 280 and index.kind == "flat"
    assert set(index.face_ids()) == set(ids[120:])
    found = index.search(vecs[160], 1)[0][0]
    assert found.face_id == ids[160]


def test_hnsw_with_tombstones_never_returns_deleted():
    rng = np.random.default_rng(2)
    vecs = rng.normal(size=(2000, 128)).astype(np.float32)
    ids = [str(uuid.uuid4()) for _ in vecs]
    index = VectorIndex(128, options=IndexOptions(hnsw_threshold=1000, compact_fraction=0.5))
    index.add(ids, vecs)
    dead = set(ids[::3])
    index.remove(list(dead))
    for hits in index.search(vecs[:50], 10):
        assert len(hits) == 10 and not dead & {h.face_id for h in hits}


@pytest.mark.slow
def test_removed_vectors_are_overwritten_and_hnsw_still_finds_the_rest():
    rng = np.random.default_rng(3)
    n = 6000  # isotropic: the hard case for graph search
    vecs = (rng.normal(size=(n, 128)) * 0.05 + 0.03).astype(np.float32)
    ids = [str(uuid.uuid4()) for _ in vecs]
    index = VectorIndex(128, options=IndexOptions(hnsw_threshold=1000))
    index.add(ids, vecs)
    dead = rng.choice(n, int(0.09 * n), replace=False)  # below compaction (10 %)
    index.remove([ids[i] for i in dead])
    assert index.kind == "hnsw" and index.dead == len(dead)
    stored = index.stored_vectors()
    assert (stored[np.sort(dead)] == SCRUBBED).all()  # positions kept, vectors gone
    live = np.setdiff1d(np.arange(n), dead)
    queries = vecs[rng.choice(live, 300, replace=False)] + rng.normal(
        size=(300, 128)).astype(np.float32) * 0.01
    exact = live[np.argmin(((queries[:, None] - vecs[live][None]) ** 2).sum(-1), axis=1)]
    found = [hits[0].face_id for hits in index.search(queries, 1)]
    recall = np.mean([f == ids[e] for f, e in zip(found, exact)])
    assert recall >= 0.97, recall


def test_large_rebuilds_run_in_the_background_and_lose_nothing(tmp_path, monkeypatch):
    opts = IndexOptions(hnsw_threshold=300, background_from=100)
    st = Store(_url(tmp_path), index_options=opts, checkpoint_dir=False)
    st.catalog.create_collection("c", "arn:c", "1.0")
    first = random_faces(250, seed=30)
    st.add_faces("c", first)
    entry = st.indexes.synced("c")
    assert entry.faces.kind == "flat"
    release = threading.Event()
    build = VectorIndex.rebuilt

    copies = []

    def held(self, ids, vectors):  # the builder waits between its copy and its swap
        copies.append(vectors)
        assert release.wait(30)
        return build(self, ids, vectors)

    monkeypatch.setattr(VectorIndex, "rebuilt", held)
    more = random_faces(100, seed=31)
    st.add_faces("c", more)  # past the HNSW threshold: deferred to the background
    assert st.search("c", more[5].embedding, 1)[0][0].face_id == more[5].face_id
    assert entry.rebuilding and entry.faces.kind == "flat"  # answered by the current index
    later = random_faces(20, seed=32)  # changes while it builds
    st.add_faces("c", later)
    st.delete_faces("c", [first[0].face_id, more[0].face_id])
    assert st.search("c", later[3].embedding, 1)[0][0].face_id == later[3].face_id
    release.set()
    st.indexes.wait_for_rebuilds(60)
    entry = st.indexes.synced("c")
    assert entry.faces.kind == "hnsw" and not entry.rebuilding
    expected = {f.face_id for f in first[1:] + more[1:] + later}
    assert set(entry.faces.face_ids()) == expected and entry.faces.dead == 2
    assert not any(np.allclose(r, first[0].embedding) for r in entry.faces.stored_vectors())
    assert len(copies) == 1 and not copies[0].any()  # the builder's copy is zeroed, not freed
    for face in (first[3], more[7], later[4]):
        assert st.search("c", face.embedding, 1)[0][0].face_id == face.face_id
    # compaction past 10 % dead, in the background too
    monkeypatch.undo()
    st.delete_faces("c", [f.face_id for f in first[1:60]])
    assert entry.faces.rebuild_due
    st.search("c", later[0].embedding, 1)
    st.indexes.wait_for_rebuilds(60)
    entry = st.indexes.synced("c")
    assert entry.faces.dead == 0 and len(entry.faces) == len(expected) - 59
    assert st.catalog.consistency_problems("c") == []
    st.close()


# -- index <-> catalog --------------------------------------------------------------------------
def test_index_catches_up_with_writes_from_another_store(tmp_path, store):
    other = Store(_url(tmp_path), checkpoint_dir=False)  # as another process would
    first = random_faces(20, seed=6)
    store.add_faces("c", first)
    assert store.search("c", first[0].embedding, 1)[0][0].face_id == first[0].face_id
    later = random_faces(5, seed=7)
    other.add_faces("c", later)
    other.catalog.delete_faces("c", [first[0].face_id])
    hit = store.search("c", later[3].embedding, 1)[0][0]
    assert hit.face_id == later[3].face_id and hit.distance < 1e-3
    assert first[0].face_id not in {h.face_id for h in store.search("c", first[0].embedding,
                                                                     30)[0]}
    entry = store.indexes.synced("c")
    assert len(entry.faces) == 24 and entry.seq == store.catalog.state("c")[1]
    other.close()


def test_users_index_follows_associations(store):
    faces = random_faces(6, seed=8)
    store.add_faces("c", faces)
    store.catalog.create_user("c", "u")
    accept = lambda current, candidate: (True, None)  # noqa: E731
    store.catalog.associate_faces("c", "u", [faces[1].face_id, faces[2].face_id], accept)
    hits = store.search("c", faces[1].embedding, 10, users=True)[0]
    assert {h.face_id for h in hits} == {faces[1].face_id, faces[2].face_id}
    store.catalog.disassociate_faces("c", "u", [faces[1].face_id])
    assert [h.face_id for h in store.search("c", faces[1].embedding, 10, users=True)[0]] == [
        faces[2].face_id]


def test_recreated_collection_gets_a_fresh_index(store):
    store.add_faces("c", random_faces(3, seed=9))
    store.search("c", np.zeros(128, np.float32), 1)
    Store(store.database.url, checkpoint_dir=False).delete_collection("c")
    store.catalog.create_collection("c", "arn:c", "1.0")
    assert store.search("c", np.zeros(128, np.float32), 5) == [[]]


def test_index_agrees_with_catalog_after_tampering(store, caplog):
    faces = random_faces(10, seed=10)
    store.add_faces("c", faces)
    entry = store.indexes.synced("c")
    entry.faces.remove([faces[0].face_id])  # an index that lost a face somehow
    assert store.search("c", faces[0].embedding, 1)[0][0].face_id == faces[0].face_id


def test_a_gap_in_the_change_log_forces_a_reload(store):
    faces = random_faces(4, seed=15)
    store.add_faces("c", faces[:2])
    store.search("c", faces[0].embedding, 1)
    store.add_faces("c", faces[2:])
    cid = store.catalog.state("c")[0]
    with store.database.engine.begin() as conn:  # history pruned behind the index's back
        conn.execute(s.changes.delete().where(s.changes.c.seq == 3))
    entry = store.indexes.synced("c")
    assert set(entry.faces.face_ids()) == {f.face_id for f in faces} and entry.seq == 4
    assert cid == entry.collection_id


def test_the_change_log_is_pruned_and_an_index_behind_it_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("REGARD_CHANGE_LOG_KEEP", "20")
    st = Store(_url(tmp_path), checkpoint_dir=False)
    st.catalog.create_collection("c", "arn:c", "1.0")
    first = random_faces(5, seed=20)
    st.add_faces("c", first)
    assert st.search("c", first[0].embedding, 1)[0][0].face_id == first[0].face_id  # at seq 5
    other = Store(_url(tmp_path), checkpoint_dir=False)  # another process writes 61 changes
    later = [random_faces(3, seed=21 + i) for i in range(20)]
    for batch in later:
        other.add_faces("c", batch)
    other.catalog.delete_faces("c", [first[1].face_id])
    with st.database.engine.connect() as conn:
        kept, oldest = conn.execute(select(func.count(), func.min(s.changes.c.seq))).one()
    assert kept <= 22 and oldest > 5  # bounded, and pruned past what the first index holds
    assert st.catalog.consistency_problems("c") == []
    entry = st.indexes.synced("c")
    assert entry.seq == 66 and len(entry.faces) == 64
    assert first[1].face_id not in set(entry.faces.face_ids())
    assert st.search("c", later[7][1].embedding, 1)[0][0].face_id == later[7][1].face_id
    other.close()
    st.close()


def test_checkpoint_restores_and_catches_up(tmp_path):
    opts = IndexOptions(hnsw_threshold=100, checkpoint_min=50)
    st = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    st.catalog.create_collection("big", "arn:big", "1.0")
    faces = random_faces(150, seed=11)
    st.add_faces("big", faces)
    assert st.indexes.synced("big").faces.kind == "hnsw"
    path = st.indexes.checkpoint("big")
    assert path is not None and path.is_file()
    more = random_faces(10, seed=12)
    st.add_faces("big", more)
    st.catalog.delete_faces("big", [faces[0].face_id])
    st.close()

    again = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    entry = again.indexes._entry("big")
    assert entry.seq == 150  # restored from the checkpoint, not rebuilt
    assert again.search("big", more[4].embedding, 1)[0][0].face_id == more[4].face_id
    entry = again.indexes.synced("big")
    assert len(entry.faces) == 159 and entry.faces.kind == "hnsw"
    assert faces[0].face_id not in set(entry.faces.face_ids())


def test_deletions_scrub_memory_and_checkpoints(tmp_path):
    opts = IndexOptions(checkpoint_min=1)
    st = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    st.catalog.create_collection("c", "arn:c", "1.0")
    faces = random_faces(30, seed=14)
    st.add_faces("c", faces)
    path = st.indexes.checkpoint("c")
    assert faces[0].embedding.tobytes() in path.read_bytes()
    st.delete_faces("c", [faces[0].face_id])
    assert not path.exists()  # it held the deleted face's embedding
    # overwritten in memory at once, not merely hidden, and not by reloading the index
    entry = st.indexes._indexes["c"]
    stored = entry.faces.stored_vectors()
    assert len(stored) == 30 and not any(np.allclose(r, faces[0].embedding) for r in stored)
    assert st.indexes.checkpoint("c") == path and faces[0].embedding.tobytes() not in \
        path.read_bytes()
    # another process, which never loaded the index, removes the checkpoint it finds
    other = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    other.delete_faces("c", [faces[1].face_id])
    assert not path.exists()
    assert st.search("c", faces[2].embedding, 3)[0][0].face_id == faces[2].face_id
    assert st.indexes._indexes["c"] is entry and len(entry.faces) == 28
    st.delete_collection("c")
    assert not path.exists()
    with st.database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1


def test_deleted_since_knows_when_a_checkpoint_may_hold_deleted_vectors(tmp_path, monkeypatch):
    monkeypatch.setenv("REGARD_CHANGE_LOG_KEEP", "20")
    cat = Catalog(Database(_url(tmp_path)))
    cid = cat.create_collection("c", "arn:c", "1.0").id
    faces = random_faces(10, seed=50)
    cat.add_faces("c", faces)
    assert not cat.deleted_since(cid, 0) and not cat.deleted_since(cid, 10)
    cat.delete_faces("c", [faces[3].face_id])  # change 11
    assert cat.deleted_since(cid, 0) and cat.deleted_since(cid, 10)
    assert not cat.deleted_since(cid, 11)
    cat.add_faces("c", random_faces(30, seed=51))  # changes 12-41; the log keeps the last 20
    assert not cat.deleted_since(cid, 30)
    assert cat.deleted_since(cid, 11)  # the log no longer reaches back: cannot tell, so yes
    assert cat.deleted_since(cid + 1, 0)  # no such collection (deleted): nothing may stay
    cat.database.close()


def test_a_background_rebuild_leaves_a_checkpoint(tmp_path):
    opts = IndexOptions(hnsw_threshold=1000, background_from=100, checkpoint_min=100)
    st = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    st.catalog.create_collection("c", "arn:c", "1.0")
    faces = random_faces(250, seed=41)
    st.add_faces("c", faces)
    entry = st.indexes.synced("c")  # a full load of >= checkpoint_min faces is checkpointed
    path = st.indexes._path(entry.collection_id, entry.face_model_version)
    assert path.is_file()
    gone = faces[:30]
    st.delete_faces("c", [f.face_id for f in gone])
    assert not path.exists() and entry.faces.rebuild_due  # 12 % dead: compaction is due
    st.search("c", faces[40].embedding, 1)  # starts it in the background
    st.indexes.wait_for_rebuilds(60)
    assert entry.faces.dead == 0 and path.is_file()
    held, seq = path.read_bytes(), entry.seq
    assert not any(f.embedding.tobytes() in held for f in gone)
    st.close()

    again = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    restored = again.indexes._entry("c")
    assert restored.seq == seq and len(restored.faces) == 220  # from the checkpoint
    assert again.search("c", faces[99].embedding, 1)[0][0].face_id == faces[99].face_id
    again.close()


def test_a_checkpoint_that_raced_a_deletion_is_not_left_on_disk(tmp_path, monkeypatch):
    opts = IndexOptions(checkpoint_min=1)
    st = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    cid = st.catalog.create_collection("c", "arn:c", "1.0").id
    faces = random_faces(40, seed=42)
    st.add_faces("c", faces)
    other = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    snapshot = st.catalog.snapshot

    def deleted_meanwhile(collection_id: int):
        """Another process erases a face after this full load read the catalog and before it
        writes its checkpoint (there is none yet for the other process to remove)."""
        snap = snapshot(collection_id)
        other.delete_faces("c", [faces[0].face_id])
        return snap

    monkeypatch.setattr(st.catalog, "snapshot", deleted_meanwhile)
    st.search("c", faces[1].embedding, 1)  # full load from the snapshot: it holds faces[0]
    path = st.indexes._path(cid, "1.0")
    assert not path.exists()
    monkeypatch.undo()
    hits = st.search("c", faces[0].embedding, 40)[0]  # caught up: overwritten in memory
    assert faces[0].face_id not in {h.face_id for h in hits} and len(hits) == 39
    assert st.indexes.checkpoint("c") == path  # now at a seq after the deletion: kept
    assert faces[0].embedding.tobytes() not in path.read_bytes()
    other.close()
    st.close()


def test_partial_checkpoints_do_not_outlive_their_writer_or_a_deletion(tmp_path):
    import subprocess
    import sys

    opts = IndexOptions(checkpoint_min=1)
    index_dir = tmp_path / "index"
    st = Store(_url(tmp_path), index_options=opts, checkpoint_dir=index_dir)
    st.catalog.create_collection("c", "arn:c", "1.0")
    faces = random_faces(10, seed=70)
    st.add_faces("c", faces)
    path = st.indexes.checkpoint("c")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    abandoned = index_dir / f".{path.name}.{dead}.1.tmp"  # a writer killed mid-write
    abandoned.write_bytes(path.read_bytes())
    running = index_dir / f".{path.name}.{os.getpid()}.2.tmp"  # one being written now
    running.write_bytes(path.read_bytes())
    other = Store(_url(tmp_path), index_options=opts, checkpoint_dir=index_dir)  # a start
    assert not abandoned.exists() and running.exists()
    other.delete_faces("c", [faces[0].face_id])  # and a deletion removes even that one
    assert not running.exists() and not path.exists()
    assert list(index_dir.iterdir()) == []
    other.close()
    st.close()


def test_deletions_made_by_another_replica_leave_no_copy_here(tmp_path):
    """Replicas on different hosts (their own checkpoint folders) share one catalog: a face
    deleted through one is overwritten in the other's memory and its checkpoint goes, at the
    other's next search or its periodic refresh, whichever comes first."""
    opts = IndexOptions(checkpoint_min=1)
    a = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "a")
    b = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "b")
    a.catalog.create_collection("c", "arn:c", "1.0")
    a.catalog.create_collection("d", "arn:d", "1.0")
    faces, others = random_faces(20, seed=80), random_faces(5, seed=81)
    a.add_faces("c", faces)
    a.add_faces("d", others)
    held_c, held_d = b.indexes.checkpoint("c"), b.indexes.checkpoint("d")  # b: loaded, on disk
    a.add_faces("c", random_faces(3, seed=82))
    b.indexes.refresh()  # additions only: b's checkpoints stay
    assert held_c.exists() and held_d.exists()

    a.delete_faces("c", [faces[0].face_id])
    b.indexes.refresh()  # no search on b
    stored = b.indexes._indexes["c"].faces.stored_vectors()
    assert not any(np.allclose(r, faces[0].embedding) for r in stored)
    assert not held_c.exists() and held_d.exists()

    b.indexes.checkpoint("c")
    a.delete_faces("c", [faces[1].face_id])
    assert b.search("c", faces[2].embedding, 1)[0][0].face_id == faces[2].face_id
    assert not held_c.exists()  # a search that catches up removes it too

    a.delete_collection("d")
    b.indexes.refresh()
    assert not held_d.exists() and "d" not in b.indexes._indexes
    # a checkpoint this replica never loaded (written before a restart) goes as well
    b.indexes.checkpoint("c")
    b.close()
    a.delete_faces("c", [faces[3].face_id])
    restarted = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "b")
    restarted.indexes.refresh()
    assert list((tmp_path / "b").iterdir()) == []
    restarted.close()
    a.close()


def test_foreign_or_corrupt_checkpoints_are_ignored(tmp_path):
    opts = IndexOptions(checkpoint_min=1)
    st = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    st.catalog.create_collection("c", "arn:c", "1.0")
    faces = random_faces(5, seed=13)
    st.add_faces("c", faces)
    path = st.indexes.checkpoint("c")
    st.close()
    path.write_bytes(b"garbage")
    again = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    assert again.search("c", faces[1].embedding, 1)[0][0].face_id == faces[1].face_id
    # A recreated database reuses collection id 1 but has another instance id.
    (tmp_path / "regard.db").unlink()
    for extra in tmp_path.glob("regard.db-*"):
        extra.unlink()
    fresh = Store(_url(tmp_path), index_options=opts, checkpoint_dir=tmp_path / "index")
    fresh.catalog.create_collection("c", "arn:c", "1.0")
    assert fresh.search("c", faces[1].embedding, 1) == [[]]


def test_what_regard_keeps_on_disk_is_readable_by_its_owner_only(tmp_path, monkeypatch):
    import stat

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    home = tmp_path / "home"
    monkeypatch.setenv("REGARD_HOME", str(home))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    st = Store(index_options=IndexOptions(checkpoint_min=1))  # the default places
    st.catalog.create_collection("c", "arn:c", "1.0")
    st.add_faces("c", random_faces(5, seed=95))
    checkpoint = st.indexes.checkpoint("c")
    files = [home / "regard.db", checkpoint] + [p for p in home.glob("regard.db-*")]
    assert mode(home) == 0o700 and mode(checkpoint.parent) == 0o700
    assert all(mode(f) & 0o077 == 0 for f in files), {str(f): oct(mode(f)) for f in files}
    st.close()
    os.chmod(home / "regard.db", 0o644)  # a catalog written before, readable by every user
    Store(checkpoint_dir=False).close()
    assert mode(home / "regard.db") == 0o600


def test_a_failed_statement_does_not_carry_embeddings_into_messages_or_logs(store):
    from sqlalchemy.exc import IntegrityError

    face = random_faces(1, seed=96)[0]
    store.add_faces("c", [face])
    with pytest.raises(IntegrityError) as dup:  # the same FaceId again
        store.catalog.add_faces("c", [face])
    assert "parameters hidden" in str(dup.value)
    assert repr(face.embedding.tobytes()[:8])[2:-1] not in str(dup.value)


def test_new_face_rejects_malformed_embeddings(store):
    bad = NewFace(np.zeros(64, np.float32), (0, 0, 1, 1), 90.0, str(uuid.uuid4()))
    with pytest.raises(Exception) as err:
        store.add_faces("c", [bad])
    assert "128" in str(err.value)
    nan = NewFace(np.full(128, np.nan, np.float32), (0, 0, 1, 1), 90.0, str(uuid.uuid4()))
    with pytest.raises(Exception):
        store.add_faces("c", [nan])
    assert store.catalog.get_collection("c").face_count == 0
