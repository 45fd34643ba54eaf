"""One exception hierarchy for all of Regard.

Every error carries the Rekognition error name (``code``) and the HTTP status AWS uses for it, so
that each door (Python, CLI, Rekognition JSON API, REST) translates errors instead of inventing
them.
"""

from __future__ import annotations


class RegardError(Exception):
    """Base of every error Regard raises on purpose."""

    code: str = "InternalServerError"
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict[str, str]:
        """The Rekognition error body (``{"__type": ..., "message": ...}``)."""
        return {"__type": self.code, "message": self.message}


class InvalidParameterError(RegardError):
    """A request parameter is out of range, missing, or inconsistent (incl. images below 80x80)."""

    code = "InvalidParameterException"
    http_status = 400


class InvalidImageFormatError(RegardError):
    """The bytes are not a supported, decodable image."""

    code = "InvalidImageFormatException"
    http_status = 400


class ImageTooLargeError(RegardError):
    """The image exceeds the byte limit or the pixel limit (decompression-bomb guard)."""

    code = "ImageTooLargeException"
    http_status = 400


class ResourceNotFoundError(RegardError):
    code = "ResourceNotFoundException"
    http_status = 400


class ResourceAlreadyExistsError(RegardError):
    code = "ResourceAlreadyExistsException"
    http_status = 400


class ResourceInUseError(RegardError):
    """The resource is busy or taken: a stream processor name that exists, a processor started
    while running or deleted while running, a source or sink a processor uses."""

    code = "ResourceInUseException"
    http_status = 400


class AccessDeniedError(RegardError):
    code = "AccessDeniedException"
    http_status = 400


class ThrottlingError(RegardError):
    """The server is too busy to take the request now (Rekognition answers it with a 5xx)."""

    code = "ThrottlingException"
    http_status = 500


class RequestTimeoutError(RegardError):
    """The request body did not arrive in time (a stalled or deliberately slow client). AWS's
    name for it, which the SDKs treat as transient and retry."""

    code = "RequestTimeoutException"
    http_status = 408


class DatabaseUnavailableError(RegardError):
    """The catalog database could not serve the request: its server is down or restarting, out
    of connections, or (SQLite) locked past the busy timeout. Transient: a 500, which boto3 and
    the AWS CLI retry with backoff; the details stay in the server's log."""

    code = "InternalServerError"
    http_status = 500


class StorageFullError(RegardError):
    """The disk (or quota) under the catalog is full, so nothing can be recorded and every
    request, reads too (each writes an audit entry), is refused. Unlike "busy", a retry cannot
    help until an operator frees space, so the status is 507, which neither botocore retry mode
    retries (standard: 500/502/503/504 and throttling codes, ``botocore/retries/standard.py``;
    legacy: 500/502/503/504/509 and throttling codes, ``botocore/data/_retry.json``). The code
    stays ``InternalServerError``: Rekognition has no better name."""

    code = "InternalServerError"
    http_status = 507


class CatalogCorruptError(RegardError):
    """The catalog database is damaged (SQLite: a malformed page, or not a database at all;
    PostgreSQL: data or index corruption). Not transient: the message says to check the catalog
    and restore it, not to retry."""

    code = "InternalServerError"
    http_status = 500


class ModelError(RegardError):
    """A bundled model file is missing or unreadable: an installation problem, not a user error."""

    code = "InternalServerError"
    http_status = 500


class InvalidPaginationTokenError(RegardError):
    """A NextToken that this server did not issue (or issued for another listing)."""

    code = "InvalidPaginationTokenException"
    http_status = 400


class ConflictError(RegardError):
    """The request conflicts with the current state (e.g. CreateUser for an existing UserId)."""

    code = "ConflictException"
    http_status = 400


class IdempotentParameterMismatchError(RegardError):
    """A ClientRequestToken was reused with different parameters."""

    code = "IdempotentParameterMismatchException"
    http_status = 400


class ServiceQuotaExceededError(RegardError):
    """A fixed limit would be exceeded (e.g. more than 100 faces associated with one user)."""

    code = "ServiceQuotaExceededException"
    http_status = 400


class LimitExceededError(RegardError):
    """Too many jobs at once: Rekognition refuses a Start* request past the number of concurrent
    jobs an account may have (QUEUED or IN_PROGRESS); retry once some have finished."""

    code = "LimitExceededException"
    http_status = 400


class SchemaVersionError(RegardError):
    """The catalog was written by a newer Regard than this one: refuse rather than corrupt it."""

    code = "InternalServerError"
    http_status = 500


class ValidationError(InvalidParameterError):
    """A request violates the service model's constraints (required member, type, length, range,
    enum, pattern). AWS's front end answers these with ``ValidationException`` before the service
    sees the request; a subclass of ``InvalidParameterError`` so Python callers catch both."""

    code = "ValidationException"
    http_status = 400


class InvalidS3ObjectError(RegardError):
    """``Image.S3Object`` names an object that no configured object store holds or can read."""

    code = "InvalidS3ObjectException"
    http_status = 400


class ProvisionedThroughputExceededError(RegardError):
    """The access key has used up its request rate (``max_tps``; retry with backoff)."""

    code = "ProvisionedThroughputExceededException"
    http_status = 400


class UnknownOperationError(RegardError):
    code = "UnknownOperationException"
    http_status = 400


class SerializationError(RegardError):
    """The request body is not the JSON the protocol expects (or a member has the wrong type)."""

    code = "SerializationException"
    http_status = 400


# -- authentication (AWS's names; status 403 as AWS's JSON services answer them) ------------------
class AuthenticationError(RegardError):
    http_status = 403


class MissingAuthenticationTokenError(AuthenticationError):
    code = "MissingAuthenticationTokenException"


class IncompleteSignatureError(AuthenticationError):
    code = "IncompleteSignatureException"


class InvalidSignatureError(AuthenticationError):
    code = "InvalidSignatureException"


class UnrecognizedClientError(AuthenticationError):
    """Unknown or revoked access key."""

    code = "UnrecognizedClientException"


class VideoTooLargeError(RegardError):
    """A stored video past Rekognition Video's limits (10 GB, 6 hours)."""

    code = "VideoTooLargeException"
    http_status = 400


class InvalidVideoError(InvalidParameterError):
    """A video FFmpeg cannot open or decode (unsupported, corrupt, truncated). A job reading one
    ends FAILED with this message; a synchronous call answers ``InvalidParameterException``."""
