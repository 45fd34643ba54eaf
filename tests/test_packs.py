"""Face-model packs: a collection is bound to the pack it was created with (embedding size,
calibration, index, checkpoints and every answer follow it), every search states its expected
false-positive identification rate for the collection's size, ``regard:max-fpir`` raises the
threshold as the collection grows, ``regard models`` publishes each pack's error rates, and
``regard collections reindex`` moves a collection to another pack.

A second pack for these tests is made from the first: dlib's embeddings cut to 64 dimensions
and L2-normalised, with a table of its own. It is not a model anyone should use; it exercises
every seam a real second pack goes through."""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
from botocore.config import Config
from typer.testing import CliRunner

from regard.errors import InvalidParameterError
from regard.service import EFFECTIVE_THRESHOLD, EXPECTED_FPIR, RegardService, face_ids
from regard.store import NewFace, Store
from regard.vision import packs
from regard.vision.packs import DLIB_V1, DlibPackEmbedder, get_pack

from conftest import encode, face_crop, paste_faces
from live_server import LiveServer

runner = CliRunner()


class _Cut:
    """dlib's embeddings, first 64 dimensions, unit length."""

    def __init__(self, threads, aligner) -> None:
        self._dlib = DlibPackEmbedder(threads, aligner)

    def embed_faces(self, rgb, landmarks):
        vectors = self._dlib.embed_faces(rgb, landmarks)[:, :64]
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture()
def second_pack(tmp_path: Path):
    table = tmp_path / "calibration.json"
    table.write_text(json.dumps({"description": "test", "measured_on": "2026-11-30",
                                 "data": "none", "anchors": [
        {"similarity": 100.0, "distance": 0.0},
        {"similarity": 99.0, "distance": 0.3, "target_fmr": 1e-5, "set_by": "nobody"},
        {"similarity": 80.0, "distance": 0.6, "target_fmr": 1e-3, "set_by": "nobody"},
        {"similarity": 50.0, "distance": 0.8, "target_fmr": 1e-2, "set_by": "nobody"},
        {"similarity": 0.0, "distance": 2.0}]}))
    pack = dataclasses.replace(DLIB_V1, version="0.9", name="dlib-cut-64", embedding_size=64,
                               metric="cosine", calibration_file=table, create_embedder=_Cut)
    packs.register(pack)
    yield pack
    packs._PACKS.pop("0.9")


@pytest.fixture()
def svc(tmp_path: Path, engine):
    store = Store(f"sqlite:///{tmp_path / 'regard.db'}", checkpoint_dir=tmp_path / "index")
    service = RegardService(engine, store, default_purpose="pack tests")
    yield service
    store.close()


@pytest.fixture(scope="module")
def images(astronaut, cameraman) -> dict[str, bytes]:
    group, _ = paste_faces(face_crop(astronaut), [220, 120], canvas=(480, 640))
    return {"astronaut": encode(astronaut), "cameraman": encode(cameraman),
            "flipped": encode(np.ascontiguousarray(astronaut[:, ::-1])),
            "group": encode(group)}


def test_a_collection_is_bound_to_its_pack(svc, second_pack, images, engine):
    made = svc.create_collection(CollectionId="new", Tags={"regard:face-model": "0.9"})
    assert made["FaceModelVersion"] == "0.9"
    assert "regard:face-model" not in svc.list_tags_for_resource(
        ResourceArn=made["CollectionArn"])["Tags"]  # a choice at creation, not a kept tag
    assert svc.create_collection(CollectionId="old", Tags={"regard:face-model": "1.0"})[
        "FaceModelVersion"] == "1.0"
    assert svc.create_collection(CollectionId="plain")["FaceModelVersion"] == \
        packs.default_pack().version
    for name in ("new", "old"):
        body = svc.index_faces(CollectionId=name, Image={"Bytes": images["astronaut"]},
                               ExternalImageId="astronaut.jpg")
        assert body["FaceModelVersion"] == svc.describe_collection(
            CollectionId=name)["FaceModelVersion"]
    (row,) = svc.store.catalog.list_faces("new")
    stored = svc.store.catalog.get_faces("new", [row.face_id], embeddings=True)[row.face_id]
    assert stored.embedding.shape == (64,)
    assert np.linalg.norm(stored.embedding) == pytest.approx(1.0, abs=1e-5)
    listed = svc.list_faces(CollectionId="new")
    assert listed["FaceModelVersion"] == "0.9"
    assert listed["Faces"][0]["IndexFacesModelVersion"] == "0.9"
    for name in ("new", "old"):  # each searched with its own pack's embedding and table
        found = svc.search_faces_by_image(CollectionId=name, Image={"Bytes": images["flipped"]})
        assert found["FaceModelVersion"] == ("0.9" if name == "new" else "1.0")
        assert len(found["FaceMatches"]) == 1 and found["FaceMatches"][0]["Similarity"] > 80
        assert svc.search_faces_by_image(CollectionId=name, Image={
            "Bytes": images["cameraman"]})["FaceMatches"] == []
    # faces embedded by another pack (a batch worker's) are refused, not stored
    detected = engine.detect(images["astronaut"], embed=True)  # the default pack's
    with pytest.raises(InvalidParameterError, match="face model 0.9"):
        svc.index_detected_faces(detected, CollectionId="new")
    with pytest.raises(InvalidParameterError, match="not installed"):
        svc.create_collection(CollectionId="x", Tags={"regard:face-model": "7.7"})


