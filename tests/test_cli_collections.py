"""`regard collections|index|search|faces|users`: --json prints the Rekognition response bodies,
batch indexing walks folders, takes ExternalImageIds from a CSV and resumes without re-indexing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from regard.cli import app, external_image_id

from conftest import encode
from shapes import assert_shape

runner = CliRunner()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    return tmp_path


@pytest.fixture()
def folder(tmp_path: Path, astronaut, cameraman) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "astronaut.jpg").write_bytes(encode(astronaut))
    (root / "cameraman.png").write_bytes(encode(cameraman, "PNG"))
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    (root / "sub" / "flipped copy.jpg").write_bytes(encode(flipped))
    (root / "broken.jpg").write_bytes(encode(astronaut)[:4000])
    (root / "notes.txt").write_text("not an image")
    return root


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def _json(*args: str) -> dict:
    code, stdout = _run(*args, "--json")
    assert code == 0, stdout
    return json.loads(stdout)


def test_collections_commands(home):
    body = _json("collections", "create", "c", "--purpose", "testing", "--tag", "team=a")
    assert_shape(body, "CreateCollectionResponse")
    code, _ = _run("collections", "create", "c", "--purpose", "testing")
    assert code == 1
    _json("collections", "create", "d", "--purpose", "testing")
    listed = _json("collections", "list")
    assert_shape(listed, "ListCollectionsResponse")
    assert listed["CollectionIds"] == ["c", "d"] and "NextToken" not in listed
    page = _json("collections", "list", "--max-results", "1")
    assert page["CollectionIds"] == ["c"]
    assert _json("collections", "list", "--next-token", page["NextToken"])["CollectionIds"] == ["d"]
    desc = _json("collections", "describe", "c")
    assert desc["FaceCount"] == 0 and isinstance(desc["CreationTimestamp"], float)
    assert_shape({k: v for k, v in desc.items() if k != "CreationTimestamp"},
                 "DescribeCollectionResponse")
    assert _json("collections", "delete", "d") == {"StatusCode": 200}
    code, _ = _run("collections", "describe", "d")
    assert code == 1


def test_index_search_faces_and_users(home, folder):
    _run("collections", "create", "c", "--purpose", "testing")
    code, stdout = _run("index", "c", str(folder), "--json", "--workers", "2")
    assert code == 1  # broken.jpg fails; the others are indexed
    lines = [json.loads(line) for line in stdout.splitlines()]
    by_image = {Path(b["Image"]).name: b for b in lines}
    assert set(by_image) == {"astronaut.jpg", "cameraman.png", "flipped copy.jpg", "broken.jpg"}
    assert by_image["broken.jpg"]["__type"] == "InvalidImageFormatException"
    for name in ("astronaut.jpg", "cameraman.png", "flipped copy.jpg"):
        body = {k: v for k, v in by_image[name].items() if k != "Image"}
        assert_shape(body, "IndexFacesResponse")
        assert len(body["FaceRecords"]) == 1
    flipped = by_image["flipped copy.jpg"]["FaceRecords"][0]["Face"]
    assert flipped["ExternalImageId"] == "flipped_copy.jpg"

    # Resumable: a second run indexes nothing new.
    code, stdout = _run("index", "c", str(folder), "--json", "--workers", "1")
    assert [Path(json.loads(x)["Image"]).name for x in stdout.splitlines()] == ["broken.jpg"]
    assert _json("collections", "describe", "c")["FaceCount"] == 3

    found = _json("search", "c", str(folder / "astronaut.jpg"))
    assert_shape(found, "SearchFacesByImageResponse")
    assert [m["Face"]["ExternalImageId"] for m in found["FaceMatches"]] == [
        "astronaut.jpg", "flipped_copy.jpg"]
    by_id = _json("search", "c", "--face-id", flipped["FaceId"])
    assert_shape(by_id, "SearchFacesResponse")
    assert [m["Face"]["ExternalImageId"] for m in by_id["FaceMatches"]] == ["astronaut.jpg"]

    faces = _json("faces", "list", "c")
    assert_shape(faces, "ListFacesResponse")
    assert len(faces["Faces"]) == 3
    page = _json("faces", "list", "c", "--max-results", "2")
    assert len(page["Faces"]) == 2 and page["NextToken"]
    astronaut = found["FaceMatches"][0]["Face"]["FaceId"]

    assert _json("users", "create", "c", "eileen") == {}
    assoc = _json("users", "associate", "c", "eileen", astronaut, flipped["FaceId"])
    assert_shape(assoc, "AssociateFacesResponse")
    assert len(assoc["AssociatedFaces"]) == 2 and assoc["UserStatus"] == "ACTIVE"
    users = _json("users", "list", "c")
    assert users["Users"] == [{"UserId": "eileen", "UserStatus": "ACTIVE"}]
    matched = _json("users", "search", "c", "--image", str(folder / "astronaut.jpg"))
    assert_shape(matched, "SearchUsersByImageResponse")
    assert [m["User"]["UserId"] for m in matched["UserMatches"]] == ["eileen"]
    assert _json("faces", "list", "c", "--user-id", "eileen")["Faces"][0]["UserId"] == "eileen"
    gone = _json("users", "disassociate", "c", "eileen", astronaut)
    assert_shape(gone, "DisassociateFacesResponse")
    assert _json("users", "delete", "c", "eileen") == {}

    deleted = _json("faces", "delete", "c", astronaut)
    assert_shape(deleted, "DeleteFacesResponse")
    assert deleted["DeletedFaces"] == [astronaut]
    code, _ = _run("search", "c")  # neither an image nor --face-id
    assert code == 2
    code, _ = _run("search", "nope", str(folder / "astronaut.jpg"))
    assert code == 1


def test_index_ids_from_csv(home, folder):
    _run("collections", "create", "c", "--purpose", "testing")
    mapping = folder.parent / "ids.csv"
    mapping.write_text("path,external_image_id\nphotos/astronaut.jpg,eileen-collins\n"
                       "cameraman.png,camera:man\n")
    code, stdout = _run("index", "c", str(folder / "astronaut.jpg"), str(folder / "cameraman.png"),
                        "--csv", str(mapping), "--json", "--workers", "1")
    assert code == 0, stdout
    ids = {json.loads(x)["FaceRecords"][0]["Face"]["ExternalImageId"] for x in stdout.splitlines()}
    assert ids == {"eileen-collins", "camera:man"}
    code, _ = _run("index", "missing-collection", str(folder))
    assert code == 1


def test_a_resumed_index_skips_images_stored_without_faces(home, folder):
    _run("collections", "create", "c", "--purpose", "testing")
    ramp = np.tile(np.linspace(0, 255, 240, dtype=np.uint8), (180, 1))
    (folder / "no face.png").write_bytes(encode(np.dstack([ramp] * 3), "PNG"))
    picks = [str(folder / "astronaut.jpg"), str(folder / "no face.png")]

    def processed(*extra: str) -> list[str]:
        result = runner.invoke(app, ["index", "c", *picks, "--json", "--workers", "1", *extra])
        assert result.exit_code == 0, result.output
        return sorted(Path(json.loads(x)["Image"]).name for x in result.stdout.splitlines())

    assert processed() == ["astronaut.jpg", "no face.png"]
    result = runner.invoke(app, ["index", "c", *picks, "--workers", "1"])
    summary = " ".join(result.output.split())
    assert result.exit_code == 0 and "1 already indexed; 1 without faces" in summary
    assert processed() == []  # neither is detected again
    assert processed("--rescan") == ["no face.png"]  # e.g. after changing --quality-filter
    assert _json("collections", "describe", "c")["FaceCount"] == 1
    # the memory goes with the collection
    _json("collections", "delete", "c")
    _run("collections", "create", "c", "--purpose", "testing")
    assert processed() == ["astronaut.jpg", "no face.png"]


def test_external_image_id_from_file_names():
    assert external_image_id("a b/c.jpg") == "a_b_c.jpg"
    assert external_image_id("Zoë.png") == "Zo_.png"
    assert len(external_image_id("x" * 300)) == 255


def test_collections_check_finds_a_broken_invariant(home, folder):
    _json("collections", "create", "c", "--purpose", "testing")
    _json("collections", "create", "d", "--purpose", "testing")
    code, _ = _run("index", "c", str(folder / "astronaut.jpg"), str(folder / "cameraman.png"))
    assert code == 0
    report = _json("collections", "check")
    assert report["Ok"] and [(c["CollectionId"], c["FaceCount"], c["Problems"])
                             for c in report["Collections"]] == [("c", 2, []), ("d", 0, [])]
    from sqlalchemy import create_engine, text

    db = create_engine(f"sqlite:///{home / 'home' / 'regard.db'}")
    with db.begin() as conn:  # a face row lost behind the catalog's back
        conn.execute(text("DELETE FROM faces WHERE rowid = (SELECT MIN(rowid) FROM faces)"))
    db.dispose()
    code, stdout = _run("collections", "check", "c")
    assert code == 1 and "face_count 2 != 1 face rows" in stdout
    code, stdout = _run("collections", "check", "nope")
    assert code == 1


def test_an_unreachable_database_is_one_line_not_a_traceback(tmp_path):
    import shutil
    import subprocess
    import sys

    pytest.importorskip("psycopg")
    from live_server import free_port

    regard = shutil.which("regard", path=str(Path(sys.executable).parent))
    assert regard, "the regard script is installed beside the interpreter"
    env = {**os.environ, "REGARD_HOME": str(tmp_path),
           "REGARD_DATABASE_URL": f"postgresql+psycopg://regard@127.0.0.1:{free_port()}/x"}
    done = subprocess.run([regard, "collections", "list"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert "InternalServerError" in done.stderr and "retry" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_file_gone_or_unreadable_is_reported_and_the_rest_indexed(home, folder, monkeypatch):
    from regard.cli import collection_commands

    _run("collections", "create", "c", "--purpose", "testing")
    listed = [folder / "astronaut.jpg", folder / "vanished.jpg"]  # deleted after the listing
    monkeypatch.setattr(collection_commands, "find_images", lambda paths: listed)
    result = runner.invoke(app, ["index", "c", str(folder), "--json", "--workers", "1"])
    assert result.exit_code == 1
    by_image = {Path(b["Image"]).name: b for b in map(json.loads, result.stdout.splitlines())}
    assert by_image["vanished.jpg"]["__type"] == "InvalidImageFormatException"
    assert "Cannot read the file" in by_image["vanished.jpg"]["message"]
    assert len(by_image["astronaut.jpg"]["FaceRecords"]) == 1
    assert "1 failed" in " ".join(result.output.split())
