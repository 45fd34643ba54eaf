"""The FastAPI app of ``regard serve``: the Rekognition door on ``POST /``, the native REST API
under ``/v1`` (OpenAPI at ``/docs``), ``/healthz`` and Prometheus ``/metrics``.

``/healthz`` and ``/metrics`` are unauthenticated, as scrapers and load balancers expect; they
reveal request counts and latencies, never faces, names or collection contents.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import regard
from regard.api import aws, rest
from regard.api.server import Server


def create_app(server: Server) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
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
