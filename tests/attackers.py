"""Attacks on a real ``regard serve`` process on loopback, shared by ``tests/test_attacks.py`` and
``bench/attacks.py``: floods of large bodies, idle and slow connections, and the server's memory
and descriptors read from ``/proc``. Every loop is bounded in count and time and talks only to
127.0.0.0/8."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServeProcess:
    """``regard serve`` in a child process (its memory and descriptors are its own), with its
    log in ``home/serve.log``; the admin key from its first start is ``key``/``secret``."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "serve.log"
        self.args = [sys.executable, "-m", "regard.cli", "serve", "--port", str(self.port),
                     "--log-level", "warning", *args]
        self.env = {**os.environ, "REGARD_HOME": str(home), **(env or {})}
        self.env.pop("REGARD_DATABASE_URL", None)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "ServeProcess":
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if self.proc.poll() is not None:
                raise AssertionError(f"regard serve did not start: {self.log.read_text()}")
        else:
            self.proc.kill()
            raise AssertionError("regard serve did not start within 60 s")
        creds = (self.home / "admin-credentials").read_text()
        self.key = creds.split("aws_access_key_id = ")[1].split()[0]
        self.secret = creds.split("aws_secret_access_key = ")[1].split()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _status(self, field: str) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def rss(self) -> int:
        return self._status("VmRSS")

    def peak_rss(self) -> int:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        assert self.proc is not None
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def environment(self) -> dict[str, str]:
        assert self.proc is not None
        raw = Path(f"/proc/{self.proc.pid}/environ").read_bytes().split(b"\0")
        return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if item)

    def descriptors(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log_bytes(self) -> int:
        return self.log.stat().st_size


def signed_headers(url: str, target: str | None, key: str, secret: str, body: bytes = b"{}",
                   extra: dict[str, str] | None = None,
                   content_type: str = "application/x-amz-json-1.1") -> dict[str, str]:
    """Headers of a SigV4-signed ``POST /`` (botocore's signer, as boto3 signs); ``target``
    None: X-Amz-Target left out of what is signed."""
    headers = {"Content-Type": content_type, **(extra or {})}
    if target is not None:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=url + "/", data=body, headers=headers)
    SigV4Auth(Credentials(key, secret), "rekognition", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def flood_bodies(port: int, connections: int, size: int, headers: dict[str, str],
                 seconds: float = 30.0) -> list[str]:
    """``connections`` clients at once, each sending ``size`` bytes of body to ``POST /`` with
    ``headers``; the status line each got (or the error that ended it)."""
    body = b"{" + b" " * (size - 2) + b"}"
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()
                   if k.lower() not in ("content-length", "host"))
    request = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
               f"Content-Length: {len(body)}\r\n\r\n").encode()
    start = threading.Barrier(connections, timeout=seconds)

    def one(_: int) -> str:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
                start.wait()
                sock.sendall(request)
                try:
                    sock.sendall(body)
                except OSError:
                    pass  # refused before the body: the server closed its end
                reply = sock.recv(4096).decode("latin-1")
                return reply.split("\r\n", 1)[0] or "closed"
        except (OSError, threading.BrokenBarrierError) as exc:
            return type(exc).__name__

    with ThreadPoolExecutor(connections) as pool:
        return list(pool.map(one, range(connections)))


class IdleFlood:
    """``count`` connections from ``source`` (another loopback address) that send nothing, or
    with ``drip`` one header byte every ``drip`` seconds (slowloris)."""

    def __init__(self, port: int, count: int, source: str = "127.0.0.2",
                 drip: float | None = None) -> None:
        self.port, self.count, self.source, self.drip = port, count, source, drip
        self.sockets: list[socket.socket] = []
        self.refused = 0
        self._stop = threading.Event()
        self._dripper: threading.Thread | None = None

    def __enter__(self) -> "IdleFlood":
        for _ in range(self.count):
            sock = socket.socket()
            sock.bind((self.source, 0))
            sock.settimeout(5)
            try:
                sock.connect(("127.0.0.1", self.port))
            except OSError:
                self.refused += 1
                sock.close()
                continue
            self.sockets.append(sock)
        if self.drip is not None:
            self._dripper = threading.Thread(target=self._drip, daemon=True)
            self._dripper.start()
        return self

    def _drip(self) -> None:
        line = b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
        for i in range(len(line)):
            if self._stop.wait(self.drip):
                return
            for sock in self.sockets:
                try:
                    sock.send(line[i:i + 1])
                except OSError:
                    pass

    def closed_by_server(self) -> int:
        """How many of the connections the server has closed (or refused with a 503)."""
        closed = 0
        for sock in self.sockets:
            sock.setblocking(False)
            try:
                data = sock.recv(65536)
                closed += not data or data.startswith(b"HTTP/1.1 503")
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        return closed

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._dripper is not None:
            self._dripper.join(timeout=5)
        for sock in self.sockets:
            sock.close()
