"""Who is asking, and why: the explicit context every operation runs with.

Each door builds one per request and hands it to the service, which hands it to the gate and to
the operation's handler; nothing reads the caller from anywhere else. The HTTP doors fill it in
from the verified access key (principal, scopes, collection allow-list) and the
``X-Regard-Purpose`` / ``X-Regard-Case`` / ``X-Regard-Consent`` headers; the CLI from the
operating-system user and its options; a Python program states its own when it creates a
``RegardService``. A background job stores the context of the request that started it and runs
with it, so its ledger entries name that principal.

``scopes=None`` means an unrestricted operator (someone who can open the database anyway: the CLI,
an in-process program); it is still audited. There is no default context: an operation called
without one is refused (``regard.service.RegardService.call``), so work that runs outside any
request fails closed instead of running unrestricted.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class CallContext:
    principal: str
    scopes: tuple[str, ...] | None = None
    collections: tuple[str, ...] | None = None
    purpose: str | None = None
    case: str | None = None
    consent: str | None = None
    client: str | None = None  # the client's address, or "cli"
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        if not isinstance(self.principal, str) or not self.principal:
            raise ValueError("A CallContext names its principal")
        for name in ("scopes", "collections"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    @property
    def unrestricted(self) -> bool:
        return self.scopes is None

    def may_see(self, collection: str) -> bool:
        """Whether the collection allow-list admits ``collection`` (for filtering listings)."""
        return self.collections is None or collection in self.collections

    def for_request(self, request_id: str | None = None) -> CallContext:
        """The same caller for another request (a new request id)."""
        return replace(self, request_id=request_id or str(uuid.uuid4()))

    def to_json(self) -> str:
        """For a job row: the context a background job runs with."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CallContext:
        data: dict[str, Any] = json.loads(text)
        return cls(**data)

    @classmethod
    def operator(cls, principal: str = "local", **kwargs: Any) -> CallContext:
        """An unrestricted in-process caller (the CLI, a Python program), audited like any."""
        return cls(principal=principal, scopes=None, collections=None, **kwargs)


__all__ = ["CallContext"]
