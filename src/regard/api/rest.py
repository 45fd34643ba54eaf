"""The native REST API under ``/v1``: multipart image uploads in, Rekognition's JSON bodies out.

Each route maps its path, query, form and JSON parameters onto the request of one
``RegardService`` operation (Rekognition's member names) and answers with that operation's
response exactly as the Rekognition door would (``spec.to_wire``), so a client can switch doors
without relearning the data. The response schemas in ``/openapi.json`` come from the same
botocore model (``spec.output_schema``), so they cannot drift from what the service returns.

What every route has in common lives in one place, ``_route_class``: authenticate (before the body
is read, so an anonymous client cannot make the server buffer a large upload), read the body up to
``Server.max_body_bytes``, run the endpoint, turn any error -- the service's, FastAPI's own request
validation (422 elsewhere) or a bug -- into ``{"__type": ..., "message": ...}`` with the REST status
of ``STATUS_BY_CODE``, and record the request's metrics (door ``rest``). The endpoints themselves
only map parameters; the service validates them against the model, as it does for every door.

Authentication: ``Authorization: Bearer <AccessKeyId>:<SecretAccessKey>`` or ``X-Api-Key:
<AccessKeyId>:<SecretAccessKey>`` (none when the server runs with ``insecure_local``). The optional
``X-Regard-Purpose`` and ``X-Regard-Case`` headers go to the audit ledger with the request.

All successful answers are 200, ``POST /v1/collections`` included: the body is Rekognition's
``CreateCollection`` response, whose ``StatusCode`` member already says 200.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from botocore.model import Shape
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    Header,
    Path,
    Query,
    Request,
    Security,
    UploadFile,
)
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from regard.api.aws import read_body
from regard.api.server import Server, outcome, timer
from regard.errors import (
    ImageTooLargeError,
    MissingAuthenticationTokenError,
    RegardError,
    SerializationError,
    UnrecognizedClientError,
    ValidationError,
)
from regard.governance.policy import FACE_MODEL, CollectionPolicy, policy_tags
from regard.context import CallContext
from regard.operations import registry
from regard.service import EFFECTIVE_THRESHOLD, EXPECTED_FPIR, HUMAN_REVIEW
from regard.spec import operation as spec_operation
from regard.spec import output_schema, to_wire
from regard.streams.model import ROLE_ARN

log = logging.getLogger("regard.api.rest")

PREFIX = "/v1"
MEDIA_TYPE = "application/json"

# The REST status of each Rekognition error name; every other ``RegardError`` is a 400.
STATUS_BY_CODE: dict[str, int] = {
    "ResourceNotFoundException": 404,
    "ResourceAlreadyExistsException": 409,
    "ConflictException": 409,
    "ResourceInUseException": 409,
    "ImageTooLargeException": 413,
    "RequestTimeoutException": 408,
    "ThrottlingException": 429,
    "ProvisionedThroughputExceededException": 429,
    "MissingAuthenticationTokenException": 401,
    "UnrecognizedClientException": 401,
    "InvalidSignatureException": 401,
    "IncompleteSignatureException": 401,
    "AccessDeniedException": 403,
    "InternalServerError": 500,
}


# Statuses an error keeps whatever its code: 507 (``StorageFullError``, code
# ``InternalServerError``) tells clients not to retry, where a 500 would make them.
KEPT_STATUSES = frozenset({507})


def status_of(error: RegardError) -> int:
    if error.http_status in KEPT_STATUSES:
        return error.http_status
    return STATUS_BY_CODE.get(error.code, 400)


QualityFilter = Literal["NONE", "AUTO", "LOW", "MEDIUM", "HIGH"]


class ErrorBody(BaseModel):
    """Every error: Rekognition's error name and a message."""

    type: str = Field(alias="__type", description="Rekognition's error name, e.g. "
                      "`ResourceNotFoundException`")
    message: str


_ERROR_DESCRIPTIONS = {
    400: "Invalid request: `ValidationException` (parameters), `InvalidParameterException`, "
         "`InvalidImageFormatException`, `InvalidPaginationTokenException`, ...",
    401: "Missing (`MissingAuthenticationTokenException`) or invalid "
         "(`UnrecognizedClientException`) credentials",
    403: "`AccessDeniedException`",
    404: "`ResourceNotFoundException` (collection, user or face), or no such route",
    409: "`ResourceAlreadyExistsException`, `ConflictException`",
    408: "`RequestTimeoutException`: the request body did not arrive in time",
    413: "`ImageTooLargeException`: the image or the request body exceeds the limit",
    429: "`ThrottlingException` (the server is busy) or `ProvisionedThroughputExceededException` "
         "(the key's request rate is used up); retry with backoff",
    500: "`InternalServerError` (also while the catalog database is unavailable; retry with "
         "backoff)",
    507: "`InternalServerError`: the server's storage is full; not retried until an operator "
         "frees space",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in _ERROR_DESCRIPTIONS.items()
}


def _ok_response(operation: str, schema: dict[str, Any] | None = None
                 ) -> dict[int | str, dict[str, Any]]:
    description = f"`{operation}` result"
    if schema is None:
        description = f"Rekognition's `{operation}` response"
        schema = output_schema(operation)
        if operation in registry.search_operations():  # the members the service adds
            schema["properties"][HUMAN_REVIEW] = {
                "type": "boolean",
                "description": "Present (true) when the collection's policy says matches must "
                               "be reviewed by a person before anyone acts on them"}
            schema["properties"][EXPECTED_FPIR] = {
                "type": "number",
                "description": "The chance that a stranger's search matches somebody at the "
                               "threshold used, for the collection's current size: 1 - (1 - "
                               "FMR)^N, FMR being the worst-off measured group's per-pair "
                               "false-match rate (the Rekognition door sends it as the "
                               "x-regard-expected-fpir header)"}
            schema["properties"][EFFECTIVE_THRESHOLD] = {
                "type": "number",
                "description": "The threshold the search used: the one asked, or higher when "
                               "the collection's regard:max-fpir requires it"}
    return {200: {"description": description, "content": {MEDIA_TYPE: {"schema": schema}}}}


