"""Storage faults, reproduced for real: a full disk (SQLite's ``max_page_count`` makes the catalog
hit SQLITE_FULL exactly as a full file system does), a byte-flipped page of the faces table, a
damaged page and altered rows of the audit ledger, a zeroed or swapped embedding. Each must be
named for what it is (not "busy, retry"), through both HTTP doors, ``/healthz``, ``/metrics``
and the CLI, and never as a traceback."""

from __future__ import annotations

import errno
import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import httpx
import numpy as np
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from sqlalchemy import event
from typer.testing import CliRunner

from regard.cli import app
from regard.errors import CatalogCorruptError, StorageFullError
from regard.service import RegardService, face_ids
from regard.store import Store
from regard.store.catalog import Catalog
from regard.store.database import Database
from regard.store.faults import StorageHealth
from regard.store.schema import SCHEMA_VERSION

from conftest import encode, face_crop, paste_faces
from live_server import LiveServer

PURPOSE = {"regard:purpose": "storage fault tests"}
NO_LIMIT = 4294967294  # SQLite's largest max_page_count
runner = CliRunner()


@pytest.fixture(scope="module")
def images(astronaut: np.ndarray, cameraman: np.ndarray) -> dict[str, bytes]:
    group, _ = paste_faces(face_crop(astronaut), [220, 200], canvas=(480, 640))
    return {"face": encode(face_crop(astronaut)), "cameraman": encode(cameraman),
            "group": encode(group)}


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """REGARD_HOME for the CLI, the server and the ledger key alike."""
    home = tmp_path / "home"
    monkeypatch.setenv("REGARD_HOME", str(home))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    return home


def db_url(home: Path) -> str:
    return f"sqlite:///{home / 'regard.db'}"


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        "a traceback instead of a clear error", result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def populated(home: Path, engine: Any, images: dict[str, bytes]) -> list[str]:
    """A collection "c" with three faces, written and closed (the WAL folded into the file)."""
    service = RegardService(engine, Store(db_url(home), checkpoint_dir=False))
    try:
        service.create_collection(CollectionId="c", Tags=PURPOSE)
        ids = face_ids(service.index_faces(CollectionId="c", Image={"Bytes": images["group"]}))
        ids += face_ids(service.index_faces(CollectionId="c",
                                            Image={"Bytes": images["cameraman"]}))
    finally:
        service.store.close()
    assert len(ids) == 3
    return ids


def damage_page(db: Path, page: int) -> None:
    """Invert the first bytes of a b-tree page's cell content area (its last-written cell), as a
    failing disk or a stray write would, with no process holding the file open."""
    with sqlite3.connect(db) as con:
        size = con.execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as fh:
        fh.seek((page - 1) * size)
        data = bytearray(fh.read(size))
        start = int.from_bytes(data[5:7], "big") or 65536
        assert start < size, "the page holds no cells"
        for i in range(start, min(start + 16, size)):
            data[i] ^= 0xFF
        fh.seek((page - 1) * size)
        fh.write(data)


def root_page(db: Path, table: str) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                           (table,)).fetchone()[0]


