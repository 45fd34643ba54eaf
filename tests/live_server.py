"""A real Regard server on 127.0.0.1 (uvicorn in a background thread) for tests of the HTTP doors."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from regard import Engine
from regard.api.app import uvicorn_config
from regard.api.server import Server, ServerSettings
from regard.object_store import ObjectStore
from regard.service import RegardService
from regard.store import Store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """``with LiveServer(tmp_path, engine) as live: live.url``; ``live.server`` is the shared state
    (keys, metrics, service)."""

    def __init__(self, home: Path, engine: Engine, settings: ServerSettings | None = None,
                 object_store: ObjectStore | None = None,
                 default_purpose: str | None = "integration tests",
                 database_url: str | None = None, tls_cert: str | None = None,
                 tls_key: str | None = None, forwarded_allow_ips: str | None = None) -> None:
        store = Store(database_url or f"sqlite:///{home / 'catalog.db'}", checkpoint_dir=False)
        service = RegardService(engine, store, object_store=object_store,
                                default_purpose=default_purpose)
        self.server = Server(service, settings or ServerSettings())
        self.port = free_port()
        self._uvicorn = uvicorn.Server(uvicorn_config(
            self.server, "127.0.0.1", self.port, log_level="warning", tls_cert=tls_cert,
            tls_key=tls_key, forwarded_allow_ips=forwarded_allow_ips))
        self.url = f"{'https' if tls_cert else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._uvicorn.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=10)
        self.server.service.store.close()
