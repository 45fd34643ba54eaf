"""Search a collection by photo, and compare two photos.

The photo comes back on the answer page with every face boxed (DetectFaces, when the key may
detect) and the searched face (the largest, as Rekognition searches) labelled with its best
match. Next to the matches, the page says what the threshold means in numbers: the face model's
published false-match rate at that similarity (the worst-off measured demographic group's,
from its calibration) and, for a search, the chance that a stranger's photo matches somebody in
a collection of this size (the ``ExpectedFalsePositiveIdentificationRate`` the service returns).

A search asks why it is made: the purpose and case reference go to the ledger with it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from regard.config import DEFAULT_MATCH_THRESHOLD
from regard.console.pictures import picture_of
from regard.api.rest import status_of
from regard.console.web import Console, form_text, upload_limit
from regard.errors import ImageTooLargeError, RegardError, ValidationError
from regard.service import EFFECTIVE_THRESHOLD, EXPECTED_FPIR, HUMAN_REVIEW
from regard.vision.packs import default_pack, get_pack


def threshold_meaning(model_version: str | None, threshold: float) -> dict[str, Any] | None:
    """The published false-match rate per comparison at ``threshold`` (None when the model has
    no calibration to say it)."""
    try:
        pack = get_pack(model_version) if model_version else default_pack()
        fmr = pack.fmr_at(threshold)
    except RegardError:
        return None
    return {"fmr": fmr, "one_in": round(1 / fmr) if fmr > 0 else None,
            "model": pack.version, "name": pack.name}


async def _read_photo(console: Console, request: Request, field: str) -> bytes:
    upload = request.state.form.get(field)
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise ValidationError("Choose a photo")
    limit = console.server.limits.max_bytes
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise ImageTooLargeError(f"{upload.filename} exceeds the limit of {limit} bytes")
    return data


def _number(request: Request, name: str, kind: type = float) -> Any:
    value = form_text(request, name, max_length=32)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        raise ValidationError(f"{name.replace('_', ' ').capitalize()} must be a number") \
            from None


TWO_PHOTOS = upload_limit(lambda server: 2 * server.limits.max_bytes + 64 * 1024)


def routes(console: Console, router: APIRouter) -> None:
    async def collections(request: Request) -> list[str]:
        if not request.state.visitor.may("DescribeCollections"):
            return []
        try:
            listed = await console.call(request, "ListCollections", {"MaxResults": 1000})
        except RegardError:
            return []
        return list(listed["CollectionIds"])

    @router.get("/search")
    async def search_form(request: Request, collection: str | None = None) -> Response:
        return console.render(request, "search.html", names=await collections(request),
                              values={"collection": collection or ""}, result=None,
                              error=None, default_threshold=DEFAULT_MATCH_THRESHOLD)

    @router.post("/search")
    @upload_limit(lambda server: server.limits.max_bytes + 64 * 1024)
    async def search(request: Request) -> Response:
        values = {k: v for k, v in request.state.form.items() if isinstance(v, str)}
        try:
            name = form_text(request, "collection", max_length=255)
            purpose = form_text(request, "purpose", max_length=512)
            if not name:
                raise ValidationError("Choose a collection")
            if not purpose:
                raise ValidationError("Say why you are searching: the purpose is recorded "
                                      "in the audit ledger with the search")
            data = await _read_photo(console, request, "photo")
            audit = {"purpose": purpose, "case": form_text(request, "case", max_length=256)}
            found = await console.call(request, "SearchFacesByImage", {
                "CollectionId": name, "Image": {"Bytes": data},
                "FaceMatchThreshold": _number(request, "threshold"),
                "MaxFaces": _number(request, "max_matches", int)}, audit=audit)
            faces = []
            if request.state.visitor.may("DetectFaces"):
                faces = (await console.call(request, "DetectFaces",
                                            {"Image": {"Bytes": data}}, audit=audit)
                         )["FaceDetails"]
            picture = await console.server.blocking(picture_of, data, console.server.limits)
        except RegardError as exc:
            return console.render(request, "search.html", status=status_of(exc),
                                  names=await collections(request), values=values,
                                  result=None, error=exc,
                                  default_threshold=DEFAULT_MATCH_THRESHOLD)
        searched = found["SearchedFaceBoundingBox"]
        matches = found.get("FaceMatches", [])
        best = matches[0] if matches else None
        label = (f"{best['Face'].get('ExternalImageId') or best['Face']['FaceId'][:8]} "
                 f"{best['Similarity']:.1f}%" if best else "no match")
        boxes = [(f["BoundingBox"], None, "face") for f in faces
                 if not _same_box(f["BoundingBox"], searched)]
        boxes.append((searched, label, "match" if best else "unmatched"))
        threshold = float(found.get(EFFECTIVE_THRESHOLD) or DEFAULT_MATCH_THRESHOLD)
        result = {"name": name, "matches": matches, "picture": picture, "boxes": boxes,
                  "faces": len(faces) or 1, "threshold": threshold,
                  "fpir": found.get(EXPECTED_FPIR), "review": found.get(HUMAN_REVIEW),
                  "meaning": threshold_meaning(found.get("FaceModelVersion"), threshold)}
        return console.render(request, "search.html", names=await collections(request),
                              values=values, result=result, error=None,
                              default_threshold=DEFAULT_MATCH_THRESHOLD)

    @router.get("/compare")
    async def compare_form(request: Request) -> Response:
        return console.render(request, "compare.html", values={}, result=None, error=None,
                              default_threshold=DEFAULT_MATCH_THRESHOLD)

    @router.post("/compare")
    @TWO_PHOTOS
    async def compare(request: Request) -> Response:
        values = {k: v for k, v in request.state.form.items() if isinstance(v, str)}
        try:
            source = await _read_photo(console, request, "source")
            target = await _read_photo(console, request, "target")
            audit = {"purpose": form_text(request, "purpose", max_length=512),
                     "case": form_text(request, "case", max_length=256)}
            compared = await console.call(request, "CompareFaces", {
                "SourceImage": {"Bytes": source}, "TargetImage": {"Bytes": target},
                "SimilarityThreshold": _number(request, "threshold")}, audit=audit)
            pictures = [await console.server.blocking(picture_of, data, console.server.limits)
                        for data in (source, target)]
        except RegardError as exc:
            return console.render(request, "compare.html", status=status_of(exc),
                                  values=values, result=None, error=exc,
                                  default_threshold=DEFAULT_MATCH_THRESHOLD)
        matches = compared.get("FaceMatches", [])
        target_boxes = [(m["Face"]["BoundingBox"], f"{m['Similarity']:.1f}%", "match")
                        for m in matches]
        target_boxes += [(u["BoundingBox"], None, "unmatched")
                         for u in compared.get("UnmatchedFaces", [])]
        threshold = _number(request, "threshold")
        threshold = float(threshold if threshold is not None else DEFAULT_MATCH_THRESHOLD)
        result = {"source": pictures[0], "target": pictures[1], "matches": matches,
                  "unmatched": len(compared.get("UnmatchedFaces", [])),
                  "source_boxes": [(compared["SourceImageFace"]["BoundingBox"], "compared",
                                    "face")],
                  "target_boxes": target_boxes, "threshold": threshold,
                  "meaning": threshold_meaning(None, threshold)}
        return console.render(request, "compare.html", values=values, result=result,
                              error=None, default_threshold=DEFAULT_MATCH_THRESHOLD)


def _same_box(a: dict[str, float], b: dict[str, float]) -> bool:
    return all(abs(a[k] - b[k]) < 0.02 for k in ("Left", "Top", "Width", "Height"))
