"""The native REST API (``/v1``) over a real uvicorn server on 127.0.0.1 with real face images:
every route's happy path (each body checked against the schema ``/openapi.json`` declares), the
error statuses, authentication, the operational endpoints, and schemathesis over the live
OpenAPI document."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from regard import Engine
from regard.api.server import ServerSettings
from regard.context import CallContext
from regard.operations import registry
from regard.service import RegardService, face_ids
from regard.api import rest
from regard.service import SEARCH_STATISTICS
from regard.spec import output_schema

from conftest import encode, face_crop
from live_server import LiveServer


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("rest"), engine) as server:
        yield server


@pytest.fixture(scope="module")
def credentials(live: LiveServer) -> tuple[str, str]:
    key, secret = live.server.keys.create(name="rest tests", default_purpose="testing")
    return key.access_key_id, secret


@pytest.fixture(scope="module")
def client(live: LiveServer, credentials: tuple[str, str]) -> Iterator[httpx.Client]:
    key_id, secret = credentials
    with httpx.Client(base_url=live.url, timeout=60,
                      headers={"Authorization": f"Bearer {key_id}:{secret}"}) as c:
        yield c


@pytest.fixture(scope="module")
def images(astronaut: np.ndarray, cameraman: np.ndarray) -> dict[str, bytes]:
    return {
        "astronaut": encode(astronaut),
        "flipped": encode(np.ascontiguousarray(astronaut[:, ::-1])),  # same person, new image
        "crop": encode(face_crop(astronaut), "PNG"),
        "cameraman": encode(cameraman),
    }


def ok(response: httpx.Response, operation: str) -> dict[str, Any]:
    """The body of a 200 answer, checked against the response schema the API declares."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    jsonschema.validate(body, declared_schema(operation))
    return body


def declared_schema(operation: str) -> dict[str, Any]:
    """The 200 schema the REST API declares: Rekognition's, plus Regard's own members on
    searches (HumanReviewRequired, the expected FPIR and the threshold used)."""
    return rest._ok_response(operation)[200]["content"][rest.MEDIA_TYPE]["schema"]


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"__type", "message"} and body["__type"] == code, body
    return body["message"]


def upload(data: bytes, name: str = "image.jpg") -> tuple[str, bytes, str]:
    return (name, data, "application/octet-stream")


def index(client: httpx.Client, collection: str, image: bytes, **form: Any) -> list[str]:
    body = ok(client.post(f"/v1/collections/{collection}/faces",
                          files={"image": upload(image)}, data=form), "IndexFaces")
    return [r["Face"]["FaceId"] for r in body["FaceRecords"]]


# -- happy paths --------------------------------------------------------------------------------
def test_uploaded_images_are_never_written_to_disk(client, monkeypatch):
    """Starlette spools upload parts above 1 MiB to a temporary file; Regard keeps them in
    memory (a face photo on disk leaves its bytes behind even once deleted)."""
    import io
    import tempfile

    from PIL import Image

    def to_disk(self):  # what spooling to a temporary file would call
        raise AssertionError("an uploaded image was spooled to disk")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", to_disk)
    noise = np.random.default_rng(0).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    assert 1 << 20 < len(buf.getvalue()) < 5 << 20
    body = ok(client.post("/v1/detect", files={"image": ("noise.png", buf.getvalue(),
                                                         "image/png")}), "DetectFaces")
    assert body["FaceDetails"] == []


def test_detect_faces(client, images):
    body = ok(client.post("/v1/detect", files={"image": upload(images["astronaut"])}),
              "DetectFaces")
    (face,) = body["FaceDetails"]
    box = face["BoundingBox"]
    assert all(0 <= box[k] <= 1 for k in ("Left", "Top", "Width", "Height"))
    assert box["Left"] + box["Width"] <= 1 and box["Top"] + box["Height"] <= 1
    assert face["Confidence"] > 90
    every = ok(client.post("/v1/detect", files={"image": upload(images["astronaut"])},
                           data={"attributes": "ALL"}), "DetectFaces")
    assert len(every["FaceDetails"]) == 1


