"""The one place every operation passes before and after it runs (``RegardService`` calls it from
every door): scopes and collection allow-lists, collection policy, and the audit entry.

What binds an operation comes from its declaration in the registry (``regard.operations``): the
scope it needs, the request members holding its match threshold and match count, whether it
stores faces (and so needs a consent reference when the policy says so), and the summary its
ledger entry keeps. Before: the caller's scopes, then the collection's policy adjusts or refuses
the request (purpose required on creation, the threshold floor, the match cap, the consent
reference). After, success or failure alike: one ledger entry with a result summary. Refusals are
logged too; an operation whose entry cannot be written fails and its changes are rolled back (the
service commits an operation's changes and its entry in one unit of work), so there is no
unrecorded identification and no unrecorded change.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable

from regard.config import DEFAULT_MATCH_THRESHOLD
from regard.errors import InvalidParameterError, RegardError
from regard.governance import policy as pol
from regard.governance import scopes
from regard.governance.ledger import Ledger
from regard.governance.policy import CollectionPolicy
from regard.operations.registry import Call

log = logging.getLogger("regard.governance")


class Gatekeeper:
    def __init__(self, ledger: Ledger, *, default_purpose: str | None = None,
                 audit_detect: bool = True,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.ledger = ledger
        self.default_purpose = default_purpose
        self.audit_detect = audit_detect
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        ledger.clock = self.clock

    def now(self) -> datetime:
        return self.clock()

    # -- before ---------------------------------------------------------------------------------
    def authorize(self, call: Call) -> None:
        context = call.context
        scopes.check(call.name, call.operation.scope, context.scopes, context.collections,
                     call.collection)

    def apply_policy(self, call: Call) -> None:
        """Adjust ``call.params`` in place to the collection's policy, or refuse the request."""
        op, params, policy = call.operation, call.params, call.policy
        if op.name == "CreateCollection":
            tags = dict(params.get("Tags") or {})
            # the face-model choice is made here, not kept as a policy tag
            declared = CollectionPolicy.from_tags(
                {k: v for k, v in tags.items() if k != pol.FACE_MODEL})
            if declared.purpose is None:
                if not self.default_purpose:
                    raise InvalidParameterError(
                        "A collection needs a declared purpose: tag it regard:purpose (the CLI's "
                        "--purpose, the REST API's Purpose), or start the server with "
                        "--default-purpose")
                tags[pol.PURPOSE] = self.default_purpose
                params["Tags"] = tags
            return
        if policy is None:
            return
        member = op.threshold_member
        if member is not None and policy.threshold_floor is not None:
            asked = params.get(member)
            if asked is None:
                params[member] = max(policy.threshold_floor, DEFAULT_MATCH_THRESHOLD)
            elif asked < policy.threshold_floor:
                raise InvalidParameterError(
                    f"{member} {asked:g} is below the threshold floor "
                    f"{policy.threshold_floor:g} of collection {call.collection}")
        if op.max_member is not None and policy.max_matches is not None:
            params[op.max_member] = min(params.get(op.max_member) or policy.max_matches,
                                        policy.max_matches)
        if op.consent_member and policy.consent_required and not call.context.consent:
            raise InvalidParameterError(
                f"Collection {call.collection} requires a consent reference for {op.name}: "
                "send X-Regard-Consent (REST/Rekognition) or --consent (CLI)")

    # -- after ----------------------------------------------------------------------------------
    def record(self, call: Call, result: dict[str, Any] | None = None,
               error: BaseException | None = None) -> None:
        op = call.operation
        if op.optional_audit and not self.audit_detect:
            return
        if error is not None:
            summary: dict[str, Any] = {
                "Error": error.code if isinstance(error, RegardError) else "InternalServerError"}
            if isinstance(error, RegardError) and error.code == "AccessDeniedException":
                summary["Scope"] = op.scope
            if op.threshold_member is not None:  # e.g. refused for being below the floor
                summary["Threshold"] = call.params.get(op.threshold_member)
        else:
            summary = op.summarize(call.params, result or {})
        summary.update(call.extra)
        context = call.context
        self.ledger.append(
            principal=context.principal, operation=op.name,
            collection=call.collection, purpose=context.purpose, case_ref=context.case,
            image_sha256=call.image_sha256 or None, result=summary, client=context.client)
