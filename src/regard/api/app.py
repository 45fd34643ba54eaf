"""The FastAPI app of ``regard serve``: the Rekognition door on ``POST /``, the native REST API
under ``/v1`` (OpenAPI at ``/docs``), ``/healthz`` and Prometheus ``/metrics``.

``/healthz`` and ``/metrics`` are unauthenticated, as scrapers and load balancers expect; they
reveal request counts and latencies, never faces, names or collection contents.

A damaged catalog does not stop the server: it starts, logs one line and answers ``/healthz``
with 503 ``degraded`` (so a load balancer takes it out of rotation), while what still reads
(the audit ledger, say) stays reachable; refusing to start would leave an orchestrator
restarting it in a loop with the reason buried in its logs. SQLite's ``quick_check`` runs once
at start; afterwards the catalog notes corruption and full disks as queries meet them, and
``/healthz`` reads those notes (and the free space), never the whole file.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import regard
from regard import console
from regard.api import aws, rest
from regard.api.connections import guarded_protocol, limit_log_floods, raise_descriptor_limit
from regard.api.server import Server, is_loopback
from regard.errors import (
    CatalogCorruptError,
    DatabaseUnavailableError,
    RegardError,
    StorageFullError,
    ThrottlingError,
)
from regard.context import CallContext

log = logging.getLogger("regard.api")
SWEEPER = CallContext.operator("regard:retention-sweeper", purpose="retention")


def create_app(server: Server) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        problems = await asyncio.to_thread(database.integrity_problems, quick=True)
        if problems:
            log.error("the catalog database is damaged (%s): serving degraded; run `regard "
                      "collections check` and restore it from a backup", problems[0])
        server.start_jobs()
        tasks = []
        if server.settings.job_sweep_seconds > 0:
            tasks.append(asyncio.create_task(_sweep_jobs_forever(server)))
        if server.settings.retention_sweep_seconds > 0:
            tasks.append(asyncio.create_task(_sweep_forever(server)))
        if server.settings.index_refresh_seconds > 0:
            tasks.append(asyncio.create_task(_refresh_indexes_forever(server)))
        yield
        for task in tasks:
            task.cancel()
        server.shutdown()

    app = FastAPI(
        title="Regard",
        version=regard.__version__,
        description=(
            "Self-hosted, accountable face detection and recognition. The native REST API below "
            "takes multipart image uploads and answers with the same JSON bodies as Amazon "
            "Rekognition's operations. Authenticate with `Authorization: Bearer "
            "<AccessKeyId>:<SecretAccessKey>` (or the `X-Api-Key` header with the same value). "
            "AWS SDKs and the AWS CLI use the Rekognition protocol on `POST /` instead."),
        lifespan=lifespan,
        docs_url=None,  # served below from local files: Regard runs offline, CDNs are not there
        redoc_url=None,
    )
    app.state.server = server
    database = server.service.store.database
    server.metrics.watch_storage(database.health)
    if server.settings.insecure_local:
        _refuse_browsers_from_elsewhere(app)
    aws.mount(app, server)
    rest.mount(app, server)
    console.mount(app, server)

    _mount_docs(app)

    @app.get("/healthz", tags=["operations"], summary="Liveness and readiness",
             description="200 when the server runs and reaches its catalog database; 503 when "
                         "the database cannot be reached, or `degraded` when it is damaged "
                         "(`database: corrupt`) or its storage is full (`storage: full`): a "
                         "load balancer should hold traffic.")
    async def healthz() -> JSONResponse:
        health = database.health
        try:
            await server.blocking(database.ping)
        except DatabaseUnavailableError:
            return JSONResponse({"status": "unavailable", "version": regard.__version__,
                                 "database": "unreachable"}, status_code=503)
        except ThrottlingError:
            return JSONResponse({"status": "busy", "version": regard.__version__},
                                status_code=503)
        except (StorageFullError, CatalogCorruptError):
            pass  # noted in ``health``
        body = {"version": regard.__version__,
                "database": "corrupt" if health.corrupt else "ok",
                "storage": "full" if await asyncio.to_thread(health.storage_full) else "ok"}
        if body["database"] == "ok" and body["storage"] == "ok":
            return JSONResponse({"status": "ok", **body})
        return JSONResponse({"status": "degraded", **body}, status_code=503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    return app


def uvicorn_config(server: Server, host: str, port: int, *, log_level: str = "info",
                   tls_cert: str | None = None, tls_key: str | None = None,
                   forwarded_allow_ips: str | None = None) -> Any:
    """How ``regard serve`` (and the tests' live servers) run the app: uvicorn's h11 protocol
    with Regard's connection defences (``api.connections``), file descriptors raised to fit
    them, log floods limited, and TLS when a certificate is given.

    ``X-Forwarded-For`` is believed only from ``forwarded_allow_ips`` (a reverse proxy's
    addresses): uvicorn's default trusts it from 127.0.0.1, so any local process could write
    the client address the audit ledger records."""
    import uvicorn

    limits = server.settings.connections.within(raise_descriptor_limit())
    limit_log_floods()
    return uvicorn.Config(
        create_app(server), host=host, port=port, log_level=log_level,
        http=guarded_protocol(limits, server.metrics),
        timeout_keep_alive=int(max(1, limits.keep_alive_seconds)),
        ssl_certfile=tls_cert, ssl_keyfile=tls_key,
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips or "",
        # Server-Sent Events followers never end their responses: on shutdown they get a few
        # seconds, then the server stops (their clients reconnect to another replica).
        timeout_graceful_shutdown=3)


def _refuse_browsers_from_elsewhere(app: FastAPI) -> None:
    """With ``--insecure-local`` nothing is authenticated, and binding loopback keeps other
    machines out but not a web page open in this machine's browser: a multipart POST is a
    "simple" cross-origin request (sent without a preflight), and DNS rebinding can make a page's
    own origin resolve to 127.0.0.1. So requests must name a loopback host, and a browser's
    request must come from a loopback origin; anything else is refused (403)."""

    @app.middleware("http")
    async def loopback_origins_only(request: Request, call_next: Any) -> Response:
        host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
        origin = request.headers.get("origin")
        origin_host = (urlsplit(origin).hostname or "") if origin else None
        if (not is_loopback(host) or (origin_host is not None and not is_loopback(origin_host))
                or request.headers.get("sec-fetch-site") == "cross-site"):
            return JSONResponse(
                {"__type": "AccessDeniedException",
                 "message": "This server runs with --insecure-local: it answers only requests "
                            "addressed to a loopback host from a loopback origin"},
                status_code=403)
        return await call_next(request)


DOCS_STATIC = "/docs-static"


def _mount_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their JavaScript and CSS served by Regard
    itself, from the ``fastapi-offline`` wheel: FastAPI's defaults load them from a CDN, which an
    offline installation cannot reach."""
    import fastapi_offline

    static = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_STATIC, StaticFiles(directory=static), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json",
                              title=f"{app.title} API",
                              redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_STATIC}/favicon.png",
                              with_google_fonts=False)