# -- parameters: typed here, constrained by the service model ------------------------------------
def documented(operation: str, member: str) -> dict[str, Any]:
    """A request member's constraints in botocore's model as JSON Schema keywords, for
    ``json_schema_extra``: the OpenAPI document shows them (and schemathesis generates from them),
    while the service, which validates every door's requests against the model, enforces them."""
    input_shape = spec_operation(operation).input_shape
    assert input_shape is not None, operation
    return _constraints(input_shape.members[member])


def _constraints(shape: Shape) -> dict[str, Any]:
    meta, kind = shape.metadata, shape.type_name
    bounds = {"string": ("minLength", "maxLength"), "list": ("minItems", "maxItems"),
              "map": ("minProperties", "maxProperties")}.get(kind, ("minimum", "maximum"))
    out = {name: meta[key] for key, name in zip(("min", "max"), bounds) if key in meta}
    if kind == "string" and "pattern" in meta and "\\p{" not in meta["pattern"]:
        pattern = meta["pattern"]  # botocore's patterns mean the whole string; JSON Schema's don't
        out["pattern"] = pattern if pattern.startswith("^") else f"^(?:{pattern})$"
    if kind == "list":
        out["items"] = {"type": "string", **_constraints(shape.member)}
    return out


def _field(operation: str, member: str, description: str, default: Any = ...) -> Any:
    return Field(default, title=member, description=description,
                 json_schema_extra=documented(operation, member))


def _query(operation: str, member: str, description: str) -> Any:
    return Query(description=description, json_schema_extra=documented(operation, member))


def _form(operation: str, member: str, description: str) -> Any:
    return Form(description=description, json_schema_extra=documented(operation, member))


class _Body(BaseModel):
    """A JSON request body: Rekognition's member names, nothing else."""

    model_config = ConfigDict(extra="forbid")

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


_TOKEN = "Idempotency token: a retry with the same token is not done twice"


class PolicyBody(_Body):
    """A collection's policy (kept in its ``regard:`` tags; see the README)."""

    Purpose: str | None = Field(None, min_length=1, max_length=256,
                                description="What the collection is for")
    LegalBasis: str | None = Field(None, min_length=1, max_length=256)
    RetentionDays: int | None = Field(None, ge=1, le=36500,
                                      description="Faces are deleted this long after indexing")
    ConsentRequired: bool | None = Field(None, description="IndexFaces needs X-Regard-Consent")
    ThresholdFloor: float | None = Field(None, ge=0, le=100,
                                         description="Searches below it are refused")
    MaxMatches: int | None = Field(None, ge=1, le=4096)
    HumanReview: bool | None = Field(None, description="Matches must be reviewed by a person")
    MaxFpir: float | None = Field(None, gt=0, le=1, description=(
        "Highest expected false-positive identification rate a search may run at: the "
        "effective threshold rises with the collection's size"))
    LiveIdentification: bool | None = Field(None, description=(
        "Stream processors may search this collection on live camera feeds (needs a "
        "LegalBasis)"))

    def tags(self) -> dict[str, str]:
        return policy_tags(self.Purpose, self.LegalBasis, self.RetentionDays,
                           self.ConsentRequired, self.ThresholdFloor, self.MaxMatches,
                           self.HumanReview, self.MaxFpir, self.LiveIdentification)


class CreateCollectionBody(PolicyBody):
    CollectionId: str = _field("CreateCollection", "CollectionId", "The new collection's id")
    FaceModelVersion: str | None = Field(
        None, pattern=r"^[0-9.]+$", max_length=32,
        description="The face model the collection is bound to (default: the default pack; "
                    "`regard models list` lists them)")
    Purpose: str = Field(..., min_length=1, max_length=256,  # type: ignore[assignment]
                         description="What the collection is for (required)")
    Tags: dict[str, str] | None = _field("CreateCollection", "Tags", "Your own tags", None)

    def params(self) -> dict[str, Any]:
        chosen = {FACE_MODEL: self.FaceModelVersion} if self.FaceModelVersion else {}
        return {"CollectionId": self.CollectionId,
                "Tags": {**(self.Tags or {}), **self.tags(), **chosen}}


class S3ObjectBody(_Body):
    Bucket: str = Field(..., min_length=3, max_length=255, pattern=r"^[0-9A-Za-z.\-_]*$")
    Name: str = Field(..., min_length=1, max_length=1024)
    Version: str | None = Field(None, min_length=1, max_length=1024)


class VideoBody(_Body):
    S3Object: S3ObjectBody = Field(..., description="The video in the object store "
                                                    "(REGARD_S3_ROOT or REGARD_S3_ENDPOINT_URL)")


class OutputBody(_Body):
    S3Object: S3ObjectBody = Field(..., description="Where the redacted video is written")


class NotificationBody(_Body):
    SNSTopicArn: str = Field(..., pattern=r"(^arn:aws:sns:.*:\w{12}:.+$)",
                             description="A topic the operator mapped to a webhook "
                                         "(REGARD_SNS_WEBHOOKS)")
    RoleArn: str = Field(..., pattern=r"arn:aws:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")


class _VideoJobBody(_Body):
    Video: VideoBody
    ClientRequestToken: str | None = Field(None, min_length=1, max_length=64,
                                           pattern=r"^[a-zA-Z0-9-_]+$", description=_TOKEN)
    JobTag: str | None = Field(None, min_length=1, max_length=1024,
                               pattern=r"^[a-zA-Z0-9_.\-:+=\/]+$")
    NotificationChannel: NotificationBody | None = None


class StartFaceDetectionBody(_VideoJobBody):
    FaceAttributes: Literal["DEFAULT", "ALL"] | None = None


class StartFaceSearchBody(_VideoJobBody):
    CollectionId: str = Field(..., min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9_.\-]+$")
    FaceMatchThreshold: float | None = Field(None, ge=0, le=100, description="Smallest similarity, 0-100 (default 80)")


