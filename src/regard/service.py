"""Regard's operations as plain Python: every door (Python, CLI, HTTP, background jobs) calls
``RegardService.call``.

Requests and responses are dicts with exactly the member names of botocore's Rekognition model
(``CreateCollection`` -> ``{"CollectionArn", "StatusCode", "FaceModelVersion"}``), so a
``RegardService`` reads like a boto3 client::

    svc = RegardService()
    svc.create_collection(CollectionId="staff", Tags={"regard:purpose": "door access"})
    svc.index_faces(CollectionId="staff", Image={"Bytes": jpeg}, ExternalImageId="alice.jpg")
    svc.search_faces_by_image(CollectionId="staff", Image={"Bytes": probe})["FaceMatches"]

Each operation is declared once, with its handler, in ``regard.operations`` (the registry says
which scope it needs, which worker pool runs it, which policy members bind it and what its audit
entry keeps); the boto3-style methods above are generated from that registry. ``call`` validates
a Rekognition request against the service model (``regard.spec``), then runs the handler inside
``_governed``: the one seam where scopes, collection policy and the audit ledger are enforced.
Every call names its ``CallContext``; there is no ambient caller, and a call without one is
refused. The methods use the context the service was created with (``context=``; by default an
unrestricted in-process operator named ``local``, audited like everyone); ``acting_as(context)``
gives the same methods for another caller. Nothing here knows about HTTP.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from regard import config
from regard.analysis import Engine, ImageFaces
from regard.context import CallContext
from regard.errors import (
    AccessDeniedError,
    InvalidParameterError,
    RegardError,
    ResourceNotFoundError,
    UnknownOperationError,
)
from regard.governance.gatekeeper import Gatekeeper
from regard.governance.ledger import Ledger
from regard.governance.policy import CollectionPolicy
from regard.object_store import ObjectStore, object_store_from_env
from regard.operations import registry
from regard.operations.accountability import due_faces
from regard.operations.common import collection_from_arn
from regard.operations.faces import index_detected
from regard.operations.registry import Call, Operation, Params
from regard.operations.searches import (  # noqa: F401  (re-exported for the doors)
    EFFECTIVE_THRESHOLD,
    EXPECTED_FPIR,
    HUMAN_REVIEW,
    SEARCH_STATISTICS,
)
from regard.spec import validate_request
from regard.store import CollectionInfo, Store

log = logging.getLogger("regard.service")

PYTHON_CONTEXT = CallContext.operator("local", client="python")


class OperationMethods:
    """boto3-style methods (``index_faces(**request)``), one per registered operation, generated
    below from the registry."""

    def _run(self, operation: str, params: Params) -> Params:
        raise NotImplementedError


class RegardService(OperationMethods):
    """The operations over one ``Engine`` (lazy: created on first image), one ``Store`` and the
    object store ``Image.S3Object`` references are read from."""

    def __init__(self, engine: Engine | None = None, store: Store | None = None, *,
                 region: str | None = None, account_id: str | None = None,
                 object_store: ObjectStore | None = None, gatekeeper: Gatekeeper | None = None,
                 default_purpose: str | None = None,
                 context: CallContext = PYTHON_CONTEXT) -> None:
        settings = config.current()
        self._engine = engine
        self.store = store or Store()
        self.objects = object_store or object_store_from_env()
        self.gate = gatekeeper or Gatekeeper(
            Ledger(self.store.database),
            default_purpose=default_purpose or settings.default_purpose,
            audit_detect=settings.audit_detect)
        self.keys = self.store.keys
        self.region = region or settings.region
        self.account_id = account_id or settings.account_id
        self.context = context
        self._jobs: Any = None
        self._streams: Any = None

    @property
    def jobs(self) -> Any:
        """The ``JobRunner`` that Start* operations submit background jobs to (a server sets
        its own, which it starts; one made here only submits, and runs nothing until started)."""
        if self._jobs is None:
            from regard.jobs import JobRunner

            self._jobs = JobRunner.from_config(self)
        return self._jobs

    @jobs.setter
    def jobs(self, runner: Any) -> None:
        self._jobs = runner

    @property
    def streams(self) -> Any:
        """The ``StreamSupervisor`` of this service's live stream processors: a server sets its
        own, which runs them; one made here only records Start and Stop, for the server that
        watches the catalog to act on."""
        if self._streams is None:
            from regard.streams.supervisor import StreamSupervisor

            self._streams = StreamSupervisor(self, runs_here=False)
        return self._streams

    @streams.setter
    def streams(self, supervisor: Any) -> None:
        self._streams = supervisor

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine()
        return self._engine

    @property
    def operations(self) -> list[str]:
        """The Rekognition operations (the ones botocore's model defines)."""
        return [op.name for op in registry.all_operations() if op.rekognition]

    def _run(self, operation: str, params: Params) -> Params:
        return self.call(operation, params, self.context)

    def acting_as(self, context: CallContext) -> ActingAs:
        """The boto3-style methods, run with ``context`` instead of the service's own."""
        return ActingAs(self, context)

    # -- the one entry point -------------------------------------------------------------------
    def call(self, operation: str, params: Params | None = None,
             context: CallContext | None = None) -> Params:
        """Run ``operation`` with a request dict as ``context``; return the response dict.
        Without a context the call is refused (``AccessDeniedException``), not run as anyone."""
        op = self._operation(operation)
        params = dict(params or {})
        if op.rekognition:
            validate_request(op.name, params)
        return self._governed(Call(op, params, _required(context)),
                              lambda call: op.handler(self, call))

    def run_audited(self, operation: str, params: Params, context: CallContext | None,
                    run: Callable[[], Params], image_sha256: Sequence[str] = ()) -> Params:
        """The gate around work a door did itself (the CLI's DetectFaces in worker processes,
        which have no database; its ledger export streamed to a file): the same checks and the
        same ledger entry as ``call``."""
        call = Call(self._operation(operation), dict(params), _required(context),
                    image_sha256=list(image_sha256))
        return self._governed(call, lambda _call: run())

    def index_detected_faces(self, detected: ImageFaces, image_sha256: str | None = None,
                             context: CallContext | None = None, *, once: bool = False,
                             **params: Any) -> Params:
        """IndexFaces for faces already detected and embedded (``Engine.detect(embed=True)``),
        e.g. by the worker processes of a batch; ``params`` as IndexFaces' without ``Image``;
        run as ``context``, or as the service's own context when none is given. ``once``: an
        image the collection already has stores nothing (``AlreadyIndexed`` in the answer),
        checked under the collection's lock: a batch's exactly-once."""
        if "Image" in params:
            raise InvalidParameterError("index_detected_faces takes no Image")
        validate_request("IndexFaces", params, exempt=frozenset({"Image"}))
        call = Call(self._operation("IndexFaces"), params, _required(context or self.context),
                    image_sha256=[image_sha256] if image_sha256 else [])
        return self._governed(call, lambda c: index_detected(self, c, detected, image_sha256,
                                                            once=once))

    def _operation(self, name: str) -> Operation:
        op = registry.get(name)
        if op is None:
            raise UnknownOperationError(f"Unsupported operation {name}")
        return op

    def _governed(self, call: Call, run: Callable[[Call], Params]) -> Params:
        """Governance around ``run``: the caller's scopes and the collection's allow-list, then
        the collection's policy (which may adjust ``call.params`` in place or refuse), and after
        it, success or failure alike, one audit-ledger entry, committed with the operation's
        changes (one unit of work). Every operation, from every door, passes here."""
        try:
            self._admit(call)
            # The change and its ledger entry commit together: a crash or a failed append
            # leaves neither. A failure is recorded after the rollback, in its own transaction.
            with self.store.database.unit_of_work():
                result = run(call)
                self.gate.record(call, result)
        except Exception as exc:
            try:
                self.gate.record(call, error=exc)
            except RegardError as unrecorded:  # the database down, the disk full: one line
                log.warning("could not record the failed %s in the audit ledger: %s",
                            call.name, unrecorded)
            except Exception:  # a bug: the caller still gets the original error
                log.exception("could not record the failed %s in the audit ledger", call.name)
            raise
        return result

    def preflight(self, operation: str, params: Params, context: CallContext | None) -> Params:
        """The request as the gate would let ``context`` run it (``params`` adjusted to the
        collection's policy, e.g. its threshold floor), or the gate's refusal; nothing runs and
        nothing is recorded. For work that checks before a long computation whose result it
        then records with ``run_audited`` (a video search from the CLI, a redaction that keeps
        one collection's people)."""
        call = Call(self._operation(operation), dict(params), _required(context))
        self._admit(call)
        return call.params

    def _admit(self, call: Call) -> None:
        """The gate's checks before a call runs: the caller's scopes and the collection's
        allow-list, then the collection's policy (which may adjust ``call.params`` in place or
        refuse)."""
        call.collection = _collection_named(call.params)
        self.gate.authorize(call)
        if call.collection is not None and call.name != "CreateCollection":
            call.policy = self._policy_or_none(call.collection)
        self.gate.apply_policy(call)

    def _policy_or_none(self, collection: str) -> CollectionPolicy | None:
        try:
            info = self.store.catalog.get_collection(collection)
        except ResourceNotFoundError:
            return None  # the operation itself reports it
        return CollectionPolicy.from_tags(info.tags)

    # -- routines made of operations -------------------------------------------------------------
    def sweep_retention(self, context: CallContext | None) -> Params:
        """Delete the faces whose collection's retention period has passed: one audited
        ``RetentionSweep`` per collection that has some. Run by the server periodically and by
        ``regard retention sweep``."""
        context = _required(context)
        removed: list[Params] = []
        for coll in self.all_collections():
            if not due_faces(self, coll):
                continue
            result = self.call("RetentionSweep", {"CollectionId": coll.name}, context)
            removed.append({"CollectionId": coll.name, "DeletedFaces": result["FaceIds"]})
        return {"Collections": removed}

    # -- lookups the operations and the doors share -----------------------------------------------
    def collection_arn(self, collection: str) -> str:
        return f"arn:aws:rekognition:{self.region}:{self.account_id}:collection/{collection}"

    def subject_of(self, external_image_id: str) -> tuple[set[str], set[str]]:
        """The FaceIds ever given to an ExternalImageId, and the users those faces belong to:
        those in the catalog now and those that erasures removed (their ledger entries keep
        the identifiers), for ``who-searched`` (a search by user matches the person too)."""
        faces: set[str] = set()
        users: set[str] = set()
        for coll in self.all_collections():
            for face, user in self.store.catalog.find_faces(
                    coll.name, external_image_id=external_image_id):
                faces.add(face)
                if user is not None:
                    users.add(user)
        for entry in self.gate.ledger.entries(operations=["Erase"]):
            if entry.result.get("SubjectExternalImageId") == external_image_id:
                faces.update(entry.result.get("FaceIds", []))
                users.update(entry.result.get("UserIds", []))
        return faces, users

    def all_collections(self) -> list[CollectionInfo]:
        """Every collection, in creation order (paged reads)."""
        out: list[CollectionInfo] = []
        while True:
            page = self.store.catalog.list_collections(out[-1].id if out else 0, 1000)
            out += page
            if len(page) < 1000:
                return out


class ActingAs(OperationMethods):
    """A service's operations run as another caller (``RegardService.acting_as``)."""

    def __init__(self, service: RegardService, context: CallContext) -> None:
        self.service = service
        self.context = context

    def _run(self, operation: str, params: Params) -> Params:
        return self.service.call(operation, params, self.context)


def _required(context: CallContext | None) -> CallContext:
    """Fail closed: work that does not say who it runs for does not run."""
    if not isinstance(context, CallContext):
        raise AccessDeniedError("Refused: the call names no caller (a CallContext is required)")
    return context


def _collection_named(params: Params) -> str | None:
    if "ResourceArn" in params:
        return collection_from_arn(params["ResourceArn"])
    name = params.get("CollectionId")
    return name if isinstance(name, str) else None


def _method(op: Operation) -> Callable[..., Params]:
    def method(self: OperationMethods, **params: Any) -> Params:
        return self._run(op.name, params)

    method.__name__ = method.__qualname__ = op.python_name
    method.__doc__ = f"``{op.name}`` (see ``regard.operations``)."
    return method


for _op in registry.all_operations():
    setattr(OperationMethods, _op.python_name, _method(_op))


def face_ids(response: Params) -> list[str]:
    """FaceIds of an IndexFaces response (a small convenience for callers and tests)."""
    return [r["Face"]["FaceId"] for r in response.get("FaceRecords", [])]


__all__: Sequence[str] = ["ActingAs", "CallContext", "RegardService", "face_ids"]
