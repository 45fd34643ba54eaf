"""The transparency report (`regard report`): figures computed from the ledger, the page a
non-engineer reads, its escaping, and its verdict on a tampered ledger; real service, real
SQLite catalog, real images."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from regard.cli import app
from regard.errors import InvalidParameterError, ResourceNotFoundError
from regard.context import CallContext
from regard.governance.ledger import GENESIS, AuditEntry
from regard.governance.report import (
    build_report,
    erased_without_collection,
    iso_week,
    ledger_figures,
    week_chart,
    week_span,
)
from regard.service import RegardService, face_ids
from regard.store import Store

from conftest import encode, face_crop

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch) -> Path:
    """REGARD_HOME in a temporary folder: the ledger key (and the CLI's database) live there."""
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    monkeypatch.delenv("REGARD_LEDGER_KEY", raising=False)
    return tmp_path / "home"


@pytest.fixture()
def service(home, tmp_path, engine) -> RegardService:
    svc = RegardService(engine, Store(f"sqlite:///{tmp_path / 'c.db'}", checkpoint_dir=False),
                        default_purpose="tests")
    yield svc
    svc.store.close()


@pytest.fixture(scope="module")
def images(astronaut, cameraman) -> dict[str, bytes]:
    return {"face": encode(face_crop(astronaut)),
            "flipped": encode(np.ascontiguousarray(astronaut[:, ::-1])),
            "cameraman": encode(cameraman)}


def page_text(page: str) -> str:
    """The page as a reader sees it: text only, whitespace collapsed."""
    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self.skip += tag in ("style", "title")

        def handle_endtag(self, tag: str) -> None:
            self.skip -= tag in ("style", "title")

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(page)
    return re.sub(r"\s+", " ", " ".join(parser.parts))


def activity(service: RegardService, images: dict[str, bytes]) -> dict[str, str]:
    """Two principals use a door-access collection: an access key (alice) and a local user
    (bob, who declares no purpose); one search is refused by the threshold floor; a
    data-protection officer erases the enrolled person from every collection."""
    key, _ = service.store.keys.create(name="front desk",
                                                    scopes=("search", "faces:write"))
    alice = CallContext(principal=key.access_key_id, purpose="door access", case="SEC-1")
    bob = CallContext(principal="local:bob")
    service.call("CreateCollection", {"CollectionId": "door", "Tags": {
        "regard:purpose": "door access", "regard:threshold-floor": "90"}}, alice)
    service.call("IndexFaces", {"CollectionId": "door", "Image": {"Bytes": images["face"]},
                                "ExternalImageId": "eileen"}, alice)
    search = {"CollectionId": "door", "Image": {"Bytes": images["flipped"]}}
    assert service.call("SearchFacesByImage", search, alice)["FaceMatches"]
    assert service.call("SearchFacesByImage", search,
                        CallContext(principal=key.access_key_id, purpose="door access",
                               case="SEC-2"))["FaceMatches"]
    with pytest.raises(InvalidParameterError, match="threshold floor"):
        service.call("SearchFacesByImage", {**search, "FaceMatchThreshold": 50}, alice)
    assert not service.call("SearchFacesByImage",
                            {"CollectionId": "door", "Image": {"Bytes": images["cameraman"]}},
                            bob)["FaceMatches"]
    service.call("Erase", {"ExternalImageId": "eileen"},
                 CallContext("local:dpo", purpose="GDPR art. 17 request", case="E-9"))
    return {"alice": key.access_key_id}


# -- the figures (pure) ---------------------------------------------------------------------------
def entry(seq: int, time: str, operation: str = "SearchFacesByImage", collection: str | None = "c",
          principal: str = "k1", purpose: str | None = "p", case: str | None = None,
          **result: object) -> AuditEntry:
    return AuditEntry(seq, time, principal, operation, collection, purpose, case, None,
                      dict(result), None, GENESIS, "")


def test_figures_from_entries():
    entries = [
        entry(1, "2026-01-05T09:00:00.000000Z", "CreateCollection", purpose="door",
              Tags={"regard:purpose": "door", "regard:threshold-floor": "90"}),
        entry(2, "2026-01-05T09:01:00.000000Z", "IndexFaces", FaceIds=["f1", "f2"]),
        entry(2, "2026-01-05T09:02:00.000000Z", "IndexFaces", collection="other",
              FaceIds=["f9"]),
        entry(3, "2026-01-06T10:00:00.000000Z", Threshold=90.0, FaceIds=["f1"]),
        entry(4, "2026-01-07T10:00:00.000000Z", Threshold=95.0, FaceIds=[], case="T-1"),
        entry(5, "2026-01-20T10:00:00.000000Z", principal="k2", purpose=None,
              Error="InvalidParameterException"),
        entry(6, "2026-01-20T11:00:00.000000Z", "SearchUsersByImage", principal="k2",
              Threshold=90.0, UserIds=["u1"]),
        entry(7, "2026-01-21T08:00:00.000000Z", "TagResource", principal="k2",
              Tags={"regard:threshold-floor": "70", "team": "x"}),
        entry(8, "2026-01-22T08:00:00.000000Z", "Erase", FaceIds=["f1"], UserIds=[]),
        entry(9, "2026-01-23T08:00:00.000000Z", "RetentionSweep", FaceIds=["f2"], UserIds=[]),
        entry(10, "2026-01-24T08:00:00.000000Z", "Erase", collection=None,
              FaceIds=["f9", "g"], UserIds=["u"]),
        entry(11, "2026-01-24T09:00:00.000000Z", "DeleteCollection"),
        entry(12, "2026-01-24T10:00:00.000000Z", collection="other", Threshold=80.0),
    ]
    figures = ledger_figures(entries)
    assert (figures.entries, figures.first, figures.last) == (
        13, "2026-01-05T09:00:00.000000Z", "2026-01-24T10:00:00.000000Z")
    assert set(figures.collections) == {"c", "other", None}
    c = figures.collections["c"]
    assert (c.searches, c.refused, c.completed, c.matched) == (4, 1, 3, 2)
    assert c.match_rate == pytest.approx(2 / 3)
    assert {p: (f.searches, f.matched, f.refused) for p, f in c.principals.items()} == {
        "k1": (2, 1, 0), "k2": (2, 1, 1)}
    assert c.thresholds == {90.0: 2, 95.0: 1}
    assert c.refusals == {"InvalidParameterException": 1}
    assert c.weeks == {(2026, 2): 2, (2026, 4): 2} and c.refused_weeks == {(2026, 4): 1}
    assert (c.purposes, c.without_purpose, c.cases, c.without_case) == (
        {"p": 3}, 1, {"T-1": 1}, 3)
    assert (c.faces_indexed, c.erasures, c.erased_faces, c.expiries, c.expired_faces) == (
        2, 1, 1, 1, 1)
    assert [r.kind for r in c.removals] == ["erasure", "retention expiry"]
    # the policy as last recorded, for a collection deleted since
    assert c.tags == {"regard:purpose": "door", "regard:threshold-floor": "70", "team": "x"}
    assert c.policy_changes == 1
    assert c.recent_policy_changes[0].changes == {"regard:threshold-floor": "70"}
    assert (c.created, c.deleted) == ("2026-01-05T09:00:00.000000Z", "2026-01-24T09:00:00.000000Z")
    # an erasure naming no collection: on its own, and its faces where they were indexed
    everywhere = figures.collections[None]
    assert (everywhere.erasures, everywhere.erased_faces, everywhere.erased_users) == (1, 2, 1)
    other = figures.collections["other"]
    assert (other.erasures, other.erased_faces, other.removals[0].kind,
            other.removals[0].users) == (1, 1, "erasure (all collections)", None)
    assert erased_without_collection(entries) == {"f9", "g"}
    assert ledger_figures(entries, None, {"f9"}).collections["other"].erased_faces == 1
    assert ledger_figures(entries, None, set()).collections["other"].erased_faces == 0
    # filtered: that collection and the erasures that named none; the ledger's size stays whole
    only = ledger_figures(entries, "other")
    assert set(only.collections) == {"other", None} and only.entries == 13
    assert only.collections["other"].match_rate == 0.0
    assert only.collections["other"].erased_faces == 1


def test_an_edited_entry_does_not_break_the_figures():
    odd = AuditEntry(1, "yesterday", "k", "SearchFaces", "c", None, None, None,
                     "not a summary", None, GENESIS, "")  # type: ignore[arg-type]
    c = ledger_figures([odd, entry(2, "2026-01-05T09:00:00.000000Z", FaceIds="f1",
                                   Threshold="high")]).collections["c"]
    assert (c.searches, c.matched, c.thresholds, c.weeks) == (2, 0, {}, {(2026, 2): 1})


def test_week_chart_shows_every_week_with_refusals_stacked():
    assert iso_week("2026-01-01T00:00:00.000000Z") == (2026, 1)
    assert iso_week("2025-12-29T00:00:00.000000Z") == (2026, 1)  # ISO year
    assert week_span((2025, 52), (2026, 2)) == [(2025, 52), (2026, 1), (2026, 2)]
    svg = week_chart({(2026, 1): 4, (2026, 4): 10}, {(2026, 4): 3})
    assert "<script" not in svg and "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    bars = re.findall(r'<rect x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)" '
                      r'fill="(#\w+)"', svg)
    assert len(bars) == 5  # four weeks (two quiet ones at height 0) and one refused part
    heights = [(float(h), fill) for _, h, fill in bars]
    assert heights[1][0] == heights[2][0] == 0.0
    completed, refused = heights[3], heights[4]
    assert refused[1] != completed[1] and completed[0] == pytest.approx(refused[0] * 7 / 3)
    assert heights[0][0] == pytest.approx(completed[0] * 4 / 7)
    assert "2026-W04 (week of 19 Jan 2026): 10 searches, 3 refused" in svg
    assert week_chart({}) == "<p>No searches.</p>"


