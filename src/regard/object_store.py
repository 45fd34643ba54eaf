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
import stat
import time
from pathlib import Path
import io
import shutil
import tempfile
from typing import IO, Any, Iterator, Protocol

from regard import config
from regard.errors import ImageTooLargeError, InvalidS3ObjectError

MAX_S3_IMAGE_BYTES = 15 * 1024 * 1024
# A whole object must arrive within this: botocore's read timeout bounds each socket read only,
# so a server dripping a byte every few seconds would otherwise hold an image worker for hours.
S3_READ_DEADLINE_SECONDS = 60.0


class ObjectStore(Protocol):
    def get(self, bucket: str, name: str, version: str | None = None) -> bytes:
        """The object's bytes (at most ``MAX_S3_IMAGE_BYTES``) or ``InvalidS3ObjectError``."""

    def open(self, bucket: str, name: str, version: str | None = None) -> IO[bytes]:
        """The object as a seekable binary file (videos: read as they are decoded, never
        whole); ``InvalidS3ObjectError`` when it cannot be read. Close it."""

    def put_file(self, bucket: str, name: str, path: Path) -> None:
        """Store a local file as the object (a redacted video); ``InvalidS3ObjectError``."""

    def delete(self, bucket: str, name: str) -> None:
        """Remove the object (gone already: nothing to do); ``InvalidS3ObjectError``."""

    def list_names(self, bucket: str, prefix: str = "") -> Iterator[str]:
        """Names of the objects under ``prefix``, in the store's order (S3: UTF-8 binary), read
        page by page: a batch lists an archive without holding or reading it."""


class NoObjectStore:
    """The default: S3 references are refused with a message that says how to enable them."""

    def get(self, bucket: str, name: str, version: str | None = None) -> bytes:
        raise InvalidS3ObjectError(
            "Unable to get object metadata from S3: this Regard server has no object store; set "
            "REGARD_S3_ROOT (a local folder of buckets) or REGARD_S3_ENDPOINT_URL, or send "
            "Image.Bytes")

    def open(self, bucket: str, name: str, version: str | None = None) -> IO[bytes]:
        self.get(bucket, name, version)
        raise AssertionError("unreachable")

    def put_file(self, bucket: str, name: str, path: Path) -> None:
        self.get(bucket, name)

    def delete(self, bucket: str, name: str) -> None:
        self.get(bucket, name)

    def list_names(self, bucket: str, prefix: str = "") -> Iterator[str]:
        self.get(bucket, prefix or "-")
        raise AssertionError("unreachable")


class LocalObjectStore:
    """Buckets as sub-folders of ``root``. Versions are not kept; asking for one is refused."""

    def __init__(self, root: str | Path, max_bytes: int = MAX_S3_IMAGE_BYTES) -> None:
        self.root = Path(root).resolve()
        self.max_bytes = max_bytes

    def get(self, bucket: str, name: str, version: str | None = None) -> bytes:
        if version:
            raise InvalidS3ObjectError("Object versions are not supported by a local object store")
        path = self._path(bucket, name)
        try:
            data = _read_regular_file(path, self.max_bytes + 1)
        except OSError as exc:
            raise _unreadable(exc, bucket, name) from exc
        return _within_limit(data, self.max_bytes)

    def _path(self, bucket: str, name: str) -> Path:
        if not bucket or not name or "\x00" in name or bucket in (".", "..") or "/" in bucket:
            raise InvalidS3ObjectError("Invalid S3 object reference")
        path = (self.root / bucket / name).resolve()
        if not path.is_relative_to(self.root / bucket) or path == self.root / bucket:
            raise InvalidS3ObjectError(f"Invalid S3 object name {name!r}")
        return path

    def open(self, bucket: str, name: str, version: str | None = None) -> IO[bytes]:
        if version:
            raise InvalidS3ObjectError("Object versions are not supported by a local object store")
        path = self._path(bucket, name)
        try:
            fd = _open_regular_file(path)
        except OSError as exc:
            raise _unreadable(exc, bucket, name) from exc
        return os.fdopen(fd, "rb")

    def put_file(self, bucket: str, name: str, path: Path) -> None:
        target = self._path(bucket, name)
        if not (self.root / bucket).is_dir():
            raise InvalidS3ObjectError(f"The bucket {bucket} does not exist")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".regard-",
                                             delete=False) as tmp:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, tmp, 1024 * 1024)
            os.replace(tmp.name, target)
        except OSError as exc:
            raise InvalidS3ObjectError(f"Unable to write s3://{bucket}/{name}: {exc}") from exc

    def delete(self, bucket: str, name: str) -> None:
        path = self._path(bucket, name)
        try:
            if not path.is_symlink() and path.is_file():
                path.unlink()
            folder, top = path.parent, self.root / bucket
            while folder != top and folder.is_relative_to(top) and not any(folder.iterdir()):
                folder.rmdir()  # the folders the name made, once empty
                folder = folder.parent
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InvalidS3ObjectError(f"Unable to delete s3://{bucket}/{name}: {exc}") from exc

    def list_names(self, bucket: str, prefix: str = "") -> Iterator[str]:
        top = self._path(bucket, "-").parent
        if not top.is_dir():
            raise InvalidS3ObjectError(f"The bucket {bucket} does not exist")
        names = []
        for folder, dirs, files in os.walk(top):  # symlinks are not followed out of it
            dirs[:] = [d for d in dirs if not d.startswith(".regard-")]
            for file in files:
                name = Path(folder, file).relative_to(top).as_posix()
                if name.startswith(prefix) and not file.startswith(".regard-"):
                    names.append(name)
        yield from sorted(names)


