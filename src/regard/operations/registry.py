"""Where an operation is declared, once: its handler, the scope it needs, the worker pool it runs
in, the collection-policy members that bind it and the summary its audit entry keeps.

Everything else is derived from these declarations: the scopes table (``scope_of``), the gate's
policy checks and ledger summaries (``regard.governance.gatekeeper``), the worker pool each HTTP
request runs in, the operations the Rekognition door accepts (``rekognition=True``: those in
botocore's model, whose requests the service validates against it), the search operations whose
entries ``who-searched`` reads, and the boto3-style methods of ``RegardService``. Adding an
operation is writing one decorated handler in a module of ``regard.operations``.

A handler is ``handler(service, call) -> response``: ``call`` (a ``Call``) carries the request's
parameters, the ``CallContext`` it runs with, and what the audit entry accumulates while it runs.
This module imports nothing of the service, so governance can read it; importing it imports the
``regard.operations`` package, whose modules fill ``REGISTRY``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from regard.context import CallContext

if TYPE_CHECKING:
    from regard.governance.policy import CollectionPolicy
    from regard.service import RegardService

Params = dict[str, Any]
Summary = Callable[[Params, Params], Params]
Pool = Literal["image", "light"]

# Scopes an access key can hold (``regard keys create --scope``); ``admin`` allows everything.
SCOPES = ("detect", "compare", "collections:read", "collections:write", "faces:write", "search",
          "audit:read", "admin")
ADMIN = "admin"


@dataclass
class Call:
    """One run of one operation: the request, who asked, and what its audit entry collects."""

    operation: Operation
    params: Params
    context: CallContext
    collection: str | None = None
    policy: CollectionPolicy | None = None
    image_sha256: list[str] = field(default_factory=list)
    extra: Params = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.operation.name


Handler = Callable[["RegardService", Call], Params]


@dataclass(frozen=True)
class Operation:
    name: str
    handler: Handler
    scope: str
    pool: Pool = "light"
    summary: Summary | None = None  # what the ledger keeps of a success (never biometrics)
    rekognition: bool = True  # defined by botocore's model (validated against it; AWS door)
    threshold_member: str | None = None  # raised to / checked against the policy's floor
    max_member: str | None = None  # capped by the policy's max matches
    consent_member: bool = False  # needs a consent reference when the policy requires one
    identifies: bool = False  # a search: who-searched and the transparency report read it
    optional_audit: bool = False  # not recorded when the server runs with audit_detect off

    @property
    def python_name(self) -> str:
        """``SearchFacesByImage`` -> ``search_faces_by_image`` (boto3's method name)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.name).lower()

    def summarize(self, params: Params, result: Params) -> Params:
        out: Params = {"Outcome": "OK"}
        if self.summary is not None:
            out.update(self.summary(params, result))
        return out


REGISTRY: dict[str, Operation] = {}


def operation(name: str, *, scope: str, pool: Pool = "light", summary: Summary | None = None,
              rekognition: bool = True, threshold_member: str | None = None,
              max_member: str | None = None, consent_member: bool = False,
              identifies: bool = False, optional_audit: bool = False
              ) -> Callable[[Handler], Handler]:
    """Declare ``name``'s handler and everything the service, the gate and the doors need to
    know about it."""
    if scope not in SCOPES:
        raise ValueError(f"{name}: unknown scope {scope!r}")

    def register(handler: Handler) -> Handler:
        if name in REGISTRY:
            raise ValueError(f"operation {name} is declared twice")
        REGISTRY[name] = Operation(name, handler, scope, pool, summary, rekognition,
                                   threshold_member, max_member, consent_member, identifies,
                                   optional_audit)
        return handler

    return register


def get(name: str) -> Operation | None:
    return REGISTRY.get(name)


def all_operations() -> list[Operation]:
    return list(REGISTRY.values())


def scope_of(name: str) -> str:
    """The scope ``name`` needs (``admin`` for anything undeclared)."""
    op = get(name)
    return op.scope if op is not None else ADMIN


def search_operations() -> tuple[str, ...]:
    return tuple(op.name for op in all_operations() if op.identifies)