def test_compare_faces(client, images):
    same = ok(client.post("/v1/compare", files={"source": upload(images["astronaut"]),
                                                "target": upload(images["astronaut"])}),
              "CompareFaces")
    assert len(same["FaceMatches"]) == 1 and same["FaceMatches"][0]["Similarity"] > 99
    other = ok(client.post("/v1/compare", files={"source": upload(images["astronaut"]),
                                                 "target": upload(images["cameraman"])},
                           data={"similarity_threshold": "0", "quality_filter": "NONE"}),
               "CompareFaces")
    # At threshold 0 every target face is a match, and the cameraman is nobody's astronaut.
    assert other["FaceMatches"] and all(m["Similarity"] < 50 for m in other["FaceMatches"])


def test_collection_lifecycle(client, images):
    created = ok(client.post("/v1/collections", json={"CollectionId": "life", "Purpose": "tests",
                                                      "Tags": {"team": "a"}}),
                 "CreateCollection")
    assert created["StatusCode"] == 200 and created["CollectionArn"].endswith(":collection/life")
    listed = ok(client.get("/v1/collections"), "ListCollections")
    assert "life" in listed["CollectionIds"]
    described = ok(client.get("/v1/collections/life"), "DescribeCollection")
    assert described["FaceCount"] == 0 and described["CollectionARN"] == created["CollectionArn"]
    assert isinstance(described["CreationTimestamp"], float)

    (face_id,) = index(client, "life", images["astronaut"], external_image_id="astronaut.jpg",
                       max_faces="1", quality_filter="AUTO")
    (other_id,) = index(client, "life", images["flipped"])
    faces = ok(client.get("/v1/collections/life/faces"), "ListFaces")["Faces"]
    assert {f["FaceId"] for f in faces} == {face_id, other_id}
    assert {f.get("ExternalImageId") for f in faces} == {"astronaut.jpg", None}
    only = ok(client.get("/v1/collections/life/faces", params={"face_ids": [face_id]}),
              "ListFaces")["Faces"]
    assert [f["FaceId"] for f in only] == [face_id]
    paged = ok(client.get("/v1/collections/life/faces", params={"max_results": 1}), "ListFaces")
    assert len(paged["Faces"]) == 1 and paged["NextToken"]
    rest = ok(client.get("/v1/collections/life/faces",
                         params={"max_results": 1, "next_token": paged["NextToken"]}),
              "ListFaces")
    assert {paged["Faces"][0]["FaceId"], rest["Faces"][0]["FaceId"]} == {face_id, other_id}

    found = ok(client.post("/v1/collections/life/search", files={"image": upload(images["crop"])},
                           data={"max_faces": "5", "face_match_threshold": "90"}),
               "SearchFacesByImage")
    assert {m["Face"]["FaceId"] for m in found["FaceMatches"]} == {face_id, other_id}
    assert all(m["Similarity"] >= 90 for m in found["FaceMatches"])
    by_id = ok(client.post(f"/v1/collections/life/faces/{face_id}/search"), "SearchFaces")
    assert by_id["SearchedFaceId"] == face_id
    assert [m["Face"]["FaceId"] for m in by_id["FaceMatches"]] == [other_id]
    none = ok(client.post(f"/v1/collections/life/faces/{face_id}/search",
                          json={"MaxFaces": 1, "FaceMatchThreshold": 100}), "SearchFaces")
    assert none["FaceMatches"] == []

    deleted = ok(client.request("DELETE", "/v1/collections/life/faces",
                                json={"FaceIds": [other_id]}), "DeleteFaces")
    assert deleted["DeletedFaces"] == [other_id]
    assert ok(client.get("/v1/collections/life"), "DescribeCollection")["FaceCount"] == 1
    assert ok(client.delete("/v1/collections/life"), "DeleteCollection")["StatusCode"] == 200
    assert "life" not in ok(client.get("/v1/collections"), "ListCollections")["CollectionIds"]