class RedactionOptionsBody(_Body):
    Method: Literal["blur", "mosaic", "box"] | None = None
    Shape: Literal["ellipse", "box"] | None = None
    Scale: float | None = Field(None, ge=1.0, le=3.0, description="Mask size / face box size")
    Codec: str | None = Field(None, min_length=1, max_length=32, pattern=r"^[a-z0-9_\-]+$")
    Crf: int | None = Field(None, ge=0, le=51, description="Quality (lower is better)")


class StartFaceRedactionBody(_VideoJobBody):
    Output: OutputBody
    Options: RedactionOptionsBody | None = None
    KeepCollectionId: str | None = Field(None, min_length=1, max_length=255,
                                         pattern=r"^[a-zA-Z0-9_.\-]+$",
                                         description="Leave people who match it visible")
    OnlyCollectionId: str | None = Field(None, min_length=1, max_length=255,
                                         pattern=r"^[a-zA-Z0-9_.\-]+$",
                                         description="Redact only people who match it")
    FaceMatchThreshold: float | None = Field(None, ge=0, le=100, description="Smallest similarity, 0-100 (default 80)")


class ErasureBody(_Body):
    ExternalImageId: str | None = Field(None, min_length=1, max_length=255,
                                        description="The person, by the id their images got...")
    UserId: str | None = Field(None, min_length=1, max_length=128,
                               description="...or by their user (exactly one of the two)")
    CollectionId: str | None = Field(None, min_length=1, max_length=255,
                                     description="Only this collection (default: all you may "
                                                 "use)")


class DeleteFacesBody(_Body):
    FaceIds: list[str] = _field("DeleteFaces", "FaceIds", "The faces to delete")


class SearchFacesBody(_Body):
    MaxFaces: int | None = _field("SearchFaces", "MaxFaces", "At most this many matches "
                                  "(default 100)", None)
    FaceMatchThreshold: float | None = _field("SearchFaces", "FaceMatchThreshold",
                                              "Smallest similarity (default 80)", None)


class CreateUserBody(_Body):
    UserId: str = _field("CreateUser", "UserId", "The new user's id")
    ClientRequestToken: str | None = _field("CreateUser", "ClientRequestToken", _TOKEN, None)


class AssociateFacesBody(_Body):
    FaceIds: list[str] = _field("AssociateFaces", "FaceIds", "Faces to associate with the user")
    UserMatchThreshold: float | None = _field(
        "AssociateFaces", "UserMatchThreshold",
        "Smallest similarity to the user's faces for a face to be associated (default 75)", None)
    ClientRequestToken: str | None = _field("AssociateFaces", "ClientRequestToken", _TOKEN, None)


class DisassociateFacesBody(_Body):
    FaceIds: list[str] = _field("DisassociateFaces", "FaceIds", "Faces to disassociate")
    ClientRequestToken: str | None = _field("DisassociateFaces", "ClientRequestToken", _TOKEN,
                                            None)


class SearchUsersBody(_Body):
    UserId: str | None = _field("SearchUsers", "UserId", "Search with this user's faces...", None)
    FaceId: str | None = _field("SearchUsers", "FaceId",
                                "...or with this face (exactly one of the two)", None)
    UserMatchThreshold: float | None = _field("SearchUsers", "UserMatchThreshold",
                                              "Smallest similarity (default 80)", None)
    MaxUsers: int | None = _field("SearchUsers", "MaxUsers", "At most this many users "
                                  "(default 100)", None)


# -- authentication -----------------------------------------------------------------------------
_BEARER = HTTPBearer(auto_error=False, scheme_name="AccessKeyBearer",
                     description="`Authorization: Bearer <AccessKeyId>:<SecretAccessKey>`")
_API_KEY = APIKeyHeader(name="X-Api-Key", auto_error=False, scheme_name="AccessKeyHeader",
                        description="`X-Api-Key: <AccessKeyId>:<SecretAccessKey>`")
_CREDENTIALS_HELP = ("send 'Authorization: Bearer <AccessKeyId>:<SecretAccessKey>' or "
                     "'X-Api-Key: <AccessKeyId>:<SecretAccessKey>'")


