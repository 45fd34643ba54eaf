"""What every console page shares: the session, the CSRF check, the security headers, the call
through the service gate, and rendering.

Technology, chosen for the people who will change it: server-rendered Jinja2 templates (the
templating FastAPI documents, already installed with it) with autoescaping on for every
template, plain CSS, and one small script file that only enhances (the console works with
scripts off). No build step, no framework to learn, nothing fetched from a CDN: every asset is
served from the package (``/console/static``), so it works offline.

Every page and action runs its operations through ``Server.dispatch`` with the signed-in key's
``CallContext``: the same gate checks the scopes and the collection allow-list, applies the
collection's policy and writes the ledger entry as for the APIs. The console adds no
permission logic of its own; it only hides links a key could not use.

Security (see the README's console section):

* the session cookie is ``HttpOnly``, ``SameSite=Strict``, ``Path=/console`` and ``Secure``
  (over plain HTTP only on a loopback address, which browsers treat as secure); over plain HTTP
  to any other address the console refuses to sign in, since the secret would cross the network
  in clear;
* every POST must carry the session's CSRF token, and is refused when the browser says it comes
  from another site (``Origin``, ``Sec-Fetch-Site``);
* ``Content-Security-Policy`` allows scripts, styles and fonts from the console's own files
  only (no inline script or style), images from itself and ``data:`` (the uploaded photo shown
  back), frames from nowhere (``frame-ancestors 'none'``), forms posting only to itself;
* pages are ``Cache-Control: no-store`` (they show personal data and, once, secrets).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.types import Message

import regard
from regard import config
from regard.api.aws import read_body
from regard.api.rest import status_of
from regard.api.server import Server, is_loopback, outcome, timer
from regard.console.sessions import Session, SessionStore
from regard.context import CallContext
from regard.errors import (
    AccessDeniedError,
    ImageTooLargeError,
    RegardError,
    RequestTimeoutError,
    UnrecognizedClientError,
    ValidationError,
)
from regard.governance import scopes
from regard.governance.keys import AccessKey
from regard.operations import registry

log = logging.getLogger("regard.console")

PREFIX = "/console"
STATIC = f"{PREFIX}/static"
COOKIE = "regard_console"
CSRF_FIELD = "csrf_token"
HERE = Path(__file__).parent

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; font-src 'self'; connect-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
PAGE_CACHE = {"Cache-Control": "no-store"}


class SignInRequired(Exception):
    """No live session: a page redirects to the sign-in form."""


class CsrfRefused(Exception):
    """A POST without this session's token, or from another site."""


class Visitor:
    """Who is using the console in this request: the session and the key behind it (None with
    ``--insecure-local``), re-read on every request so that a revoked key is refused at once."""

    def __init__(self, session: Session, key: AccessKey | None) -> None:
        self.session = session
        self.key = key

    @property
    def name(self) -> str:
        if self.key is None:
            return "local operator (--insecure-local)"
        return f"{self.key.name} ({self.key.access_key_id})" if self.key.name \
            else self.key.access_key_id

    def may(self, operation: str) -> bool:
        """Whether the key's scopes admit ``operation`` (for hiding links; the gate decides)."""
        if self.key is None:
            return True
        try:
            scopes.check(operation, registry.scope_of(operation), self.key.scopes, None, None)
        except AccessDeniedError:
            return False
        return True


