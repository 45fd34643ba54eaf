"""The web console at ``/console``: Regard run and overseen from a browser (see ``web``)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from regard.api.server import Server
from regard.console.web import PREFIX, Console, route_class


def mount(app: FastAPI, server: Server) -> Console:
    from regard.console.pages import PAGES

    console = Console(server)
    router = APIRouter(prefix=PREFIX, route_class=route_class(console), include_in_schema=False)
    for page in PAGES:
        page.routes(console, router)
    app.include_router(router)
    return console


__all__ = ["mount", "Console"]
