"""The audit ledger and erasure screens.

``/console/audit``: the ledger newest first (AuditBrowse, 50 entries a page, filtered by
operation, principal or collection), the whole chain's verification (AuditVerify, a POST: it
reads every entry), who searched for a person (WhoSearched) and the transparency report
(TransparencyReport) downloaded as a file.

``/console/erasure``: a person's faces, embeddings and users removed (Erase) in two steps: the
form, then a confirmation that restates what will go and asks for the identifier again; only a
second POST whose typed identifier matches erases. The purpose and case reference given go to
the ledger entry, like every call's.

Every read here is itself an audited operation run through the gate as the signed-in key."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from regard.api.rest import status_of
from regard.console.web import Console, form_text
from regard.errors import RegardError, ValidationError
from regard.operations import registry

PAGE_SIZE = 50
MAX_QUERY = 256
SHOWN_ITEMS = 8  # of a list in a result summary (FaceIds): the rest counted
CONSOLE_OPERATIONS = ("ConsoleSignIn", "ConsoleSignOut")  # written by the console's sign-in
REPORT_FILE = "regard-transparency-report.html"
REPORT_HEADERS = {
    # The downloaded report is a stand-alone page with inline CSS and no script.
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                "img-src data:; sandbox"),
    "Content-Disposition": f'attachment; filename="{REPORT_FILE}"',
    "Cache-Control": "no-store",
}


def operation_names() -> list[str]:
    return sorted({op.name for op in registry.all_operations()} | set(CONSOLE_OPERATIONS))


def _query(value: str | None, name: str) -> str | None:
    """A query parameter, stripped; empty is None."""
    if value is None or not value.strip():
        return None
    if len(value) > MAX_QUERY:
        raise ValidationError(f"{name} is longer than {MAX_QUERY} characters")
    return value.strip()


def _seq(value: str | None, name: str) -> int | None:
    text = _query(value, name)
    if text is None:
        return None
    if not text.isdigit():
        raise ValidationError(f"{name} must be a ledger sequence number")
    return int(text)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def summarize(result: dict[str, Any] | None) -> list[tuple[str, str]]:
    """An entry's result as (member, text) pairs for reading: lists cut to their first few
    items with the rest counted, nested values as compact JSON. Escaped by the template."""
    rows = []
    for name, value in (result or {}).items():
        if isinstance(value, list):
            shown = ", ".join(_text(v) for v in value[:SHOWN_ITEMS])
            if len(value) > SHOWN_ITEMS:
                shown += f" … and {len(value) - SHOWN_ITEMS} more"
            rows.append((name, shown or "none"))
        else:
            rows.append((name, _text(value)))
    return rows


def view(entry: dict[str, Any]) -> dict[str, Any]:
    """An AuditEntry's dict with what the template shows: the result summarized, whether it
    records a refusal or failure, the time without its microseconds."""
    result = entry.get("result") or {}
    time = entry.get("time") or ""
    return {**entry, "facts": summarize(result), "refused": "Error" in result,
            "shown_time": time[:19].replace("T", " ") + " UTC" if len(time) >= 19 else time}


def routes(console: Console, router: APIRouter) -> None:
    audit_routes(console, router)
    erasure_routes(console, router)


# -- the ledger -------------------------------------------------------------------------------
def audit_routes(console: Console, router: APIRouter) -> None:
    @router.get("/audit")
    async def audit(request: Request, operation: str | None = None,
                    principal: str | None = None, collection: str | None = None,
                    before: str | None = None) -> Response:
        filters = {"operation": _query(operation, "operation"),
                   "principal": _query(principal, "principal"),
                   "collection": _query(collection, "collection")}
        start = _seq(before, "before")
        page = await console.call(request, "AuditBrowse", {
            "Operation": filters["operation"], "Principal": filters["principal"],
            "Collection": filters["collection"], "Before": start, "Limit": PAGE_SIZE})
        names = operation_names()
        if filters["operation"] and filters["operation"] not in names:
            names.append(filters["operation"])
        query = "&".join(f"{k}={quote(v, safe='')}"
                         for k, v in filters.items() if v)
        return console.render(
            request, "audit.html", entries=[view(e) for e in page["Entries"]],
            next_before=page.get("NextBefore"), filters=filters, query=query, before=start,
            operations=names, own=_own_key(request), report_collections=_allowed(request))

    @router.post("/audit/verify")
    async def verify(request: Request) -> Response:
        report = await console.call(request, "AuditVerify")
        return console.render(request, "audit_verify.html", report=report)

    @router.get("/audit/who-searched")
    async def who_searched(request: Request, external_image_id: str | None = None,
                           user_id: str | None = None, face_id: str | None = None) -> Response:
        asked = {"external_image_id": _query(external_image_id, "ExternalImageId"),
                 "user_id": _query(user_id, "UserId"), "face_id": _query(face_id, "FaceId")}
        entries, error = None, None
        if any(asked.values()):
            try:
                found = await console.call(request, "WhoSearched", {
                    "ExternalImageId": asked["external_image_id"], "UserId": asked["user_id"],
                    "FaceIds": [asked["face_id"]] if asked["face_id"] else None})
                entries = [view(e) for e in reversed(found["Entries"])]  # newest first
            except RegardError as exc:
                error = exc
        named = " or ".join(f"{label} {asked[field]}" for field, label in (
            ("external_image_id", "ExternalImageId"), ("user_id", "UserId"),
            ("face_id", "FaceId")) if asked[field])
        return console.render(request, "audit_who.html", asked=asked, entries=entries,
                              error=error, named=named, own=_own_key(request),
                              status=status_of(error) if error is not None else 200)

    @router.get("/audit/report")
    async def report(request: Request, collection: str | None = None) -> Response:
        name = _query(collection, "collection")
        body = await console.call(request, "TransparencyReport", {"CollectionId": name})
        return Response(body["Html"], media_type="text/html; charset=utf-8",
                        headers=REPORT_HEADERS)


def _own_key(request: Request) -> str | None:
    key = request.state.visitor.key
    return key.access_key_id if key is not None else None


def _allowed(request: Request) -> list[str] | None:
    """The signed-in key's collection allow-list (None: every collection)."""
    key = request.state.visitor.key
    return list(key.collections) if key is not None and key.collections is not None else None