def test_indexes_and_checkpoints_are_keyed_by_pack(tmp_path, second_pack):
    from regard.store.index import IndexOptions

    opts = IndexOptions(checkpoint_min=10)
    store = Store(f"sqlite:///{tmp_path / 'r.db'}", index_options=opts,
                  checkpoint_dir=tmp_path / "index")
    store.catalog.create_collection("c", "arn:c", "0.9")
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(20, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.add_faces("c", [NewFace(v, (0.1, 0.1, 0.2, 0.2), 99.0, str(uuid.uuid4()))
                          for v in vectors])
    with pytest.raises(InvalidParameterError, match="64 finite floats"):  # another pack's size
        store.add_faces("c", [NewFace(np.zeros(128, np.float32) + 0.1, (0, 0, 1, 1), 99.0, "i")])
    hits = store.search("c", vectors[3], 1)[0]
    assert hits[0].distance == pytest.approx(0.0, abs=1e-3)
    entry = store.indexes.synced("c")
    assert entry.face_model_version == "0.9" and entry.faces.dim == 64
    path = store.indexes.checkpoint("c")
    assert path is not None and path.name.endswith("-v0.9.npz")
    # an older, unkeyed checkpoint (it may hold deleted vectors) is removed by the refresh
    old = path.with_name(path.name.replace("-v0.9", ""))
    old.write_bytes(path.read_bytes())
    store.indexes.refresh()
    assert not old.exists() and path.exists()
    store.close()


def _strangers(store: Store, collection: str, n: int, seed: int) -> None:
    """``n`` faces of nobody (random unit vectors: far from every real face)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 128)).astype(np.float32) * 0.2
    store.add_faces(collection, [NewFace(v, (0.1, 0.1, 0.2, 0.2), 99.0, str(uuid.uuid4()))
                                 for v in vectors])


DLIB = {"regard:face-model": "1.0"}  # the strangers below are dlib-sized vectors


def test_every_search_states_its_expected_fpir(svc, images):
    svc.create_collection(CollectionId="c", Tags=DLIB)
    (face,) = face_ids(svc.index_faces(CollectionId="c", Image={"Bytes": images["astronaut"]}))
    _strangers(svc.store, "c", 99, seed=1)
    pack = get_pack("1.0")
    found = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]})
    assert found[EFFECTIVE_THRESHOLD] == 80
    assert found[EXPECTED_FPIR] == pytest.approx(1 - (1 - 1e-3) ** 100)  # ~N x FMR: 9.5 %
    by_id = svc.search_faces(CollectionId="c", FaceId=face, FaceMatchThreshold=90)
    assert by_id[EXPECTED_FPIR] == pytest.approx(pack.expected_fpir(90, 99))  # itself excluded
    svc.create_user(CollectionId="c", UserId="u")
    svc.associate_faces(CollectionId="c", UserId="u", FaceIds=[face])
    users = svc.search_users_by_image(CollectionId="c", Image={"Bytes": images["flipped"]})
    assert users[EXPECTED_FPIR] == pytest.approx(pack.expected_fpir(80, 1))  # one user face


def test_max_fpir_raises_the_threshold_as_the_collection_grows(svc, images):
    svc.create_collection(CollectionId="c", Tags={"regard:max-fpir": "0.01", **DLIB})
    svc.index_faces(CollectionId="c", Image={"Bytes": images["astronaut"]})
    pack = get_pack("1.0")
    seen = []
    for total, seed in ((10, 1), (100, 2), (1000, 3)):
        _strangers(svc.store, "c", total - svc.describe_collection(CollectionId="c")["FaceCount"],
                   seed)
        found = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]})
        seen.append(found[EFFECTIVE_THRESHOLD])
        assert found[EXPECTED_FPIR] <= 0.01 + 1e-9
        assert found[EFFECTIVE_THRESHOLD] >= pack.threshold_for_fpir(0.01, total) - 1e-4
    assert seen[0] == 80 and 80 < seen[1] < seen[2] <= 99.01  # strictly stricter as it grows
    _strangers(svc.store, "c", 2000, seed=4)  # beyond what the strictest anchor can promise
    with pytest.raises(InvalidParameterError, match="regard:max-fpir"):
        svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]})


def test_the_doors_and_the_cli_state_the_fpir(tmp_path, engine, images, monkeypatch):
    with LiveServer(tmp_path, engine) as live:
        key, secret = live.server.keys.create("fpir")
        rek = boto3.client("rekognition", endpoint_url=live.url, region_name="us-east-1",
                           aws_access_key_id=key.access_key_id, aws_secret_access_key=secret,
                           config=Config(retries={"max_attempts": 1}))
        rek.create_collection(CollectionId="c", Tags={"regard:purpose": "tests"})
        rek.index_faces(CollectionId="c", Image={"Bytes": images["astronaut"]})
        found = rek.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]})
        headers = found["ResponseMetadata"]["HTTPHeaders"]
        assert float(headers["x-regard-expected-fpir"]) == pytest.approx(1e-3, rel=1e-3)
        assert float(headers["x-regard-effective-threshold"]) == 80
        assert EXPECTED_FPIR not in found  # AWS's body stays AWS's
        reply = httpx.post(f"{live.url}/v1/collections/c/search", headers={
            "Authorization": f"Bearer {key.access_key_id}:{secret}"},
            files={"image": ("f.jpg", images["flipped"], "image/jpeg")})
        assert reply.json()[EXPECTED_FPIR] == pytest.approx(1e-3, rel=1e-3)
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    probe = tmp_path / "probe.jpg"
    probe.write_bytes(images["flipped"])
    assert runner.invoke(app_(), ["collections", "create", "d", "--purpose", "t"]).exit_code == 0
    shown = runner.invoke(app_(), ["search", "d", str(probe)])
    assert "expected false-positive identification rate" in " ".join(shown.stdout.split())


def app_():
    from regard.cli import app

    return app


def test_models_list_and_show_publish_the_error_rates(second_pack):
    listed = json.loads(runner.invoke(app_(), ["models", "list", "--json"]).stdout)["Models"]
    by_version = {m["FaceModelVersion"]: m for m in listed}
    assert by_version[packs.default_pack().version]["Default"]
    assert not by_version["0.9"]["Default"] and not by_version["1.0"]["Default"]
    assert by_version["1.0"]["FMR"]["80"] == pytest.approx(1e-3)
    shown = json.loads(runner.invoke(app_(), ["models", "show", "1.0", "--json"]).stdout)
    assert shown["EmbeddingSize"] == 128 and shown["Licence"].startswith("public domain")
    at80 = next(a for a in shown["Calibration"]["Anchors"] if a["similarity"] == 80)
    assert at80["target_fmr"] == 1e-3 and at80["set_by"]
    assert shown["Calibration"]["ErrorRates"]["TAR"]["80"]["pairs"] > 0
    assert runner.invoke(app_(), ["models", "show", "7.7"]).exit_code != 0


def test_reindex_moves_a_collection_to_another_pack(tmp_path, second_pack, images, monkeypatch):
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("regard.cli.collection_commands.default_workers", lambda: 1)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "astronaut.jpg").write_bytes(images["astronaut"])
    (photos / "group.jpg").write_bytes(images["group"])
    app = app_()

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout

    run("collections", "create", "staff", "--purpose", "door access", "--threshold-floor", "85")
    run("index", "staff", str(photos))
    faces = json.loads(run("faces", "list", "staff", "--json"))["Faces"]
    assert len(faces) == 3
    astronaut = next(f["FaceId"] for f in faces if f["ExternalImageId"] == "astronaut.jpg")
    run("users", "create", "staff", "ana")
    run("users", "associate", "staff", "ana", astronaut)
    (photos / "unrelated.jpg").write_bytes(images["cameraman"])  # not in staff: not indexed

    first = runner.invoke(app, ["collections", "reindex", "staff", str(photos),
                                "--to-model", "0.9"])
    assert first.exit_code == 0, first.output
    assert "3 of 3 faces" in " ".join(first.stdout.split())
    moved = json.loads(run("faces", "list", "staff-v0.9", "--json"))
    assert moved["FaceModelVersion"] == "0.9" and len(moved["Faces"]) == 3
    assert sorted(f["ExternalImageId"] for f in moved["Faces"]) == sorted(
        f["ExternalImageId"] for f in faces)
    users = [f for f in moved["Faces"] if f.get("UserId") == "ana"]
    assert len(users) == 1 and users[0]["ExternalImageId"] == "astronaut.jpg"
    policy = json.loads(run("collections", "policy", "staff-v0.9", "--json"))
    assert policy["ThresholdFloor"] == 85 and policy["Purpose"] == "door access"
    # resumable: a second run indexes nothing again
    again = runner.invoke(app, ["collections", "reindex", "staff", str(photos),
                                "--to-model", "0.9"])
    assert again.exit_code == 0, again.output
    assert len(json.loads(run("faces", "list", "staff-v0.9", "--json"))["Faces"]) == 3
    audit = run("audit", "export")
    assert "move staff to face model 0.9" in audit
    # faces whose image is not supplied are named, exit 1
    (photos / "group.jpg").unlink()
    partial = runner.invoke(app, ["collections", "reindex", "staff", str(photos),
                                  "--to-model", "0.9", "--into", "other"])
    assert partial.exit_code == 1 and "2 face(s) not carried over" in partial.stdout
