"""The Rekognition door: AWS's JSON 1.1 protocol on ``POST /``.

``X-Amz-Target: RekognitionService.<Operation>`` names the operation; the body is the request as
JSON (blobs in base64). The request is authenticated (SigV4, ``regard.api.sigv4``), decoded and
type-checked against botocore's model (``regard.spec.from_wire``), run by ``RegardService.call``
(which validates constraints, then authorizes and audits), and answered with the response as JSON
or ``{"__type": ..., "message": ...}`` with the error's status. That is all there is to it: the
per-operation knowledge lives in the service model, as in botocore itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from regard.api.server import BodyBuffers, Server, outcome, timer
from regard.api.sigv4 import SignedRequest, parse_headers, verify_signature, with_key
from regard.errors import (
    ImageTooLargeError,
    RegardError,
    RequestTimeoutError,
    SerializationError,
    UnknownOperationError,
)
from regard.operations import registry
from regard.service import EFFECTIVE_THRESHOLD, EXPECTED_FPIR, HUMAN_REVIEW
from regard.spec import from_wire, service_model, to_wire

log = logging.getLogger("regard.api.aws")

CONTENT_TYPE = "application/x-amz-json-1.1"
CONTENT_TYPES = frozenset({CONTENT_TYPE, "application/x-amz-json-1.0"})
# Members Regard adds to search answers, sent as headers: AWS's body stays AWS's.
SEARCH_HEADERS = {EXPECTED_FPIR: "x-regard-expected-fpir",
                  EFFECTIVE_THRESHOLD: "x-regard-effective-threshold",
                  HUMAN_REVIEW: "x-regard-human-review-required"}
TARGET_PREFIX = service_model().metadata["targetPrefix"]  # "RekognitionService"


def mount(app: FastAPI, server: Server) -> None:
    """Register ``POST /`` (left out of the OpenAPI document: it is AWS's protocol, documented by
    AWS)."""

    async def rekognition(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        elapsed = timer()
        target = request.headers.get("x-amz-target", "")
        label = target.partition(".")[2]
        operation = label if _accepted(label) else "Unknown"  # metrics only
        error: BaseException | None = None
        reserved = [0]
        try:
            headers = [(k.decode("latin-1"), v.decode("latin-1"))
                       for k, v in request.scope["headers"]]
            credential = None
            if not server.settings.insecure_local:  # before the body: anonymous bodies unread
                parsed = parse_headers(headers)  # no I/O: an anonymous flood costs no thread
                credential = await server.blocking(with_key, parsed, server.keys)
            check_content_type(request.headers.get("content-type"))
            body = await read_body(request, server.max_body_bytes,
                                   server.settings.body_read_seconds, server.bodies, reserved)
            key = None
            if credential is not None:
                signed = SignedRequest(request.method, request.scope.get("raw_path", b"/")
                                       .decode("latin-1"),
                                       request.scope.get("query_string", b"").decode("latin-1"),
                                       headers, body)
                key = verify_signature(signed, credential)
            operation = _operation(target)
            decoded = parse_json(body)
            params = from_wire(operation, decoded)
            context = server.context(key, request.client.host if request.client else None,
                                     request.headers, request_id)
            result = await server.dispatch(operation, params, context)
            headers = {"x-amzn-RequestId": request_id}
            for member, header in SEARCH_HEADERS.items():
                if member in result:
                    value = result.pop(member)
                    headers[header] = ("true" if value is True else f"{value:.6g}")
            return Response(to_wire(result), media_type=CONTENT_TYPE, headers=headers)
        except RegardError as exc:
            error = exc
            return error_response(exc, request_id)
        except Exception as exc:  # a bug: answer like AWS, keep the details in the log
            error = exc
            log.exception("%s failed (request %s)", operation, request_id)
            return error_response(RegardError("Internal server error"), request_id)
        finally:
            server.bodies.release(reserved[0])
            server.metrics.observe("aws", operation, outcome(error), elapsed())
            error = None  # the error's traceback holds this frame (and the body): no cycle

    app.add_api_route("/", rekognition, methods=["POST"], include_in_schema=False)


def error_response(exc: RegardError, request_id: str) -> Response:
    return Response(json.dumps(exc.to_dict()).encode(), status_code=exc.http_status,
                    media_type=CONTENT_TYPE,
                    headers={"x-amzn-RequestId": request_id, "x-amzn-ErrorType": exc.code})


def check_content_type(value: str | None) -> None:
    """AWS's JSON 1.1 protocol: ``application/x-amz-json-1.1`` (1.0 accepted too), UTF-8."""
    media, _, params = (value or "").partition(";")
    if media.strip().lower() not in CONTENT_TYPES:
        raise SerializationError(
            f"Content-Type must be {CONTENT_TYPE} (AWS's JSON 1.1 protocol), not "
            f"{(value or 'missing')[:100]!r}")
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and charset.strip().strip('"').lower() not in (
                "utf-8", "utf8"):
            raise SerializationError("The request body must be UTF-8 JSON")


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. Strictly UTF-8: ``json.loads`` would also take UTF-16 and
    UTF-32 bytes, which no AWS SDK sends and the signature was not meant to cover."""
    if not body.strip():
        return {}
    try:
        decoded = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SerializationError("The request body is not valid UTF-8 JSON") from exc
    if not isinstance(decoded, dict):
        raise SerializationError("The request body must be a JSON object")
    return decoded


def _accepted(name: str) -> bool:
    """Operations this door runs: the registered ones botocore's model defines."""
    op = registry.get(name)
    return op is not None and op.rekognition


def _operation(target: str) -> str:
    prefix, _, name = target.partition(".")
    if prefix != TARGET_PREFIX or not _accepted(name):
        raise UnknownOperationError(f"Unknown operation {target or '(no X-Amz-Target header)'}")
    return name


async def read_body(request: Request, limit: int, seconds: float, buffers: BodyBuffers,
                    reserved: list[int]) -> bytes:
    """The body, refusing (without reading it all) anything larger than ``limit``, a body that
    has not fully arrived after ``seconds``, and one that would take ``buffers`` past its cap.
    ``reserved[0]`` says how much of ``buffers`` the caller must release when done with it."""
    try:
        return await asyncio.wait_for(_read_body(request, limit, buffers, reserved), seconds)
    except asyncio.TimeoutError:
        raise RequestTimeoutError(
            f"The request body did not arrive within {seconds:g} seconds") from None
    except ClientDisconnect:  # not a server fault: no traceback in the log
        raise RequestTimeoutError(
            "The client closed the connection before its request body arrived") from None


async def _read_body(request: Request, limit: int, buffers: BodyBuffers,
                     reserved: list[int]) -> bytes:
    declared = request.headers.get("content-length")
    expected = int(declared) if declared and declared.isdigit() else None
    if expected is not None and expected > limit:
        raise ImageTooLargeError(f"The request body exceeds the limit of {limit} bytes")
    if expected:
        buffers.reserve(expected)
        reserved[0] += expected
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ImageTooLargeError(f"The request body exceeds the limit of {limit} bytes")
        if size > reserved[0]:  # chunked, or more than declared
            buffers.reserve(size - reserved[0])
            reserved[0] = size
        chunks.append(chunk)
    return b"".join(chunks)
