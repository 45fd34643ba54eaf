"""The console's audit, erasure and access-key screens over a real server on 127.0.0.1: the
ledger browsed and filtered, paged, verified (and found broken after tampering), who-searched,
the transparency report downloaded; erasure's confirmation step; keys created (the secret shown
once), refused without admin, revoked (ending the key's console sessions); user values escaped."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from conftest import encode
from console_client import ConsoleClient
from live_server import LiveServer
from sqlalchemy import text

from regard import Engine

XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture()
def live(tmp_path, engine: Engine) -> Iterator[LiveServer]:
    with LiveServer(tmp_path, engine) as server:
        yield server


def key(live: LiveServer, name: str = "admin", scopes: tuple[str, ...] = ("admin",),
        **kw: object) -> tuple[str, str]:
    k, secret = live.server.keys.create(name=name, scopes=scopes, **kw)
    return k.access_key_id, secret


@pytest.fixture()
def admin(live: LiveServer) -> Iterator[ConsoleClient]:
    with ConsoleClient(live.url, *key(live)) as client:
        yield client


def rest(live: LiveServer, credentials: tuple[str, str]) -> httpx.Client:
    key_id, secret = credentials
    return httpx.Client(base_url=live.url, timeout=60,
                        headers={"Authorization": f"Bearer {key_id}:{secret}"})


def index_person(client: httpx.Client, image: bytes, external_image_id: str,
                 collection: str = "people") -> list[str]:
    if client.get(f"/v1/collections/{collection}").status_code != 200:
        assert client.post("/v1/collections", json={"CollectionId": collection,
                                                    "Purpose": "tests"}).status_code == 200
    answer = client.post(f"/v1/collections/{collection}/faces",
                         files={"image": ("p.jpg", image, "application/octet-stream")},
                         data={"external_image_id": external_image_id})
    assert answer.status_code == 200, answer.text
    return [r["Face"]["FaceId"] for r in answer.json()["FaceRecords"]]


def faces_of(live: LiveServer, collection: str = "people") -> list[str]:
    return [f for f, _ in live.server.service.store.catalog.find_faces(collection)]


def seqs(page: str) -> list[int]:
    """The sequence numbers of the ledger table's rows, in page order."""
    return [int(n) for n in re.findall(r'<th scope="row" class="n">(\d+)</th>', page)]


def ledger_append(live: LiveServer, n: int, **kw: str) -> None:
    ledger = live.server.service.gate.ledger
    for i in range(n):
        ledger.append(principal=kw.get("principal", f"key{i % 2}"),
                      operation=kw.get("operation", "DetectFaces"),
                      collection=kw.get("collection"), result={"Outcome": "OK", "N": i})


# -- the ledger -----------------------------------------------------------------------------
def test_the_ledger_newest_first_and_filtered(live, admin):
    ledger_append(live, 4, principal="RGKALICE")
    ledger_append(live, 3, principal="RGKBOB", operation="ListFaces", collection="staff")
    page = admin.get("/console/audit")
    assert page.status_code == 200, page.text
    shown = seqs(page.text)
    assert shown == sorted(shown, reverse=True) and len(shown) >= 8
    assert "ConsoleSignIn" in page.text and "RGKBOB" in page.text and "RGKALICE" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in page.headers["content-security-policy"]

    only = admin.get("/console/audit", params={"operation": "ListFaces"}).text
    assert len(seqs(only)) == 3 and "RGKALICE" not in only.split("<tbody>")[1]
    assert '<option value="ListFaces" selected>' in only
    by_principal = admin.get("/console/audit", params={"principal": "RGKALICE"}).text
    assert len(seqs(by_principal)) == 4 and "RGKBOB" not in by_principal.split("<tbody>")[1]
    in_collection = admin.get("/console/audit", params={"collection": "staff"}).text
    assert len(seqs(in_collection)) == 3
    assert 'href="/console/audit?collection=staff"' in in_collection  # filter links
    assert 'href="/console/audit?principal=RGKBOB"' in in_collection
    assert "<dt>N</dt><dd>2</dd>" in in_collection  # the result, readable
    none = admin.get("/console/audit", params={"principal": "nobody"}).text
    assert seqs(none) == [] and "No matching entries" in none


