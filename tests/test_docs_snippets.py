"""The documentation's quick start and tutorials, run as a reader would run them.

Every ```bash and ```python block of the README, docs/quickstart.md and docs/tutorials/*.md
runs, in page order, unless the line just before its fence is ``<!-- not run: <reason> -->``.
Each page gets what a reader who followed the quick start has:

- a fresh working directory holding a copy of ``examples/``;
- a fresh home directory (``HOME``), so ``~/.regard`` is a new ``REGARD_HOME`` (set explicitly
  too), with ``REGARD_DATA`` and ``REGARD_DATABASE_URL`` unset;
- ``PATH`` starting with this virtual environment's ``bin`` (``regard``, ``aws``);
- for the pages that talk to a server (``SERVER_PAGES``), a ``regard serve`` on a free port, started
  with that ``REGARD_HOME`` (and the page's extra settings), with the variables the quick start
  exports: ``AWS_ENDPOINT_URL_REKOGNITION``, ``AWS_SHARED_CREDENTIALS_FILE``
  (``~/.regard/admin-credentials``), ``AWS_PROFILE=regard`` and ``AWS_DEFAULT_REGION``. The pages
  write the server's address as a reader's would be, ``127.0.0.1:8000``; the test replaces it with
  the free port's.

Bash blocks run with ``bash -euo pipefail``, Python blocks with this interpreter; each must exit 0
within ``BLOCK_SECONDS``. Test ids name the page and the block's number (counting every bash and
python block of the page from 1, run or not), e.g. ``tutorials/door-access.md#3``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ["../README.md", "quickstart.md", "tutorials/photo-search.md",
         "tutorials/door-access.md", "tutorials/redact-video.md", "tutorials/live-camera.md"]
# Pages whose snippets call a running `regard serve`, and the settings its server starts with
# ({work}: the page's working directory), as the page tells the reader to start it.
SERVER_PAGES: dict[str, dict[str, str]] = {
    "../README.md": {},
    "quickstart.md": {},
    "tutorials/door-access.md": {},
    "tutorials/redact-video.md": {"REGARD_S3_ROOT": "{work}/s3"},
    "tutorials/live-camera.md": {},
}
BLOCK_SECONDS = 120
READER_ADDRESS = "127.0.0.1:8000"
FENCE = re.compile(r"^```(\w+)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*\S.*-->\s*$")


@dataclass
class Block:
    page: str
    number: int
    language: str
    code: str
    line: int
    run: bool


def blocks(page: str) -> list[Block]:
    """The page's bash and python blocks (fences at the start of a line), numbered from 1."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        language, start = match.group(1), i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"{page}:{i + 1}: unclosed code fence"
        if language in ("bash", "python"):
            marked = start > 0 and bool(NOT_RUN.match(lines[start - 1].strip()))
            found.append(Block(page, len(found) + 1, language,
                               "\n".join(lines[start + 1:end]) + "\n", start + 1, not marked))
        i = end + 1
    return found


ALL = [b for page in PAGES if (DOCS / page).is_file() for b in blocks(page)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PageRun:
    """One page's working directory, home, environment and (maybe) server."""

    page: str
    base: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    server: subprocess.Popen[bytes] | None = None
    failed: str | None = None

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def start(self) -> None:
        self.work.mkdir(parents=True)
        shutil.copytree(ROOT / "examples", self.work / "examples")
        home = self.base / "home"
        home.mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "REGARD_")) and k not in ("VIRTUAL_ENV",)}
        venv_bin = str(Path(sys.executable).parent)
        env.update(HOME=str(home), REGARD_HOME=str(home / ".regard"),
                   PATH=venv_bin + os.pathsep + env.get("PATH", ""), PYTHONUNBUFFERED="1")
        if self.page in SERVER_PAGES:
            self.port = _free_port()
            server_env = {**env, **{k: v.format(work=self.work)
                                    for k, v in SERVER_PAGES[self.page].items()}}
            regard = shutil.which("regard", path=env["PATH"])
            assert regard, "the `regard` command is not on PATH"
            with open(self.log, "wb") as log:
                self.server = subprocess.Popen(
                    [regard, "serve", "--port", str(self.port)],
                    cwd=self.work, env=server_env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            self._wait_until_healthy()
            env.update(AWS_ENDPOINT_URL_REKOGNITION=f"http://127.0.0.1:{self.port}",
                       AWS_SHARED_CREDENTIALS_FILE=str(home / ".regard" / "admin-credentials"),
                       AWS_PROFILE="regard", AWS_DEFAULT_REGION="us-east-1")
        self.env = env

    def _wait_until_healthy(self) -> None:
        assert self.server is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz",
                             timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.server.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"regard serve did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.server is None or self.server.poll() is not None:
            return
        self.server.send_signal(signal.SIGINT)
        try:
            self.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        code = block.code
        if self.port is not None:
            code = code.replace(READER_ADDRESS, f"127.0.0.1:{self.port}")
        command = (["bash", "-euo", "pipefail", "-c", code] if block.language == "bash"
                   else [sys.executable, "-c", code])
        return subprocess.run(command, cwd=self.work, env=self.env, capture_output=True,
                              text=True, timeout=BLOCK_SECONDS, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, PageRun]]:
    started: dict[str, PageRun] = {}
    yield started
    for run in started.values():
        run.stop()


def test_every_page_has_snippets_and_marks_say_why() -> None:
    for page in PAGES:
        assert (DOCS / page).is_file(), f"docs/{page} is missing"
        found = blocks(page)
        assert any(b.run for b in found), f"{page} has no snippet that runs"
        text = (DOCS / page).read_text(encoding="utf-8")
        for line in text.splitlines():  # a mark that does not match NOT_RUN would run its block
            if "not run" in line and line.strip().startswith("<!--"):
                assert NOT_RUN.match(line.strip()), f"{page}: malformed mark {line!r}"
    assert set(SERVER_PAGES) <= set(PAGES)


@pytest.mark.slow
@pytest.mark.parametrize("block", ALL, ids=[f"{b.page}#{b.number}" for b in ALL])
def test_snippet(block: Block, runs: dict[str, PageRun],
                 tmp_path_factory: pytest.TempPathFactory) -> None:
    if not block.run:
        pytest.skip(f"marked not run ({block.page}:{block.line})")
    run = runs.get(block.page)
    if run is None:
        for other in runs.values():  # one server at a time: the pages run one after another
            other.stop()
        run = runs[block.page] = PageRun(block.page, tmp_path_factory.mktemp("page"))
        run.start()
    if run.failed:
        pytest.skip(f"an earlier snippet of this page failed: {run.failed}")
    try:
        done = run.run(block)
    except subprocess.TimeoutExpired as exc:
        run.failed = f"#{block.number}"
        pytest.fail(f"{block.page} block #{block.number} (line {block.line}) ran over "
                    f"{BLOCK_SECONDS} s:\n{block.code}\n--- output ---\n{exc.stdout}{exc.stderr}")
    print(done.stdout, done.stderr, sep="\n")  # shown with -s or -rA
    if done.returncode != 0:
        run.failed = f"#{block.number}"
        server = run.log.read_text()[-2000:] if run.log.exists() else ""
        pytest.fail(f"{block.page} block #{block.number} (line {block.line}) exited "
                    f"{done.returncode}:\n{block.code}\n--- stdout ---\n{done.stdout[-3000:]}"
                    f"\n--- stderr ---\n{done.stderr[-3000:]}"
                    + (f"\n--- server log ---\n{server}" if server else ""))
