"""Accountability through the HTTP doors: the scope matrix through boto3 and REST, purposes and
consent from headers, policy refusals with Rekognition's error types, human review, erasure and
the audit endpoints."""

from __future__ import annotations

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from regard.governance.keys import SCOPES

from conftest import encode, face_crop
from live_server import LiveServer

# operation -> (boto3 call, REST request) for one representative operation per scope
SCOPE_OF = {
    "detect": "DetectFaces", "compare": "CompareFaces", "collections:read": "ListCollections",
    "collections:write": "CreateCollection", "faces:write": "IndexFaces",
    "search": "SearchFacesByImage", "audit:read": "AuditVerify",
}


@pytest.fixture(scope="module")
def images(astronaut, cameraman) -> dict[str, bytes]:
    return {"face": encode(face_crop(astronaut)), "astronaut": encode(astronaut),
            "cameraman": encode(cameraman)}


@pytest.fixture(scope="module")
def live(tmp_path_factory, engine):
    with LiveServer(tmp_path_factory.mktemp("gov"), engine, default_purpose=None) as srv:
        yield srv


@pytest.fixture(scope="module")
def setup(live, images):
    """A collection "c" with one face (eileen) and one "other"; admin credentials."""
    key, secret = live.server.keys.create("admin")
    rek = client(live, key.access_key_id, secret)
    for name in ("c", "other"):
        rek.create_collection(CollectionId=name, Tags={"regard:purpose": "tests"})
    rek.index_faces(CollectionId="c", Image={"Bytes": images["face"]}, ExternalImageId="eileen")
    return key.access_key_id, secret


def client(live: LiveServer, key: str, secret: str, headers: dict[str, str] | None = None):
    rek = boto3.client("rekognition", endpoint_url=live.url, region_name="us-east-1",
                       aws_access_key_id=key, aws_secret_access_key=secret,
                       config=Config(retries={"max_attempts": 1}))
    if headers:
        def add(request, **_):  # before signing, so the headers are signed too
            for name, value in headers.items():
                request.headers[name] = value
        rek.meta.events.register("before-sign.rekognition.*", add)
    return rek


def boto_call(rek, operation: str, images: dict[str, bytes]) -> None:
    face = {"Bytes": images["face"]}
    {
        "DetectFaces": lambda: rek.detect_faces(Image=face),
        "CompareFaces": lambda: rek.compare_faces(SourceImage=face, TargetImage=face),
        "ListCollections": lambda: rek.list_collections(),
        "CreateCollection": lambda: rek.create_collection(
            CollectionId=f"made-{id(rek)}", Tags={"regard:purpose": "tests"}),
        "IndexFaces": lambda: rek.index_faces(CollectionId="c", Image=face),
        "SearchFacesByImage": lambda: rek.search_faces_by_image(CollectionId="c", Image=face),
    }[operation]()


def rest_call(live: LiveServer, auth: dict[str, str], operation: str,
              images: dict[str, bytes]) -> httpx.Response:
    url, file = live.url + "/v1", {"image": ("f.jpg", images["face"], "image/jpeg")}
    return {
        "DetectFaces": lambda: httpx.post(f"{url}/detect", files=file, headers=auth),
        "CompareFaces": lambda: httpx.post(f"{url}/compare", headers=auth, files={
            "source": file["image"], "target": file["image"]}),
        "ListCollections": lambda: httpx.get(f"{url}/collections", headers=auth),
        "CreateCollection": lambda: httpx.post(f"{url}/collections", headers=auth, json={
            "CollectionId": f"rest-{auth['Authorization'][-6:]}", "Purpose": "tests"}),
        "IndexFaces": lambda: httpx.post(f"{url}/collections/c/faces", files=file,
                                         headers=auth),
        "SearchFacesByImage": lambda: httpx.post(f"{url}/collections/c/search", files=file,
                                                 headers=auth),
        "AuditVerify": lambda: httpx.get(f"{url}/audit/verify", headers=auth),
    }[operation]()


