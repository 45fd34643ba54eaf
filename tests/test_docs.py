"""The documentation site (mkdocs.yml, docs/): it builds with ``--strict``, it needs nothing from
the network, and its generated reference pages name everything the code has.

The reference pages (docs/reference/*.md) are generated at build time by docs/hooks.py from the
code; these tests compare the built pages with the code itself, so a missing operation, route,
command, setting or error fails here. Skipped when MkDocs (the ``docs`` extra) is not installed.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")

ROOT = Path(__file__).resolve().parents[1]
BUILD_SECONDS = 300


def mkdocs_build(config: Path, site: Path, *, strict_flag: bool = True
                 ) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "mkdocs", "build", "-f", str(config), "--site-dir", str(site)]
    if strict_flag:
        args.insert(4, "--strict")
    return subprocess.run(args, cwd=config.parent, capture_output=True, text=True, check=False,
                          timeout=BUILD_SECONDS, env={**_clean_env(), "NO_MKDOCS_2_WARNING": "1"})


def _clean_env() -> dict[str, str]:
    import os

    # The reference pages show the defaults: no REGARD_* of the caller's in the build.
    return {k: v for k, v in os.environ.items() if not k.startswith("REGARD_")}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    start = time.monotonic()
    result = mkdocs_build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, (
        f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}")
    print(f"mkdocs build --strict: {time.monotonic() - start:.1f} s")
    return out


def page_text(site: Path, page: str) -> str:
    """The visible text of a built page (``reference/cli`` -> site/reference/cli/index.html)."""
    raw = (site / page / "index.html").read_text()
    body = raw.split('<article', 1)[-1]
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def test_site_builds_offline(site: Path) -> None:
    pages = list(site.rglob("*.html"))
    assert (site / "index.html").exists() and len(pages) > 20
    remote = re.compile(r"fonts\.(googleapis|gstatic)\.com|https?://[^\s\"'<>]*cdn[^\s\"'<>]*",
                        re.IGNORECASE)
    for page in pages:
        found = remote.search(page.read_text())
        assert found is None, f"{page.relative_to(site)} loads {found.group(0)}"
    # The generated pages are built, not sources: nothing was written into docs/.
    assert not (ROOT / "docs" / "reference").exists()
    assert not list(site.rglob("*.py")), "Python files in docs/ must stay out of the site"


def test_operations_page_names_every_operation(site: Path) -> None:
    import regard.operations  # noqa: F401  (fills the registry)
    from regard.operations.registry import all_operations

    raw = (site / "reference/operations/index.html").read_text()
    text = page_text(site, "reference/operations")
    ops = all_operations()
    assert ops
    own = raw.index('id="regards-own-operations"')  # Rekognition's come first, then Regard's
    for op in ops:
        assert op.name in text, op.name
        assert raw.count(f'id="{op.name.lower()}"') == 1, op.name
        assert (raw.index(f'id="{op.name.lower()}"') < own) == op.rekognition, op.name
        assert f"RegardService.{op.python_name}" in text, op.name


def test_rest_page_names_every_route(site: Path, tmp_path: Path) -> None:
    from regard.api.app import create_app
    from regard.api.server import Server, ServerSettings
    from regard.service import RegardService
    from regard.store import Store

    store = Store(f"sqlite:///{tmp_path / 'catalog.db'}", checkpoint_dir=False)
    server = Server(RegardService(store=store), ServerSettings(job_workers=0,
                                                               stream_processors=0))
    try:
        document = create_app(server).openapi()
    finally:
        server.shutdown()
        store.close()
    text = page_text(site, "reference/rest")
    routes = [(method.upper(), path) for path, methods in document["paths"].items()
              for method in methods if path.startswith("/v1")]
    assert len(routes) > 30
    for method, path in routes:
        assert f"{method} {path}" in text, f"{method} {path}"
    for scheme in document["components"]["securitySchemes"]:
        assert scheme in text


def test_cli_page_names_every_command(site: Path) -> None:
    import typer

    from regard.cli import app

    found: list[str] = []

    def walk(command: object, path: str) -> None:
        found.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "regard")
    assert len(found) > 40
    raw = (site / "reference/cli/index.html").read_text()
    text = page_text(site, "reference/cli")
    for path in found:
        assert f'id="{path.replace(" ", "-")}"' in raw, path
        assert path in text, path
    assert "--insecure-local" in text and "--json" in text  # options, too


def test_settings_page_names_every_setting(site: Path) -> None:
    from regard.config import SETTINGS

    text = page_text(site, "reference/settings")
    assert len(SETTINGS) > 20
    for setting in SETTINGS:
        assert setting.env in text, setting.env


def test_errors_page_names_every_error(site: Path) -> None:
    import inspect

    from regard import errors

    text = page_text(site, "reference/errors")
    classes = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, errors.RegardError)]
    assert len(classes) > 20
    for cls in classes:
        assert cls.code in text, cls.code
    for code in ("ResourceNotFoundException", "ValidationException", "ThrottlingException"):
        assert code in text


def test_strict_is_on_in_the_config(tmp_path: Path) -> None:
    """mkdocs.yml itself turns strict on: a page linking to a missing page fails the build even
    without ``--strict`` (a small site inheriting mkdocs.yml, without the generated pages)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the missing page](missing.md).\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {ROOT / 'mkdocs.yml'}\ndocs_dir: docs\nhooks: []\n"
                      "nav:\n  - Home: index.md\n")
    broken = mkdocs_build(config, tmp_path / "site", strict_flag=False)
    assert broken.returncode != 0
    assert "missing.md" in broken.stdout + broken.stderr
    (docs / "index.md").write_text("# Home\n\nNo links.\n")
    shutil.rmtree(tmp_path / "site", ignore_errors=True)
    fine = mkdocs_build(config, tmp_path / "site", strict_flag=False)
    assert fine.returncode == 0, fine.stdout + fine.stderr
