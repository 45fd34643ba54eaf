"""The check of a caller's scopes and collection allow-list.

Which scope an operation needs is declared with the operation (``regard.operations``); a key
holds some of ``regard.operations.registry.SCOPES`` (``admin`` allows everything). A key with a
collection allow-list may only name those collections (and listings show only them). Operators
in-process (Python, the CLI: people who can open the database anyway) carry no scopes and are
unrestricted, but are audited all the same.
"""

from __future__ import annotations

from typing import Iterable

from regard.errors import AccessDeniedError
from regard.operations.registry import ADMIN, SCOPES, all_operations, scope_of

__all__ = ["ADMIN", "SCOPES", "check", "operation_scopes", "required_scope"]


def required_scope(operation: str) -> str:
    return scope_of(operation)


def operation_scopes() -> dict[str, str]:
    """Every operation and the scope it needs (for documentation and ``regard keys``)."""
    return {op.name: op.scope for op in all_operations()}


def check(operation: str, need: str, scopes: Iterable[str] | None,
          allowed: Iterable[str] | None, collection: str | None) -> None:
    """Raise ``AccessDeniedError`` unless the scopes and the allow-list permit ``operation``,
    which needs the scope ``need``. ``scopes is None``: an unrestricted in-process caller."""
    if scopes is None:
        return
    scopes = set(scopes)
    if ADMIN not in scopes and need not in scopes:
        raise AccessDeniedError(
            f"This access key lacks the scope {need!r} that {operation} needs")
    if allowed is not None and collection is not None and collection not in set(allowed):
        raise AccessDeniedError(
            f"This access key may not use the collection {collection!r}")
