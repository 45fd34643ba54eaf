"""The web console over HTTP (no browser): sessions, CSRF and origin checks, security headers,
scopes through the service gate, the ledger, and the collection, face, user, enrolment, search
and compare screens. tests/test_console_browser.py drives the same pages in Chromium."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from conftest import encode, face_crop
from console_client import ConsoleClient
from live_server import LiveServer
from regard.api.server import ServerSettings

XSS = '<script>alert("x")</script>'
XSS_ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, engine: Any) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("console"), engine) as server:
        yield server


@pytest.fixture(scope="module")
def admin(live: LiveServer) -> Iterator[ConsoleClient]:
    key, secret = live.server.keys.create("console admin")
    with ConsoleClient(live.url, key.access_key_id, secret) as client:
        yield client


def pair(astronaut: np.ndarray, cameraman: np.ndarray) -> bytes:
    """The astronaut (larger) beside the cameraman on one photo."""
    left = face_crop(astronaut)
    right = np.asarray(Image.fromarray(cameraman[40:300, 130:330]).resize((150, 195)))
    canvas = np.full((300, 420, 3), 120, dtype=np.uint8)
    canvas[20:20 + left.shape[0], 10:10 + left.shape[1]] = left
    canvas[60:60 + right.shape[0], 250:250 + right.shape[1]] = right
    return encode(canvas)


def entries(live: LiveServer, operation: str) -> list[Any]:
    return list(live.server.service.gate.ledger.entries(operations=[operation]))


# -- sign-in, sessions, CSRF, headers -------------------------------------------------------------
def test_pages_need_a_session_and_sign_in_sets_a_strict_cookie(live: LiveServer) -> None:
    key, secret = live.server.keys.create("signer")
    with ConsoleClient(live.url, sign_in=False) as anonymous:
        page = anonymous.get("/console/collections?next=abc")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/sign-in?next=%2Fconsole%2Fcollections%3Fnext%3Dabc"
        wrong = anonymous.post("/console/sign-in", {"access_key_id": key.access_key_id,
                                                    "secret": "x" * 40}, csrf=False)
        assert wrong.status_code == 401 and "do not match" in wrong.text
        assert "set-cookie" not in wrong.headers
        ok = anonymous.post("/console/sign-in", {"access_key_id": key.access_key_id,
                                                 "secret": secret, "next": "//evil.example/"},
                            csrf=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/console"  # no open redirect
        cookie = ok.headers["set-cookie"].lower()
        for attribute in ("httponly", "samesite=strict", "path=/console", "secure"):
            assert attribute in cookie
    signed_in = [e for e in entries(live, "ConsoleSignIn") if e.principal == key.access_key_id]
    assert len(signed_in) == 1 and signed_in[0].client == "127.0.0.1"


def test_security_headers_on_every_page(admin: ConsoleClient) -> None:
    for path in ("/console", "/console/sign-in", "/console/collections", "/console/search",
                 "/console/nowhere"):
        page = admin.get(path)
        csp = page.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
    assert admin.get("/console").headers["cache-control"] == "no-store"


def test_templates_hold_no_inline_script_or_style() -> None:
    """The CSP would block them; this finds them before a browser does."""
    root = Path(__file__).parents[1] / "src" / "regard" / "console" / "templates"
    for template in root.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name
        assert not re.search(r"\sstyle\s*=|<style|\son[a-z]+\s*=", text), template.name
        assert "|safe" not in text.replace(" ", "") and "Markup(" not in text, template.name


def test_a_post_without_the_session_token_or_from_another_site_is_refused(
        live: LiveServer, admin: ConsoleClient) -> None:
    before = len(entries(live, "CreateCollection"))
    missing = admin.post("/console/collections", {"collection_id": "csrf1", "purpose": "x"},
                         csrf=False)
    wrong = admin.post("/console/collections", {"collection_id": "csrf2", "purpose": "x",
                                                "csrf_token": "forged"}, csrf=False)
    foreign = admin.post("/console/collections", {"collection_id": "csrf3", "purpose": "x"},
                         headers={"Origin": "https://evil.example"})
    cross = admin.post("/console/collections", {"collection_id": "csrf4", "purpose": "x"},
                       headers={"Sec-Fetch-Site": "cross-site"})
    for response in (missing, wrong, foreign, cross):
        assert response.status_code == 403 and "CSRF" in response.text
    assert len(entries(live, "CreateCollection")) == before  # nothing reached the service
    listed = live.server.service.call("ListCollections", {}, _operator())
    assert not {"csrf1", "csrf2", "csrf3", "csrf4"} & set(listed["CollectionIds"])


def test_sign_out_ends_the_session_on_the_server(live: LiveServer) -> None:
    key, secret = live.server.keys.create("leaver")
    client = ConsoleClient(live.url, key.access_key_id, secret)
    cookie = client.session
    out = client.post("/console/sign-out")
    assert out.status_code == 200 and "signed out" in out.text
    client.use_session(cookie)  # replayed
    assert client.get("/console").status_code == 303
    assert any(e.principal == key.access_key_id for e in entries(live, "ConsoleSignOut"))


def test_revoking_the_key_ends_its_sessions(live: LiveServer) -> None:
    key, secret = live.server.keys.create("revoked", scopes=["collections:read"])
    client = ConsoleClient(live.url, key.access_key_id, secret)
    assert client.get("/console").status_code == 200
    live.server.keys.revoke(key.access_key_id)
    page = client.get("/console")
    assert page.status_code == 303 and "/console/sign-in" in page.headers["location"]
    refused = client.post("/console/collections", {"collection_id": "late", "purpose": "x"})
    assert refused.status_code == 401


def test_sessions_expire_when_idle_and_at_their_end(live: LiveServer) -> None:
    from regard.console.sessions import SessionStore

    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    store = SessionStore(live.server.service.store.database, timedelta(minutes=30),
                         clock=lambda: now[0], lifetime=timedelta(hours=12))
    token, _ = store.create("RGKTEST", "127.0.0.1")
    now[0] += timedelta(minutes=29)
    assert store.get(token) is not None  # and touched
    now[0] += timedelta(minutes=29)
    assert store.get(token) is not None  # 29 minutes after the last request
    now[0] += timedelta(minutes=31)
    assert store.get(token) is None  # idle too long, and deleted
    token, _ = store.create("RGKTEST", None)
    for _ in range(25):  # busy all along, but past the 12 hours
        now[0] += timedelta(minutes=29)
    assert store.get(token) is None
    assert store.get("not a token") is None and store.get("x" * 500) is None


def test_the_session_row_holds_no_usable_token(live: LiveServer, admin: ConsoleClient) -> None:
    from sqlalchemy import select

    from regard.store import schema as s

    cookie = admin.session
    with live.server.service.store.database.read_transaction() as conn:
        stored = [r.token_sha256 for r in conn.execute(select(s.console_sessions))]
    assert stored and cookie not in stored and all(len(v) == 64 for v in stored)


def test_plain_http_to_a_network_address_refuses_to_sign_in(live: LiveServer) -> None:
    import httpx

    key, secret = live.server.keys.create("cleartext")
    with httpx.Client(base_url=live.url, headers={"Host": "regard.example.org"}) as client:
        form = client.get("/console/sign-in")
        assert "plain HTTP" in form.text and 'name="secret"' not in form.text
        refused = client.post("/console/sign-in", data={
            "access_key_id": key.access_key_id, "secret": secret},
            headers={"Origin": "http://regard.example.org"})
        assert refused.status_code == 400 and "set-cookie" not in refused.headers


def test_insecure_local_signs_in_the_local_operator(tmp_path: Path, engine: Any) -> None:
    with LiveServer(tmp_path, engine, ServerSettings(insecure_local=True)) as live:
        with ConsoleClient(live.url, sign_in=False) as client:
            form = client.get("/console/sign-in")
            assert "--insecure-local" in form.text and 'name="secret"' not in form.text
            done = client.post("/console/sign-in", {"next": "/console"}, csrf=False)
            client.use_session(done.cookies["regard_console"])
            page = client.get("/console")
            assert page.status_code == 200 and "local operator" in page.text
            # the --insecure-local rules: requests from another origin are refused
            foreign = client.http.get("/console", headers={"Origin": "https://evil.example"})
            assert foreign.status_code == 403


# -- scopes through the gate ---------------------------------------------------------------------
def test_scopes_and_allow_lists_hold_in_the_console(live: LiveServer, admin: ConsoleClient,
                                                    astronaut: np.ndarray) -> None:
    for name in ("scoped-a", "scoped-b"):
        assert admin.post("/console/collections", {"collection_id": name,
                                                   "purpose": "scope test"}).status_code == 303
    key, secret = live.server.keys.create("reader", scopes=["collections:read"],
                                          collections=["scoped-a"])
    with ConsoleClient(live.url, key.access_key_id, secret) as reader:
        listed = reader.get("/console/collections")
        assert "scoped-a" in listed.text and "scoped-b" not in listed.text
        assert reader.get("/console/collections/scoped-b").status_code == 403
        nav = reader.get("/console").text
        assert "/console/search" not in nav and "/console/keys" not in nav
        refused = reader.post("/console/collections/scoped-a/enrol",
                              files={"photos": ("a.jpg", encode(astronaut), "image/jpeg")})
        assert "AccessDeniedException" in refused.text
        assert reader.post("/console/collections", {
            "collection_id": "scoped-c", "purpose": "x"}).status_code == 403
        assert reader.get("/console/keys").status_code == 403
    denied = [e for e in entries(live, "CreateCollection") if e.principal == key.access_key_id]
    assert denied and denied[-1].result["Error"] == "AccessDeniedException"


# -- collections, enrolment, search, compare -------------------------------------------------------
def test_collection_policy_enrol_search_and_compare(live: LiveServer, admin: ConsoleClient,
                                                     astronaut: np.ndarray,
                                                     cameraman: np.ndarray) -> None:
    created = admin.post("/console/collections", {
        "collection_id": "staff", "purpose": "door access with consent",
        "legal_basis": "consent: GDPR art. 9.2.a", "retention_days": "30",
        "consent_required": "true", "threshold_floor": "85", "max_matches": "5"})
    assert created.status_code == 303
    page = admin.get(created.headers["location"]).text
    assert "door access with consent" in page and "30 days" in page and "85" in page

    bad = admin.post("/console/collections", {"collection_id": "bad", "purpose": "x",
                                              "retention_days": "0"})
    assert bad.status_code == 400 and "retention-days" in bad.text
    assert 'value="bad"' in bad.text  # the form comes back filled in

    no_consent = admin.post("/console/collections/staff/enrol", data={
        "external_image_id": "eileen"}, files={"photos": ("a.jpg", encode(astronaut),
                                                          "image/jpeg")})
    assert "requires a consent reference" in no_consent.text

    enrolled = admin.post("/console/collections/staff/enrol", data={
        "external_image_id": "eileen", "consent": "form-17"},
        files=[("photos", ("one.jpg", encode(astronaut), "image/jpeg")),
               ("photos", ("two.png", encode(face_crop(astronaut), "PNG"), "image/png"))])
    assert enrolled.status_code == 200
    assert enrolled.text.count("1 face(s) indexed") == 2
    assert "data:image/jpeg;base64," in enrolled.text and "<rect" in enrolled.text
    admin.post("/console/collections/staff/enrol", data={
        "external_image_id": "camera-op", "consent": "form-18"},
        files={"photos": ("c.jpg", encode(cameraman), "image/jpeg")})

    faces = admin.get("/console/collections/staff/faces?external_image_id=eileen").text
    assert faces.count("form-17") == 2 and "camera-op" not in faces
    stored = live.server.service.call("DescribeFaces", {"CollectionId": "staff"}, _operator())
    assert {f["ConsentReference"] for f in stored["Faces"]} == {"form-17", "form-18"}

    floor = admin.post("/console/search", data={"collection": "staff", "purpose": "test",
                                                "threshold": "60"},
                       files={"photo": ("p.jpg", pair(astronaut, cameraman), "image/jpeg")})
    assert floor.status_code == 400 and "threshold floor" in floor.text
    nopurpose = admin.post("/console/search", data={"collection": "staff"},
                           files={"photo": ("p.jpg", encode(astronaut), "image/jpeg")})
    assert nopurpose.status_code == 400 and "why you are searching" in nopurpose.text

    found = admin.post("/console/search", data={"collection": "staff",
                                                "purpose": "door camera check",
                                                "case": "INC-42"},
                       files={"photo": ("p.jpg", pair(astronaut, cameraman), "image/jpeg")})
    assert found.status_code == 200
    svg = re.search(r"<svg viewBox[^>]*>.*?</svg>", found.text, re.S).group(0)
    assert svg.count("<rect") == 2  # both faces boxed
    assert re.search(r'<text class="box-label match"[^>]*>eileen \d+\.\d%</text>', svg)
    table = found.text.split("<table>")[1]
    assert "eileen" in table and "camera-op" not in table
    assert "false-positive identification rate" in found.text and "1 in" in found.text
    search = entries(live, "SearchFacesByImage")[-1]
    assert (search.purpose, search.case_ref, search.collection) == (
        "door camera check", "INC-42", "staff")

    group = admin.post("/console/collections/staff/enrol", data={
        "external_image_id": "group", "consent": "form-19"},
        files={"photos": ("g.jpg", pair(astronaut, cameraman), "image/jpeg")})
    assert "EXCEEDS_MAX_FACES" in group.text  # only the largest face of a group photo

    compared = admin.post("/console/compare", data={"purpose": "compare test"}, files={
        "source": ("s.jpg", encode(astronaut), "image/jpeg"),
        "target": ("t.jpg", pair(astronaut, cameraman), "image/jpeg")})
    assert compared.status_code == 200 and "1 face(s) match" in compared.text
    assert compared.text.count("<svg viewBox") == 2

    changed = admin.post("/console/collections/staff/policy", {
        "purpose": "door access with consent", "retention_days": "",
        "consent_required": "true", "threshold_floor": "90", "max_matches": ""})
    assert changed.status_code == 303
    policy = live.server.service.call("ListTagsForResource", {
        "ResourceArn": live.server.service.collection_arn("staff")}, _operator())["Tags"]
    assert policy["regard:threshold-floor"] == "90"
    assert "regard:retention-days" not in policy and "regard:max-matches" not in policy
    assert "regard:legal-basis" not in policy  # left empty: cleared


def test_users_associate_and_disassociate(live: LiveServer, admin: ConsoleClient,
                                          astronaut: np.ndarray) -> None:
    admin.post("/console/collections", {"collection_id": "people", "purpose": "users test"})
    admin.post("/console/collections/people/enrol", data={"external_image_id": "eileen"},
               files=[("photos", ("a.jpg", encode(astronaut), "image/jpeg")),
                      ("photos", ("b.jpg", encode(face_crop(astronaut)), "image/jpeg"))])
    made = admin.post("/console/collections/people/users", {"user_id": "u-eileen"})
    assert made.status_code == 303
    done = admin.post("/console/collections/people/users/u-eileen/associate",
                      {"external_image_id": "eileen"})
    assert "Associated 2 face(s)" in done.text
    faces = re.findall(r'name="face_id" value="([^"]+)"', done.text)
    assert len(faces) == 2
    undone = admin.post("/console/collections/people/users/u-eileen/disassociate",
                        {"face_id": faces[0]})
    assert "Disassociated 1 face(s)" in undone.text
    kept = admin.post("/console/collections/people/users/u-eileen/delete", {"confirm": "no"})
    assert kept.status_code == 400
    gone = admin.post("/console/collections/people/users/u-eileen/delete",
                      {"confirm": "u-eileen"})
    assert gone.status_code == 303
    assert "u-eileen" not in admin.get("/console/collections/people/users").text


def test_lists_are_paginated(live: LiveServer, admin: ConsoleClient,
                             astronaut: np.ndarray) -> None:
    service, operator = live.server.service, _operator()
    service.call("CreateCollection", {"CollectionId": "big", "Tags": {
        "regard:purpose": "pagination"}}, operator)
    image = encode(face_crop(astronaut))
    for i in range(55):
        service.call("IndexFaces", {"CollectionId": "big", "Image": {"Bytes": image},
                                    "ExternalImageId": f"p{i:02d}"}, operator)
    first = admin.get("/console/collections/big/faces")
    assert first.text.count('name="face_id"') == 50
    token = re.search(r'href="[^"]*next=([^"]+)"', first.text).group(1)
    second = admin.get(f"/console/collections/big/faces?next={token}")
    assert second.text.count('name="face_id"') == 5


def test_deleting_a_collection_needs_its_name(live: LiveServer, admin: ConsoleClient) -> None:
    admin.post("/console/collections", {"collection_id": "doomed", "purpose": "to delete"})
    assert "Type the collection id" in admin.get("/console/collections/doomed/delete").text
    kept = admin.post("/console/collections/doomed/delete", {"confirm": "doom"})
    assert kept.status_code == 400
    assert admin.get("/console/collections/doomed").status_code == 200
    gone = admin.post("/console/collections/doomed/delete", {"confirm": "doomed"})
    assert gone.status_code == 303
    assert admin.get("/console/collections/doomed").status_code == 404


# -- escaping ------------------------------------------------------------------------------------------
def test_user_supplied_values_are_escaped(live: LiveServer, admin: ConsoleClient,
                                          astronaut: np.ndarray) -> None:
    """Script injection through a purpose, legal basis, tag, ExternalImageId, user id, consent
    reference, case reference, file name and a key name: shown as text everywhere."""
    service, operator = live.server.service, _operator()
    service.call("CreateCollection", {"CollectionId": "xss", "Tags": {
        "regard:purpose": "p"}}, operator)
    # Tags cannot hold < or > through any door; written straight into the catalog (an edited
    # database), they must still be shown as text.
    service.store.catalog.set_tags("xss", {"regard:purpose": "p <b>bold</b>", "owner": XSS})
    name_key, secret = live.server.keys.create(XSS)
    pages = []
    pages.append(admin.post("/console/collections/xss/enrol", data={
        "external_image_id": "x", "consent": XSS, "purpose": XSS},
        files={"photos": (XSS + ".jpg", encode(astronaut), "image/jpeg")}).text)
    pages.append(admin.post("/console/collections/xss/users", {"user_id": XSS}).text)
    pages.append(admin.get("/console/collections/xss/users").text)
    pages.append(admin.get("/console/collections/xss").text)
    pages.append(admin.get("/console/collections/xss/faces").text)
    pages.append(admin.get("/console/collections").text)
    pages.append(admin.get("/console").text)
    pages.append(admin.post("/console/collections", {"collection_id": "y",
                                                     "purpose": XSS}).text)
    pages.append(admin.get("/console/collections/xss/faces?external_image_id="
                           + XSS.replace(" ", "%20")).text)
    with ConsoleClient(live.url, name_key.access_key_id, secret) as named:
        pages.append(named.get("/console").text)
    joined = "\n".join(pages)
    assert XSS not in joined and "<b>bold</b>" not in joined
    assert XSS_ESCAPED in joined and "&lt;b&gt;bold&lt;/b&gt;" in joined


def _operator() -> Any:
    from regard.context import CallContext

    return CallContext.operator("tests")


def test_the_overview_counts_per_day_and_recounts_only_today(tmp_path: Path) -> None:
    from regard.context import CallContext
    from regard.governance.ledger import Ledger
    from regard.service import RegardService
    from regard.store import Store

    now = [datetime(2026, 3, 10, 9, tzinfo=timezone.utc)]
    store = Store(f"sqlite:///{tmp_path / 'c.db'}", checkpoint_dir=False)
    service = RegardService(store=store, default_purpose="t")
    ledger: Ledger = service.gate.ledger
    service.gate.clock = ledger.clock = lambda: now[0]
    for days_ago, operation, result in ((2, "SearchFacesByImage", {"Outcome": "OK"}),
                                        (2, "SearchFacesByImage",
                                         {"Error": "AccessDeniedException"}),
                                        (1, "ListFaces", {"Outcome": "OK"}),
                                        (0, "SearchUsers", {"Outcome": "OK"})):
        now[0] = datetime(2026, 3, 10 - days_ago, 9, tzinfo=timezone.utc)
        ledger.append(principal="p", operation=operation, result=result)
    now[0] = datetime(2026, 3, 10, 12, tzinfo=timezone.utc)
    counted: list[tuple[Any, Any]] = []
    count_days = ledger._count_days
    ledger._count_days = lambda since, until: counted.append((since, until)) or \
        count_days(since, until)  # type: ignore[method-assign]
    since = datetime(2026, 3, 4, tzinfo=timezone.utc)
    first = ledger.daily_counts(since)
    assert first == {"2026-03-08": {"Entries": 2, "Searches": 2, "Refused": 1},
                     "2026-03-09": {"Entries": 1, "Searches": 0, "Refused": 0},
                     "2026-03-10": {"Entries": 1, "Searches": 1, "Refused": 0}}
    assert len(counted) == 2  # the past days once, today
    ledger.append(principal="p", operation="SearchFaces", result={"Error": "X"})
    second = ledger.daily_counts(since)
    assert second["2026-03-10"] == {"Entries": 2, "Searches": 2, "Refused": 1}
    assert second["2026-03-08"] == first["2026-03-08"]
    assert len(counted) == 3 and counted[-1][1] is None  # only today again

    summary = service.call("AuditSummary", {"Days": 3}, CallContext.operator("t"))
    assert [d["Date"] for d in summary["Days"]] == ["2026-03-08", "2026-03-09", "2026-03-10"]
    assert summary["Days"][0]["Refused"] == 1 and summary["HeadSignatureOk"] is True
    assert summary["HeadSeq"] == 5
    store.close()
