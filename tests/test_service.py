"""The collection operations on real faces: happy paths, Rekognition's error types, and every
response checked against botocore's shapes."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from regard.errors import (
    ConflictError,
    InvalidImageFormatError,
    InvalidPaginationTokenError,
    InvalidParameterError,
    RegardError,
    ResourceAlreadyExistsError,
    ResourceNotFoundError,
)
from regard.service import RegardService, face_ids
from regard.store import Store
from regard.vision.packs import default_pack

from conftest import encode, face_crop, paste_faces
from shapes import assert_shape

DEFAULT = default_pack().version  # new collections' face model


@pytest.fixture()
def svc(tmp_path: Path, engine) -> RegardService:
    store = Store(f"sqlite:///{tmp_path / 'regard.db'}", checkpoint_dir=tmp_path / "index")
    service = RegardService(engine, store, default_purpose="unit tests")
    yield service
    store.close()


@pytest.fixture(scope="module")
def images(astronaut, cameraman) -> dict[str, bytes]:
    group, _ = paste_faces(face_crop(astronaut), [300, 200, 120, 70, 50])
    return {
        "astronaut": encode(astronaut),
        "flipped": encode(np.ascontiguousarray(astronaut[:, ::-1])),  # same person, new image
        "cameraman": encode(cameraman),
        "group": encode(group, "PNG"),
        "blank": encode(np.full((200, 200, 3), 128, np.uint8), "PNG"),
    }


def _index(svc: RegardService, image: bytes, ext: str | None = None, **kw) -> dict:
    params = {"CollectionId": "c", "Image": {"Bytes": image}, **kw}
    if ext:
        params["ExternalImageId"] = ext
    body = svc.index_faces(**params)
    assert_shape(body, "IndexFacesResponse")
    return body


# -- collections --------------------------------------------------------------------------------
def test_collection_lifecycle(svc):
    body = svc.create_collection(CollectionId="c", Tags={"team": "a"})
    assert_shape(body, "CreateCollectionResponse")
    assert body["StatusCode"] == 200 and body["FaceModelVersion"] == DEFAULT
    assert body["CollectionArn"].endswith(":collection/c")
    with pytest.raises(ResourceAlreadyExistsError):
        svc.create_collection(CollectionId="c")
    desc = svc.describe_collection(CollectionId="c")
    assert_shape(desc, "DescribeCollectionResponse")
    assert desc["FaceCount"] == 0 and desc["UserCount"] == 0
    assert desc["CollectionARN"] == body["CollectionArn"]
    assert desc["CreationTimestamp"].tzinfo is not None
    assert_shape(svc.delete_collection(CollectionId="c"), "DeleteCollectionResponse")
    for op in (svc.describe_collection, svc.delete_collection):
        with pytest.raises(ResourceNotFoundError) as err:
            op(CollectionId="c")
        assert err.value.code == "ResourceNotFoundException"


def test_list_collections_paginates(svc):
    for name in ("a", "b", "c"):
        svc.create_collection(CollectionId=name)
    first = svc.list_collections(MaxResults=2)
    assert_shape(first, "ListCollectionsResponse")
    assert first["CollectionIds"] == ["a", "b"] and first["FaceModelVersions"] == [DEFAULT, DEFAULT]
    rest = svc.list_collections(MaxResults=2, NextToken=first["NextToken"])
    assert rest["CollectionIds"] == ["c"] and "NextToken" not in rest
    assert svc.list_collections()["CollectionIds"] == ["a", "b", "c"]
    with pytest.raises(InvalidPaginationTokenError):
        svc.list_collections(NextToken="not-a-token")
    with pytest.raises(InvalidPaginationTokenError):  # a token of another listing
        svc.list_users(CollectionId="a", NextToken=first["NextToken"])


@pytest.mark.parametrize("params", [
    {"CollectionId": "bad id!"},
    {"CollectionId": ""},
    {"CollectionId": "x" * 256},
    {"CollectionId": 7},
    {},
    {"CollectionId": "ok", "Typo": 1},
    {"CollectionId": "ok", "Tags": {"aws:reserved": "v"}},
])
def test_create_collection_validates_against_the_model(svc, params):
    with pytest.raises(InvalidParameterError) as err:
        svc.create_collection(**params)
    # AWS's front end answers model-constraint violations with ValidationException
    assert err.value.code == "ValidationException"


def test_unknown_operation(svc):
    with pytest.raises(RegardError) as err:
        svc.call("DetectLabels", {})
    assert err.value.code == "UnknownOperationException"


# -- faces ----------------------------------------------------------------------------------------
def test_index_faces_records_and_search_by_image(svc, images):
    svc.create_collection(CollectionId="c")
    ast = _index(svc, images["astronaut"], "astronaut.jpg")
    assert len(ast["FaceRecords"]) == 1 and ast["UnindexedFaces"] == []
    face = ast["FaceRecords"][0]["Face"]
    assert face["ExternalImageId"] == "astronaut.jpg" and face["Confidence"] > 50
    assert uuid.UUID(face["FaceId"]) and uuid.UUID(face["ImageId"])
    detail = ast["FaceRecords"][0]["FaceDetail"]
    assert {"BoundingBox", "Landmarks", "Pose", "Quality"} <= set(detail)
    cam = _index(svc, images["cameraman"], "cameraman.png")
    assert svc.describe_collection(CollectionId="c")["FaceCount"] == 2

    body = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]})
    assert_shape(body, "SearchFacesByImageResponse")
    assert [m["Face"]["FaceId"] for m in body["FaceMatches"]] == [face["FaceId"]]
    assert body["FaceMatches"][0]["Similarity"] > 95
    assert body["FaceMatches"][0]["Face"]["IndexFacesModelVersion"] == DEFAULT
    assert body["SearchedFaceConfidence"] > 50 and 0 < body["SearchedFaceBoundingBox"]["Width"] < 1
    every = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]},
                                      FaceMatchThreshold=0)["FaceMatches"]
    assert [m["Face"]["FaceId"] for m in every] == [face["FaceId"], face_ids(cam)[0]]
    assert every[0]["Similarity"] > every[1]["Similarity"]
    one = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["flipped"]},
                                    FaceMatchThreshold=0, MaxFaces=1)["FaceMatches"]
    assert len(one) == 1


def test_index_faces_quality_filter_and_max_faces(svc, images):
    svc.create_collection(CollectionId="c")
    body = _index(svc, images["group"], QualityFilter="HIGH")
    assert len(body["FaceRecords"]) == 2
    reasons = [u["Reasons"] for u in body["UnindexedFaces"]]
    assert all("SMALL_BOUNDING_BOX" in r for r in reasons) and len(reasons) == 3
    body = _index(svc, images["group"], MaxFaces=2)  # QualityFilter AUTO by default
    assert len(body["FaceRecords"]) == 2
    reasons = [u["Reasons"] for u in body["UnindexedFaces"]]
    # the smallest (~20 px) fails the AUTO bar on size (and, with some detectors' boxes, sharpness)
    assert reasons[:2] == [["EXCEEDS_MAX_FACES"], ["EXCEEDS_MAX_FACES"]] and len(reasons) == 3
    assert "SMALL_BOUNDING_BOX" in reasons[2] and "EXCEEDS_MAX_FACES" not in reasons[2]
    widths = [r["Face"]["BoundingBox"]["Width"] for r in body["FaceRecords"]]
    assert widths == sorted(widths, reverse=True)  # the largest are indexed
    body = _index(svc, images["group"], QualityFilter="NONE")
    assert len(body["FaceRecords"]) == 5 and body["UnindexedFaces"] == []
    assert _index(svc, images["blank"])["FaceRecords"] == []


def test_index_faces_errors(svc, images):
    with pytest.raises(ResourceNotFoundError):
        svc.index_faces(CollectionId="nope", Image={"Bytes": images["astronaut"]})
    svc.create_collection(CollectionId="c")
    bad = [
        ({"ExternalImageId": "has space"}, InvalidParameterError),
        ({"MaxFaces": 0}, InvalidParameterError),
        ({"QualityFilter": "BEST"}, InvalidParameterError),
    ]
    for extra, error in bad:
        with pytest.raises(error):
            svc.index_faces(CollectionId="c", Image={"Bytes": images["astronaut"]}, **extra)
    with pytest.raises(InvalidImageFormatError):
        svc.index_faces(CollectionId="c", Image={"Bytes": b"not an image at all"})
    with pytest.raises(InvalidParameterError):
        svc.index_faces(CollectionId="c", Image={"S3Object": {"Bucket": "b", "Name": "n"}})
    with pytest.raises(InvalidParameterError):
        svc.index_faces(CollectionId="c")
    assert svc.describe_collection(CollectionId="c")["FaceCount"] == 0


def test_list_and_delete_faces(svc, images):
    svc.create_collection(CollectionId="c")
    ids = face_ids(_index(svc, images["group"], QualityFilter="NONE"))
    listed = svc.list_faces(CollectionId="c", MaxResults=3)
    assert_shape(listed, "ListFacesResponse")
    more = svc.list_faces(CollectionId="c", MaxResults=3, NextToken=listed["NextToken"])
    assert "NextToken" not in more
    assert sorted(f["FaceId"] for f in listed["Faces"] + more["Faces"]) == sorted(ids)
    assert [f["FaceId"] for f in svc.list_faces(CollectionId="c", FaceIds=ids[:2])["Faces"]] == \
        sorted(ids[:2])
    missing = str(uuid.uuid4())
    body = svc.delete_faces(CollectionId="c", FaceIds=[ids[0], missing])
    assert_shape(body, "DeleteFacesResponse")
    assert body["DeletedFaces"] == [ids[0]]
    assert body["UnsuccessfulFaceDeletions"] == [{"FaceId": missing, "Reasons": ["FACE_NOT_FOUND"]}]
    assert svc.describe_collection(CollectionId="c")["FaceCount"] == 4
    with pytest.raises(InvalidParameterError):
        svc.delete_faces(CollectionId="c", FaceIds=["not-a-uuid"])
    with pytest.raises(InvalidParameterError):
        svc.delete_faces(CollectionId="c", FaceIds=[])
    with pytest.raises(ResourceNotFoundError):
        svc.list_faces(CollectionId="nope")


def test_search_faces_by_face_id(svc, images):
    svc.create_collection(CollectionId="c")
    first = face_ids(_index(svc, images["astronaut"]))[0]
    second = face_ids(_index(svc, images["flipped"]))[0]
    _index(svc, images["cameraman"])
    body = svc.search_faces(CollectionId="c", FaceId=first)
    assert_shape(body, "SearchFacesResponse")
    assert body["SearchedFaceId"] == first
    assert [m["Face"]["FaceId"] for m in body["FaceMatches"]] == [second]  # never itself
    svc.delete_faces(CollectionId="c", FaceIds=[second])
    assert svc.search_faces(CollectionId="c", FaceId=first)["FaceMatches"] == []
    with pytest.raises(InvalidParameterError):
        svc.search_faces(CollectionId="c", FaceId=str(uuid.uuid4()))
    with pytest.raises(InvalidParameterError):
        svc.search_faces(CollectionId="c", FaceId=first, FaceMatchThreshold=101)


def test_search_by_image_without_a_face(svc, images):
    svc.create_collection(CollectionId="c")
    with pytest.raises(InvalidParameterError) as err:
        svc.search_faces_by_image(CollectionId="c", Image={"Bytes": images["blank"]})
    assert "no faces" in err.value.message
    with pytest.raises(ResourceNotFoundError):
        svc.search_faces_by_image(CollectionId="nope", Image={"Bytes": images["astronaut"]})


# -- users ----------------------------------------------------------------------------------------
def test_users_associate_search_and_delete(svc, images):
    svc.create_collection(CollectionId="c")
    ast = face_ids(_index(svc, images["astronaut"]))[0]
    flip = face_ids(_index(svc, images["flipped"]))[0]
    cam = face_ids(_index(svc, images["cameraman"]))[0]
    group = face_ids(_index(svc, images["group"], MaxFaces=1))[0]

    assert svc.create_user(CollectionId="c", UserId="eileen", ClientRequestToken="t1") == {}
    assert svc.create_user(CollectionId="c", UserId="eileen", ClientRequestToken="t1") == {}
    svc.create_user(CollectionId="c", UserId="cam:man")
    with pytest.raises(ConflictError):
        svc.create_user(CollectionId="c", UserId="cam:man")
    listed = svc.list_users(CollectionId="c", MaxResults=1)
    assert_shape(listed, "ListUsersResponse")
    rest = svc.list_users(CollectionId="c", NextToken=listed["NextToken"])
    assert [u["UserId"] for u in listed["Users"] + rest["Users"]] == ["cam:man", "eileen"]
    assert rest["Users"][0]["UserStatus"] == "CREATED"

    body = svc.associate_faces(CollectionId="c", UserId="eileen", FaceIds=[ast])
    assert_shape(body, "AssociateFacesResponse")
    assert body["AssociatedFaces"] == [{"FaceId": ast}] and body["UserStatus"] == "ACTIVE"
    missing = str(uuid.uuid4())
    body = svc.associate_faces(CollectionId="c", UserId="eileen", FaceIds=[flip, cam, missing])
    assert body["AssociatedFaces"] == [{"FaceId": flip}]
    why = {u["FaceId"]: u for u in body["UnsuccessfulFaceAssociations"]}
    assert why[cam]["Reasons"] == ["LOW_MATCH_CONFIDENCE"] and why[cam]["Confidence"] < 75
    assert why[missing]["Reasons"] == ["FACE_NOT_FOUND"]
    svc.associate_faces(CollectionId="c", UserId="cam:man", FaceIds=[cam])
    taken = svc.associate_faces(CollectionId="c", UserId="cam:man", FaceIds=[ast])
    assert taken["UnsuccessfulFaceAssociations"][0]["Reasons"] == ["ASSOCIATED_TO_A_DIFFERENT_USER"]
    assert [f["FaceId"] for f in svc.list_faces(CollectionId="c", UserId="eileen")["Faces"]] == \
        sorted([ast, flip])
    refused = svc.delete_faces(CollectionId="c", FaceIds=[ast])["UnsuccessfulFaceDeletions"]
    assert refused == [{"FaceId": ast, "UserId": "eileen",
                        "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]}]

    by_face = svc.search_users(CollectionId="c", FaceId=group)
    assert_shape(by_face, "SearchUsersResponse")
    assert by_face["SearchedFace"] == {"FaceId": group}
    assert [m["User"] for m in by_face["UserMatches"]] == [{"UserId": "eileen",
                                                           "UserStatus": "ACTIVE"}]
    assert by_face["UserMatches"][0]["Similarity"] > 80
    by_user = svc.search_users(CollectionId="c", UserId="eileen", UserMatchThreshold=0)
    assert by_user["SearchedUser"] == {"UserId": "eileen"}
    assert [m["User"]["UserId"] for m in by_user["UserMatches"]] == ["cam:man"]  # never itself

    by_image = svc.search_users_by_image(CollectionId="c", Image={"Bytes": images["group"]})
    assert_shape(by_image, "SearchUsersByImageResponse")
    assert [m["User"]["UserId"] for m in by_image["UserMatches"]] == ["eileen"]
    assert "FaceDetail" in by_image["SearchedFace"]
    reasons = [u["Reasons"] for u in by_image["UnsearchedFaces"]]
    assert len(reasons) == 4 and all(r == ["FACE_NOT_LARGEST"] for r in reasons)
    filtered = svc.search_users_by_image(CollectionId="c", Image={"Bytes": images["group"]},
                                         QualityFilter="HIGH")
    assert sum(r["Reasons"] != ["FACE_NOT_LARGEST"] for r in filtered["UnsearchedFaces"]) == 3

    body = svc.disassociate_faces(CollectionId="c", UserId="eileen", FaceIds=[flip, cam])
    assert_shape(body, "DisassociateFacesResponse")
    assert body["DisassociatedFaces"] == [{"FaceId": flip}]
    assert body["UnsuccessfulFaceDisassociations"][0]["Reasons"] == [
        "ASSOCIATED_TO_A_DIFFERENT_USER"]
    assert svc.delete_user(CollectionId="c", UserId="eileen") == {}
    assert svc.describe_collection(CollectionId="c")["UserCount"] == 1
    assert svc.search_users(CollectionId="c", FaceId=group)["UserMatches"] == []
    assert svc.list_faces(CollectionId="c", FaceIds=[ast])["Faces"][0].get("UserId") is None


def test_user_errors(svc, images):
    svc.create_collection(CollectionId="c")
    face = face_ids(_index(svc, images["astronaut"]))[0]
    with pytest.raises(ResourceNotFoundError):
        svc.create_user(CollectionId="nope", UserId="u")
    with pytest.raises(ResourceNotFoundError):
        svc.delete_user(CollectionId="c", UserId="ghost")
    with pytest.raises(ResourceNotFoundError):
        svc.associate_faces(CollectionId="c", UserId="ghost", FaceIds=[face])
    with pytest.raises(ResourceNotFoundError):
        svc.search_users(CollectionId="c", UserId="ghost")
    with pytest.raises(InvalidParameterError):
        svc.create_user(CollectionId="c", UserId="bad/id")
    svc.create_user(CollectionId="c", UserId="u")
    with pytest.raises(InvalidParameterError):
        svc.search_users(CollectionId="c")
    with pytest.raises(InvalidParameterError):
        svc.search_users(CollectionId="c", UserId="u", FaceId=face)
    with pytest.raises(InvalidParameterError):
        svc.associate_faces(CollectionId="c", UserId="u", FaceIds=[face] * 101)
    with pytest.raises(InvalidParameterError):
        svc.list_users(CollectionId="c", MaxResults=501)


# -- concurrency at the service level -------------------------------------------------------------
def test_threads_index_and_search_through_the_service(svc, images, engine):
    """Threads index (faces detected once up front, as batch workers hand them over) while
    others search by FaceId; nothing is lost and every face is found."""
    svc.create_collection(CollectionId="c")
    detected = engine.detect(images["astronaut"], embed=True)
    seed = face_ids(svc.index_detected_faces(detected, CollectionId="c"))[0]
    added: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def index() -> None:
        try:
            for _ in range(10):
                body = svc.index_detected_faces(detected, CollectionId="c",
                                                ExternalImageId="astronaut.jpg")
                with lock:
                    added.extend(face_ids(body))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def search() -> None:
        try:
            for _ in range(20):
                svc.search_faces(CollectionId="c", FaceId=seed, MaxFaces=100)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=index) for _ in range(3)]
    threads += [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(added) == 30
    matches = svc.search_faces(CollectionId="c", FaceId=seed, MaxFaces=100)["FaceMatches"]
    assert {m["Face"]["FaceId"] for m in matches} == set(added)
    assert svc.describe_collection(CollectionId="c")["FaceCount"] == 31