@pytest.mark.parametrize("scope", [s for s in SCOPES if s != "admin"])
def test_scope_matrix_through_boto3_and_rest(live, setup, images, scope):
    """A key with one scope may run the operations of that scope and no other, on both doors;
    every refusal is AccessDeniedException and is itself in the ledger."""
    key, secret = live.server.keys.create(f"only {scope}", scopes=[scope])
    rek = client(live, key.access_key_id, secret)
    auth = {"Authorization": f"Bearer {key.access_key_id}:{secret}"}
    for need, operation in SCOPE_OF.items():
        if operation != "AuditVerify":
            if need == scope:
                boto_call(rek, operation, images)
            else:
                with pytest.raises(ClientError) as exc:
                    boto_call(rek, operation, images)
                assert exc.value.response["Error"]["Code"] == "AccessDeniedException"
        reply = rest_call(live, auth, operation, images)
        if need == scope:
            assert reply.status_code == 200, (operation, reply.text)
        else:
            assert reply.status_code == 403, (operation, reply.text)
            assert reply.json()["__type"] == "AccessDeniedException"
    refusals = [e for e in live.server.service.gate.ledger.entries()
                if e.principal == key.access_key_id and "Error" in e.result]
    assert len(refusals) == 2 * (len(SCOPE_OF) - 1) - (scope != "audit:read")
    assert all(e.result["Error"] == "AccessDeniedException" for e in refusals)


def test_collection_allow_list(live, setup, images):
    key, secret = live.server.keys.create("c only", scopes=["search", "collections:read"],
                                          collections=["c"])
    rek = client(live, key.access_key_id, secret)
    assert rek.list_collections()["CollectionIds"] == ["c"]
    assert rek.search_faces_by_image(CollectionId="c", Image={"Bytes": images["face"]})
    with pytest.raises(ClientError) as exc:
        rek.search_faces_by_image(CollectionId="other", Image={"Bytes": images["face"]})
    assert exc.value.response["Error"]["Code"] == "AccessDeniedException"


def test_purpose_case_and_consent_headers_reach_the_ledger(live, setup, images):
    key, secret = live.server.keys.create("door", scopes=["search", "faces:write"],
                                          default_purpose="door access")
    rek = client(live, key.access_key_id, secret,
                 {"X-Regard-Case": "INC-5", "X-Regard-Consent": "form-77"})
    rek.search_faces_by_image(CollectionId="c", Image={"Bytes": images["face"]})
    rek.index_faces(CollectionId="c", Image={"Bytes": images["astronaut"]})
    mine = [e for e in live.server.service.gate.ledger.entries()
            if e.principal == key.access_key_id]
    assert [(e.operation, e.purpose, e.case_ref) for e in mine] == [
        ("SearchFacesByImage", "door access", "INC-5"), ("IndexFaces", "door access", "INC-5")]
    assert mine[0].client == "127.0.0.1" and mine[0].result["FaceIds"]
    reply = httpx.post(f"{live.url}/v1/collections/c/search",
                       files={"image": ("f.jpg", images["face"], "image/jpeg")},
                       headers={"X-Api-Key": f"{key.access_key_id}:{secret}",
                                "X-Regard-Purpose": "fraud check"})
    assert reply.status_code == 200
    last = list(live.server.service.gate.ledger.entries())[-1]
    assert (last.principal, last.purpose) == (key.access_key_id, "fraud check")