def test_users(client, images):
    ok(client.post("/v1/collections", json={"CollectionId": "people", "Purpose": "tests"}), "CreateCollection")
    (face_id,) = index(client, "people", images["astronaut"])
    (other_id,) = index(client, "people", images["flipped"])
    assert ok(client.post("/v1/collections/people/users",
                          json={"UserId": "eileen", "ClientRequestToken": "t1"}),
              "CreateUser") == {}
    users = ok(client.get("/v1/collections/people/users"), "ListUsers")["Users"]
    assert users == [{"UserId": "eileen", "UserStatus": "CREATED"}]

    associated = ok(client.post("/v1/collections/people/users/eileen/faces",
                                json={"FaceIds": [face_id], "UserMatchThreshold": 80}),
                    "AssociateFaces")
    assert associated["AssociatedFaces"] == [{"FaceId": face_id}]
    assert associated["UserStatus"] == "ACTIVE"
    mine = ok(client.get("/v1/collections/people/faces", params={"user_id": "eileen"}),
              "ListFaces")["Faces"]
    assert [(f["FaceId"], f["UserId"]) for f in mine] == [(face_id, "eileen")]

    by_face = ok(client.post("/v1/collections/people/users/search", json={"FaceId": other_id}),
                 "SearchUsers")
    assert by_face["SearchedFace"] == {"FaceId": other_id}
    assert [m["User"]["UserId"] for m in by_face["UserMatches"]] == ["eileen"]
    by_user = ok(client.post("/v1/collections/people/users/search",
                             json={"UserId": "eileen", "MaxUsers": 5}), "SearchUsers")
    assert by_user["SearchedUser"] == {"UserId": "eileen"} and by_user["UserMatches"] == []
    by_image = ok(client.post("/v1/collections/people/users/search-by-image",
                              files={"image": upload(images["crop"])},
                              data={"max_users": "3", "user_match_threshold": "80",
                                    "quality_filter": "NONE"}), "SearchUsersByImage")
    assert [m["User"]["UserId"] for m in by_image["UserMatches"]] == ["eileen"]
    assert by_image["UserMatches"][0]["Similarity"] > 90

    gone = ok(client.request("DELETE", "/v1/collections/people/users/eileen/faces",
                             json={"FaceIds": [face_id]}), "DisassociateFaces")
    assert gone["DisassociatedFaces"] == [{"FaceId": face_id}]
    assert ok(client.delete("/v1/collections/people/users/eileen"), "DeleteUser") == {}
    assert ok(client.get("/v1/collections/people/users"), "ListUsers")["Users"] == []
    ok(client.delete("/v1/collections/people"), "DeleteCollection")


def record_callers(service: RegardService, monkeypatch: pytest.MonkeyPatch
                   ) -> list[CallContext]:
    """The CallContext of every operation from now on, as the gate sees it."""
    seen: list[CallContext] = []
    original = service.gate.authorize

    def spy(call):
        seen.append(call.context)
        return original(call)

    monkeypatch.setattr(service.gate, "authorize", spy)
    return seen


def without_request_id(contexts: list[CallContext]) -> list[CallContext]:
    return [dataclasses.replace(c, request_id="") for c in contexts]


def test_caller_carries_key_purpose_case_and_source(live, client, credentials, monkeypatch):
    seen = record_callers(live.server.service, monkeypatch)
    first = client.get("/v1/collections")
    ok(first, "ListCollections")
    ok(client.get("/v1/collections", headers={"X-Regard-Purpose": "fraud review",
                                              "X-Regard-Case": "T-42"}), "ListCollections")
    key_id = credentials[0]
    assert without_request_id(seen) == [
        CallContext(key_id, scopes=("admin",), purpose="testing", client="127.0.0.1",
                    request_id=""),
        CallContext(key_id, scopes=("admin",), purpose="fraud review", case="T-42",
                    client="127.0.0.1", request_id="")]
    assert seen[0].request_id == first.headers["x-request-id"]


