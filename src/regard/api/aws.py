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

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from regard.api.server import Server, outcome, timer
from regard.api.sigv4 import SignedRequest, verify
from regard.errors import (
    ImageTooLargeError,
    RegardError,
    RequestTimeoutError,
    SerializationError,
    UnknownOperationError,
)
from regard.spec import from_wire, service_model, to_wire

log = logging.getLogger("regard.api.aws")

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = service_model().metadata["targetPrefix"]  # "RekognitionService"


def mount(app: FastAPI, server: Server) -> None:
    """Register ``POST /`` (left out of the OpenAPI document: it is AWS's protocol, documented by
    AWS)."""

    async def rekognition(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        elapsed = timer()
        target = request.headers.get("x-amz-target", "")
        label = target.partition(".")[2]
        operation = label if label in server.service.operations else "Unknown"  # metrics only
        error: BaseException | None = None
        try:
            body = await read_body(request, server.max_body_bytes,
                                   server.settings.body_read_seconds)
            key = None
            if not server.settings.insecure_local:
                signed = SignedRequest(request.method, request.scope.get("raw_path", b"/")
                                       .decode("latin-1"),
                                       request.scope.get("query_string", b"").decode("latin-1"),
                                       [(k.decode("latin-1"), v.decode("latin-1"))
                                        for k, v in request.scope["headers"]], body)
                key = await server.blocking(verify, signed, server.keys)
            operation = _operation(target, server)
            try:
                decoded = json.loads(body) if body.strip() else {}
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise SerializationError("The request body is not valid JSON") from exc
            params = from_wire(operation, decoded)
            caller = server.caller(key, request.client.host if request.client else None,
                                   request.headers)
            result = await server.dispatch(operation, params, caller)
            return Response(to_wire(result), media_type=CONTENT_TYPE,
                            headers={"x-amzn-RequestId": request_id})
        except RegardError as exc:
            error = exc
            return error_response(exc, request_id)
        except Exception as exc:  # a bug: answer like AWS, keep the details in the log
            error = exc
            log.exception("%s failed (request %s)", operation, request_id)
            return error_response(RegardError("Internal server error"), request_id)
        finally:
            server.metrics.observe("aws", operation, outcome(error), elapsed())

    app.add_api_route("/", rekognition, methods=["POST"], include_in_schema=False)


def error_response(exc: RegardError, request_id: str) -> Response:
    return Response(json.dumps(exc.to_dict()).encode(), status_code=exc.http_status,
                    media_type=CONTENT_TYPE,
                    headers={"x-amzn-RequestId": request_id, "x-amzn-ErrorType": exc.code})


def _operation(target: str, server: Server) -> str:
    prefix, _, name = target.partition(".")
    if prefix != TARGET_PREFIX or name not in server.service.operations:
        raise UnknownOperationError(f"Unknown operation {target or '(no X-Amz-Target header)'}")
    return name


async def read_body(request: Request, limit: int, seconds: float) -> bytes:
    """The body, refusing (without reading it all) anything larger than ``limit`` and a body
    that has not fully arrived after ``seconds``."""
    try:
        return await asyncio.wait_for(_read_body(request, limit), seconds)
    except asyncio.TimeoutError:
        raise RequestTimeoutError(
            f"The request body did not arrive within {seconds:g} seconds") from None
    except ClientDisconnect:  # not a server fault: no traceback in the log
        raise RequestTimeoutError(
            "The client closed the connection before its request body arrived") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ImageTooLargeError(f"The request body exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ImageTooLargeError(f"The request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