def test_policies_through_the_doors(live, setup, images):
    admin = client(live, *setup)
    auth = {"Authorization": f"Bearer {setup[0]}:{setup[1]}"}
    with pytest.raises(ClientError) as exc:  # no purpose and no server default
        admin.create_collection(CollectionId="nopurpose")
    assert exc.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "purpose" in exc.value.response["Error"]["Message"]
    reply = httpx.post(f"{live.url}/v1/collections", headers=auth, json={
        "CollectionId": "strict", "Purpose": "access control", "ThresholdFloor": 95,
        "HumanReview": True, "ConsentRequired": True, "RetentionDays": 30})
    assert reply.status_code == 200, reply.text
    policy = httpx.get(f"{live.url}/v1/collections/strict/policy", headers=auth).json()
    assert policy == {"Purpose": "access control", "LegalBasis": None, "RetentionDays": 30,
                      "ConsentRequired": True, "ThresholdFloor": 95.0, "MaxMatches": None,
                      "HumanReview": True, "MaxFpir": None, "LiveIdentification": False}
    tags = admin.list_tags_for_resource(
        ResourceArn=admin.describe_collection(CollectionId="strict")["CollectionARN"])["Tags"]
    assert tags["regard:threshold-floor"] == "95"
    with pytest.raises(ClientError) as exc:
        admin.index_faces(CollectionId="strict", Image={"Bytes": images["face"]})
    assert "consent" in exc.value.response["Error"]["Message"]
    client(live, *setup, {"X-Regard-Consent": "badge form 12"}).index_faces(
        CollectionId="strict", Image={"Bytes": images["face"]}, ExternalImageId="eileen")
    with pytest.raises(ClientError) as exc:
        admin.search_faces_by_image(CollectionId="strict", Image={"Bytes": images["face"]},
                                    FaceMatchThreshold=80)
    assert exc.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "threshold floor 95" in exc.value.response["Error"]["Message"]
    found = httpx.post(f"{live.url}/v1/collections/strict/search", headers=auth,
                       files={"image": ("f.jpg", images["face"], "image/jpeg")}).json()
    assert found["HumanReviewRequired"] is True and found["FaceMatches"]
    patched = httpx.patch(f"{live.url}/v1/collections/strict/policy", headers=auth,
                          json={"HumanReview": False, "ThresholdFloor": 99})
    assert patched.json()["ThresholdFloor"] == 99.0 and patched.json()["HumanReview"] is False


def test_erasure_and_audit_endpoints(live, setup, images):
    auth = {"Authorization": f"Bearer {setup[0]}:{setup[1]}"}
    admin = client(live, *setup)
    admin.create_collection(CollectionId="archive", Tags={"regard:purpose": "tests"})
    admin.index_faces(CollectionId="archive", Image={"Bytes": images["cameraman"]},
                      ExternalImageId="ansel")
    face = admin.index_faces(CollectionId="archive", Image={"Bytes": images["face"]},
                             ExternalImageId="eileen")["FaceRecords"][0]["Face"]["FaceId"]
    client(live, *setup, {"X-Regard-Purpose": "press inquiry", "X-Regard-Case": "P-3"}
           ).search_faces_by_image(CollectionId="archive", Image={"Bytes": images["astronaut"]})

    who = httpx.get(f"{live.url}/v1/audit/who-searched", headers=auth,
                    params={"face_id": face}).json()["Entries"]
    assert [(e["purpose"], e["case_ref"]) for e in who] == [("press inquiry", "P-3")]
    erased = httpx.post(f"{live.url}/v1/erasure", headers=auth,
                        json={"ExternalImageId": "eileen", "CollectionId": "archive"}).json()
    assert erased["Collections"][0]["DeletedFaces"] == [face]
    assert [f["ExternalImageId"] for f in admin.list_faces(CollectionId="archive")["Faces"]] \
        == ["ansel"]
    assert httpx.post(f"{live.url}/v1/erasure", headers=auth, json={}).status_code == 400
    who = httpx.get(f"{live.url}/v1/audit/who-searched", headers=auth,
                    params={"external_image_id": "eileen"}).json()["Entries"]
    assert any(e["case_ref"] == "P-3" for e in who)
    verify = httpx.get(f"{live.url}/v1/audit/verify", headers=auth).json()
    assert verify["ok"] is True and verify["entries"] == verify["head_seq"]
    page = httpx.get(f"{live.url}/v1/audit/entries", headers=auth, params={"limit": 3}).json()
    assert len(page["Entries"]) == 3 and page["NextAfter"] == 3
    nxt = httpx.get(f"{live.url}/v1/audit/entries", headers=auth,
                    params={"after": 3, "limit": 2}).json()["Entries"]
    assert [e["seq"] for e in nxt] == [4, 5]
    reads = [e.operation for e in live.server.service.gate.ledger.entries()][-3:]
    assert reads == ["AuditVerify", "AuditExport", "AuditExport"]