def credentials(headers: Any) -> tuple[str, str]:
    """The (access key id, secret) a request presents; ``headers`` is case-insensitive."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise UnrecognizedClientError(f"Unsupported Authorization scheme: {_CREDENTIALS_HELP}")
    else:
        value = headers.get("x-api-key")
        if value is None:
            raise MissingAuthenticationTokenError(f"Missing credentials: {_CREDENTIALS_HELP}")
    key_id, _, secret = value.strip().partition(":")
    if not key_id or not secret:
        raise UnrecognizedClientError(f"Malformed credentials: {_CREDENTIALS_HELP}")
    return key_id, secret


async def _context(server: Server, request: Request, request_id: str) -> CallContext:
    key = None
    if not server.settings.insecure_local:
        key = await server.blocking(server.keys.authenticate, *credentials(request.headers))
    return server.context(key, request.client.host if request.client else None,
                          request.headers, request_id)


def _documented_headers(
    _purpose: Annotated[str | None, Header(
        alias="X-Regard-Purpose",
        description="Why this request is made (recorded in the audit ledger; defaults to the "
                    "access key's default purpose)")] = None,
    _case: Annotated[str | None, Header(
        alias="X-Regard-Case", description="Case or ticket reference for the audit ledger")] = None,
    _consent: Annotated[str | None, Header(
        alias="X-Regard-Consent",
        description="Consent reference for IndexFaces (stored with the faces; required by "
                    "collections whose policy says so)")] = None,
) -> None:
    """Puts the audit headers in the OpenAPI document; ``_context`` reads them with the
    credentials."""


# -- the shared request handling ----------------------------------------------------------------
def error_response(error: RegardError, request_id: str) -> Response:
    status = status_of(error)
    headers = {"X-Request-Id": request_id}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    elif status == 429:
        headers["Retry-After"] = "1"
    return Response(json.dumps(error.to_dict()).encode(), status_code=status,
                    media_type=MEDIA_TYPE, headers=headers)


def _as_regard_error(exc: Exception) -> RegardError | None:
    """The API error for an exception raised while handling a request; None for a bug."""
    if isinstance(exc, RegardError):
        return exc
    if isinstance(exc, RequestValidationError):
        return ValidationError("; ".join(_describe(e) for e in exc.errors()))
    if isinstance(exc, StarletteHTTPException):  # FastAPI could not parse the body
        if exc.status_code == 413:
            return ImageTooLargeError(str(exc.detail))
        return SerializationError(str(exc.detail))
    return None


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid"))


def _names(dependant: Any, kind: str) -> frozenset[str]:
    """The names (aliases) of a route's parameters of one kind, its dependencies' included."""
    names = {param.alias for param in getattr(dependant, kind)}
    for sub in dependant.dependencies:
        names |= _names(sub, kind)
    return frozenset(names)


async def refuse_unknown_fields(request: Request, query: frozenset[str],
                                form: frozenset[str]) -> None:
    """A misspelt parameter (``FaceMatchThreshhold``) must not fall back to its default in
    silence: FastAPI ignores query and form fields it does not declare, so refuse them here."""
    unknown = sorted(set(request.query_params.keys()) - query)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        # Parsed once: FastAPI reuses the parsed form (``Request.form`` caches it).
        try:
            fields = await request.form()
        except MultiPartException as exc:
            raise SerializationError(f"The form could not be parsed: {exc.message}") from exc
        unknown += sorted(set(fields.keys()) - form)
    if unknown:
        raise ValidationError(
            f"Unknown parameter(s): {', '.join(unknown[:10])[:300]}. "
            f"Accepted: {', '.join(sorted(query | form)) or 'none'}")


def _route_class(server: Server) -> type[APIRoute]:
    """The route class of every ``/v1`` route (see the module docstring); a route's
    ``operation_id`` is the service operation it runs."""

    class RestRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            endpoint = super().get_route_handler()
            operation = self.operation_id or self.name
            accepted_query = _names(self.dependant, "query_params")
            accepted_form = _names(self.dependant, "body_params")

            async def handle(request: Request) -> Response:
                request_id = str(uuid.uuid4())
                elapsed = timer()
                error: RegardError | None = None
                reserved = [0]
                try:
                    request.state.operation = operation
                    request.state.context = await _context(server, request, request_id)
                    # FastAPI's own pattern for custom request handling: the endpoint reads
                    # this instead of the (unbounded) stream.
                    request._body = await read_body(request, server.max_body_bytes,
                                                    server.settings.body_read_seconds,
                                                    server.bodies, reserved)
                    await refuse_unknown_fields(request, accepted_query, accepted_form)
                    response = await endpoint(request)
                    response.headers["X-Request-Id"] = request_id
                    return response
                except Exception as exc:
                    error = _as_regard_error(exc)
                    if error is None:  # a bug: a plain 500 for the client, the details in the log
                        log.exception("%s failed (request %s)", operation, request_id)
                        error = RegardError("Internal server error")
                    return error_response(error, request_id)
                finally:
                    server.bodies.release(reserved[0])
                    server.metrics.observe("rest", operation, outcome(error), elapsed())
                    error = None  # its traceback holds this frame (and the body): no cycle

            return handle

    return RestRoute


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods under ``/v1`` answer with the API's error body too."""
    assert isinstance(exc, StarletteHTTPException)
    path = request.url.path
    if path != PREFIX and not path.startswith(PREFIX + "/"):
        return await http_exception_handler(request, exc)
    code = "UnknownOperationException" if exc.status_code in (404, 405) else "ValidationException"
    return Response(json.dumps({"__type": code,
                                "message": f"{exc.detail}: {request.method} {path}"}).encode(),
                    status_code=exc.status_code, media_type=MEDIA_TYPE, headers=exc.headers)


# -- the routes ---------------------------------------------------------------------------------
CollectionId = Annotated[str, Path(description="The collection's id", json_schema_extra=documented(
    "DescribeCollection", "CollectionId"))]
UserId = Annotated[str, Path(description="The user's id", json_schema_extra=documented(
    "DeleteUser", "UserId"))]
FaceId = Annotated[str, Path(description="The face's id", json_schema_extra=documented(
    "SearchFaces", "FaceId"))]
ImageFile = Annotated[UploadFile, File(description="JPEG, PNG or WebP, at most 5 MiB "
                                                   "(REGARD_MAX_IMAGE_BYTES)")]
NextToken = Annotated[str | None, Query(description="`NextToken` of the previous page",
                                        json_schema_extra=documented("ListFaces", "NextToken"))]
QualityFilterForm = Annotated[QualityFilter | None, Form(
    description="Faces below this quality are not used (default AUTO for indexing, NONE for "
                "searching)")]
JobId = Annotated[str, Path(description="The JobId the Start request returned",
                            pattern=r"^[a-zA-Z0-9-_]+$", max_length=64)]
MaxResults = Annotated[int | None, Query(ge=1, description="Page size (default and at most "
                                                           "1000)")]
_MAX_FACES = "At most this many matches (default 100)"
_MAX_USERS = "At most this many users (default 100)"
_THRESHOLD = "Smallest similarity, 0-100 (default 80)"


