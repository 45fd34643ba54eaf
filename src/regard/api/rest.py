"""The native REST API (to be written)."""

from __future__ import annotations

from fastapi import FastAPI

from regard.api.server import Server


def mount(app: FastAPI, server: Server) -> None:
    pass