# -- authentication -----------------------------------------------------------------------------
def test_authentication(live, credentials):
    key_id, secret = credentials
    url = f"{live.url}/v1/collections"
    assert httpx.get(url, headers={"X-Api-Key": f"{key_id}:{secret}"}).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"bearer {key_id}:{secret}"}
                     ).status_code == 200
    missing = httpx.get(url)
    error(missing, 401, "MissingAuthenticationTokenException")
    assert missing.headers["www-authenticate"] == "Bearer"
    for headers in ({"Authorization": f"Bearer {key_id}:wrong"},
                    {"X-Api-Key": f"{key_id}:wrong"},
                    {"Authorization": f"Bearer {secret}"},  # no key id
                    {"Authorization": f"Basic {key_id}:{secret}"},
                    {"Authorization": f"Bearer RGKNOSUCHKEY00000000:{secret}"}):
        error(httpx.get(url, headers=headers), 401, "UnrecognizedClientException")


def test_revoked_key_is_refused(live):
    key, secret = live.server.keys.create(name="short-lived")
    headers = {"Authorization": f"Bearer {key.access_key_id}:{secret}"}
    assert httpx.get(f"{live.url}/v1/collections", headers=headers).status_code == 200
    live.server.keys.revoke(key.access_key_id)
    error(httpx.get(f"{live.url}/v1/collections", headers=headers), 401,
          "UnrecognizedClientException")


def test_authentication_comes_before_the_body(live, images):
    """An anonymous upload is refused without parsing it (no ValidationException, no 413)."""
    error(httpx.post(f"{live.url}/v1/detect", content=b"\0" * (20 << 20),
                     headers={"content-type": "multipart/form-data; boundary=x"}),
          401, "MissingAuthenticationTokenException")


def test_insecure_local_needs_no_credentials(tmp_path, engine, images, monkeypatch):
    with LiveServer(tmp_path, engine, ServerSettings(insecure_local=True)) as live:
        seen = record_callers(live.server.service, monkeypatch)
        ok(httpx.post(f"{live.url}/v1/detect", files={"image": upload(images["crop"])}),
           "DetectFaces")
        spec = httpx.get(f"{live.url}/openapi.json").json()
        assert "security" not in spec["paths"]["/v1/detect"]["post"]
    assert without_request_id(seen) == [CallContext("anonymous", client="127.0.0.1",
                                                    request_id="")]


# -- errors -------------------------------------------------------------------------------------
def test_busy_server_answers_429(tmp_path, engine, images, monkeypatch):
    """A full image pool refuses at once with ThrottlingException (429, Retry-After)."""
    release = threading.Event()
    with LiveServer(tmp_path, engine, ServerSettings(workers=1, queue=0)) as live:
        key, secret = live.server.keys.create()
        headers = {"Authorization": f"Bearer {key.access_key_id}:{secret}"}
        detect = live.server.service.engine.detect
        monkeypatch.setattr(live.server.service.engine, "detect",
                            lambda rgb: release.wait(30) and detect(rgb))
        url = f"{live.url}/v1/detect"
        files = {"image": upload(images["crop"])}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, url, files=files, headers=headers, timeout=60)
            deadline = time.monotonic() + 20
            while live.server.image_pool.admitted == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            busy = httpx.post(url, files=files, headers=headers)
            release.set()
            assert first.result().status_code == 200
    error(busy, 429, "ThrottlingException")
    assert busy.headers["retry-after"] == "1"


def test_error_statuses(client, images):
    error(client.get("/v1/collections/nowhere"), 404, "ResourceNotFoundException")
    error(client.delete("/v1/collections/nowhere"), 404, "ResourceNotFoundException")
    error(client.post("/v1/collections/nowhere/faces", files={"image": upload(images["crop"])}),
          404, "ResourceNotFoundException")
    ok(client.post("/v1/collections", json={"CollectionId": "dup", "Purpose": "tests"}), "CreateCollection")
    error(client.post("/v1/collections", json={"CollectionId": "dup", "Purpose": "tests"}), 409,
          "ResourceAlreadyExistsException")
    ok(client.post("/v1/collections/dup/users", json={"UserId": "u"}), "CreateUser")
    error(client.post("/v1/collections/dup/users", json={"UserId": "u"}), 409,
          "ConflictException")
    error(client.post("/v1/collections/dup/users/search", json={}), 400,
          "InvalidParameterException")
    error(client.get("/v1/collections/dup/faces", params={"next_token": "bogus"}), 400,
          "InvalidPaginationTokenException")
    ok(client.delete("/v1/collections/dup"), "DeleteCollection")


