"""The FastAPI app of ``regard serve``: the Rekognition door on ``POST /``, the native REST API
under ``/v1`` (OpenAPI at ``/docs``), ``/healthz`` and Prometheus ``/metrics``.

``/healthz`` and ``/metrics`` are unauthenticated, as scrapers and load balancers expect; they
reveal request counts and latencies, never faces, names or collection contents.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import regard
from regard.api import aws, rest
from regard.api.server import Server
from regard.service import Caller

log = logging.getLogger("regard.api")
SWEEPER = Caller(principal="regard:retention-sweeper", purpose="retention")


def create_app(server: Server) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = None
        if server.settings.retention_sweep_seconds > 0:
            sweeper = asyncio.create_task(_sweep_forever(server))
        yield
        if sweeper is not None:
            sweeper.cancel()
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
    )
    app.state.server = server
    aws.mount(app, server)
    rest.mount(app, server)

    @app.get("/healthz", tags=["operations"], summary="Liveness and readiness")
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": regard.__version__})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    return app


async def _sweep_forever(server: Server) -> None:
    """Delete faces past their collection's retention now and then every
    ``retention_sweep_seconds`` (each deletion is an audited RetentionSweep entry)."""
    while True:
        try:
            await server.light_pool.run(server.service.sweep_retention, SWEEPER)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep sweeping; the failure is in the log
            log.exception("retention sweep failed")
        await asyncio.sleep(server.settings.retention_sweep_seconds)
