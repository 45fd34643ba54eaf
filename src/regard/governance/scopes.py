"""Which scope each operation needs, and the check of a caller's scopes and collection allow-list.

A key holds some of: ``detect``, ``compare``, ``collections:read``, ``collections:write``,
``faces:write``, ``search``, ``audit:read``, ``admin`` (``admin`` allows everything). A key with a
collection allow-list may only name those collections (and ListCollections shows only them).
In-process callers (Python, the CLI: people who can open the database anyway) carry no scopes
and are unrestricted, but are audited all the same.
"""

from __future__ import annotations

from typing import Iterable

from regard.errors import AccessDeniedError

ADMIN = "admin"

OPERATION_SCOPES: dict[str, str] = {
    "DetectFaces": "detect",
    "CompareFaces": "compare",
    "ListCollections": "collections:read",
    "DescribeCollection": "collections:read",
    "ListFaces": "collections:read",
    "ListUsers": "collections:read",
    "ListTagsForResource": "collections:read",
    "CheckCollections": "collections:read",
    "CreateCollection": "collections:write",
    "DeleteCollection": "collections:write",
    "TagResource": "collections:write",
    "UntagResource": "collections:write",
    "IndexFaces": "faces:write",
    "DeleteFaces": "faces:write",
    "CreateUser": "faces:write",
    "DeleteUser": "faces:write",
    "AssociateFaces": "faces:write",
    "DisassociateFaces": "faces:write",
    "Erase": "faces:write",
    "SearchFaces": "search",
    "SearchFacesByImage": "search",
    "SearchUsers": "search",
    "SearchUsersByImage": "search",
    "AuditExport": "audit:read",
    "AuditVerify": "audit:read",
    "WhoSearched": "audit:read",
    "RetentionSweep": ADMIN,
    "CreateAccessKey": ADMIN,
    "RevokeAccessKey": ADMIN,
}


def required_scope(operation: str) -> str:
    return OPERATION_SCOPES.get(operation, ADMIN)


def check(operation: str, scopes: Iterable[str] | None, allowed: Iterable[str] | None,
          collection: str | None) -> None:
    """Raise ``AccessDeniedError`` unless the scopes and the allow-list permit the operation.
    ``scopes is None``: an unrestricted in-process caller."""
    if scopes is None:
        return
    scopes = set(scopes)
    need = required_scope(operation)
    if ADMIN not in scopes and need not in scopes:
        raise AccessDeniedError(
            f"This access key lacks the scope {need!r} that {operation} needs")
    if allowed is not None and collection is not None and collection not in set(allowed):
        raise AccessDeniedError(
            f"This access key may not use the collection {collection!r}")