async def _periodically(name: str, run: Callable[[], Awaitable[object]], period: float, *,
                        start_now: bool) -> None:
    """Run ``run`` every ``period`` seconds (first at once, or after one period). A transient
    failure (the database down, the pool full) is one log line and is retried within a minute;
    another Regard error (a full disk) is one line too; a bug is logged with its traceback;
    none stops the loop."""
    wait = 0.0 if start_now else period
    while True:
        if wait:
            await asyncio.sleep(wait)
        wait = period
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except (DatabaseUnavailableError, ThrottlingError) as exc:
            log.warning("%s skipped, retrying within a minute: %s", name, exc)
            wait = min(period, 60.0)
        except RegardError as exc:  # a full disk, a damaged catalog: named, no traceback
            log.warning("%s failed: %s", name, exc)
        except Exception:
            log.exception("%s failed", name)


async def _refresh_indexes_forever(server: Server) -> None:
    """Every ``index_refresh_seconds``: catch the loaded indexes up (a face deleted through
    another replica is overwritten in this one's memory) and remove checkpoints that hold deleted
    vectors (``IndexRegistry.refresh``)."""
    await _periodically(
        "index refresh", lambda: server.light_pool.run(server.service.store.indexes.refresh),
        server.settings.index_refresh_seconds, start_now=False)


async def _sweep_forever(server: Server) -> None:
    """Delete faces past their collection's retention now and then every
    ``retention_sweep_seconds`` (each deletion is an audited RetentionSweep entry)."""
    await _periodically(
        "retention sweep", lambda: server.light_pool.run(server.service.sweep_retention,
                                           SWEEPER.for_request()),
        server.settings.retention_sweep_seconds, start_now=True)


async def _sweep_jobs_forever(server: Server) -> None:
    """Every ``job_sweep_seconds``: delete finished jobs whose results have expired, their
    result pages and expired idempotency tokens (safe on several replicas at once)."""
    await _periodically(
        "job results sweep", lambda: server.light_pool.run(server.jobs.sweep_expired),
        server.settings.job_sweep_seconds, start_now=False)
