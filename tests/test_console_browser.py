"""The web console in a real browser: Debian's Chromium driven by Playwright's Python API (pointed
at the system browser: nothing is downloaded at run time), against a live server on loopback.

The whole journey of an operator (sign in, create a collection with a policy, enrol two people,
search by a photo and see the right person boxed, erase one, find the erasure in the audit view,
sign out); scope refusals; CSRF refusals (a forged token, and a form posted from another site);
script injection through the values users supply; no Content-Security-Policy violation on any
page (so nothing the console needs is blocked); pages that fit a phone's width; and axe-core's
accessibility rules (WCAG 2.1 A and AA) on every main screen.

Without a Chromium (``chromium`` on PATH, or REGARD_CHROMIUM) these tests skip; CI installs
Debian's package (.ci/run).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from conftest import encode, face_crop
from live_server import LiveServer
from test_console import XSS, pair

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("REGARD_CHROMIUM") or shutil.which("chromium") \
    or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no Chromium to drive (apt install chromium, or set REGARD_CHROMIUM)",
                allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")

PHONE = {"width": 375, "height": 740}
XSS_FILE = "<img src=x onerror=alert(2)>.jpg"  # a file name cannot hold a slash


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, engine: Any) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("browser"), engine) as server:
        yield server


class Watched:
    """A page that fails the test on a JavaScript dialog (an injected script ran), and collects
    Content-Security-Policy violations and page errors."""

    def __init__(self, browser: Any, live: LiveServer, **context: Any) -> None:
        self.context = browser.new_context(base_url=live.url, **context)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"a script opened a dialog: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: Any) -> None:
        if message.text.startswith("Failed to load resource"):
            return  # a refused page (403, 409...) is an answer the test expects
        if "Content Security Policy" in message.text or message.type == "error":
            self.problems.append(f"console {message.type}: {message.text}")

    def sign_in(self, key_id: str, secret: str) -> None:
        page = self.page
        page.goto("/console")
        assert "/console/sign-in" in page.url
        page.get_by_label("Access key id").fill(key_id)
        page.get_by_label("Secret access key").fill(secret)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/console")

    def close(self) -> None:
        self.context.close()


def _photo(name: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": "image/jpeg", "buffer": data}


def _axe(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"runOnly": {"type": "tag", "values": [
        "wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}})
    return [f"{page.url}: {v['id']} ({v['impact']}): {v['help']} at "
            f"{[n['target'] for n in v['nodes'][:3]]}"
            for v in results.response["violations"]]


def test_the_operators_journey(browser: Any, live: LiveServer, astronaut: np.ndarray,
                               cameraman: np.ndarray, tmp_path: Path) -> None:
    key, secret = live.server.keys.create("journey admin")
    watched = Watched(browser, live)
    page = watched.page
    watched.sign_in(key.access_key_id, secret)
    assert page.get_by_role("heading", name="Overview").is_visible()

    # a collection with its policy
    page.get_by_role("link", name="Collections", exact=True).click()
    page.get_by_role("link", name="New collection").click()
    page.get_by_label("Collection id").fill("front-door")
    page.get_by_label("Purpose (required)").fill("door access for consenting staff")
    page.get_by_label("Legal basis").fill("consent: GDPR art. 9.2.a")
    page.get_by_label("Retention (days)").fill("365")
    page.get_by_label("Consent required").check()
    page.get_by_label("Threshold floor").fill("85")
    page.get_by_role("button", name="Create collection").click()
    assert page.get_by_text("Collection created.").is_visible()
    assert page.get_by_text("365 days after indexing").is_visible()

    # two people, each with a consent reference
    for person, data, consent in (("eileen", encode(astronaut), "consent-001"),
                                  ("camera-op", encode(cameraman), "consent-002")):
        page.get_by_role("link", name="Enrol people").click()
        page.get_by_label("Photos of one person").set_input_files(
            [_photo(f"{person}.jpg", data)])
        page.get_by_label("ExternalImageId").fill(person)
        page.get_by_label("Consent reference").fill(consent)
        page.get_by_role("button", name="Enrol").click()
        assert page.get_by_text("1 face(s) indexed").is_visible()
        page.get_by_role("link", name="← Collection front-door").click()
    assert page.locator(".stat b").first.inner_text() == "2"

    # search with a photo of both: the astronaut (the larger face) is boxed and named
    page.get_by_role("link", name="Search by photo").click()
    page.get_by_label("Photo (JPEG, PNG or WebP)").set_input_files(
        [_photo("both.jpg", pair(astronaut, cameraman))])
    page.get_by_label("Why are you searching?").fill("door camera alert")
    page.get_by_label("Case or ticket reference").fill("INC-7")
    page.get_by_role("button", name="Search").click()
    label = page.locator("svg.boxed text.box-label.match")
    assert label.count() == 1 and label.text_content().startswith("eileen ")
    assert page.locator("svg.boxed rect.box").count() == 2
    assert page.get_by_role("cell", name="eileen", exact=True).is_visible()
    assert page.get_by_text("expected false-positive identification rate").is_visible()
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)

    # erase one person, with a confirmation step
    page.get_by_role("link", name="Erasure").click()
    page.get_by_label("ExternalImageId").fill("camera-op")
    page.get_by_label("Purpose").fill("erasure request under GDPR art. 17")
    page.get_by_label("Case reference").fill("DSR-31")
    page.get_by_role("button", name="Review the erasure").click()
    page.get_by_label("Type the ExternalImageId again to confirm").fill("camera-op")
    page.get_by_role("button", name="Erase permanently").click()
    assert page.get_by_text("front-door").first.is_visible()
    faces = live.server.service.call("DescribeFaces", {"CollectionId": "front-door"},
                                     _operator())["Faces"]
    assert [f["ExternalImageId"] for f in faces] == ["eileen"]

    # the erasure in the audit view
    page.get_by_role("link", name="Audit", exact=True).click()
    page.get_by_label("Operation").select_option("Erase")
    page.get_by_role("button", name="Show entries").click()
    row = page.locator("table tbody tr").first
    assert "Erase" in row.inner_text() and "DSR-31" in row.inner_text()
    assert "erasure request under GDPR art. 17" in row.inner_text()

    # sign out: the session is gone
    page.get_by_role("button", name="Sign out").click()
    assert page.get_by_role("heading", name="You are signed out").is_visible()
    page.goto("/console/collections")
    assert "/console/sign-in" in page.url
    assert watched.problems == []
    watched.close()


def test_scope_refusals_in_the_browser(browser: Any, live: LiveServer) -> None:
    live.server.service.call("CreateCollection", {"CollectionId": "hidden", "Tags": {
        "regard:purpose": "not for readers"}}, _operator())
    live.server.service.call("CreateCollection", {"CollectionId": "visible", "Tags": {
        "regard:purpose": "for readers"}}, _operator())
    key, secret = live.server.keys.create("reader", scopes=["collections:read"],
                                          collections=["visible"])
    watched = Watched(browser, live)
    page = watched.page
    watched.sign_in(key.access_key_id, secret)
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Collections").is_visible()
    for hidden in ("Search", "Erasure", "Keys", "Audit"):
        assert nav.get_by_role("link", name=hidden, exact=True).count() == 0
    page.get_by_role("link", name="Collections", exact=True).click()
    assert page.get_by_role("link", name="visible").is_visible()
    assert page.get_by_role("link", name="hidden").count() == 0
    for path in ("/console/keys", "/console/collections/hidden", "/console/audit"):
        response = page.goto(path)
        assert response.status == 403, path
        assert page.get_by_text("AccessDeniedException").is_visible()
    assert watched.problems == []
    watched.close()


def test_csrf_refusals_in_the_browser(browser: Any, live: LiveServer) -> None:
    key, secret = live.server.keys.create("csrf target")
    watched = Watched(browser, live)
    page = watched.page
    watched.sign_in(key.access_key_id, secret)

    # the page's own form with its token replaced
    page.goto("/console/collections/new")
    page.locator("input[name=csrf_token]").last.evaluate("input => input.value = 'forged'")
    page.get_by_label("Collection id").fill("forged-token")
    page.get_by_label("Purpose (required)").fill("x")
    page.get_by_role("button", name="Create collection").click()
    assert "CSRF token" in page.get_by_role("alert").inner_text()

    # a form on another site that posts to the console in the signed-in browser
    attacker = page.context.new_page()
    attacker.set_content(
        f'<form id="f" method="post" action="{live.url}/console/collections">'
        '<input name="collection_id" value="from-elsewhere"><input name="purpose" value="x">'
        '</form>')
    with attacker.expect_navigation():
        attacker.evaluate("document.getElementById('f').submit()")
    assert attacker.url.startswith(live.url)
    assert "Collection created" not in attacker.content()
    listed = live.server.service.call("ListCollections", {}, _operator())["CollectionIds"]
    assert "forged-token" not in listed and "from-elsewhere" not in listed
    watched.close()


def test_script_injection_is_shown_as_text(browser: Any, live: LiveServer,
                                           astronaut: np.ndarray) -> None:
    """Values users supply, each carrying a script: a key name, a purpose and a case reference
    (the ledger), a consent reference, a file name and an ExternalImageId the store refuses
    (shown back in the error); no dialog opens and each is visible as text."""
    key, secret = live.server.keys.create(XSS)
    live.server.service.call("CreateCollection", {"CollectionId": "xss-b", "Tags": {
        "regard:purpose": "injection tests"}}, _operator())
    watched = Watched(browser, live)
    page = watched.page
    watched.sign_in(key.access_key_id, secret)
    assert page.get_by_text(XSS).first.is_visible()  # the key's name, in the header
    page.goto("/console/collections/xss-b/enrol")
    page.get_by_label("Photos of one person").set_input_files(
        [_photo(XSS_FILE, encode(face_crop(astronaut)))])
    page.get_by_label("Consent reference").fill(XSS)
    page.get_by_label("Purpose of this enrolment").fill(XSS)
    page.get_by_role("button", name="Enrol").click()
    assert page.get_by_role("heading", name=XSS_FILE).is_visible()
    page.goto("/console/collections/xss-b/faces")
    assert page.get_by_role("cell", name=XSS).is_visible()  # the consent reference
    page.goto("/console/audit")
    assert page.get_by_text(XSS).first.is_visible()
    page.goto("/console/collections/xss-b/faces?external_image_id="
              + XSS.replace(" ", "%20"))
    assert page.get_by_text(XSS).first.is_visible()
    assert watched.problems == []
    watched.close()


SCREENS = ("/console", "/console/collections", "/console/collections/new",
           "/console/collections/a11y", "/console/collections/a11y/faces",
           "/console/collections/a11y/users", "/console/collections/a11y/enrol",
           "/console/search", "/console/compare", "/console/video", "/console/streams",
           "/console/audit",
           "/console/erasure", "/console/keys", "/console/collections/a11y/delete")


def test_accessibility_and_phone_width(browser: Any, live: LiveServer,
                                       astronaut: np.ndarray, cameraman: np.ndarray) -> None:
    """axe-core finds no violation on any main screen (forms, results and errors included),
    every page is usable by keyboard from a skip link, and at a phone's width nothing but a
    table's own scroller is wider than the screen."""
    service = live.server.service
    service.call("CreateCollection", {"CollectionId": "a11y", "Tags": {
        "regard:purpose": "accessibility checks"}}, _operator())
    service.call("IndexFaces", {"CollectionId": "a11y", "Image": {"Bytes": encode(astronaut)},
                                "ExternalImageId": "eileen"}, _operator())
    key, secret = live.server.keys.create("a11y admin")
    found: list[str] = []
    for viewport in (None, PHONE):
        watched = Watched(browser, live, **({"viewport": viewport} if viewport else {}))
        page = watched.page
        watched.sign_in(key.access_key_id, secret)
        for path in SCREENS:
            page.goto(path)
            found += _axe(page)
            if viewport:
                wide = page.evaluate(
                    "document.documentElement.scrollWidth - window.innerWidth")
                assert wide <= 1, (f"{path} is {wide}px wider than a phone's screen: "
                                   f"{page.evaluate(OVERFLOWING)}")
        # pages with results and errors
        page.goto("/console/search")
        page.get_by_label("Photo (JPEG, PNG or WebP)").set_input_files(
            [_photo("both.jpg", pair(astronaut, cameraman))])
        page.get_by_label("Why are you searching?").fill("accessibility check")
        page.get_by_role("button", name="Search").click()
        found += _axe(page)
        page.goto("/console/collections/a11y/enrol")
        page.get_by_label("Photos of one person").set_input_files(
            [_photo("group.jpg", pair(astronaut, cameraman))])
        page.get_by_role("button", name="Enrol").click()
        found += _axe(page)
        page.goto("/console/collections/new")
        page.get_by_label("Collection id").fill("a11y")  # exists: an error
        page.get_by_label("Purpose (required)").fill("x")
        page.get_by_role("button", name="Create collection").click()
        assert page.get_by_role("alert").is_visible()
        found += _axe(page)
        # keyboard: the first Tab reaches the skip link, which moves focus to the content
        page.goto("/console")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        assert watched.problems == []
        watched.close()
    assert found == []


OVERFLOWING = """() => {  // elements past the right edge, outside any scrolling box
  const out = [];
  for (const e of document.querySelectorAll('body *')) {
    if (e.getBoundingClientRect().right <= window.innerWidth + 1) continue;
    let p = e.parentElement, inside = false;
    while (p && !inside) { inside = getComputedStyle(p).overflowX === 'auto'; p = p.parentElement; }
    if (!inside) out.push(`${e.tagName}.${e.className} ${e.textContent.slice(0, 40)}`);
  }
  return out.slice(0, 5);
}"""


def _operator() -> Any:
    from regard.context import CallContext

    return CallContext.operator("tests")