def rekognition(url: str, key: str, secret: str) -> Any:
    # Standard retries with attempts to spare: an error the SDK retries would show it.
    return boto3.client("rekognition", endpoint_url=url, region_name="eu-west-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 4, "mode": "standard"}))


@pytest.fixture()
def doors(home: Path, engine: Any) -> Iterator[tuple[LiveServer, Any, httpx.Client]]:
    """A live server on REGARD_HOME's catalog, with a boto3 client and a REST client."""
    with LiveServer(home, engine, database_url=db_url(home)) as live:
        key, secret = live.server.keys.create("storage faults")
        with httpx.Client(base_url=live.url, timeout=60, headers={
                "Authorization": f"Bearer {key.access_key_id}:{secret}"}) as rest:
            yield live, rekognition(live.url, key.access_key_id, secret), rest


def page_cap(catalog: Catalog) -> Callable[[int], None]:
    """Cap the catalog's file at a number of pages on every connection it checks out: SQLite then
    fails writes with SQLITE_FULL ("database or disk is full"), as on a full file system."""
    cap = [NO_LIMIT]

    @event.listens_for(catalog.database.engine, "checkout")
    def _cap(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count={cap[0]}")

    def set_cap(pages: int) -> None:
        cap[0] = pages

    return set_cap


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, name
    return float(found.group(1))


# -- a full disk ----------------------------------------------------------------------------------
def test_a_full_disk_is_a_clear_error_that_clients_do_not_retry(doors, images, home):
    live, rek, rest = doors
    catalog = live.server.service.store.catalog
    rek.create_collection(CollectionId="c", Tags=PURPOSE)
    [face] = face_ids(rek.index_faces(CollectionId="c", Image={"Bytes": images["face"]}))
    set_cap = page_cap(catalog)
    with catalog.database.engine.connect() as conn:
        set_cap(conn.exec_driver_sql("PRAGMA page_count").scalar_one())

    for _ in range(200):  # reads fill the last free bytes of the ledger's page
        try:
            rek.list_collections()
        except ClientError as exc:
            refused = exc
            break
    else:
        pytest.fail("the capped catalog never filled up")
    for call in (rek.list_collections,
                 lambda: rek.detect_faces(Image={"Bytes": images["face"]}),
                 lambda: rek.index_faces(CollectionId="c", Image={"Bytes": images["cameraman"]}),
                 lambda: rek.search_faces(CollectionId="c", FaceId=face)):
        with pytest.raises(ClientError) as caught:
            call()
        refused = caught.value
        response = refused.response
        assert response["Error"]["Code"] == "InternalServerError"
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 507
        assert response["ResponseMetadata"]["RetryAttempts"] == 0  # not retried
        message = response["Error"]["Message"]
        assert "storage is full" in message and "not retried" in message
        assert str(home) not in message

    for response in (rest.get("/v1/collections"),
                     rest.post("/v1/detect", files={"image": ("f.jpg", images["face"])})):
        assert response.status_code == 507, response.text
        assert response.json()["__type"] == "InternalServerError"
        assert "storage is full" in response.json()["message"]

    health = httpx.get(f"{live.url}/healthz")
    assert health.status_code == 503
    assert health.json() | {"version": None} == {"status": "degraded", "database": "ok",
                                                 "storage": "full", "version": None}
    metrics = httpx.get(f"{live.url}/metrics").text
    assert metric(metrics, "regard_storage_full_errors_total") >= 6
    assert metric(metrics, "regard_storage_free_bytes") > 0

    set_cap(NO_LIMIT)  # space is back
    assert "c" in rek.list_collections()["CollectionIds"]
    assert face_ids(rek.index_faces(CollectionId="c", Image={"Bytes": images["cameraman"]}))
    assert rest.get("/v1/collections").status_code == 200
    assert httpx.get(f"{live.url}/healthz").json()["storage"] == "ok"
    assert catalog.consistency_problems("c") == []

    # less free space than the threshold: degraded
    catalog.database.health.min_free_bytes = 1 << 62
    health = httpx.get(f"{live.url}/healthz")
    assert health.status_code == 503 and health.json()["storage"] == "full"


def test_storage_faults_are_told_apart(tmp_path):
    health = StorageHealth(tmp_path, min_free_bytes=0)

    class PsycopgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    assert isinstance(health.translate(OSError(errno.ENOSPC, "full")), StorageFullError)
    assert isinstance(health.translate(OSError(errno.EDQUOT, "quota")), StorageFullError)
    assert isinstance(health.translate(PsycopgError("53100")), StorageFullError)
    assert health.full_errors == 3 and health.storage_full()
    health.note_write_ok()
    assert not health.storage_full()
    assert health.translate(OSError(errno.EACCES, "denied")) is None
    assert health.translate(PsycopgError("57P01")) is None  # admin shutdown: "unavailable"
    assert not health.corrupt
    assert isinstance(health.translate(PsycopgError("XX001")), CatalogCorruptError)
    assert health.corrupt
    assert StorageFullError("x").http_status == 507  # botocore retries 500/502/503/504 only


def test_a_full_disk_under_an_index_checkpoint_shows_in_health(tmp_path, monkeypatch):
    store = Store(f"sqlite:///{tmp_path / 'c.db'}", checkpoint_dir=tmp_path / "index")
    store.catalog.create_collection("c", "arn:c", "1.0")

    def no_space(*_args: object, **_kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", no_space)
    with pytest.raises(OSError):
        store.indexes.checkpoint("c")
    assert store.database.health.storage_full()
    store.close()


# -- a damaged catalog ----------------------------------------------------------------------------
def test_a_damaged_faces_page_is_found_and_named(home, engine, images):
    populated(home, engine, images)
    db = home / "regard.db"
    page = root_page(db, "faces")
    damage_page(db, page)

    code, output = cli("collections", "check")
    assert code == 1
    assert "database file" in output and f"page {page}" in output, output  # SQLite's findings
    assert "c: 1 problem(s)" in output

    with LiveServer(home, engine, database_url=db_url(home)) as live:
        health = httpx.get(f"{live.url}/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "degraded" and health.json()["database"] == "corrupt"
        key, secret = live.server.keys.create("after the damage")
        rek = rekognition(live.url, key.access_key_id, secret)
        for call in (lambda: rek.list_faces(CollectionId="c"),
                     lambda: rek.search_faces_by_image(CollectionId="c",
                                                       Image={"Bytes": images["face"]})):
            with pytest.raises(ClientError) as caught:
                call()
            error = caught.value.response["Error"]
            assert error["Code"] == "InternalServerError"
            assert "damaged" in error["Message"] and "regard collections check" in error["Message"]
            assert "retry with backoff" not in error["Message"]
        listed = httpx.get(f"{live.url}/v1/collections/c/faces",
                           headers={"Authorization": f"Bearer {key.access_key_id}:{secret}"})
        assert listed.status_code == 500 and "damaged" in listed.json()["message"]
        assert "regard_catalog_corrupt 1.0" in httpx.get(f"{live.url}/metrics").text


def test_a_file_that_is_not_a_database_is_a_clear_error(home):
    home.mkdir(parents=True)
    (home / "regard.db").write_bytes(b"\x00" * 8192)
    code, output = cli("collections", "check")
    assert code == 1 and "damaged" in output


def test_a_zeroed_or_swapped_embedding_is_named_by_collections_check(home, engine, images):
    first, second, third = populated(home, engine, images)
    code, output = cli("collections", "check")
    assert code == 0, output
    with sqlite3.connect(home / "regard.db") as con:
        con.execute("UPDATE faces SET embedding = zeroblob(length(embedding)) WHERE face_id = ?",
                    (first,))
        (a,), (b,) = [con.execute("SELECT embedding FROM faces WHERE face_id = ?", (f,)).fetchone()
                      for f in (second, third)]
        con.execute("UPDATE faces SET embedding = ? WHERE face_id = ?", (b, second))
        con.execute("UPDATE faces SET embedding = ? WHERE face_id = ?", (a, third))
    code, output = cli("collections", "check", "--json")
    assert code == 1
    [report] = json.loads(output)["Collections"]
    zeroed = next(p for p in report["Problems"] if "all-zero" in p)
    assert zeroed == f"1 face(s) with an all-zero embedding: {first}"
    damaged = next(p for p in report["Problems"] if "fails its checksum" in p)
    assert damaged.startswith("3 face(s) whose embedding fails its checksum")
    assert {first, second, third} == set(re.findall(r"[0-9a-f-]{36}", damaged))
    code, output = cli("collections", "check")
    assert code == 1 and first in output and "all-zero" in output


def test_a_version_4_catalog_gets_checksums_for_its_faces(home, engine, images):
    ids = populated(home, engine, images)
    with sqlite3.connect(home / "regard.db") as con:  # as Regard with schema 4 left it
        con.execute("ALTER TABLE faces DROP COLUMN embedding_sha256")
        con.execute("UPDATE schema_version SET version = 4")
    catalog = Catalog(Database(db_url(home)))
    assert catalog.consistency_problems("c") == []
    with catalog.database.engine.connect() as conn:
        filled = conn.exec_driver_sql(
            "SELECT count(*) FROM faces WHERE embedding_sha256 IS NOT NULL").scalar_one()
        assert filled == len(ids)
        version = conn.exec_driver_sql("SELECT version FROM schema_version").scalar_one()
        assert version == SCHEMA_VERSION  # upgraded through 5 to the current schema
    catalog.database.close()


# -- a damaged ledger -----------------------------------------------------------------------------
def test_altered_ledger_rows_are_named_by_audit_verify(home, engine, images):
    populated(home, engine, images)
    with sqlite3.connect(home / "regard.db") as con:
        con.execute("UPDATE audit_log SET result = '{not json' WHERE seq = 2")
        con.execute("UPDATE audit_log SET principal = 'someone else' WHERE seq = 3")
    code, output = cli("audit", "verify")
    assert code == 1
    assert "entry 2 was altered: its result is not valid JSON" in output
    assert "entry 3 was altered" in output
    # an export names the damaged entry instead of failing with a traceback or leaving it out
    code, output = cli("audit", "export")
    assert code == 1 and "entry 2 was altered" in output and "Traceback" not in output


def test_a_damaged_ledger_page_is_named_by_audit_verify(home, engine, images):
    service = RegardService(engine, Store(db_url(home), checkpoint_dir=False))
    for _ in range(120):  # several pages of entries
        service.list_collections()
    service.store.close()
    db = home / "regard.db"
    with sqlite3.connect(db) as con:
        size = con.execute("PRAGMA page_size").fetchone()[0]
    root = root_page(db, "audit_log")
    with open(db, "rb") as fh:
        fh.seek((root - 1) * size)
        interior = fh.read(size)
    assert interior[0] == 5, "the ledger should span several pages"
    cell = int.from_bytes(interior[12:14], "big")  # first cell: its left child, the first leaf
    damage_page(db, int.from_bytes(interior[cell:cell + 4], "big"))

    code, output = cli("audit", "verify")
    assert code == 1
    assert re.search(r"entry \d+ cannot be read: the database page holding it is damaged",
                     output), output