# -- the page from a real service --------------------------------------------------------------
def test_the_report_shows_policy_principals_rates_refusals_and_erasures(service, images):
    ids = activity(service, images)
    page = build_report(service, now=NOW)
    words = page_text(page)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained
    assert "Generated 2026-03-02 12:00 UTC" in words
    assert "Ledger integrity intact" in words and "The ledger is intact." in words
    assert "Collection \u201cdoor\u201d" in words
    assert "Purpose door access" in words and "Threshold floor 90" in words
    # who searched, how often (alice's key is named), match rate, the refused search
    assert f"{ids['alice']} access key \u201cfront desk\u201d 3 2 1" in words
    assert "local:bob local user bob (command line or Python) 1 0 0" in words
    assert "4 searches 3 completed 2 matched at least one face 66.7% match rate" in words
    assert "1 refused or failed" in words
    assert "InvalidParameterException" in words
    assert "Threshold Searches 90 3" in words  # the floor applied when none was asked
    # declared purposes and the search without one, flagged
    assert "1 of 4 searches (25%) declared no purpose." in words
    assert "door access 3" in words and "SEC-1 2" in words
    # the erasure named no collection: listed on its own, and its face counted in "door"
    assert "Erasures across all collections" in words
    assert "erasure local:dpo GDPR art. 17 request E-9 1 0" in words
    assert "1 erasures 1 faces erased" in words
    assert "erasure (all collections) local:dpo GDPR art. 17 request E-9 1 \u2014" in words
    assert "an erasure that named no collection" in words
    assert "faces held now" in words and "1 faces added" in words
    entries = list(service.gate.ledger.entries())
    assert f"Ledger entries {len(entries)}" in words
    figures_svg = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(figures_svg) == 1 and "4 searches, 1 refused" in figures_svg[0]


