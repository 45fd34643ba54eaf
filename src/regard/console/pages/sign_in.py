"""Sign-in with an access key (the same keys and scopes as the APIs) and sign-out.

A successful sign-in and a sign-out are ledger entries (``ConsoleSignIn`` / ``ConsoleSignOut``,
written by the gate's ledger like any other entry); failed attempts are logged, not written to
the ledger, for the reason the APIs do not record failed authentication either: anyone could
fill the ledger with them."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from regard.api.server import is_loopback
from regard.console.web import COOKIE, Console, form_text, public
from regard.errors import RegardError

log = logging.getLogger("regard.console")


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never an absolute URL (an open redirect)."""
    if (not target or not target.startswith("/console") or target.startswith("//")
            or "\\" in target or "/sign-in" in target):
        return "/console"
    return target


def routes(console: Console, router: APIRouter) -> None:
    server = console.server

    def cleartext(request: Request) -> bool:
        return request.url.scheme != "https" and not is_loopback(request.url.hostname or "")

    @router.get("/sign-in")
    @public
    async def sign_in_form(request: Request, next: str | None = None) -> Response:
        return console.render(request, "sign_in.html", next=_safe_next(next),
                              insecure_local=console.insecure_local,
                              cleartext=cleartext(request), failed=None)

    @router.post("/sign-in")
    @public
    async def sign_in(request: Request) -> Response:
        target = _safe_next(form_text(request, "next"))
        if cleartext(request):
            return console.render(request, "sign_in.html", status=400, next=target,
                                  insecure_local=False, cleartext=True, failed=None)
        client = request.client.host if request.client else None
        key = None
        if not console.insecure_local:
            key_id = form_text(request, "access_key_id", max_length=64) or ""
            secret = form_text(request, "secret", max_length=128) or ""
            try:
                key = await server.blocking(server.keys.authenticate, key_id, secret)
            except RegardError:
                log.warning("console: failed sign-in from %s", client)
                return console.render(request, "sign_in.html", status=401, next=target,
                                      insecure_local=False, cleartext=False,
                                      failed="That access key id and secret do not match an "
                                             "active key.")
        token, _ = await server.blocking(console.sessions.create,
                                         key.access_key_id if key else None, client)
        principal = key.access_key_id if key else "anonymous"
        await server.blocking(lambda: server.service.gate.ledger.append(
            principal=principal, operation="ConsoleSignIn", client=client,
            result={"Outcome": "OK"}))
        response = console.redirect(target)
        console.set_cookie(response, request, token)
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        token = request.cookies.get(COOKIE) or ""
        visitor = request.state.visitor
        await server.blocking(console.sessions.end, token)
        principal = visitor.key.access_key_id if visitor.key else "anonymous"
        client = request.client.host if request.client else None
        await server.blocking(lambda: server.service.gate.ledger.append(
            principal=principal, operation="ConsoleSignOut", client=client,
            result={"Outcome": "OK"}))
        request.state.visitor = None
        response = console.render(request, "signed_out.html", signed_out=True)
        console.clear_cookie(response)
        return response