def test_image_errors(client, images):
    error(client.post("/v1/detect", files={"image": upload(b"not an image at all")}), 400,
          "InvalidImageFormatException")
    error(client.post("/v1/detect", files={"image": upload(b"")}), 400, "ValidationException")
    big = os.urandom(6 * 1000 * 1000)  # 6 MB: over the 5 MiB limit, under the body limit
    message = error(client.post("/v1/detect", files={"image": upload(big, "big.png")}), 413,
                    "ImageTooLargeException")
    assert "big.png" in message
    huge = b"\0" * (40 << 20)  # over the whole-body limit: refused while reading
    error(client.post("/v1/detect", content=huge,
                      headers={"content-type": "multipart/form-data; boundary=x"}),
          413, "ImageTooLargeException")
    blank = encode(np.full((200, 200, 3), 128, np.uint8), "PNG")
    ok(client.post("/v1/collections", json={"CollectionId": "noface", "Purpose": "tests"}), "CreateCollection")
    error(client.post("/v1/collections/noface/search", files={"image": upload(blank)}), 400,
          "InvalidParameterException")
    ok(client.delete("/v1/collections/noface"), "DeleteCollection")


def test_validation_errors_are_400(client, images):
    error(client.get("/v1/collections/bad id!"), 400, "ValidationException")
    error(client.post("/v1/collections", json={"CollectionId": "bad id!", "Purpose": "tests"}), 400,
          "ValidationException")
    message = error(client.post("/v1/detect"), 400, "ValidationException")
    assert "image" in message
    error(client.post("/v1/compare", files={"source": upload(images["crop"])}), 400,
          "ValidationException")
    error(client.post("/v1/detect", files={"image": upload(images["crop"])},
                      data={"attributes": "SOME"}), 400, "ValidationException")
    error(client.post("/v1/collections", json={"CollectionId": "x", "Purpose": "tests", "Extra": 1}), 400,
          "ValidationException")
    error(client.post("/v1/collections", content=b"{not json",
                      headers={"content-type": "application/json"}), 400, "ValidationException")
    error(client.get("/v1/collections", params={"max_results": "many"}), 400,
          "ValidationException")
    error(client.get("/v1/collections", params={"max_results": 5000}), 400,
          "ValidationException")
    error(client.post("/v1/compare", files={"source": upload(images["crop"]),
                                            "target": upload(images["crop"])},
                      data={"similarity_threshold": "nan"}), 400, "ValidationException")


def test_unknown_routes_answer_the_error_body(client):
    error(client.get("/v1/nothing-here"), 404, "UnknownOperationException")
    response = client.put("/v1/collections")
    error(response, 405, "UnknownOperationException")
    assert "GET" in response.headers["allow"]
    assert client.get("/nothing-here").json() == {"detail": "Not Found"}  # outside /v1: FastAPI's