def test_paging_with_before(live, admin):
    ledger_append(live, 60, operation="DetectFaces")
    first = admin.get("/console/audit", params={"operation": "DetectFaces"}).text
    shown = seqs(first)
    assert len(shown) == 50
    link = re.search(r'href="/console/audit\?operation=DetectFaces&amp;before=(\d+)"', first)
    assert link and int(link.group(1)) == shown[-1]
    second = admin.get("/console/audit", params={"operation": "DetectFaces",
                                                 "before": link.group(1)}).text
    rest_of = seqs(second)
    assert len(rest_of) == 10 and max(rest_of) < min(shown)
    assert "Older entries" not in second and "← Newest" in second
    assert admin.get("/console/audit", params={"before": "x"}).status_code == 400


def test_verify_intact_then_tampered(live, admin):
    ledger_append(live, 5)
    ok = admin.post("/console/audit/verify")
    assert ok.status_code == 200, ok.text
    assert "The ledger is intact." in ok.text
    with live.server.service.store.database.engine.begin() as conn:
        conn.execute(text("""UPDATE audit_log SET result = '{"Outcome": "OK", "N": 99}'
                             WHERE seq = 3"""))
    broken = admin.post("/console/audit/verify")
    assert broken.status_code == 200
    assert "The ledger is NOT intact." in broken.text and 'role="alert"' in broken.text
    assert "The first bad entry is 3" in broken.text and "entry 3 was altered" in broken.text
    assert 'href="/console/audit?before=4"' in broken.text
    assert admin.post("/console/audit/verify", csrf=False).status_code == 403


def test_who_searched_and_the_report(live, admin, astronaut, cameraman):
    api = rest(live, key(live, "indexer"))
    with api:
        index_person(api, encode(astronaut), "alice")
        index_person(api, encode(cameraman), "bob")
        found = api.post("/v1/collections/people/search", headers={"X-Regard-Case": "C-7"},
                         files={"image": ("q.jpg", encode(astronaut), "image/jpeg")})
        assert found.status_code == 200 and found.json()["FaceMatches"], found.text
    page = admin.get("/console/audit/who-searched", params={"external_image_id": "alice"})
    assert page.status_code == 200, page.text
    assert "SearchFacesByImage" in page.text and "C-7" in page.text
    assert len(seqs(page.text)) == 1
    nobody = admin.get("/console/audit/who-searched", params={"external_image_id": "bob"}).text
    assert seqs(nobody) == [] and "No search or comparison" in nobody
    unknown = admin.get("/console/audit/who-searched", params={"external_image_id": "zed"})
    assert unknown.status_code == 400 and 'role="alert"' in unknown.text

    report = admin.get("/console/audit/report")
    assert report.status_code == 200, report.text
    assert report.headers["content-disposition"] == \
        'attachment; filename="regard-transparency-report.html"'
    assert "sandbox" in report.headers["content-security-policy"]
    assert report.headers["cache-control"] == "no-store"
    assert "<html" in report.text.lower() and "people" in report.text
    one = admin.get("/console/audit/report", params={"collection": "people"})
    assert one.status_code == 200 and "attachment" in one.headers["content-disposition"]
    missing = admin.get("/console/audit/report", params={"collection": "nope"})
    assert missing.status_code == 404 and "attachment" not in \
        missing.headers.get("content-disposition", "")


def test_the_audit_needs_audit_read(live):
    with ConsoleClient(live.url, *key(live, "detector", ("detect",))) as client:
        page = client.get("/console/audit")
        assert page.status_code == 403 and "AccessDenied" in page.text


