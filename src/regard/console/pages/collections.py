"""Collections: the list, creation with the policy form, a collection's page (its facts and
policy), policy changes and deletion (after a confirmation naming the collection).

The policy lives in the collection's ``regard:`` tags (``governance.policy``): creation sends
them with CreateCollection, a change is TagResource (and UntagResource for a value cleared), so
each is the same audited operation as through the APIs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from regard.api.rest import status_of
from regard.console.web import Console, form_text, path_part
from regard.errors import InvalidParameterError, RegardError, ValidationError
from regard.governance import policy as pol
from regard.governance.policy import CollectionPolicy
from regard.vision.packs import default_pack, packs

PAGE = 50
# form field -> (policy tag, kind); kind: text, int, float or flag
POLICY_FIELDS: dict[str, tuple[str, str]] = {
    "purpose": (pol.PURPOSE, "text"),
    "legal_basis": (pol.LEGAL_BASIS, "text"),
    "retention_days": (pol.RETENTION_DAYS, "int"),
    "consent_required": (pol.CONSENT_REQUIRED, "flag"),
    "threshold_floor": (pol.THRESHOLD_FLOOR, "float"),
    "max_matches": (pol.MAX_MATCHES, "int"),
    "human_review": (pol.HUMAN_REVIEW, "flag"),
    "max_fpir": (pol.MAX_FPIR, "float"),
    "live_identification": (pol.LIVE_IDENTIFICATION, "choice"),
}


def policy_from_form(request: Request) -> tuple[dict[str, str], list[str]]:
    """The policy tags the form sets, and the tags it clears (fields left empty). Numbers are
    checked here only for being numbers; their ranges are the policy's (``CollectionPolicy``)."""
    tags: dict[str, str] = {}
    cleared: list[str] = []
    for name, (tag, kind) in POLICY_FIELDS.items():
        if kind == "flag":
            tags[tag] = "true" if form_text(request, name) == "true" else "false"
            continue
        if kind == "choice":
            tags[tag] = "allowed" if form_text(request, name) == "true" else "denied"
            continue
        value = form_text(request, name, max_length=256)
        if value is None:
            cleared.append(tag)
            continue
        if kind in ("int", "float"):
            try:
                number = int(value) if kind == "int" else float(value)
            except ValueError:
                raise ValidationError(f"{name.replace('_', ' ').capitalize()} must be a "
                                      f"{'whole ' if kind == 'int' else ''}number, got "
                                      f"{value!r}") from None
            value = str(number) if kind == "int" else f"{number:g}"
        tags[tag] = value
    CollectionPolicy.from_tags(tags)  # the ranges, before anything is sent
    return tags, cleared


def _values(request: Request) -> dict[str, Any]:
    """The form as sent (to show it again after a refusal)."""
    form = request.state.form
    return {k: v for k, v in form.items() if isinstance(v, str)}


def routes(console: Console, router: APIRouter) -> None:
    @router.get("/collections")
    async def collections(request: Request, next: str | None = None,
                          deleted: str | None = None) -> Response:
        listed = await console.call(request, "DescribeCollections",
                                    {"MaxResults": PAGE, "NextToken": next})
        return console.render(request, "collections.html", listed=listed,
                              notice=f"Collection {deleted} deleted." if deleted else None)

    @router.get("/collections/new")
    async def new_collection(request: Request) -> Response:
        return console.render(request, "collection_new.html", values={}, error=None,
                              models=_models())

    @router.post("/collections")
    async def create_collection(request: Request) -> Response:
        values = _values(request)
        try:
            name = form_text(request, "collection_id", max_length=255)
            if not name:
                raise ValidationError("A collection needs an id")
            tags, _ = policy_from_form(request)
            if pol.PURPOSE not in tags:
                raise InvalidParameterError("A collection needs a declared purpose")
            model = form_text(request, "face_model")
            if model:
                tags[pol.FACE_MODEL] = model
            await console.call(request, "CreateCollection", {"CollectionId": name,
                                                             "Tags": tags})
        except RegardError as exc:
            return console.render(request, "collection_new.html", status=status_of(exc),
                                  values=values, error=exc, models=_models())
        return console.redirect(f"/collections/{path_part(name)}", created="1")

    @router.get("/collections/{collection_id}")
    async def collection(request: Request, collection_id: str, created: str | None = None,
                         saved: str | None = None) -> Response:
        facts = await console.call(request, "DescribeCollection",
                                   {"CollectionId": collection_id})
        tags = (await console.call(request, "ListTagsForResource",
                                   {"ResourceArn": facts["CollectionARN"]}))["Tags"]
        return console.render(
            request, "collection.html", name=collection_id, facts=facts,
            policy=CollectionPolicy.from_tags(tags).to_dict(),
            own_tags={k: v for k, v in tags.items() if not k.startswith(pol.PREFIX)},
            error=None, notice=("Collection created." if created else
                                "Policy saved." if saved else None))

    @router.post("/collections/{collection_id}/policy")
    async def change_policy(request: Request, collection_id: str) -> Response:
        facts = await console.call(request, "DescribeCollection",
                                   {"CollectionId": collection_id})
        arn = facts["CollectionARN"]
        try:
            tags, cleared = policy_from_form(request)
            if pol.PURPOSE in cleared:
                raise InvalidParameterError("A collection must keep a declared purpose")
            current = (await console.call(request, "ListTagsForResource",
                                          {"ResourceArn": arn}))["Tags"]
            gone = [t for t in cleared if t in current]
            if gone:
                await console.call(request, "UntagResource", {"ResourceArn": arn,
                                                              "TagKeys": gone})
            await console.call(request, "TagResource", {"ResourceArn": arn, "Tags": tags})
        except RegardError as exc:
            tags = (await console.call(request, "ListTagsForResource",
                                       {"ResourceArn": arn}))["Tags"]
            return console.render(
                request, "collection.html", status=status_of(exc), name=collection_id,
                facts=facts, policy=CollectionPolicy.from_tags(tags).to_dict(),
                own_tags={k: v for k, v in tags.items() if not k.startswith(pol.PREFIX)},
                error=exc, notice=None)
        return console.redirect(f"/collections/{path_part(collection_id)}", saved="1")

    @router.get("/collections/{collection_id}/delete")
    async def confirm_delete(request: Request, collection_id: str) -> Response:
        facts = await console.call(request, "DescribeCollection",
                                   {"CollectionId": collection_id})
        return console.render(request, "collection_delete.html", name=collection_id,
                              facts=facts, error=None)

    @router.post("/collections/{collection_id}/delete")
    async def delete_collection(request: Request, collection_id: str) -> Response:
        if form_text(request, "confirm", max_length=255) != collection_id:
            facts = await console.call(request, "DescribeCollection",
                                       {"CollectionId": collection_id})
            return console.render(request, "collection_delete.html", status=400,
                                  name=collection_id, facts=facts, error=ValidationError(
                                      "The name typed does not match: nothing was deleted"))
        await console.call(request, "DeleteCollection", {"CollectionId": collection_id})
        return console.redirect("/collections", deleted=collection_id)


def _models() -> list[dict[str, Any]]:
    default = default_pack().version
    return [{"version": p.version, "name": p.name, "default": p.version == default}
            for p in packs() if p.calibrated]
