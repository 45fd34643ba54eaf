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


class AccessDeniedError(RegardError):
    code = "AccessDeniedException"
    http_status = 400


class ThrottlingError(RegardError):
    code = "ThrottlingException"
    http_status = 400


class ModelError(RegardError):
    """A bundled model file is missing or unreadable: an installation problem, not a user error."""

    code = "InternalServerError"
    http_status = 500