# -- erasure ----------------------------------------------------------------------------------
SUBJECTS = (("external_image_id", "ExternalImageId"), ("user_id", "UserId"))


def erasure_routes(console: Console, router: APIRouter) -> None:
    async def collections(request: Request) -> list[str] | None:
        """The collections the key may erase from, for the select (None: a text field, when
        the key may not list them)."""
        allowed = _allowed(request)
        if allowed is not None:
            return allowed
        if not request.state.visitor.may("DescribeCollections"):
            return None
        try:
            listed = await console.call(request, "DescribeCollections", {"MaxResults": 100})
        except RegardError:
            return None
        if "NextToken" in listed:  # more than a select should hold: type the name
            return None
        return [c["CollectionId"] for c in listed["Collections"]]

    async def form_page(request: Request, values: dict[str, str | None],
                        error: RegardError | None = None, status: int = 200) -> Response:
        return console.render(request, "erasure.html", values=values, error=error,
                              collections=await collections(request), status=status)

    @router.get("/erasure")
    async def erasure(request: Request) -> Response:
        return await form_page(request, {})

    @router.post("/erasure")
    async def erase(request: Request) -> Response:
        values = {name: form_text(request, name, max_length=255) for name in (
            "external_image_id", "user_id", "collection")}
        values["purpose"] = form_text(request, "purpose", max_length=512)
        values["case"] = form_text(request, "case", max_length=255)
        given = [(field, member) for field, member in SUBJECTS if values[field]]
        if len(given) != 1:
            return await form_page(request, values, ValidationError(
                "Name the person by exactly one of ExternalImageId and UserId."), 400)
        field, member = given[0]
        subject = {"field": field, "member": member, "value": values[field]}
        if form_text(request, "step") != "erase":
            return console.render(request, "erasure_confirm.html", values=values,
                                  subject=subject, mismatch=False)
        typed = form_text(request, "confirmation", max_length=255)
        if typed != values[field]:
            return console.render(request, "erasure_confirm.html", values=values,
                                  subject=subject, mismatch=True, status=400)
        try:
            result = await console.call(
                request, "Erase", {member: values[field], "CollectionId": values["collection"]},
                audit={"purpose": values["purpose"], "case": values["case"]})
        except RegardError as exc:  # a collection that is not there, outside the key's reach
            return await form_page(request, values, exc, status_of(exc))
        return console.render(request, "erasure_done.html", values=values, subject=subject,
                              result=result)