# -- erasure ----------------------------------------------------------------------------------
def test_erasure_confirms_before_erasing(live, admin, astronaut, cameraman):
    with rest(live, key(live, "indexer")) as api:
        alice = index_person(api, encode(astronaut), "alice")
        index_person(api, encode(cameraman), "bob")
    before = set(faces_of(live))
    assert set(alice) < before
    form = admin.get("/console/erasure")
    assert form.status_code == 200 and '<option value="people">people</option>' in form.text

    asked = {"external_image_id": "alice", "collection": "people", "purpose": "GDPR art. 17",
             "case": "DSR-42", "step": "review"}
    both = admin.post("/console/erasure", {**asked, "user_id": "u1"})
    assert both.status_code == 400 and "exactly one" in both.text
    review = admin.post("/console/erasure", asked)
    assert review.status_code == 200, review.text
    assert "Confirm the erasure" in review.text and "cannot be undone" in review.text
    assert "Nothing has been erased yet" in review.text and "video" in review.text
    assert set(faces_of(live)) == before  # the confirmation step changes nothing

    wrong = admin.post("/console/erasure", {**asked, "step": "erase", "confirmation": "bob"})
    assert wrong.status_code == 400 and "does not match" in wrong.text
    assert set(faces_of(live)) == before

    done = admin.post("/console/erasure", {**asked, "step": "erase", "confirmation": "alice"})
    assert done.status_code == 200, done.text
    assert "Erasure done" in done.text and all(f in done.text for f in alice)
    assert set(faces_of(live)) == before - set(alice)
    assert 'href="/console/audit?operation=Erase"' in done.text
    audit = admin.get("/console/audit", params={"operation": "Erase"}).text
    assert len(seqs(audit)) == 1
    assert "GDPR art. 17" in audit and "DSR-42" in audit and "SubjectExternalImageId" in audit


def test_erasure_of_nobody_and_escaping(live, admin):
    review = admin.post("/console/erasure", {"external_image_id": XSS, "purpose": XSS,
                                             "case": XSS, "step": "review"})
    assert review.status_code == 200, review.text
    assert XSS not in review.text and ESCAPED in review.text
    assert "every collection you may use" in review.text
    done = admin.post("/console/erasure", {"external_image_id": XSS, "purpose": XSS,
                                           "case": XSS, "step": "erase", "confirmation": XSS})
    assert done.status_code == 200, done.text
    assert "nothing was erased" in done.text and XSS not in done.text
    audit = admin.get("/console/audit", params={"operation": "Erase"})
    assert XSS not in audit.text and ESCAPED in audit.text
    who = admin.get("/console/audit/who-searched", params={"user_id": XSS})
    assert XSS not in who.text and ESCAPED in who.text


def test_erasure_refusals_are_shown_on_the_form(live, admin):
    missing = admin.post("/console/erasure", {"user_id": "u1", "collection": "nope",
                                              "step": "erase", "confirmation": "u1"})
    assert missing.status_code == 404 and 'role="alert"' in missing.text
    assert "ResourceNotFound" in missing.text and 'value="u1"' in missing.text
    with ConsoleClient(live.url, *key(live, "reader", ("audit:read",))) as reader:
        refused = reader.post("/console/erasure", {"user_id": "u1", "step": "erase",
                                                   "confirmation": "u1"})
        assert refused.status_code == 403 and "AccessDenied" in refused.text
        assert "<select" not in reader.get("/console/erasure").text  # may not list: typed