def test_deleted_collections_and_the_collection_filter(service, images):
    activity(service, images)
    service.call("CreateCollection", {"CollectionId": "old", "Tags": {
        "regard:purpose": "trial", "regard:retention-days": "30"}}, service.context)
    service.call("IndexFaces", {"CollectionId": "old", "Image": {"Bytes": images["face"]},
                                "ExternalImageId": "x"}, service.context)
    service.erase(ExternalImageId="x", CollectionId="old")
    service.call("DeleteCollection", {"CollectionId": "old"}, service.context)
    words = page_text(build_report(service, now=NOW))
    assert "Collection \u201cold\u201d deleted" in words
    assert "As last recorded in the ledger" in words and "Retention 30 days" in words
    assert "Outside any one collection" in words and "CreateCollection" in words

    only = page_text(build_report(service, "old", now=NOW))
    assert "Collection \u201cold\u201d only" in only and "\u201cdoor\u201d" not in only
    assert "1 erasures 1 faces erased" in only  # its own erasure, by collection
    with pytest.raises(ResourceNotFoundError):
        build_report(service, "never-existed")


def test_strings_from_data_are_escaped(service, images):
    # collection ids and tag values (the policy) are restricted by Rekognition's model ...
    with pytest.raises(InvalidParameterError):
        service.call("CreateCollection", {"CollectionId": "<script>",
                                          "Tags": {"regard:purpose": "x"}}, service.context)
    with pytest.raises(InvalidParameterError):
        service.call("CreateCollection", {"CollectionId": "c",
                                          "Tags": {"regard:purpose": "<b>door</b>"}}, service.context)
    # ... but principals, declared purposes and case references are whatever a caller sends
    evil = CallContext(principal="<i>mallory</i>", purpose="<b>bold</b> & \"quoted\"",
                  case="<script>alert(1)</script>")
    service.call("CreateCollection", {"CollectionId": "c", "Tags": {"regard:purpose": "door"}},
                 evil)
    service.call("SearchFacesByImage", {"CollectionId": "c",
                                        "Image": {"Bytes": images["face"]}}, evil)
    page = build_report(service, now=NOW)
    for raw in ("<b>bold", "<script", "<i>mallory"):
        assert raw not in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    words = page_text(page)
    assert "<b>bold</b> & \"quoted\" 1" in words and "<i>mallory</i>" in words  # as text