class Console:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.sessions = SessionStore(server.service.store.database,
                                     timedelta(minutes=config.current().console_idle_minutes))
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every template, whatever its name: user data is never markup
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.globals.update(prefix=PREFIX, static=STATIC, version=regard.__version__,
                                      csrf_field=CSRF_FIELD, quote=quote)
        self.templates.filters["pct"] = lambda v: f"{float(v):.1f}"
        self.templates.filters["when"] = when

    # -- sessions -------------------------------------------------------------------------------
    @property
    def insecure_local(self) -> bool:
        return self.server.settings.insecure_local

    async def visitor(self, request: Request) -> Visitor:
        token = request.cookies.get(COOKIE)
        session = await self.server.blocking(self.sessions.get, token)
        if session is None:
            raise SignInRequired()
        key = None
        if session.access_key_id is not None:
            try:
                key, _ = await self.server.blocking(self.server.keys.secret,
                                                    session.access_key_id)
            except UnrecognizedClientError:  # revoked since sign-in
                await self.server.blocking(self.sessions.end, token or "")
                raise SignInRequired() from None
        elif not self.insecure_local:  # a local session outliving an --insecure-local run
            raise SignInRequired()
        return Visitor(session, key)

    def context(self, request: Request, visitor: Visitor,
                audit: Mapping[str, str | None] | None = None) -> CallContext:
        """The call context of this request's operations: the key's, with the purpose, case and
        consent references the form gave (recorded in the ledger)."""
        headers = {f"x-regard-{k}": v.strip() for k, v in (audit or {}).items()
                   if v and v.strip()}
        return self.server.context(visitor.key, request.client.host if request.client else None,
                                   headers, request.state.request_id)

    async def call(self, request: Request, operation: str, params: dict[str, Any] | None = None,
                   audit: Mapping[str, str | None] | None = None) -> dict[str, Any]:
        """Run ``operation`` through the service gate as the signed-in key."""
        visitor: Visitor = request.state.visitor
        context = self.context(request, visitor, audit)
        given = {k: v for k, v in (params or {}).items() if v is not None}
        elapsed = timer()
        error: RegardError | None = None
        try:
            return await self.server.dispatch(operation, given, context)
        except RegardError as exc:
            error = exc
            raise
        finally:
            self.server.metrics.observe("console", operation, outcome(error), elapsed())

    # -- rendering ------------------------------------------------------------------------------
    def render(self, request: Request, template: str, status: int = 200,
               **values: Any) -> HTMLResponse:
        visitor = getattr(request.state, "visitor", None)
        page = self.templates.get_template(template).render(
            request=request, visitor=visitor,
            csrf=visitor.session.csrf_token if visitor is not None else "",
            path=request.url.path, **values)
        return HTMLResponse(page, status_code=status, headers=PAGE_CACHE)

    def problem(self, request: Request, error: RegardError) -> HTMLResponse:
        return self.render(request, "problem.html", status=status_of(error), error=error)

    @staticmethod
    def redirect(path: str, **query: str) -> RedirectResponse:
        """303 after a POST: the browser shows the result with a GET (reload does not repeat
        the action)."""
        target = path if path.startswith(PREFIX + "/") or path == PREFIX else PREFIX + path
        if query:
            target += "?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items())
        return RedirectResponse(target, status_code=303, headers=PAGE_CACHE)

    # -- transport ------------------------------------------------------------------------------
    def cookie_is_secure(self, request: Request) -> bool:
        return request.url.scheme == "https" or is_loopback(request.url.hostname or "")

    def set_cookie(self, response: Response, request: Request, token: str) -> None:
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path=PREFIX,
                            secure=self.cookie_is_secure(request),
                            max_age=int(self.sessions.lifetime.total_seconds()))

    @staticmethod
    def clear_cookie(response: Response) -> None:
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")


def when(value: Any) -> str:
    """A time as people read it: ``2026-11-30 12:12 UTC`` (a datetime or an ISO string)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if not isinstance(value, datetime):
        return "" if value is None else str(value)
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def same_site(request: Request) -> bool:
    """Whether the browser says this request comes from a page of this server: ``Origin`` (sent
    with every cross-origin and every POST request by current browsers) must be ours, and
    ``Sec-Fetch-Site`` must not be ``cross-site`` / ``same-site``."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urlsplit(origin)  # (the scheme may differ behind a TLS-terminating proxy)
    return (parts.scheme in ("http", "https")
            and parts.netloc.lower() == request.headers.get("host", "").lower())


def upload_limit(limit_bytes: Callable[[Server], int]) -> Callable[[Any], Any]:
    """Mark a page whose form may carry more than one image's worth of bytes (several photos,
    a video); ``limit_bytes(server)`` says how much."""
    def mark(endpoint: Any) -> Any:
        endpoint.upload_limit = limit_bytes
        return endpoint
    return mark


