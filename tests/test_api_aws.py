"""The Rekognition door through real clients on 127.0.0.1: boto3 for every operation (answers and
error types), the AWS CLI, raw SigV4 requests (bad signatures, tampered bodies, expired
timestamps), oversized and corrupt images, and 50 concurrent requests."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import botocore.auth
import httpx
import numpy as np
import pytest
from botocore import UNSIGNED
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from regard.api.server import ServerSettings
from regard.api.sigv4 import SignedRequest, verify
from regard.errors import (
    IncompleteSignatureError,
    InvalidSignatureError,
    MissingAuthenticationTokenError,
    UnrecognizedClientError,
)
from regard.governance.keys import KeyStore
from regard.object_store import LocalObjectStore
from regard.store.catalog import Catalog

from conftest import encode, face_crop, paste_faces
from aws_clients import error_code, rekognition
from live_server import LiveServer, free_port

TARGET = "RekognitionService."


@pytest.fixture(scope="module")
def images(astronaut, cameraman) -> dict[str, bytes]:
    group, _ = paste_faces(face_crop(astronaut), [220, 200], canvas=(480, 640))
    return {
        "astronaut": encode(astronaut),
        "face": encode(face_crop(astronaut)),
        "cameraman": encode(cameraman),
        "group": encode(group),
        "blank": encode(np.full((200, 200, 3), 90, np.uint8)),
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory, engine):
    home = tmp_path_factory.mktemp("aws")
    bucket = home / "s3" / "photos"
    bucket.mkdir(parents=True)
    with LiveServer(home, engine, ServerSettings(workers=2, queue=64),
                    object_store=LocalObjectStore(home / "s3")) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(live):
    key, secret = live.server.keys.create("test admin")
    return key.access_key_id, secret


@pytest.fixture(scope="module")
def rek(live, admin):
    return rekognition(live.url, *admin)


def signed_post(url: str, target: str, body: bytes, key: str, secret: str,
                headers: dict[str, str] | None = None) -> AWSRequest:
    req = AWSRequest(method="POST", url=url + "/", data=body,
                     headers={"Content-Type": "application/x-amz-json-1.1",
                              "X-Amz-Target": target, **(headers or {})})
    SigV4Auth(Credentials(key, secret), "rekognition", "us-east-1").add_auth(req)
    return req


def send(req: AWSRequest, body: bytes | None = None) -> httpx.Response:
    return httpx.post(req.url, content=req.body if body is None else body,
                      headers=dict(req.headers.items()), timeout=30)


# -- every operation through boto3 ----------------------------------------------------------------
def test_detect_and_compare(rek, images):
    faces = rek.detect_faces(Image={"Bytes": images["astronaut"]}, Attributes=["ALL"])
    assert len(faces["FaceDetails"]) == 1
    box = faces["FaceDetails"][0]["BoundingBox"]
    assert 0.3 < box["Left"] < 0.4 and 0.1 < box["Top"] < 0.15 and box["Width"] > 0.15
    assert {lm["Type"] for lm in faces["FaceDetails"][0]["Landmarks"]} >= {"eyeLeft", "eyeRight"}

    same = rek.compare_faces(SourceImage={"Bytes": images["face"]},
                             TargetImage={"Bytes": images["group"]}, SimilarityThreshold=80)
    assert len(same["FaceMatches"]) == 2 and same["UnmatchedFaces"] == []
    assert all(m["Similarity"] > 95 for m in same["FaceMatches"])
    other = rek.compare_faces(SourceImage={"Bytes": images["face"]},
                              TargetImage={"Bytes": images["cameraman"]})
    assert other["FaceMatches"] == [] and len(other["UnmatchedFaces"]) == 1


def test_collection_face_and_user_operations(rek, images):
    created = rek.create_collection(CollectionId="staff", Tags={"team": "qa"})
    assert created["StatusCode"] == 200 and created["CollectionArn"].endswith("collection/staff")
    assert "staff" in rek.list_collections()["CollectionIds"]

    indexed = rek.index_faces(CollectionId="staff", Image={"Bytes": images["group"]},
                              ExternalImageId="eileen", MaxFaces=1, QualityFilter="NONE")
    assert len(indexed["FaceRecords"]) == 1
    assert indexed["UnindexedFaces"][0]["Reasons"] == ["EXCEEDS_MAX_FACES"]
    face_id = indexed["FaceRecords"][0]["Face"]["FaceId"]
    second = rek.index_faces(CollectionId="staff", Image={"Bytes": images["face"]},
                             ExternalImageId="eileen-2")["FaceRecords"][0]["Face"]["FaceId"]
    other = rek.index_faces(CollectionId="staff", Image={"Bytes": images["cameraman"]},
                            ExternalImageId="cameraman")["FaceRecords"][0]["Face"]["FaceId"]

    described = rek.describe_collection(CollectionId="staff")
    assert described["FaceCount"] == 3
    assert isinstance(described["CreationTimestamp"], datetime)
    pages = list(rek.get_paginator("list_faces").paginate(CollectionId="staff",
                                                          PaginationConfig={"PageSize": 2}))
    assert len(pages) == 2
    assert {f["FaceId"] for p in pages for f in p["Faces"]} == {face_id, second, other}

    by_image = rek.search_faces_by_image(CollectionId="staff", Image={"Bytes": images["face"]})
    assert {m["Face"]["FaceId"] for m in by_image["FaceMatches"]} == {face_id, second}
    by_id = rek.search_faces(CollectionId="staff", FaceId=face_id, FaceMatchThreshold=90)
    assert [m["Face"]["FaceId"] for m in by_id["FaceMatches"]] == [second]

    rek.create_user(CollectionId="staff", UserId="eileen")
    assert [u["UserId"] for u in rek.list_users(CollectionId="staff")["Users"]] == ["eileen"]
    assoc = rek.associate_faces(CollectionId="staff", UserId="eileen", FaceIds=[face_id, second])
    assert len(assoc["AssociatedFaces"]) == 2 and assoc["UserStatus"] == "ACTIVE"
    users = rek.search_users(CollectionId="staff", FaceId=other)
    assert users["UserMatches"] == []
    found = rek.search_users_by_image(CollectionId="staff", Image={"Bytes": images["astronaut"]})
    assert found["UserMatches"][0]["User"]["UserId"] == "eileen"
    assert found["UserMatches"][0]["Similarity"] > 95
    disassoc = rek.disassociate_faces(CollectionId="staff", UserId="eileen", FaceIds=[second])
    assert [f["FaceId"] for f in disassoc["DisassociatedFaces"]] == [second]
    rek.delete_user(CollectionId="staff", UserId="eileen")
    deleted = rek.delete_faces(CollectionId="staff", FaceIds=[face_id, "0" * 8 + "-0000-0000-0000-" + "0" * 12])
    assert deleted["DeletedFaces"] == [face_id]
    assert rek.delete_collection(CollectionId="staff")["StatusCode"] == 200
    assert "staff" not in rek.list_collections()["CollectionIds"]


def test_s3_object_images_come_from_the_configured_folder(live, rek, images):
    (live.server.service.objects.root / "photos" / "eileen.jpg").write_bytes(images["face"])
    faces = rek.detect_faces(Image={"S3Object": {"Bucket": "photos", "Name": "eileen.jpg"}})
    assert len(faces["FaceDetails"]) == 1
    for name in ("missing.jpg", "../../catalog.db", "../photos/../../catalog.db"):
        with pytest.raises(ClientError) as exc:
            rek.detect_faces(Image={"S3Object": {"Bucket": "photos", "Name": name}})
        assert error_code(exc) == "InvalidS3ObjectException"


def test_service_errors_have_rekognition_types(rek, images):
    cases = [
        (lambda: rek.describe_collection(CollectionId="nope"), "ResourceNotFoundException"),
        (lambda: rek.create_collection(CollectionId="bad id!"), "ValidationException"),
        (lambda: rek.detect_faces(Image={"Bytes": images["astronaut"][:5000]}),
         "InvalidImageFormatException"),
        (lambda: rek.detect_faces(Image={"Bytes": b"GIF89a not really"}),
         "InvalidImageFormatException"),
        (lambda: rek.compare_faces(SourceImage={"Bytes": images["blank"]},
                                   TargetImage={"Bytes": images["face"]}),
         "InvalidParameterException"),
        (lambda: rek.list_faces(CollectionId="nope", NextToken="garbage"),
         "ResourceNotFoundException"),
    ]
    for call, code in cases:
        with pytest.raises(ClientError) as exc:
            call()
        assert error_code(exc) == code, exc.value
    rek.create_collection(CollectionId="twice")
    with pytest.raises(ClientError) as exc:
        rek.create_collection(CollectionId="twice")
    assert error_code(exc) == "ResourceAlreadyExistsException"
    with pytest.raises(ClientError) as exc:
        rek.list_faces(CollectionId="twice", NextToken="garbage")
    assert error_code(exc) == "InvalidPaginationTokenException"


def test_a_6_mb_image_is_too_large(rek):
    rng = np.random.default_rng(0)
    noisy = encode(rng.integers(0, 255, (1500, 1500, 3), dtype=np.uint8), "PNG")
    assert len(noisy) > 6_000_000
    with pytest.raises(ClientError) as exc:
        rek.detect_faces(Image={"Bytes": noisy})
    assert error_code(exc) == "ImageTooLargeException"


def test_protocol_errors(live, admin, images):
    key, secret = admin
    body = json.dumps({}).encode()
    for target, code in [("RekognitionService.DetectLabels", "UnknownOperationException"),
                         ("SomethingElse.ListCollections", "UnknownOperationException"),
                         ("", "UnknownOperationException")]:
        reply = send(signed_post(live.url, target, body, key, secret))
        assert reply.status_code == 400 and reply.json()["__type"] == code
    for raw, code in [(b"{not json", "SerializationException"),
                      (b"[" * 100_000, "SerializationException"),
                      (b'["a list"]', "SerializationException"),
                      (b'{"MaxResults": "ten"}', "SerializationException"),
                      (b'{"MaxResults": -1}', "ValidationException")]:
        reply = send(signed_post(live.url, TARGET + "ListCollections", raw, key, secret))
        assert reply.json()["__type"] == code, reply.text
    bad_b64 = json.dumps({"Image": {"Bytes": "***"}}).encode()
    reply = send(signed_post(live.url, TARGET + "DetectFaces", bad_b64, key, secret))
    assert reply.json()["__type"] == "SerializationException"


# -- authentication -------------------------------------------------------------------------------
def test_bad_and_unknown_and_revoked_keys(live, admin):
    key, secret = admin
    with pytest.raises(ClientError) as exc:
        wrong = secret[:-1] + ("x" if secret[-1] != "x" else "y")  # never the secret itself
        rekognition(live.url, key, wrong).list_collections()
    assert error_code(exc) == "InvalidSignatureException"
    with pytest.raises(ClientError) as exc:
        rekognition(live.url, "RGKUNKNOWNUNKNOWN000", secret).list_collections()
    assert error_code(exc) == "UnrecognizedClientException"
    revoked, revoked_secret = live.server.keys.create("short-lived")
    client = rekognition(live.url, revoked.access_key_id, revoked_secret)
    client.list_collections()
    live.server.keys.revoke(revoked.access_key_id)
    with pytest.raises(ClientError) as exc:
        client.list_collections()
    assert error_code(exc) == "UnrecognizedClientException"
    with pytest.raises(ClientError) as exc:
        rekognition(live.url, None, None, signature_version=UNSIGNED).list_collections()
    assert error_code(exc) == "MissingAuthenticationTokenException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_tampered_body_and_headers_are_refused(live, admin):
    key, secret = admin
    body = json.dumps({"CollectionId": "tamper"}).encode()
    req = signed_post(live.url, TARGET + "CreateCollection", body, key, secret)
    reply = send(req, body.replace(b"tamper", b"tamperx"))
    assert reply.status_code == 403 and reply.json()["__type"] == "InvalidSignatureException"
    forged = signed_post(live.url, TARGET + "DescribeCollection", body, key, secret)
    forged.headers.replace_header("X-Amz-Target", TARGET + "DeleteCollection")
    assert send(forged).json()["__type"] == "InvalidSignatureException"
    # the untouched request is fine, and only then is the collection created
    assert send(req).status_code == 200


def test_expired_and_future_timestamps_are_refused(live, admin, monkeypatch):
    key, secret = admin
    body = b"{}"
    for shift, text in [(-10, "Signature expired"), (+10, "Signature not yet current")]:
        when = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(minutes=shift)
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda w=when: w)
        reply = send(signed_post(live.url, TARGET + "ListCollections", body, key, secret))
        assert reply.json()["__type"] == "InvalidSignatureException"
        assert text in reply.json()["message"]
    monkeypatch.undo()
    assert send(signed_post(live.url, TARGET + "ListCollections", body, key, secret)
                ).status_code == 200


def test_verify_refuses_incomplete_and_misscoped_signatures(tmp_path):
    keys = KeyStore(Catalog(f"sqlite:///{tmp_path / 'k.db'}"))
    key, secret = keys.create()
    req = signed_post("http://127.0.0.1:1", TARGET + "ListCollections", b"{}",
                      key.access_key_id, secret)

    def as_signed(headers: dict[str, str]) -> SignedRequest:
        return SignedRequest("POST", "/", "", list(headers.items()), b"{}")

    good = {**dict(req.headers.items()), "Host": "127.0.0.1:1"}
    assert verify(as_signed(good), keys).access_key_id == key.access_key_id
    no_auth = {k: v for k, v in good.items() if k != "Authorization"}
    with pytest.raises(MissingAuthenticationTokenError):
        verify(as_signed(no_auth), keys)
    for broken in ("AWS4-HMAC-SHA256 Credential=x", "Basic dXNlcjpwYXNz",
                   good["Authorization"].replace("host;", "")):
        with pytest.raises(IncompleteSignatureError):
            verify(as_signed({**good, "Authorization": broken}), keys)
    wrong_service = good["Authorization"].replace("/rekognition/", "/s3/")
    with pytest.raises(InvalidSignatureError, match="correct service"):
        verify(as_signed({**good, "Authorization": wrong_service}), keys)
    with pytest.raises(InvalidSignatureError, match="x-amz-content-sha256"):
        verify(as_signed({**good, "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}), keys)
    keys.revoke(key.access_key_id)
    with pytest.raises(UnrecognizedClientError):
        verify(as_signed(good), keys)


# -- other clients and load -----------------------------------------------------------------------
def test_aws_cli_detect_faces(live, admin, images, tmp_path):
    key, secret = admin
    image = tmp_path / "astronaut.jpg"
    image.write_bytes(images["astronaut"])
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    aws = Path(sys.executable).parent / "aws"
    done = subprocess.run([str(aws), "rekognition", "detect-faces", "--endpoint-url", live.url,
                           "--image-bytes", f"fileb://{image}", "--output", "json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["FaceDetails"]) == 1
    done = subprocess.run([str(aws), "rekognition", "describe-collection", "--endpoint-url",
                           live.url, "--collection-id", "nope"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "ResourceNotFoundException" in done.stderr


def test_50_concurrent_requests(live, rek, images):
    ledger = live.server.service.gate.ledger
    before = sum(1 for e in ledger.entries(operations=["DetectFaces"]))

    def detect(i: int) -> int:
        return len(rek.detect_faces(Image={"Bytes": images["group"]})["FaceDetails"])

    with ThreadPoolExecutor(50) as pool:
        counts = list(pool.map(detect, range(50)))
    assert counts == [2] * 50
    # each request is in the audit ledger exactly once, and the chain holds
    assert sum(1 for e in ledger.entries(operations=["DetectFaces"])) == before + 50
    assert ledger.verify().ok


def test_a_full_queue_throttles_instead_of_piling_up(tmp_path, engine, images):
    with LiveServer(tmp_path, engine, ServerSettings(workers=1, queue=2)) as srv:
        key, secret = srv.server.keys.create()
        client = rekognition(srv.url, key.access_key_id, secret)

        def detect(i: int) -> str:
            try:
                client.detect_faces(Image={"Bytes": images["group"]})
                return "OK"
            except ClientError as exc:
                return str(exc.response["Error"]["Code"])

        # Hold the one worker so that the pool's capacity (1 running + 2 waiting) is reached
        # whatever the timing of the 20 clients; release it once the refusals are back.
        release = threading.Event()
        srv.server.image_pool._executor.submit(release.wait, 60)
        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(detect, i) for i in range(20)]
            deadline = time.monotonic() + 60
            while sum(f.done() for f in futures) < 17 and time.monotonic() < deadline:
                time.sleep(0.02)
            release.set()
            outcomes = [f.result() for f in futures]
        assert outcomes.count("ThrottlingException") == 17, outcomes
        assert outcomes.count("OK") == 3
        assert srv.server.image_pool.admitted == 0
        # standard retries (backoff) get every request through eventually
        patient = rekognition(srv.url, key.access_key_id, secret,
                              retries={"max_attempts": 10, "mode": "standard"})
        with ThreadPoolExecutor(6) as pool:
            assert all(len(r["FaceDetails"]) == 2 for r in pool.map(
                lambda _: patient.detect_faces(Image={"Bytes": images["group"]}), range(6)))
        metrics = httpx.get(srv.url + "/metrics").text
        assert "regard_requests_throttled_total" in metrics


def test_a_server_overwrites_faces_deleted_by_another_replica_unsearched(tmp_path, engine):
    from regard.store import Store
    from store_workers import random_faces

    settings = ServerSettings(index_refresh_seconds=0.1)
    with LiveServer(tmp_path, engine, settings) as srv:
        store = srv.server.service.store
        store.catalog.create_collection("c", "arn:c", "1.0")
        faces = random_faces(10, seed=90)
        store.add_faces("c", faces)
        store.search("c", faces[0].embedding, 1)  # loaded in the server's memory
        replica = Store(store.database.url, checkpoint_dir=False)
        replica.delete_faces("c", [faces[0].face_id])  # through another process
        replica.close()
        entry = store.indexes._indexes["c"]
        deadline = time.monotonic() + 10
        while any(np.allclose(r, faces[0].embedding) for r in entry.faces.stored_vectors()):
            assert time.monotonic() < deadline, "the server kept the deleted vector"
            time.sleep(0.05)
        assert len(entry.faces) == 9


def test_a_stalled_body_times_out_on_both_doors(tmp_path, engine):
    """A client that stops sending its body (or sends it byte by byte) gets a 408
    RequestTimeoutException after ``body_read_seconds`` instead of holding its connection."""
    import socket

    with LiveServer(tmp_path, engine, ServerSettings(body_read_seconds=0.5)) as srv:
        key, secret = srv.server.keys.create("slow client")
        # a signed request (an anonymous one is refused before its body is read)
        signed = signed_post(srv.url, TARGET + "DetectFaces", b"{" + b" " * 99999,
                             key.access_key_id, secret)
        aws_headers = "".join(f"{k}: {v}\r\n" for k, v in signed.headers.items())
        for path, extra in (("/", aws_headers),
                            ("/v1/detect", "Content-Type: multipart/form-data; boundary=x\r\n"
                                           f"Authorization: Bearer {key.access_key_id}:{secret}"
                                           "\r\n")):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}"
                              "Content-Length: 100000\r\n\r\n{").encode())
                started = time.monotonic()
                reply = ""
                while "RequestTimeoutException" not in reply and time.monotonic() - started < 5:
                    chunk = sock.recv(65536).decode("latin-1")
                    if not chunk:
                        break
                    reply += chunk
                waited = time.monotonic() - started
            assert reply.startswith("HTTP/1.1 408"), reply[:200]
            assert "RequestTimeoutException" in reply and waited < 5, (path, waited)


def test_insecure_local_needs_no_signature(tmp_path, engine):
    with LiveServer(tmp_path, engine, ServerSettings(insecure_local=True)) as srv:
        client = rekognition(srv.url, None, None, signature_version=UNSIGNED)
        assert client.list_collections()["CollectionIds"] == []
        # but a web page in this machine's browser cannot use it: neither a cross-origin
        # "simple" POST nor a page whose name was rebound to 127.0.0.1
        page = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        refused = httpx.post(srv.url + "/v1/collections", json={"CollectionId": "x",
                                                                "Purpose": "p"}, headers=page)
        assert refused.status_code == 403
        assert refused.json()["__type"] == "AccessDeniedException"
        rebound = httpx.get(srv.url + "/v1/collections", headers={"Host": "evil.example:80"})
        assert rebound.status_code == 403
        same_origin = httpx.get(srv.url + "/v1/collections", headers={"Origin": srv.url})
        assert same_origin.status_code == 200
        assert client.list_collections()["CollectionIds"] == []  # nothing was created


def test_metrics_and_health(live, rek, images):
    rek.create_collection(CollectionId="metered")
    rek.index_faces(CollectionId="metered", Image={"Bytes": images["group"]})
    assert httpx.get(live.url + "/healthz").json()["status"] == "ok"
    text = httpx.get(live.url + "/metrics").text
    counted = [line for line in text.splitlines() if line.startswith("regard_faces_indexed_total")]
    assert counted and float(counted[0].split()[-1]) >= 2
    assert 'regard_requests_total{door="aws",operation="IndexFaces",outcome="OK"}' in text
    assert re.search(r"regard_request_seconds_bucket{door=\"aws\",.*operation=\"DetectFaces\"",
                     text)


def test_s3_object_images_from_an_s3_compatible_server(tmp_path, engine, images):
    """``REGARD_S3_ENDPOINT_URL``-style store: a real S3 protocol server (moto) on loopback."""
    from moto.server import ThreadedMotoServer

    from regard.object_store import S3ObjectStore

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="minio", aws_secret_access_key="minio123")
        s3.create_bucket(Bucket="archive")
        s3.put_object(Bucket="archive", Key="2026/eileen.jpg", Body=images["face"])
        store = S3ObjectStore(endpoint, access_key_id="minio", secret_access_key="minio123")
        with LiveServer(tmp_path, engine, object_store=store) as srv:
            key, secret = srv.server.keys.create()
            rek = rekognition(srv.url, key.access_key_id, secret)
            found = rek.detect_faces(Image={"S3Object": {"Bucket": "archive",
                                                         "Name": "2026/eileen.jpg"}})
            assert len(found["FaceDetails"]) == 1
            for bucket, name in [("archive", "nope.jpg"), ("no-bucket", "x.jpg")]:
                with pytest.raises(ClientError) as exc:
                    rek.detect_faces(Image={"S3Object": {"Bucket": bucket, "Name": name}})
                assert error_code(exc) == "InvalidS3ObjectException"
    finally:
        moto.stop()


def test_s3_objects_are_refused_clearly_without_an_object_store(tmp_path, engine, images):
    from regard.object_store import NoObjectStore

    with LiveServer(tmp_path, engine, object_store=NoObjectStore()) as srv:
        key, secret = srv.server.keys.create()
        with pytest.raises(ClientError) as exc:
            rekognition(srv.url, key.access_key_id, secret).detect_faces(
                Image={"S3Object": {"Bucket": "photos", "Name": "n.jpg"}})
        assert error_code(exc) == "InvalidS3ObjectException"
        assert "REGARD_S3_ROOT" in str(exc.value)


def test_human_review_travels_as_a_header_and_regards_own_operations_stay_off_this_door(
        live, rek, admin, images):
    """The service marks matches for human review (every door sees it); this door sends it as
    a header, since its body is AWS's. Regard's own operations (Erase, keys, the ledger) are
    not Rekognition operations and are unknown here."""
    rek.create_collection(CollectionId="reviewed", Tags={"regard:purpose": "tests",
                                                         "regard:human-review": "true"})
    rek.index_faces(CollectionId="reviewed", Image={"Bytes": images["face"]})
    found = rek.search_faces_by_image(CollectionId="reviewed", Image={"Bytes": images["face"]})
    assert found["ResponseMetadata"]["HTTPHeaders"]["x-regard-human-review-required"] == "true"
    assert "HumanReviewRequired" not in found and found["FaceMatches"]
    rek.delete_collection(CollectionId="reviewed")
    for target in ("RekognitionService.Erase", "RekognitionService.CreateAccessKey",
                   "RekognitionService.AuditExport"):
        reply = send(signed_post(live.url, target, b"{}", *admin))
        assert reply.status_code == 400 and reply.json()["__type"] == "UnknownOperationException"
