"""The console's own CSS and script, served from the package (no CDN: Regard runs offline).

A fixed list of files read once: a path cannot name anything else."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter, Request
from fastapi.responses import Response

from regard.console.web import HERE, Console, public

TYPES = {"console.css": "text/css; charset=utf-8",
         "console.js": "text/javascript; charset=utf-8",
         "favicon.svg": "image/svg+xml"}


@lru_cache(maxsize=None)
def _read(name: str) -> bytes:
    return (HERE / "static" / name).read_bytes()


def routes(console: Console, router: APIRouter) -> None:
    @router.get("/static/{name}")
    @public
    async def asset(request: Request, name: str) -> Response:
        if name not in TYPES:
            return Response("Not found", status_code=404, media_type="text/plain")
        return Response(_read(name), media_type=TYPES[name],
                        headers={"Cache-Control": "public, max-age=3600"})