# -- operations endpoints and the OpenAPI document ---------------------------------------------
def test_healthz_metrics_openapi(live, client):
    health = httpx.get(f"{live.url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ok(client.get("/v1/collections"), "ListCollections")
    client.get("/v1/collections/nowhere")
    metrics = httpx.get(f"{live.url}/metrics").text
    assert 'regard_requests_total{door="rest",operation="ListCollections",outcome="OK"}' in metrics
    assert ('regard_requests_total{door="rest",operation="DescribeCollection",'
            'outcome="ResourceNotFoundException"}') in metrics

    spec = httpx.get(f"{live.url}/openapi.json").json()
    operations = {op["operationId"]: (method, path) for path, item in spec["paths"].items()
                  for method, op in item.items() if path.startswith("/v1")}
    assert set(operations) == set(FUZZED_OPERATIONS + NOT_FUZZED)
    assert operations["IndexFaces"] == ("post", "/v1/collections/{collection_id}/faces")
    schemes = spec["components"]["securitySchemes"]
    assert schemes["AccessKeyBearer"] == {
        "type": "http", "scheme": "bearer", "description": schemes["AccessKeyBearer"]["description"]}
    assert schemes["AccessKeyHeader"]["in"] == "header"
    assert schemes["AccessKeyHeader"]["name"] == "X-Api-Key"
    for path, item in spec["paths"].items():
        if not path.startswith("/v1"):
            continue
        for op in item.values():
            assert op["security"] == [{"AccessKeyBearer": []}, {"AccessKeyHeader": []}]
            responses = op["responses"]
            if "application/json" not in responses["200"]["content"]:  # an image comes back
                if op["operationId"] == "StreamSinkEvents":  # or a stream of events
                    assert "text/event-stream" in responses["200"]["content"]
                    continue
                assert op["operationId"] == "RedactFaces"
                assert "image/jpeg" in responses["200"]["content"]
                continue
            declared = responses["200"]["content"]["application/json"]["schema"]
            if op["operationId"] in live.server.service.operations:
                expected = output_schema(op["operationId"])
                for added in ("HumanReviewRequired", *SEARCH_STATISTICS):
                    expected["properties"].pop(added, None)
                    declared["properties"].pop(added, None)
                assert declared == expected
            assert {"400", "401", "403", "404", "409", "413", "429", "500"} <= set(responses)
            assert "422" not in responses
    detect = spec["paths"]["/v1/detect"]["post"]
    assert "multipart/form-data" in detect["requestBody"]["content"]


def test_paths_are_under_v1_only(live):
    """The Rekognition door stays off the OpenAPI document."""
    spec = httpx.get(f"{live.url}/openapi.json").json()
    assert set(spec["paths"]) - {p for p in spec["paths"] if p.startswith("/v1/")} == {
        "/healthz", "/metrics"}


# -- schemathesis -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_live(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> Iterator[LiveServer]:
    """A server of its own, so that generated deletes cannot touch the other tests' data."""
    with LiveServer(tmp_path_factory.mktemp("fuzz"), engine) as server:
        yield server


@pytest.fixture(scope="module")
def fuzz_known(fuzz_live: LiveServer, images) -> dict[str, str]:
    """Path parameters naming things that exist (a collection with a face and a user), so that
    generated requests also get past the lookups."""
    service = fuzz_live.server.service
    service.create_collection(CollectionId="c")
    (face_id,) = face_ids(service.index_faces(CollectionId="c",
                                              Image={"Bytes": images["astronaut"]}))
    service.create_user(CollectionId="c", UserId="u")
    job_id = service.jobs.submit("FaceDetection", service.context, {
        "Video": {"S3Object": {"Bucket": "videos", "Name": "none.mp4"}},
        "API": "StartFaceDetection"})
    # a stopped stream processor, its source and its sink, all named "fuzz"
    service.create_collection(CollectionId="live", Tags={
        "regard:purpose": "fuzz", "regard:legal-basis": "tests",
        "regard:live-identification": "allowed"})
    source = service.call("CreateStreamSource", {"Name": "fuzz", "Url": "/nonexistent.mp4"},
                          service.context)["Arn"]
    sink = service.call("CreateStreamSink", {"Name": "fuzz", "Kind": "sse"},
                        service.context)["Arn"]
    service.create_stream_processor(
        Name="fuzz", Input={"KinesisVideoStream": {"Arn": source}},
        Output={"KinesisDataStream": {"Arn": sink}}, RoleArn="arn:aws:iam::123456789012:role/r",
        Settings={"FaceSearch": {"CollectionId": "live"}})
    return {"collection_id": "c", "user_id": "u", "face_id": face_id, "job_id": job_id,
            "name": "fuzz"}


@pytest.fixture(scope="module")
def fuzz_auth(fuzz_live: LiveServer) -> dict[str, str]:
    key, secret = fuzz_live.server.keys.create(name="schemathesis")
    return {"Authorization": f"Bearer {key.access_key_id}:{secret}"}


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_live: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_live.url}/openapi.json")