def test_a_tampered_ledger_is_reported_not_intact(service, images):
    activity(service, images)
    with service.store.database.engine.begin() as conn:
        conn.execute(text("""UPDATE audit_log SET result = '{"Outcome": "OK", "FaceIds": []}'
                             WHERE seq = 2"""))
    words = page_text(build_report(service, now=NOW))
    assert "Ledger integrity NOT intact" in words and "The ledger is NOT intact." in words
    assert "entry 2 was altered" in words and "from entry 2 on" in words
    assert "0 faces added" in words  # still rendered, from the ledger as it is now


# -- the command ----------------------------------------------------------------------------------
def test_the_report_command(home, tmp_path, monkeypatch, engine, images):
    svc = RegardService(engine)  # the CLI's database, under REGARD_HOME
    svc.call("CreateCollection", {"CollectionId": "door",
                                  "Tags": {"regard:purpose": "door access"}}, svc.context)
    indexed = svc.call("IndexFaces", {"CollectionId": "door", "Image": {"Bytes": images["face"]}}, svc.context)
    assert face_ids(indexed)
    svc.call("SearchFacesByImage", {"CollectionId": "door", "Image": {"Bytes": images["flipped"]}},
             CallContext(principal="local:eve", purpose="visitor check"))
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)

    result = runner.invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
    words = page_text((tmp_path / "report.html").read_text())
    assert "visitor check 1" in words and "Ledger integrity intact" in words

    out = tmp_path / "door.html"
    result = runner.invoke(app, ["report", "--collection", "door", "--out", str(out)])
    assert result.exit_code == 0 and "Collection \u201cdoor\u201d only" in page_text(
        out.read_text())
    result = runner.invoke(app, ["report", "--collection", "nope", "--out",
                                 str(tmp_path / "nope.html")])
    assert result.exit_code == 1 and not (tmp_path / "nope.html").exists()

    with svc.store.database.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    result = runner.invoke(app, ["report", "--out", str(out)])
    assert result.exit_code == 1
    words = page_text(out.read_text())  # written all the same
    assert "NOT intact" in words and "entry 2 missing (deleted)" in words
    svc.store.close()
