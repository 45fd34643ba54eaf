"""Generated requests against the Rekognition door: bodies built from botocore's input shapes
(well-typed, with any values) and bodies of the wrong JSON types, properly signed. Bad input must
always get a Rekognition error (4xx with ``__type``), never a 5xx, a hang or a traceback."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import Shape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regard.spec import operation as spec_operation

from live_server import LiveServer

EXAMPLES = int(os.environ.get("REGARD_FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("REGARD_FUZZ_RANDOM") == "1"
JSON_ANY = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                        | st.text(max_size=20),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                        max_leaves=8)
NAMES = st.sampled_from(["c", "fuzz", "bad id!", "", "x" * 300])


def shaped(shape: Shape, depth: int = 0) -> st.SearchStrategy[Any]:
    """JSON values of ``shape``'s type (values unconstrained: lengths, ranges and patterns are
    for the server to check), sometimes of another type."""
    kind = shape.type_name
    wrong = JSON_ANY if depth < 3 else st.none()
    if kind == "structure":
        members = {name: shaped(m, depth + 1) for name, m in shape.members.items()}
        right = st.fixed_dictionaries({}, optional=members)
    elif kind == "list":
        right = st.lists(shaped(shape.member, depth + 1), max_size=3)
    elif kind == "map":
        right = st.dictionaries(st.text(max_size=10), shaped(shape.value, depth + 1), max_size=3)
    elif kind == "string":
        right = st.sampled_from(list(shape.enum)) if shape.enum else NAMES | st.text(max_size=30)
    elif kind in ("integer", "long"):
        right = st.integers(min_value=-2**70, max_value=2**70)
    elif kind in ("float", "double"):
        right = st.floats(allow_nan=False) | st.integers()
    elif kind == "boolean":
        right = st.booleans()
    elif kind == "blob":
        right = st.binary(max_size=64).map(lambda b: __import__("base64").b64encode(b).decode())
    else:
        right = JSON_ANY
    return st.one_of(right, right, right, wrong)


@pytest.fixture(scope="module")
def live(tmp_path_factory, engine):
    with LiveServer(tmp_path_factory.mktemp("fuzz-aws"), engine) as srv:
        srv.server.service.create_collection(CollectionId="c")
        yield srv


@pytest.mark.slow
def test_generated_requests_never_cause_a_server_error(live):
    key, secret = live.server.keys.create("fuzz")
    operations = live.server.service.operations
    bodies = st.sampled_from(operations).flatmap(
        lambda op: st.tuples(st.just(op), shaped(spec_operation(op).input_shape)))
    client = httpx.Client(timeout=60)
    outcomes: set[str] = set()

    @settings(max_examples=EXAMPLES * len(operations), deadline=None, database=None,
              derandomize=not RANDOM, suppress_health_check=list(HealthCheck))
    @given(case=bodies)
    def check(case: tuple[str, Any]) -> None:
        op, body = case
        raw = json.dumps(body).encode()
        req = AWSRequest(method="POST", url=live.url + "/", data=raw, headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"RekognitionService.{op}"})
        SigV4Auth(Credentials(key.access_key_id, secret), "rekognition", "us-east-1"
                  ).add_auth(req)
        reply = client.post(req.url, content=raw, headers=dict(req.headers.items()))
        assert reply.status_code < 500, (op, body, reply.text)
        outcomes.add("OK" if reply.status_code == 200 else reply.json()["__type"])

    check()
    # the generator reaches the operations and past the decoder, not only the type checks
    assert {"OK", "SerializationException", "ValidationException"} <= outcomes, outcomes
    assert live.server.service.gate.ledger.verify().ok