class S3ObjectStore:
    """An S3-compatible server through botocore (already a dependency for the service model)."""

    def __init__(self, endpoint_url: str | None, *, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 max_bytes: int = MAX_S3_IMAGE_BYTES,
                 deadline_seconds: float = S3_READ_DEADLINE_SECONDS) -> None:
        import botocore.session
        from botocore.config import Config

        session = botocore.session.get_session()
        self._client = session.create_client(
            "s3", endpoint_url=endpoint_url, region_name=region or "us-east-1",
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=10))
        self.max_bytes = max_bytes
        self.deadline_seconds = deadline_seconds

    def get(self, bucket: str, name: str, version: str | None = None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": name}
        if version:
            kwargs["VersionId"] = version
        try:
            response = self._client.get_object(**kwargs)
            body = response["Body"]
            try:
                data = _read_within(body, self.max_bytes + 1, self.deadline_seconds,
                                    f"s3://{bucket}/{name}")
            finally:
                body.close()
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(exc, bucket, name) from exc
        return _within_limit(data, self.max_bytes)

    def open(self, bucket: str, name: str, version: str | None = None) -> IO[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": name}
        if version:
            kwargs["VersionId"] = version
        try:
            size = int(self._client.head_object(**kwargs)["ContentLength"])
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(exc, bucket, name) from exc
        return io.BufferedReader(_RangedObject(self._client, kwargs, size), 8 * 1024 * 1024)

    def put_file(self, bucket: str, name: str, path: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            with open(path, "rb") as body:
                self._client.put_object(Bucket=bucket, Key=name, Body=body)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise InvalidS3ObjectError(f"Unable to write s3://{bucket}/{name}: {exc}") from exc

    def delete(self, bucket: str, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client.delete_object(Bucket=bucket, Key=name)
        except (ClientError, BotoCoreError) as exc:
            raise InvalidS3ObjectError(f"Unable to delete s3://{bucket}/{name}: {exc}") from exc

    def list_names(self, bucket: str, prefix: str = "") -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    yield item["Key"]
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(exc, bucket, prefix) from exc


def _s3_error(exc: Exception, bucket: str, name: str) -> InvalidS3ObjectError:
    """botocore's failure to read an object, as Rekognition words it."""
    response = getattr(exc, "response", None)
    if response is None:  # BotoCoreError: no answer at all
        return InvalidS3ObjectError(f"The object store is unreachable: {exc}")
    code = response.get("Error", {}).get("Code", "Error")
    return InvalidS3ObjectError(
        f"Unable to get object metadata from S3. Check object key, region and/or access "
        f"permissions. ({code} for s3://{bucket}/{name})")


class _RangedObject(io.RawIOBase):
    """An S3 object read by ranged GETs as FFmpeg seeks through it (an MP4's index may sit at
    its end): the video streams through, never whole in memory."""

    def __init__(self, client: Any, key: dict[str, Any], size: int) -> None:
        self._client, self._key, self._size, self._pos = client, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._pos >= self._size:
            return 0
        end = min(self._size, self._pos + len(buffer)) - 1
        try:
            body = self._client.get_object(Range=f"bytes={self._pos}-{end}", **self._key)["Body"]
            data = _read_within(body, end - self._pos + 1, S3_READ_DEADLINE_SECONDS,
                                f"s3://{self._key['Bucket']}/{self._key['Key']}")
        except (ClientError, BotoCoreError) as exc:
            raise OSError(f"reading the video from the object store failed: {exc}") from exc
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n


def _read_within(body: Any, limit: int, seconds: float, what: str) -> bytes:
    deadline = time.monotonic() + seconds
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = body.read(min(1024 * 1024, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if time.monotonic() > deadline:
            raise InvalidS3ObjectError(f"{what} did not arrive within {seconds:g} seconds")
    return b"".join(chunks)


def _open_regular_file(path: Path) -> int:
    """A descriptor of a regular file, opened without blocking and checked on the open
    descriptor: a FIFO, socket or device under the root would otherwise block a worker forever
    (opening a FIFO waits for a writer, reading a device may never end), and checking before
    opening would race with a swap of the file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidS3ObjectError(
            f"Unable to get object metadata from S3: {path.name} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def _read_regular_file(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of a regular file."""
    fd = _open_regular_file(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit)
    finally:
        os.close(fd)


def _unreadable(exc: OSError, bucket: str, name: str) -> InvalidS3ObjectError:
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return InvalidS3ObjectError(
            f"Unable to get object metadata from S3. Check object key, region and/or access "
            f"permissions. (s3://{bucket}/{name} does not exist)")
    return InvalidS3ObjectError(f"Unable to read s3://{bucket}/{name}: {exc.strerror}")


def _within_limit(data: bytes, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"S3 object exceeds the limit of {max_bytes} bytes")
    return data


def object_store_from_env() -> ObjectStore:
    """The object store the environment configures (see the module docstring)."""
    settings = config.current()
    if settings.s3_root is not None:
        return LocalObjectStore(settings.s3_root)
    if settings.s3_endpoint_url:
        return S3ObjectStore(settings.s3_endpoint_url, region=settings.s3_region,
                             access_key_id=settings.s3_access_key_id,
                             secret_access_key=settings.s3_secret_access_key)
    return NoObjectStore()