# One test per operation, deletes last (the known collection and user had better live until
# then). schemathesis' own ``from_fixture(...).parametrize()`` would load the live schema lazily,
# but it sets ``Node._nodeid``, which pytest 9 no longer has.
FUZZED_OPERATIONS = [
    "DetectFaces", "CompareFaces", "CreateCollection", "ListCollections", "DescribeCollection",
    "IndexFaces", "ListFaces", "SearchFaces", "SearchFacesByImage", "CreateUser", "ListUsers",
    "AssociateFaces", "DisassociateFaces", "SearchUsers", "SearchUsersByImage",
    "GetCollectionPolicy", "UpdateCollectionPolicy", "AuditExport", "AuditVerify", "WhoSearched",
    "DeleteFaces", "Erase", "DeleteUser", "DeleteCollection",
    "StartFaceDetection", "GetFaceDetection", "StartFaceSearch", "GetFaceSearch",
    "StartFaceRedaction", "GetFaceRedaction", "RedactFaces",
    "CreateStreamSource", "ListStreamSources", "DeleteStreamSource", "CreateStreamSink",
    "ListStreamSinks", "DeleteStreamSink", "CreateStreamProcessor", "ListStreamProcessors",
    "DescribeStreamProcessor", "DeleteStreamProcessor", "StartStreamProcessor",
    "StopStreamProcessor", "UpdateStreamProcessor",
]
# Documented but not fuzzed: a Server-Sent Events stream does not end (tests/test_streams.py).
NOT_FUZZED = ["StreamSinkEvents"]
# Rekognition operations the native API covers with its own routes (the collection's policy).
TAG_OPERATIONS = {"TagResource", "UntagResource", "ListTagsForResource"}
FUZZ_EXAMPLES = int(os.environ.get("REGARD_FUZZ_EXAMPLES", "50"))  # per operation; more locally
# CI runs the same examples every time (a failure is then a regression, not luck); set
# REGARD_FUZZ_RANDOM=1 to explore new ones.
FUZZ_RANDOM = os.environ.get("REGARD_FUZZ_RANDOM") == "1"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def test_every_operation_is_fuzzed(live):
    spec = httpx.get(f"{live.url}/openapi.json").json()
    documented = {op["operationId"] for path, item in spec["paths"].items()
                  if path.startswith("/v1/") for op in item.values()}
    assert sorted(FUZZED_OPERATIONS + NOT_FUZZED) == sorted(documented)
    assert set(live.server.service.operations) - TAG_OPERATIONS <= documented


def _with_image(image: bytes, case: Any) -> Any:
    """The case with a real face in each file field (generated data is never an image)."""
    if isinstance(case.body, dict):
        case.body = {k: image if k in ("image", "source", "target") else v
                     for k, v in case.body.items()}
    return case


@pytest.mark.slow
@pytest.mark.parametrize("operation_id", FUZZED_OPERATIONS)
def test_schemathesis(fuzz_schema, fuzz_auth, fuzz_known, images, operation_id):
    """Data that fits the documented parameters and data that does not, paths that name existing
    things and real faces: never a 5xx, and every answer has a documented status, media type and
    body."""
    operation = fuzz_schema.find_operation_by_id(operation_id)
    known = {name: fuzz_known[name] for name in re.findall(r"{(\w+)}", operation.path)}
    existing = operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known)
    strategies = [operation.as_strategy(mode) for mode in GenerationMode] + [existing]
    if registry.get(operation_id) is not None and registry.get(operation_id).pool == "image":
        strategies.append(existing.map(functools.partial(_with_image, images["crop"])))
    cases = st.one_of(strategies)

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              derandomize=not FUZZ_RANDOM, suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def check(case):
        case.call_and_validate(headers=fuzz_auth, timeout=60, checks=CHECKS)

    check()


def test_docs_work_offline(live):
    """/docs and /redoc load their JavaScript and CSS from this server, never from a CDN."""
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{live.url}{page}").text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(a.startswith("/") for a in assets), assets
        for asset in assets:
            reply = httpx.get(f"{live.url}{asset}")
            assert reply.status_code == 200 and len(reply.content) > 100, asset
    assert "cdn." not in httpx.get(f"{live.url}/docs").text