def route_class(console: Console) -> type[APIRoute]:
    """Every console route: security headers, a request id; the session (except the sign-in
    pages and the static files, marked ``public``); for a POST, the body read within the
    server's limits, parsed once, and its CSRF token and origin checked before the page runs.
    A ``RegardError`` the page does not handle becomes an error page with the REST status."""
    server = console.server

    class ConsoleRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            endpoint = super().get_route_handler()
            public = getattr(self.endpoint, "public", False)
            limit_of = getattr(self.endpoint, "upload_limit", None)

            async def handle(request: Request) -> Response:
                request.state.request_id = str(uuid.uuid4())
                reserved = [0]
                try:
                    if not public:
                        request.state.visitor = await console.visitor(request)
                    if request.method == "POST":
                        if not same_site(request):
                            raise CsrfRefused()
                        if limit_of is None:
                            request._body = await read_body(
                                request, server.max_body_bytes,
                                server.settings.body_read_seconds, server.bodies, reserved)
                            form = await request.form(max_files=8, max_fields=256)
                        else:
                            form = await streamed_form(request, server, limit_of(server),
                                                       reserved)
                        request.state.form = form
                        if not public and not request.state.visitor.session.csrf_ok(
                                _text(form, CSRF_FIELD)):
                            raise CsrfRefused()
                    response = await endpoint(request)
                except SignInRequired:
                    if request.method == "GET":
                        response = console.redirect("/sign-in", next=_next(request))
                    else:
                        response = console.render(request, "signed_out.html", status=401)
                    console.clear_cookie(response)
                except CsrfRefused:
                    log.warning("console: refused a POST to %s without a valid CSRF token or "
                                "from another site", request.url.path)
                    response = console.render(request, "problem.html", status=403, error=(
                        AccessDeniedError(
                            "This form was not sent from this console's own page (its CSRF "
                            "token is missing or wrong, or it came from another site). Reload "
                            "the page and try again.")))
                except RegardError as exc:
                    response = console.problem(request, exc)
                finally:
                    server.bodies.release(reserved[0])
                    form = getattr(request.state, "form", None)
                    if form is not None:  # its uploads' temporary files, at once
                        await form.close()
                for name, value in SECURITY_HEADERS.items():
                    response.headers.setdefault(name, value)
                response.headers["X-Request-Id"] = request.state.request_id
                return response

            return handle

    return ConsoleRoute


async def streamed_form(request: Request, server: Server, limit: int,
                        reserved: list[int]) -> FormData:
    """The form of a POST that may carry large files (photos, a video), parsed as it arrives:
    Starlette keeps each file part in memory up to ``MultiPartParser.spool_max_size`` (one
    image's worth) and spools the rest of it to a temporary file, so a 2 GB video never sits in
    memory. The body counts against ``limit`` as it streams (a lying or absent Content-Length
    changes nothing) and must arrive within ``upload_read_seconds``; what a part may hold in
    memory is reserved from the server's body buffers, as for every other request."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ImageTooLargeError(f"The upload exceeds the limit of {limit} bytes")
    in_memory = min(int(declared) if declared and declared.isdigit() else limit,
                    server.max_body_bytes)
    server.bodies.reserve(in_memory)
    reserved[0] += in_memory
    receive, seen = request.receive, [0]

    async def counted() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > limit:
                raise ImageTooLargeError(f"The upload exceeds the limit of {limit} bytes")
        return message

    request._receive = counted
    try:
        return await asyncio.wait_for(request.form(max_files=16, max_fields=256),
                                      server.settings.upload_read_seconds)
    except asyncio.TimeoutError:
        raise RequestTimeoutError(f"The upload did not arrive within "
                                  f"{server.settings.upload_read_seconds:g} seconds") from None
    except ClientDisconnect:
        raise RequestTimeoutError("The client closed the connection during the upload") \
            from None
    except MultiPartException as exc:
        raise ValidationError(f"The form could not be read: {exc.message}") from None


def _next(request: Request) -> str:
    path = request.url.path
    if request.url.query:
        path += "?" + request.url.query
    return path


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def path_part(value: str) -> str:
    """``value`` as one segment of a console URL (a collection or user id)."""
    return quote(value, safe="")


def public(endpoint: Any) -> Any:
    """Mark a page served without a session (sign-in)."""
    endpoint.public = True
    return endpoint


def form_text(request: Request, name: str, *, default: str | None = None,
              max_length: int = 1024) -> str | None:
    """A text field of the POSTed form, stripped; empty is ``default``."""
    value = _text(request.state.form, name)
    if value is None or not value.strip():
        return default
    value = value.strip()
    if len(value) > max_length:
        raise ValidationError(f"{name} is longer than {max_length} characters")
    return value
