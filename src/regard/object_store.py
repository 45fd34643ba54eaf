"""Where ``Image.S3Object`` references are read from: a local folder or an S3-compatible store.

Rekognition reads ``{"S3Object": {"Bucket", "Name", "Version"}}`` from Amazon S3. A self-hosted
Regard has no AWS account behind it, so an operator points it at one of:

- ``REGARD_S3_ROOT``: a folder whose sub-folders are buckets (``$ROOT/<Bucket>/<Name>``); names
  that would escape the folder (``..``, absolute paths, symlinks out of it) are refused;
- ``REGARD_S3_ENDPOINT_URL``: any S3-compatible server (MinIO, Ceph, SeaweedFS, AWS itself), with
  credentials from ``REGARD_S3_ACCESS_KEY_ID`` / ``REGARD_S3_SECRET_ACCESS_KEY`` (or botocore's
  usual chain) and ``REGARD_S3_REGION``.

Without either, an ``S3Object`` gets a clear ``InvalidS3ObjectException``, as does any object that
cannot be read. Objects up to 15 MB are accepted (Rekognition's limit for S3 images; 5 MB is the
limit for inline bytes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from regard.errors import ImageTooLargeError, InvalidS3ObjectError

MAX_S3_IMAGE_BYTES = 15 * 1024 * 1024


class ObjectStore(Protocol):
    def get(self, bucket: str, name: str, version: str | None = None) -> bytes:
        """The object's bytes (at most ``MAX_S3_IMAGE_BYTES``) or ``InvalidS3ObjectError``."""


class NoObjectStore:
    """The default: S3 references are refused with a message that says how to enable them."""

    def get(self, bucket: str, name: str, version: str | None = None) -> bytes:
        raise InvalidS3ObjectError(
            "Unable to get object metadata from S3: this Regard server has no object store; set "
            "REGARD_S3_ROOT (a local folder of buckets) or REGARD_S3_ENDPOINT_URL, or send "
            "Image.Bytes")


class LocalObjectStore:
    """Buckets as sub-folders of ``root``. Versions are not kept; asking for one is refused."""

    def __init__(self, root: str | Path, max_bytes: int = MAX_S3_IMAGE_BYTES) -> None:
        self.root = Path(root).resolve()
        self.max_bytes = max_bytes

    def get(self, bucket: str, name: str, version: str | None = None) -> bytes:
        if version:
            raise InvalidS3ObjectError("Object versions are not supported by a local object store")
        if not bucket or not name or "\x00" in name or bucket in (".", ".."):
            raise InvalidS3ObjectError("Invalid S3 object reference")
        path = (self.root / bucket / name).resolve()
        if not path.is_relative_to(self.root / bucket) or path == self.root / bucket:
            raise InvalidS3ObjectError(f"Invalid S3 object name {name!r}")
        try:
            with path.open("rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise InvalidS3ObjectError(
                f"Unable to get object metadata from S3. Check object key, region and/or access "
                f"permissions. (s3://{bucket}/{name} does not exist)") from exc
        except OSError as exc:
            raise InvalidS3ObjectError(f"Unable to read s3://{bucket}/{name}: {exc.strerror}") \
                from exc
        return _within_limit(data, self.max_bytes)


class S3ObjectStore:
    """An S3-compatible server through botocore (already a dependency for the service model)."""

    def __init__(self, endpoint_url: str | None, *, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 max_bytes: int = MAX_S3_IMAGE_BYTES) -> None:
        import botocore.session
        from botocore.config import Config

        session = botocore.session.get_session()
        self._client = session.create_client(
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30))
        self.max_bytes = max_bytes

    def get(self, bucket: str, name: str, version: str | None = None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": name}
        if version:
            kwargs["VersionId"] = version
        try:
            response = self._client.get_object(**kwargs)
            body = response["Body"]
            try:
                data = body.read(self.max_bytes + 1)
            finally:
                body.close()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Error")
            raise InvalidS3ObjectError(
                f"Unable to get object metadata from S3. Check object key, region and/or access "
                f"permissions. ({code} for s3://{bucket}/{name})") from exc
        except BotoCoreError as exc:
            raise InvalidS3ObjectError(f"The object store is unreachable: {exc}") from exc
        return _within_limit(data, self.max_bytes)


def _within_limit(data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"S3 object exceeds the limit of {max_bytes} bytes")
    return data


def object_store_from_env() -> ObjectStore:
    """The object store the environment configures (see the module docstring)."""
    root = os.environ.get("REGARD_S3_ROOT")
    if root:
        return LocalObjectStore(root)
    endpoint = os.environ.get("REGARD_S3_ENDPOINT_URL")
    if endpoint:
        return S3ObjectStore(endpoint, region=os.environ.get("REGARD_S3_REGION"),
                             access_key_id=os.environ.get("REGARD_S3_ACCESS_KEY_ID"),
                             secret_access_key=os.environ.get("REGARD_S3_SECRET_ACCESS_KEY"))
    return NoObjectStore()
