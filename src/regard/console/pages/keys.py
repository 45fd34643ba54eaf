"""Access keys (admin scope): the list (ListAccessKeys), a new key (CreateAccessKey, its secret
shown once, in the one response that creates it) and revocation in two steps (RevokeAccessKey).

Revoking a key ends its console sessions: the core re-reads the key on every request and
refuses a revoked one; the session rows are deleted here too. Keys without ``admin`` get the
gate's AccessDenied as a 403 page, like any other operation outside their scopes."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from regard.console.web import Console, form_text
from regard.errors import RegardError, ValidationError
from regard.operations.registry import SCOPES

SCOPE_HELP = {
    "detect": "find faces in images (DetectFaces)",
    "compare": "compare two faces (CompareFaces)",
    "collections:read": "list and describe collections, faces and users",
    "collections:write": "create and delete collections, change their policy",
    "faces:write": "index, associate, delete and erase faces and users",
    "search": "search collections by face, image or user (identification)",
    "audit:read": "read, verify and export the audit ledger; who-searched; reports",
    "admin": "everything, including issuing and revoking keys",
}
MAX_COLLECTIONS = 100


def _collections(text: str | None) -> list[str] | None:
    """The allow-list typed in the form: names separated by commas or new lines (None: all)."""
    if text is None:
        return None
    names = list(dict.fromkeys(n.strip() for n in re.split(r"[,\n\r]+", text) if n.strip()))
    if len(names) > MAX_COLLECTIONS:
        raise ValidationError(f"At most {MAX_COLLECTIONS} collections in an allow-list")
    return names or None


def _max_tps(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValidationError("Max requests per second must be a number") from None
    if not 0 < value <= 1e6:
        raise ValidationError("Max requests per second must be more than 0 (at most 1e6)")
    return value


def routes(console: Console, router: APIRouter) -> None:
    async def page(request: Request, status: int = 200, **values: Any) -> Response:
        listed = await console.call(request, "ListAccessKeys")
        key = request.state.visitor.key
        values.setdefault("form", {"scopes": []})
        values.setdefault("created", None)
        values.setdefault("error", None)
        values.setdefault("revoked", None)
        return console.render(request, "keys.html", status=status, keys=listed["AccessKeys"],
                              scopes=SCOPES, scope_help=SCOPE_HELP,
                              own=key.access_key_id if key is not None else None, **values)

    @router.get("/keys")
    async def keys(request: Request, revoked: str | None = None) -> Response:
        return await page(request, revoked=revoked.strip()[:64] if revoked else None)

    @router.post("/keys")
    async def create(request: Request) -> Response:
        form = {"name": form_text(request, "name", max_length=200),
                "scopes": [s for s in request.state.form.getlist("scope") if s in SCOPES],
                "collections": form_text(request, "collections", max_length=20000),
                "default_purpose": form_text(request, "default_purpose", max_length=512),
                "max_tps": form_text(request, "max_tps", max_length=32)}
        try:
            if not form["scopes"]:
                raise ValidationError("Choose at least one scope")
            created = await console.call(request, "CreateAccessKey", {
                "Name": form["name"], "Scopes": form["scopes"],
                "Collections": _collections(form["collections"]),
                "DefaultPurpose": form["default_purpose"], "MaxTps": _max_tps(form["max_tps"])})
        except RegardError as exc:
            if exc.code == "AccessDeniedException":
                raise
            return await page(request, status=400, form=form, error=exc)
        # Shown here, once: no redirect (the secret must be in this response, never in a URL),
        # and the page is no-store.
        return await page(request, created=created)

    @router.post("/keys/revoke")
    async def revoke(request: Request) -> Response:
        key_id = form_text(request, "access_key_id", max_length=64)
        if not key_id:
            raise ValidationError("Name the access key to revoke")
        if form_text(request, "confirm") != "yes":
            listed = await console.call(request, "ListAccessKeys")
            found = next((k for k in listed["AccessKeys"] if k["AccessKeyId"] == key_id), None)
            if found is None:
                return await page(request, status=404, error=ValidationError(
                    f"There is no access key {key_id}."))
            visitor = request.state.visitor
            return console.render(request, "keys_revoke.html", key=found,
                                  own=visitor.key is not None
                                  and visitor.key.access_key_id == key_id)
        await console.call(request, "RevokeAccessKey", {"AccessKeyId": key_id})
        await console.server.blocking(console.sessions.end_all, key_id)
        return console.redirect("/keys", revoked=key_id)
