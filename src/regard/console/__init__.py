"""The web console at ``/console``: Regard run and overseen from a browser (see ``web``)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from regard.api.server import Server
from regard.console.web import PREFIX, Console, route_class
from regard.errors import ResourceNotFoundError


def mount(app: FastAPI, server: Server) -> Console:
    from regard.console.pages import PAGES

    console = Console(server)
    router = APIRouter(prefix=PREFIX, route_class=route_class(console), include_in_schema=False)
    for page in PAGES:
        page.routes(console, router)

    @router.api_route("/{rest:path}", methods=["GET", "POST"])
    async def not_found(request: Request, rest: str) -> Response:
        """Any other path under /console: the console's own 404 (with its headers)."""
        if not rest:  # /console/
            return console.redirect("")
        return console.problem(request, ResourceNotFoundError(
            f"There is no console page {request.url.path}"))

    app.include_router(router)
    return console


__all__ = ["mount", "Console"]
