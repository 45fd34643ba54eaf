"""A signed-in web-console client over HTTP (httpx) for tests of the console's pages, without a
browser (tests/test_console_browser.py drives a real one)."""

from __future__ import annotations

import re
from typing import Any

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class ConsoleClient:
    """``ConsoleClient(live.url, key_id, secret)``: signs in; ``get``/``post`` speak to
    ``/console`` paths with the session cookie, and ``post`` adds the page's CSRF token."""

    def __init__(self, base_url: str, key_id: str | None = None, secret: str | None = None,
                 *, sign_in: bool = True) -> None:
        self.http = httpx.Client(base_url=base_url, follow_redirects=False, timeout=60)
        self.origin = base_url
        self.csrf: str | None = None
        if sign_in:
            response = self.http.post("/console/sign-in", headers={"Origin": base_url}, data={
                "access_key_id": key_id or "", "secret": secret or "", "next": "/console"})
            assert response.status_code == 303, response.text
            self.use_session(response.cookies["regard_console"])
            self.refresh_csrf()

    def use_session(self, token: str) -> None:
        """Send ``token`` as the session cookie (and no other)."""
        self.http.cookies.clear()
        self.http.cookies.set("regard_console", token, path="/console")

    @property
    def session(self) -> str:
        return next(c.value for c in self.http.cookies.jar if c.name == "regard_console")

    def refresh_csrf(self) -> str:
        page = self.http.get("/console")
        found = CSRF.search(page.text)
        assert found, page.text[:500]
        self.csrf = found.group(1)
        return self.csrf

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, data: dict[str, Any] | None = None,
             files: Any = None, csrf: bool = True, **kwargs: Any) -> httpx.Response:
        data = dict(data or {})
        if csrf:
            data.setdefault("csrf_token", self.csrf)
        headers = {"Origin": self.origin, **kwargs.pop("headers", {})}
        return self.http.post(path, data=data, files=files, headers=headers, **kwargs)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "ConsoleClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