def mount(app: FastAPI, server: Server) -> None:
    """Register the ``/v1`` routes and the ``/v1`` error body for unknown paths and methods."""
    # Starlette spools an uploaded part larger than 1 MiB to a temporary file: a face photo
    # would then be written to disk, where deleting it leaves its bytes in free blocks. Keep
    # every part Regard accepts in memory (the request body is capped at ``max_body_bytes``).
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, server.max_body_bytes)
    dependencies = [Depends(_documented_headers)]
    if not server.settings.insecure_local:
        dependencies += [Security(_BEARER), Security(_API_KEY)]
    router = APIRouter(prefix=PREFIX, route_class=_route_class(server),
                       dependencies=dependencies, responses=ERROR_RESPONSES)

    def route(method: str, path: str, operation: str, tag: str, summary: str,
              schema: dict[str, Any] | None = None
              ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return router.api_route(path, methods=[method], operation_id=operation, tags=[tag],
                                summary=summary, response_class=Response,
                                responses=_ok_response(operation, schema))

    async def call(request: Request, **params: Any) -> Response:
        """Run the route's operation with the given parameters (those that are not None)."""
        given = {name: value for name, value in params.items() if value is not None}
        operation = request.state.operation
        result = await server.dispatch(operation, given, request.state.context)
        op = registry.get(operation)
        if op is not None and not op.rekognition:  # Regard's own: plain JSON, times as text
            return Response(json.dumps(result, default=str).encode(), media_type=MEDIA_TYPE)
        return Response(to_wire(result), media_type=MEDIA_TYPE)

    async def read_image(upload: UploadFile) -> dict[str, bytes]:
        limit = server.limits.max_bytes
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise ImageTooLargeError(
                f"{upload.filename or 'The image'} exceeds the limit of {limit} bytes")
        return {"Bytes": data}

    # -- faces in images ------------------------------------------------------------------------
    @route("POST", "/detect", "DetectFaces", "faces", "Detect faces in an image")
    async def detect_faces(
        request: Request, image: ImageFile,
        attributes: Annotated[Literal["DEFAULT", "ALL"] | None, Form(
            description="Regard returns the same members either way")] = None,
    ) -> Response:
        return await call(request, Image=await read_image(image),
                          Attributes=[attributes] if attributes else None)

    @route("POST", "/compare", "CompareFaces", "faces",
           "Compare the largest face of one image with the faces of another")
    async def compare_faces(
        request: Request, source: ImageFile, target: ImageFile,
        similarity_threshold: Annotated[float | None, _form(
            "CompareFaces", "SimilarityThreshold", _THRESHOLD)] = None,
        quality_filter: QualityFilterForm = None,
    ) -> Response:
        return await call(request, SourceImage=await read_image(source),
                          TargetImage=await read_image(target),
                          SimilarityThreshold=similarity_threshold, QualityFilter=quality_filter)

    # -- collections ----------------------------------------------------------------------------
    @route("GET", "/collections", "ListCollections", "collections", "List collections")
    async def list_collections(
        request: Request, next_token: NextToken = None,
        max_results: Annotated[int | None, _query("ListCollections", "MaxResults",
                                                  "Page size (default 1000)")] = None,
    ) -> Response:
        return await call(request, MaxResults=max_results, NextToken=next_token)

    @route("POST", "/collections", "CreateCollection", "collections", "Create a collection")
    async def create_collection(request: Request, body: CreateCollectionBody) -> Response:
        return await call(request, **body.params())

    @route("GET", "/collections/{collection_id}", "DescribeCollection", "collections",
           "Describe a collection")
    async def describe_collection(request: Request, collection_id: CollectionId) -> Response:
        return await call(request, CollectionId=collection_id)

    @route("DELETE", "/collections/{collection_id}", "DeleteCollection", "collections",
           "Delete a collection with its faces and users")
    async def delete_collection(request: Request, collection_id: CollectionId) -> Response:
        return await call(request, CollectionId=collection_id)

    # -- faces in collections -------------------------------------------------------------------
    @route("POST", "/collections/{collection_id}/faces", "IndexFaces", "faces",
           "Detect faces in an image and add them to a collection")
    async def index_faces(
        request: Request, collection_id: CollectionId, image: ImageFile,
        external_image_id: Annotated[str | None, _form(
            "IndexFaces", "ExternalImageId", "Your id for the image")] = None,
        max_faces: Annotated[int | None, _form(
            "IndexFaces", "MaxFaces", "Index at most this many faces, largest first")] = None,
        quality_filter: QualityFilterForm = None,
    ) -> Response:
        return await call(request, CollectionId=collection_id, Image=await read_image(image),
                          ExternalImageId=external_image_id, MaxFaces=max_faces,
                          QualityFilter=quality_filter)

    @route("GET", "/collections/{collection_id}/faces", "ListFaces", "faces",
           "List the faces of a collection")
    async def list_faces(
        request: Request, collection_id: CollectionId, next_token: NextToken = None,
        max_results: Annotated[int | None, _query("ListFaces", "MaxResults",
                                                  "Page size (default 1000)")] = None,
        user_id: Annotated[str | None, _query("ListFaces", "UserId",
                                              "Only this user's faces")] = None,
        face_ids: Annotated[list[str] | None, _query(
            "ListFaces", "FaceIds", "Only these faces (repeat the parameter)")] = None,
    ) -> Response:
        return await call(request, CollectionId=collection_id, MaxResults=max_results,
                          NextToken=next_token, UserId=user_id, FaceIds=face_ids)

    @route("DELETE", "/collections/{collection_id}/faces", "DeleteFaces", "faces",
           "Delete faces from a collection")
    async def delete_faces(request: Request, collection_id: CollectionId,
                           body: DeleteFacesBody) -> Response:
        return await call(request, CollectionId=collection_id, **body.params())

    @route("POST", "/collections/{collection_id}/faces/{face_id}/search", "SearchFaces",
           "faces", "Search a collection for faces like one of its faces")
    async def search_faces(request: Request, collection_id: CollectionId, face_id: FaceId,
                           body: SearchFacesBody | None = None) -> Response:
        return await call(request, CollectionId=collection_id, FaceId=face_id,
                          **(body.params() if body else {}))

    @route("POST", "/collections/{collection_id}/search", "SearchFacesByImage", "faces",
           "Search a collection for faces like the largest face of an image")
    async def search_faces_by_image(
        request: Request, collection_id: CollectionId,
        image: ImageFile,
        max_faces: Annotated[int | None, _form(
            "SearchFacesByImage", "MaxFaces", _MAX_FACES)] = None,
        face_match_threshold: Annotated[float | None, _form(
            "SearchFacesByImage", "FaceMatchThreshold", _THRESHOLD)] = None,
        quality_filter: QualityFilterForm = None,
    ) -> Response:
        return await call(request, CollectionId=collection_id, Image=await read_image(image),
                          MaxFaces=max_faces, FaceMatchThreshold=face_match_threshold,
                          QualityFilter=quality_filter)

    # -- users ----------------------------------------------------------------------------------
    @route("POST", "/collections/{collection_id}/users", "CreateUser", "users", "Create a user")
    async def create_user(request: Request, collection_id: CollectionId,
                          body: CreateUserBody) -> Response:
        return await call(request, CollectionId=collection_id, **body.params())

    @route("GET", "/collections/{collection_id}/users", "ListUsers", "users",
           "List the users of a collection")
    async def list_users(
        request: Request, collection_id: CollectionId, next_token: NextToken = None,
        max_results: Annotated[int | None, _query("ListUsers", "MaxResults",
                                                  "Page size (default 500)")] = None,
    ) -> Response:
        return await call(request, CollectionId=collection_id, MaxResults=max_results,
                          NextToken=next_token)

    @route("DELETE", "/collections/{collection_id}/users/{user_id}", "DeleteUser", "users",
           "Delete a user (its faces stay in the collection)")
    async def delete_user(request: Request, collection_id: CollectionId,
                          user_id: UserId) -> Response:
        return await call(request, CollectionId=collection_id, UserId=user_id)

    @route("POST", "/collections/{collection_id}/users/{user_id}/faces", "AssociateFaces",
           "users", "Associate faces with a user")
    async def associate_faces(request: Request, collection_id: CollectionId, user_id: UserId,
                              body: AssociateFacesBody) -> Response:
        return await call(request, CollectionId=collection_id, UserId=user_id, **body.params())

    @route("DELETE", "/collections/{collection_id}/users/{user_id}/faces",
           "DisassociateFaces", "users", "Disassociate faces from a user")
    async def disassociate_faces(request: Request, collection_id: CollectionId,
                                 user_id: UserId, body: DisassociateFacesBody) -> Response:
        return await call(request, CollectionId=collection_id, UserId=user_id, **body.params())

    @route("POST", "/collections/{collection_id}/users/search", "SearchUsers", "users",
           "Search a collection for users like a user or a face")
    async def search_users(request: Request, collection_id: CollectionId,
                           body: SearchUsersBody) -> Response:
        return await call(request, CollectionId=collection_id, **body.params())

    @route("POST", "/collections/{collection_id}/users/search-by-image", "SearchUsersByImage",
           "users", "Search a collection for users like the largest face of an image")
    async def search_users_by_image(
        request: Request, collection_id: CollectionId,
        image: ImageFile,
        max_users: Annotated[int | None, _form(
            "SearchUsersByImage", "MaxUsers", _MAX_USERS)] = None,
        user_match_threshold: Annotated[float | None, _form(
            "SearchUsersByImage", "UserMatchThreshold", _THRESHOLD)] = None,
        quality_filter: QualityFilterForm = None,
    ) -> Response:
        return await call(request, CollectionId=collection_id, Image=await read_image(image),
                          MaxUsers=max_users, UserMatchThreshold=user_match_threshold,
                          QualityFilter=quality_filter)

    # -- accountability ------------------------------------------------------------------------
    @route("GET", "/collections/{collection_id}/policy", "GetCollectionPolicy", "governance",
           "A collection's policy", POLICY_SCHEMA)
    async def get_policy(request: Request, collection_id: CollectionId) -> Response:
        tags = await server.dispatch("ListTagsForResource",
                                     {"ResourceArn": server.service.collection_arn(collection_id)},
                                     request.state.context)
        return Response(json.dumps(CollectionPolicy.from_tags(tags["Tags"]).to_dict()).encode(),
                        media_type=MEDIA_TYPE)

    @route("PATCH", "/collections/{collection_id}/policy", "UpdateCollectionPolicy",
           "governance", "Change a collection's policy (the members given)", POLICY_SCHEMA)
    async def update_policy(request: Request, collection_id: CollectionId,
                            body: PolicyBody) -> Response:
        arn = server.service.collection_arn(collection_id)
        if body.tags():
            await server.dispatch("TagResource", {"ResourceArn": arn, "Tags": body.tags()},
                                  request.state.context)
        tags = await server.dispatch("ListTagsForResource", {"ResourceArn": arn},
                                     request.state.context)
        return Response(json.dumps(CollectionPolicy.from_tags(tags["Tags"]).to_dict()).encode(),
                        media_type=MEDIA_TYPE)

    @route("POST", "/erasure", "Erase", "governance",
           "Erase a person: every face, embedding and user of theirs", ERASURE_SCHEMA)
    async def erase(request: Request, body: ErasureBody) -> Response:
        return await call(request, **body.params())

    # -- stored video and redaction ---------------------------------------------------------------
    @route("POST", "/video/face-detection", "StartFaceDetection", "video",
           "Start detecting faces in a stored video")
    async def start_face_detection(request: Request, body: StartFaceDetectionBody) -> Response:
        return await call(request, **body.params())

    @route("GET", "/video/face-detection/{job_id}", "GetFaceDetection", "video",
           "A face detection job's status and results")
    async def get_face_detection(request: Request, job_id: JobId,
                                 max_results: MaxResults = None,
                                 next_token: NextToken = None) -> Response:
        return await call(request, JobId=job_id, MaxResults=max_results, NextToken=next_token)

    @route("POST", "/video/face-search", "StartFaceSearch", "video",
           "Start searching a collection for the people in a stored video")
    async def start_face_search(request: Request, body: StartFaceSearchBody) -> Response:
        return await call(request, **body.params())

    @route("GET", "/video/face-search/{job_id}", "GetFaceSearch", "video",
           "A face search job's status and results: every tracked person, matched or not")
    async def get_face_search(
        request: Request, job_id: JobId, max_results: MaxResults = None,
        next_token: NextToken = None,
        sort_by: Annotated[Literal["INDEX", "TIMESTAMP"] | None, Query()] = None,
    ) -> Response:
        return await call(request, JobId=job_id, MaxResults=max_results, NextToken=next_token,
                          SortBy=sort_by)

    @route("POST", "/video/redaction", "StartFaceRedaction", "video",
           "Start redacting every face of a stored video into another object",
           STARTED_SCHEMA)
    async def start_face_redaction(request: Request, body: StartFaceRedactionBody) -> Response:
        return await call(request, **body.params())

    @route("GET", "/video/redaction/{job_id}", "GetFaceRedaction", "video",
           "A redaction job's status and report", REDACTION_SCHEMA)
    async def get_face_redaction(request: Request, job_id: JobId) -> Response:
        return await call(request, JobId=job_id)

    @router.post("/redact", operation_id="RedactFaces", tags=["video"],
                 summary="Redact every face of an image (the image comes back, same format)",
                 response_class=Response, responses={200: {
                     "description": "The redacted image; X-Regard-Faces-Redacted says how many "
                                    "faces were masked",
                     "content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}})
    async def redact_faces(
        request: Request, image: ImageFile,
        method: Annotated[Literal["blur", "mosaic", "box"] | None, Form()] = None,
        shape: Annotated[Literal["ellipse", "box"] | None, Form()] = None,
        scale: Annotated[float | None, Form(ge=1.0, le=3.0)] = None,
    ) -> Response:
        options = {k: v for k, v in (("Method", method), ("Shape", shape), ("Scale", scale))
                   if v is not None}
        result = await server.dispatch("RedactFaces", {"Image": await read_image(image),
                                                       "Options": options},
                                       request.state.context)
        return Response(result["Image"], media_type=result["ContentType"],
                        headers={"X-Regard-Faces-Redacted": str(result["FaceCount"])})

    @route("GET", "/audit/entries", "AuditExport", "governance",
           "Audit ledger entries, in order (hashes included)", ENTRIES_SCHEMA)
    async def audit_entries(
        request: Request,
        since: Annotated[datetime | None, Query(description="ISO time, inclusive")] = None,
        until: Annotated[datetime | None, Query(description="ISO time, exclusive")] = None,
        after: Annotated[int, Query(ge=0, le=2**62, description="Entries after this seq "
                                    "(NextAfter of the previous page)")] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    ) -> Response:
        return await call(request, Since=_aware(since), Until=_aware(until), After=after,
                          Limit=limit)

    @route("GET", "/audit/verify", "AuditVerify", "governance",
           "Check the ledger's hash chain and signed head", VERIFY_SCHEMA)
    async def audit_verify(request: Request) -> Response:
        return await call(request)

    @route("GET", "/audit/who-searched", "WhoSearched", "governance",
           "Who searched for this person, when and why", ENTRIES_SCHEMA)
    async def who_searched(
        request: Request,
        face_id: Annotated[list[str] | None, Query(description="FaceIds (repeat)")] = None,
        external_image_id: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
        user_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    ) -> Response:
        return await call(request, FaceIds=face_id or [], ExternalImageId=external_image_id,
                          UserId=user_id)

    _stream_routes(router, route, call, server)
    app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    _document_no_422(app)


class StreamSourceBody(_Body):
    Name: str = Field(..., min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.\-]+$")
    Url: str = Field(..., min_length=1, max_length=2048,
                     description="rtsp://, http(s)://, a file path, ... (a password in it is "
                                 "never shown)")


class StreamSinkBody(_Body):
    Name: str = Field(..., min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.\-]+$")
    Kind: Literal["webhook", "jsonl", "sse", "mqtt"]
    Target: str | None = Field(None, max_length=2048, description=(
        "webhook: its URL; jsonl: a file path; mqtt: mqtt://HOST[:PORT]/TOPIC; sse: none"))


class StreamProcessorBody(_Body):
    Name: str = Field(..., min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.\-]+$")
    Source: str = Field(..., description="The registered source's name")
    Sink: str | None = Field(None, description="The registered sink's name")
    S3Bucket: str | None = Field(None, min_length=3, max_length=255)
    S3KeyPrefix: str | None = Field(None, max_length=1024)
    CollectionId: str = Field(..., min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9_.\-]+$")
    FaceMatchThreshold: float | None = Field(None, ge=0, le=100, description=(
        "Default 80; lower values are raised to 80 (and to the collection's floor)"))
    Tags: dict[str, str] | None = None


class StartStreamBody(_Body):
    MaxDurationInSeconds: int | None = Field(None, ge=1, le=2 * 24 * 3600)


ProcessorName = Annotated[str, Path(description="The stream processor's name",
                                    pattern=r"^[a-zA-Z0-9_.\-]+$", max_length=128)]
RegisteredName = Annotated[str, Path(pattern=r"^[a-zA-Z0-9_.\-]+$", max_length=128)]


def _stream_routes(router: APIRouter, route: Callable[..., Any], call: Callable[..., Any],
                   server: Server) -> None:
    """``/v1/streams``: the cameras and sinks an operator registers, the stream processors
    (Rekognition's operations, by name), and a Server-Sent Events sink's live records."""

    @route("POST", "/streams/sources", "CreateStreamSource", "streams",
           "Register a camera or stream as a source", {"type": "object"})
    async def create_source(request: Request, body: StreamSourceBody) -> Response:
        return await call(request, **body.params())

    @route("GET", "/streams/sources", "ListStreamSources", "streams", "Registered sources",
           {"type": "object"})
    async def list_sources(request: Request) -> Response:
        return await call(request)

    @route("DELETE", "/streams/sources/{name}", "DeleteStreamSource", "streams",
           "Remove a source no processor uses", {"type": "object"})
    async def delete_source(request: Request, name: RegisteredName) -> Response:
        return await call(request, Name=name)

    @route("POST", "/streams/sinks", "CreateStreamSink", "streams",
           "Register where records go", {"type": "object"})
    async def create_sink(request: Request, body: StreamSinkBody) -> Response:
        return await call(request, **body.params())

    @route("GET", "/streams/sinks", "ListStreamSinks", "streams", "Registered sinks",
           {"type": "object"})
    async def list_sinks(request: Request) -> Response:
        return await call(request)

    @route("DELETE", "/streams/sinks/{name}", "DeleteStreamSink", "streams",
           "Remove a sink no processor uses", {"type": "object"})
    async def delete_sink(request: Request, name: RegisteredName) -> Response:
        return await call(request, Name=name)

    @router.get("/streams/sinks/{name}/events", operation_id="StreamSinkEvents",
                tags=["streams"], response_class=Response,
                summary="A Server-Sent Events sink's records, live (text/event-stream)",
                responses={200: {"content": {"text/event-stream": {}}}})
    async def sink_events(request: Request, name: RegisteredName) -> Response:
        from fastapi.responses import StreamingResponse

        from regard.streams.sinks import sse_events

        sinks = await server.dispatch("ListStreamSinks", {}, request.state.context)
        if not any(s["Name"] == name and s["Kind"] == "sse" for s in sinks["Sinks"]):
            from regard.errors import ResourceNotFoundError

            raise ResourceNotFoundError(f"No Server-Sent Events sink named {name}")
        return StreamingResponse(
            sse_events(server.streams.hub, name,
                       last_event_id=request.headers.get("last-event-id")),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @route("POST", "/streams/processors", "CreateStreamProcessor", "streams",
           "Create a stream processor (face search on a registered source)")
    async def create_processor(request: Request, body: StreamProcessorBody) -> Response:
        registry = server.streams.registry
        output: dict[str, Any] = {}
        if body.Sink:
            output["KinesisDataStream"] = {"Arn": registry.sink(name=body.Sink).arn}
        if body.S3Bucket:
            output["S3Destination"] = {"Bucket": body.S3Bucket,
                                       **({"KeyPrefix": body.S3KeyPrefix}
                                          if body.S3KeyPrefix else {})}
        face_search: dict[str, Any] = {"CollectionId": body.CollectionId}
        if body.FaceMatchThreshold is not None:
            face_search["FaceMatchThreshold"] = body.FaceMatchThreshold
        return await call(request, Name=body.Name, RoleArn=ROLE_ARN,
                          Input={"KinesisVideoStream": {
                              "Arn": registry.source(name=body.Source).arn}},
                          Output=output, Settings={"FaceSearch": face_search}, Tags=body.Tags)

    @route("GET", "/streams/processors", "ListStreamProcessors", "streams",
           "List stream processors")
    async def list_processors(request: Request, next_token: NextToken = None,
                              max_results: MaxResults = None) -> Response:
        return await call(request, NextToken=next_token, MaxResults=max_results)

    @route("GET", "/streams/processors/{name}", "DescribeStreamProcessor", "streams",
           "A stream processor's status, settings and (running) statistics")
    async def describe_processor(request: Request, name: ProcessorName) -> Response:
        return await call(request, Name=name)

    @route("PATCH", "/streams/processors/{name}", "UpdateStreamProcessor", "streams",
           "Update a stream processor (face search has nothing to update; kept for parity)")
    async def update_processor(request: Request, name: ProcessorName) -> Response:
        return await call(request, Name=name)

    @route("DELETE", "/streams/processors/{name}", "DeleteStreamProcessor", "streams",
           "Delete a stopped stream processor")
    async def delete_processor(request: Request, name: ProcessorName) -> Response:
        return await call(request, Name=name)

    @route("POST", "/streams/processors/{name}/start", "StartStreamProcessor", "streams",
           "Start a stream processor")
    async def start_processor(request: Request, name: ProcessorName,
                              body: StartStreamBody | None = None) -> Response:
        stop = ({"StopSelector": {"MaxDurationInSeconds": body.MaxDurationInSeconds}}
                if body and body.MaxDurationInSeconds else {})
        return await call(request, Name=name, **stop)

    @route("POST", "/streams/processors/{name}/stop", "StopStreamProcessor", "streams",
           "Stop a stream processor")
    async def stop_processor(request: Request, name: ProcessorName) -> Response:
        return await call(request, Name=name)


def _aware(when: datetime | None) -> datetime | None:
    from datetime import timezone

    return when.replace(tzinfo=timezone.utc) if when is not None and when.tzinfo is None \
        else when


# Response schemas of Regard's own operations.
POLICY_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {
    "Purpose": {"type": ["string", "null"]}, "LegalBasis": {"type": ["string", "null"]},
    "RetentionDays": {"type": ["integer", "null"]}, "ConsentRequired": {"type": "boolean"},
    "ThresholdFloor": {"type": ["number", "null"]}, "MaxMatches": {"type": ["integer", "null"]},
    "HumanReview": {"type": "boolean"}, "MaxFpir": {"type": ["number", "null"]},
    "LiveIdentification": {"type": "boolean"}}}
_IDS = {"type": "array", "items": {"type": "string"}}
ERASURE_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {
    "Collections": {"type": "array", "items": {
        "type": "object", "additionalProperties": False, "properties": {
            "CollectionId": {"type": "string"}, "DeletedFaces": _IDS, "DeletedUsers": _IDS}}},
    "FaceIds": _IDS, "UserIds": _IDS, "VideoResultPagesUpdated": {"type": "integer"}}}
STARTED_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False,
                                  "properties": {"JobId": {"type": "string"}}}
REDACTION_SCHEMA: dict[str, Any] = {"type": "object", "properties": {
    "JobStatus": {"enum": ["IN_PROGRESS", "SUCCEEDED", "FAILED"]},
    "StatusMessage": {"type": "string"}, "JobId": {"type": "string"},
    "JobTag": {"type": "string"}, "Video": {"type": "object"}, "Output": {"type": "object"},
    "VideoMetadata": {"type": "object"}, "Report": {"type": "object"}}}
ENTRIES_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {
    "Entries": {"type": "array", "items": {"type": "object"}}, "NextAfter": {"type": "integer"}}}
VERIFY_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {
    "ok": {"type": "boolean"}, "entries": {"type": "integer"}, "head_seq": {"type": "integer"},
    "first_bad_seq": {"type": ["integer", "null"]}, "problems": _IDS}}


def _document_no_422(app: FastAPI) -> None:
    """FastAPI documents a 422 for every route with parameters; ``/v1`` answers those errors with
    a 400 ``ValidationException`` (``ERROR_RESPONSES``), so take the 422s out of the document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            for path, item in document.get("paths", {}).items():
                if path.startswith(PREFIX + "/"):
                    for operation in item.values():
                        operation.get("responses", {}).pop("422", None)
            schemas = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                if f"#/components/schemas/{name}" not in json.dumps(document.get("paths")):
                    schemas.pop(name, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
