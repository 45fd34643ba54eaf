"""A collection's faces and users, and enrolment.

Faces are listed with DescribeFaces (Regard's ListFaces with the consent reference, indexing
time and retention expiry), 50 a page, optionally only one ExternalImageId or user: a collection
of a million faces is never read at once. Regard keeps no photos, so a face is shown by its box
and facts, never a thumbnail.

Enrolment indexes one person per submission: several photos, one ExternalImageId and a consent
reference (X-Regard-Consent, stored with each face); by default only the largest face of each
photo (a group photo must not enrol strangers under this person's id), optionally every face.
The answer shows each photo with the faces indexed and those not indexed, with Rekognition's
reasons."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from regard.console.pictures import picture_of
from regard.console.web import Console, form_text, path_part, upload_limit
from regard.errors import ImageTooLargeError, RegardError, ValidationError
from regard.governance.policy import CollectionPolicy

PAGE = 50
MAX_PHOTOS = 10
REASONS = {  # Rekognition's UnindexedFaces reasons, in words
    "EXCEEDS_MAX_FACES": "more faces than asked for: only the largest is enrolled",
    "EXTREME_POSE": "the head is turned too far",
    "EXCESSIVE_PITCH": "the head is tilted too far up or down",
    "EXCESSIVE_ROLL": "the head is tilted sideways too far",
    "EXCESSIVE_YAW": "the head is turned too far",
    "LOW_BRIGHTNESS": "too dark",
    "LOW_SHARPNESS": "too blurred",
    "LOW_CONFIDENCE": "the detector is not sure it is a face",
    "SMALL_BOUNDING_BOX": "the face is too small",
    "LOW_FACE_QUALITY": "the face is of too low quality",
}


def face_ids_of(request: Request) -> list[str]:
    """The FaceIds ticked in a list (``face_id`` checkboxes) or typed (``face_ids``)."""
    ticked = [v for v in request.state.form.getlist("face_id") if isinstance(v, str)]
    typed = (form_text(request, "face_ids", max_length=40_000) or "").replace(",", " ").split()
    ids = list(dict.fromkeys(ticked + typed))
    if not ids:
        raise ValidationError("Choose at least one face")
    if len(ids) > 100:
        raise ValidationError("At most 100 faces at a time")
    return ids


def routes(console: Console, router: APIRouter) -> None:
    async def faces_page(request: Request, collection_id: str, *, status: int = 200,
                         error: RegardError | None = None, notice: str | None = None
                         ) -> Response:
        q = request.query_params
        external, user = q.get("external_image_id") or None, q.get("user_id") or None
        listed = await console.call(request, "DescribeFaces", {
            "CollectionId": collection_id, "MaxResults": PAGE, "NextToken": q.get("next"),
            "ExternalImageId": external, "UserId": user})
        return console.render(request, "faces.html", status=status, name=collection_id,
                              listed=listed, external=external, user=user, error=error,
                              notice=notice)

    @router.get("/collections/{collection_id}/faces")
    async def faces(request: Request, collection_id: str) -> Response:
        return await faces_page(request, collection_id)

    @router.post("/collections/{collection_id}/faces/delete")
    async def delete_faces(request: Request, collection_id: str) -> Response:
        try:
            result = await console.call(request, "DeleteFaces", {
                "CollectionId": collection_id, "FaceIds": face_ids_of(request)})
        except RegardError as exc:
            return await faces_page(request, collection_id, status=400, error=exc)
        refused = result.get("UnsuccessfulFaceDeletions", [])
        text = f"Deleted {len(result['DeletedFaces'])} face(s)."
        if refused:
            text += (f" {len(refused)} not deleted: "
                     + "; ".join(f"{r['FaceId']} ({', '.join(r['Reasons'])})" for r in refused))
        return await faces_page(request, collection_id, notice=text)

    # -- users ------------------------------------------------------------------------------------
    async def users_page(request: Request, collection_id: str, *, status: int = 200,
                         error: RegardError | None = None, notice: str | None = None
                         ) -> Response:
        listed = await console.call(request, "ListUsers", {
            "CollectionId": collection_id, "MaxResults": PAGE,
            "NextToken": request.query_params.get("next")})
        return console.render(request, "users.html", status=status, name=collection_id,
                              listed=listed, error=error, notice=notice)

    @router.get("/collections/{collection_id}/users")
    async def users(request: Request, collection_id: str) -> Response:
        return await users_page(request, collection_id)

    @router.post("/collections/{collection_id}/users")
    async def create_user(request: Request, collection_id: str) -> Response:
        user_id = form_text(request, "user_id", max_length=128)
        try:
            if not user_id:
                raise ValidationError("A user needs an id")
            await console.call(request, "CreateUser", {"CollectionId": collection_id,
                                                       "UserId": user_id})
        except RegardError as exc:
            return await users_page(request, collection_id, status=400, error=exc)
        return console.redirect(f"/collections/{path_part(collection_id)}/users/{path_part(user_id)}",
                                created="1")

    async def user_page(request: Request, collection_id: str, user_id: str, *,
                        status: int = 200, error: RegardError | None = None,
                        notice: str | None = None) -> Response:
        listed = await console.call(request, "DescribeFaces", {
            "CollectionId": collection_id, "UserId": user_id, "MaxResults": PAGE,
            "NextToken": request.query_params.get("next")})
        if notice is None and request.query_params.get("created"):
            notice = "User created. Associate faces with it below."
        return console.render(request, "user.html", status=status, name=collection_id,
                              user_id=user_id, listed=listed, error=error, notice=notice)

    @router.get("/collections/{collection_id}/users/{user_id}")
    async def user(request: Request, collection_id: str, user_id: str) -> Response:
        return await user_page(request, collection_id, user_id)

    @router.post("/collections/{collection_id}/users/{user_id}/associate")
    async def associate(request: Request, collection_id: str, user_id: str) -> Response:
        try:
            ids = await _faces_to_associate(console, request, collection_id)
            result = await console.call(request, "AssociateFaces", {
                "CollectionId": collection_id, "UserId": user_id, "FaceIds": ids})
        except RegardError as exc:
            return await user_page(request, collection_id, user_id, status=400, error=exc)
        return await user_page(request, collection_id, user_id, notice=_outcome(
            "Associated", result["AssociatedFaces"],
            result.get("UnsuccessfulFaceAssociations", [])))

    @router.post("/collections/{collection_id}/users/{user_id}/disassociate")
    async def disassociate(request: Request, collection_id: str, user_id: str) -> Response:
        try:
            result = await console.call(request, "DisassociateFaces", {
                "CollectionId": collection_id, "UserId": user_id,
                "FaceIds": face_ids_of(request)})
        except RegardError as exc:
            return await user_page(request, collection_id, user_id, status=400, error=exc)
        return await user_page(request, collection_id, user_id, notice=_outcome(
            "Disassociated", result["DisassociatedFaces"],
            result.get("UnsuccessfulFaceDisassociations", [])))

    @router.post("/collections/{collection_id}/users/{user_id}/delete")
    async def delete_user(request: Request, collection_id: str, user_id: str) -> Response:
        if form_text(request, "confirm", max_length=128) != user_id:
            return await user_page(request, collection_id, user_id, status=400,
                                   error=ValidationError("Type the user id to confirm: the "
                                                         "user was not deleted"))
        await console.call(request, "DeleteUser", {"CollectionId": collection_id,
                                                   "UserId": user_id})
        return console.redirect(f"/collections/{path_part(collection_id)}/users")

    # -- enrolment --------------------------------------------------------------------------------
    @router.get("/collections/{collection_id}/enrol")
    async def enrol_form(request: Request, collection_id: str) -> Response:
        return console.render(request, "enrol.html", name=collection_id, values={},
                              results=None, error=None, max_photos=MAX_PHOTOS, reasons=REASONS,
                              consent_required=await _consent_required(console, request,
                                                                        collection_id))

    @router.post("/collections/{collection_id}/enrol")
    @upload_limit(lambda server: MAX_PHOTOS * server.limits.max_bytes + 256 * 1024)
    async def enrol(request: Request, collection_id: str) -> Response:
        values = {k: v for k, v in request.state.form.items() if isinstance(v, str)}
        results: list[dict[str, Any]] = []
        error: RegardError | None = None
        try:
            external = form_text(request, "external_image_id", max_length=255)
            consent = form_text(request, "consent", max_length=255)
            purpose = form_text(request, "purpose", max_length=512)
            every_face = form_text(request, "every_face") == "true"
            photos = [f for f in request.state.form.getlist("photos")
                      if isinstance(f, UploadFile) and f.filename]
            if not photos:
                raise ValidationError("Choose at least one photo")
            if len(photos) > MAX_PHOTOS:
                raise ValidationError(f"At most {MAX_PHOTOS} photos at a time")
            for photo in photos:
                results.append(await _enrol_one(console, request, collection_id, photo,
                                                external, consent, purpose, every_face))
        except RegardError as exc:
            error = exc
        return console.render(request, "enrol.html", status=400 if error else 200,
                              name=collection_id, values=values, results=results, error=error,
                              max_photos=MAX_PHOTOS, reasons=REASONS,
                              consent_required=await _consent_required(console, request,
                                                                        collection_id))


async def _enrol_one(console: Console, request: Request, collection_id: str,
                     photo: UploadFile, external: str | None, consent: str | None,
                     purpose: str | None, every_face: bool) -> dict[str, Any]:
    """Index one photo; its outcome (or its error) for the page, never an exception: one bad
    photo must not hide what happened to the others."""
    limit = console.server.limits.max_bytes
    data = await photo.read(limit + 1)
    outcome: dict[str, Any] = {"file": photo.filename, "picture": None, "boxes": [],
                               "indexed": [], "unindexed": [], "error": None}
    try:
        if len(data) > limit:
            raise ImageTooLargeError(f"{photo.filename} exceeds the limit of {limit} bytes")
        result = await console.call(
            request, "IndexFaces",
            {"CollectionId": collection_id, "Image": {"Bytes": data},
             "ExternalImageId": external, "MaxFaces": None if every_face else 1},
            audit={"consent": consent, "purpose": purpose})
        outcome["picture"] = await console.server.blocking(picture_of, data,
                                                           console.server.limits)
    except RegardError as exc:
        outcome["error"] = exc
        return outcome
    for record in result["FaceRecords"]:
        outcome["indexed"].append(record["Face"])
        outcome["boxes"].append((record["Face"]["BoundingBox"], "indexed", "match"))
    for face in result["UnindexedFaces"]:
        reasons = face.get("Reasons", [])
        outcome["unindexed"].append(reasons)
        outcome["boxes"].append((face["FaceDetail"]["BoundingBox"], "not indexed",
                                 "unmatched"))
    return outcome


async def _consent_required(console: Console, request: Request, collection_id: str) -> bool:
    facts = await console.call(request, "DescribeCollection", {"CollectionId": collection_id})
    tags = await console.call(request, "ListTagsForResource",
                              {"ResourceArn": facts["CollectionARN"]})
    return CollectionPolicy.from_tags(tags["Tags"]).consent_required


async def _faces_to_associate(console: Console, request: Request,
                              collection_id: str) -> list[str]:
    """FaceIds typed or ticked, or every face of an ExternalImageId."""
    external = form_text(request, "external_image_id", max_length=255)
    if external:
        found = await console.call(request, "DescribeFaces", {
            "CollectionId": collection_id, "ExternalImageId": external, "MaxResults": 100})
        ids = [f["FaceId"] for f in found["Faces"]]
        if not ids:
            raise ValidationError(f"No face of {collection_id} has the ExternalImageId "
                                  f"{external!r}")
        return ids
    return face_ids_of(request)


def _outcome(verb: str, done: list[dict[str, Any]], failed: list[dict[str, Any]]) -> str:
    text = f"{verb} {len(done)} face(s)."
    if failed:
        text += " Not done: " + "; ".join(
            f"{f['FaceId']} ({', '.join(f.get('Reasons', []))})" for f in failed[:20])
    return text