# -- access keys ------------------------------------------------------------------------------
def test_a_key_is_created_its_secret_shown_once(live, admin):
    page = admin.get("/console/keys")
    assert page.status_code == 200 and "admin" in page.text
    made = admin.post("/console/keys", {"name": XSS, "scope": ["search", "audit:read"],
                                        "collections": "people, staff\nothers",
                                        "default_purpose": XSS, "max_tps": "5"})
    assert made.status_code == 200, made.text
    assert made.headers["cache-control"] == "no-store"
    assert "will not be shown again" in made.text
    key_id = re.search(r'id="new-key-id">(RGK\w+)<', made.text).group(1)
    secret = re.search(r'id="new-secret">([^<]+)<', made.text).group(1)
    assert 'data-copy="new-secret" hidden' in made.text
    assert XSS not in made.text and ESCAPED in made.text
    stored = next(k for k in live.server.keys.list() if k.access_key_id == key_id)
    assert stored.scopes == ("search", "audit:read") and stored.max_tps == 5
    assert stored.collections == ("people", "staff", "others")
    assert stored.name == XSS and stored.default_purpose == XSS

    again = admin.get("/console/keys").text
    assert key_id in again and secret not in again and XSS not in again
    with ConsoleClient(live.url, key_id, secret) as newcomer:
        assert newcomer.get("/console/audit").status_code == 200
        assert newcomer.get("/console/keys").status_code == 403
    # The ledger records the creation, never the secret.
    audit = admin.get("/console/audit", params={"operation": "CreateAccessKey"}).text
    assert key_id in audit and secret not in audit

    refused = admin.post("/console/keys", {"name": "none"})
    assert refused.status_code == 400 and "at least one scope" in refused.text
    bad_tps = admin.post("/console/keys", {"name": "x", "scope": "detect", "max_tps": "fast"})
    assert bad_tps.status_code == 400 and 'role="alert"' in bad_tps.text


def test_keys_need_admin(live):
    with ConsoleClient(live.url, *key(live, "reader", ("audit:read", "search"))) as client:
        page = client.get("/console/keys")
        assert page.status_code == 403 and "AccessDenied" in page.text
        assert client.post("/console/keys", {"name": "x", "scope": "admin"}).status_code == 403
        assert len(live.server.keys.list()) == 1


def test_revoking_ends_the_key_console_session(live, admin):
    victim_id, secret = key(live, "victim", ("audit:read",))
    with ConsoleClient(live.url, victim_id, secret) as victim:
        assert victim.get("/console/audit").status_code == 200
        confirm = admin.post("/console/keys/revoke", {"access_key_id": victim_id})
        assert confirm.status_code == 200 and "cannot be undone" in confirm.text
        assert 'name="confirm" value="yes"' in confirm.text
        assert victim.get("/console/audit").status_code == 200  # not yet
        done = admin.post("/console/keys/revoke", {"access_key_id": victim_id,
                                                   "confirm": "yes"})
        assert done.status_code == 303
        assert done.headers["location"] == f"/console/keys?revoked={victim_id}"
        shown = admin.get(done.headers["location"]).text
        assert "is revoked" in shown
        after = victim.get("/console/audit")
        assert after.status_code == 303 and after.headers["location"].startswith(
            "/console/sign-in")
    again = admin.post("/console/keys/revoke", {"access_key_id": victim_id, "confirm": "yes"})
    assert again.status_code == 400
    unknown = admin.post("/console/keys/revoke", {"access_key_id": "RGKNOPE"})
    assert unknown.status_code == 404


def test_pages_have_labels_and_table_headers(live, admin):
    for path in ("/console/audit", "/console/erasure", "/console/keys"):
        page = admin.get(path).text
        ids = re.findall(r'<(?:input|select|textarea)[^>]*\bid="([^"]+)"', page)
        assert ids, path
        for each in ids:
            assert f'for="{each}"' in page, (path, each)
        assert " style=" not in page and " onclick" not in page
    assert "<caption>" in admin.get("/console/keys").text



def test_a_key_limited_to_some_collections_reports_on_one(live):
    live.server.service.create_collection(CollectionId="people",
                                          Tags={"regard:purpose": "tests"})
    limited = key(live, "limited", ("audit:read",), collections=["people"])
    with ConsoleClient(live.url, *limited) as client:
        page = client.get("/console/audit").text
        assert '<select id="f-report-collection" name="collection" required>' in page
        assert '<option value="people">people</option>' in page
        whole = client.get("/console/audit/report")
        assert whole.status_code == 403 and "attachment" not in \
            whole.headers.get("content-disposition", "")
        one = client.get("/console/audit/report", params={"collection": "people"})
        assert one.status_code == 200 and "attachment" in one.headers["content-disposition"]
