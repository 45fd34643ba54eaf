"""Where a batch's images are: paths every node sees, or names in the object store.

A reference is a string: an absolute local path, or ``s3://bucket/name``. The driver lists
references (a folder walk, or an object listing: names only) and each worker reads its own, so
no image ever passes through the driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from regard.errors import InvalidImageFormatError, InvalidParameterError
from regard.object_store import ObjectStore

S3_SCHEME = "s3://"


def is_s3(ref: str) -> bool:
    return ref.startswith(S3_SCHEME)


def split_s3(ref: str) -> tuple[str, str]:
    """``s3://bucket/name`` -> (bucket, name); the name may be empty (a whole bucket)."""
    bucket, _, name = ref[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise InvalidParameterError(f"Not an object reference: {ref!r} (s3://BUCKET/PREFIX)")
    return bucket, name


def list_s3(objects: ObjectStore, prefix_ref: str, suffixes: Iterable[str]) -> list[str]:
    """References of the objects under an ``s3://bucket/prefix`` whose names end in one of
    ``suffixes`` (case-insensitive), in the store's order."""
    bucket, prefix = split_s3(prefix_ref)
    wanted = tuple(s.lower() for s in suffixes)
    return [f"{S3_SCHEME}{bucket}/{name}" for name in objects.list_names(bucket, prefix)
            if name.lower().endswith(wanted)]


def base_name(ref: str) -> str:
    """The file name of a reference (what an ExternalImageId is made from by default)."""
    return split_s3(ref)[1].rsplit("/", 1)[-1] if is_s3(ref) else Path(ref).name


def read_source(ref: str, objects: ObjectStore, max_bytes: int) -> bytes:
    """The bytes of one reference, at most ``max_bytes + 1`` read (the decoder then refuses an
    image over the limit with ``ImageTooLargeException``); a clear Regard error otherwise."""
    if is_s3(ref):
        bucket, name = split_s3(ref)
        return objects.get(bucket, name)
    try:
        with open(ref, "rb") as fh:
            return fh.read(max_bytes + 1)
    except OSError as exc:
        raise InvalidImageFormatError(
            f"Cannot read {ref} on this worker node: {exc.strerror} (a batch's paths must be "
            "visible to every node at the same place)") from None


__all__ = ["S3_SCHEME", "base_name", "is_s3", "list_s3", "read_source", "split_s3"]
