"""The transparency report: one self-contained HTML page that shows, per collection, what it is for,
what it holds, who searched it how often and why, and what was erased, for readers who will
never run ``regard audit`` (an auditor, a data-protection officer, a journalist).

The ledger answers precise questions for people with a terminal; accountability also needs the
overall picture in plain words, on a page that can be mailed, archived or published as it is. So
the page has no JavaScript and no external assets (inline CSS, inline SVG): it renders the same
in ten years, offline, and cannot phone home.

Three parts, kept apart so the figures can be tested without HTML and the HTML without a
database:

* ``ledger_figures`` tallies the entries in one streaming pass (the ledger can be large; only
  counters are kept, and a bounded list of the most recent erasures and policy changes). It is
  pure and tolerates an edited ledger (a ``result`` that is not a summary), because a tampered
  ledger is exactly when the report must still render.
* ``gather`` adds what only the service knows: the chain check (``Ledger.verify``, the ledger's
  own pass: a report must not re-implement the verification it reports), the collections in the
  catalog now (face and user counts, current policy) and the names of access keys.
* ``render`` writes the page. Every string that comes from data (collection names, principals,
  purposes, case references, error names, tags) goes through ``html.escape`` (``esc``); table
  and figure cells are escaped by ``_cell`` unless they are ``Html`` built here, so a caller of
  ``_table`` cannot forget.

Erasures that name no collection apply to every collection; their ledger entry records the
FaceIds removed but not which collection each was in. The faces are counted in the collection
whose IndexFaces entry gave them their FaceId (``gather`` first reads those erasures' FaceIds, a
small filtered read, so that the pass remembers only the owners of those faces); the users they
removed, and faces indexed before the ledger began, are listed with the erasure itself.
"""

from __future__ import annotations

import html
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Container, Iterable, Mapping, Sequence

from regard.errors import RegardError, ResourceNotFoundError
from regard.governance.keys import AccessKey
from regard.governance.ledger import AuditEntry, ChainReport
from regard.operations.registry import search_operations
from regard.governance.policy import PREFIX, CollectionPolicy
from regard.store.catalog import CollectionInfo

if TYPE_CHECKING:
    from regard.service import RegardService

TOP = 5  # declared purposes and case references listed per collection
RECENT = 20  # erasures / expiries and policy changes listed per collection (the counts are all)
REMOVALS = {"Erase": "erasure", "RetentionSweep": "retention expiry"}
ERASURE_SHARE = "erasure (all collections)"  # this collection's part of such an erasure
SEARCHES = frozenset(search_operations())  # the operations that can identify someone
POLICY_OPERATIONS = ("CreateCollection", "TagResource", "UntagResource")
LIVE = "LiveFaceSearch"  # a stream processor's identifications, in batches

Week = tuple[int, int]  # (ISO year, ISO week)


# -- figures ------------------------------------------------------------------------------------
@dataclass
class PrincipalFigures:
    """One searcher's searches in one collection."""

    searches: int = 0
    matched: int = 0
    refused: int = 0
    last: str | None = None


@dataclass(frozen=True)
class Removal:
    """One erasure or retention expiry, as the ledger recorded it."""

    seq: int
    time: str
    kind: str  # a value of REMOVALS, or ERASURE_SHARE
    principal: str
    purpose: str | None
    case_ref: str | None
    faces: int
    users: int | None  # None: not known (an erasure's share of a collection)


@dataclass(frozen=True)
class PolicyChange:
    """A TagResource / UntagResource that touched ``regard:`` tags; ``None``: the tag removed."""

    seq: int
    time: str
    principal: str
    changes: dict[str, str | None]


@dataclass
class CollectionFigures:
    """What the ledger says about one collection (``name`` None: entries naming no collection)."""

    name: str | None
    entries: int = 0
    first: str | None = None
    last: str | None = None
    operations: Counter[str] = field(default_factory=Counter)
    actors: Counter[str] = field(default_factory=Counter)  # principal -> entries, any operation
    failed_operations: Counter[str] = field(default_factory=Counter)
    # searches (``search_operations()``): every attempt, refused ones included
    searches: int = 0
    refused: int = 0
    matched: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # error name -> searches
    principals: dict[str, PrincipalFigures] = field(default_factory=dict)
    weeks: Counter[Week] = field(default_factory=Counter)
    refused_weeks: Counter[Week] = field(default_factory=Counter)
    thresholds: Counter[float] = field(default_factory=Counter)
    purposes: Counter[str] = field(default_factory=Counter)
    without_purpose: int = 0
    cases: Counter[str] = field(default_factory=Counter)
    without_case: int = 0
    # faces in and out
    faces_indexed: int = 0
    faces_deleted: int = 0
    erasures: int = 0  # shares of erasures naming no collection included
    erasure_shares: int = 0
    erased_faces: int = 0
    erased_users: int = 0
    expiries: int = 0
    expired_faces: int = 0
    removals: deque[Removal] = field(default_factory=lambda: deque(maxlen=RECENT))
    # the policy as last recorded (for collections deleted since) and its changes
    tags: dict[str, str] | None = None
    created: str | None = None
    deleted: str | None = None
    policy_changes: int = 0
    recent_policy_changes: deque[PolicyChange] = field(
        default_factory=lambda: deque(maxlen=RECENT))
    # live identifications (LiveFaceSearch entries) per stream processor: entries, faces
    live_batches: Counter[str] = field(default_factory=Counter)
    live_faces: Counter[str] = field(default_factory=Counter)

    @property
    def completed(self) -> int:
        """Searches that ran (were not refused or failed): the ones that could match."""
        return self.searches - self.refused

    @property
    def match_rate(self) -> float | None:
        """Share of completed searches that matched at least one face or user."""
        return self.matched / self.completed if self.completed else None

    def add(self, entry: AuditEntry) -> None:
        result = _result(entry)
        failed = "Error" in result
        self.entries += 1
        self.first = self.first or entry.time
        self.last = entry.time
        self.operations[entry.operation] += 1
        self.actors[entry.principal] += 1
        if failed:
            self.failed_operations[entry.operation] += 1
        if entry.operation in SEARCHES:
            self._add_search(entry, result, failed)
        elif failed:
            return
        elif entry.operation == "IndexFaces":
            self.faces_indexed += len(_ids(result, "FaceIds"))
        elif entry.operation == "DeleteFaces":
            self.faces_deleted += len(_ids(result, "FaceIds"))
        elif entry.operation in REMOVALS:
            self._add_removal(entry, result)
        elif entry.operation in POLICY_OPERATIONS:
            self._add_policy(entry, result)
        elif entry.operation == "DeleteCollection":
            self.deleted = entry.time

    def _add_search(self, entry: AuditEntry, result: Mapping[str, Any], failed: bool) -> None:
        self.searches += 1
        who = self.principals.setdefault(entry.principal, PrincipalFigures())
        who.searches += 1
        who.last = entry.time
        week = iso_week(entry.time)
        if week is not None:
            self.weeks[week] += 1
        if entry.operation == LIVE and not failed:
            processor = str(result.get("StreamProcessor") or "(unnamed)")
            self.live_batches[processor] += 1
            self.live_faces[processor] += len(_ids(result, "FaceIds"))
        if failed:
            self.refused += 1
            who.refused += 1
            self.refusals[str(result["Error"])] += 1
            if week is not None:
                self.refused_weeks[week] += 1
        else:
            threshold = _number(result.get("Threshold"))
            if threshold is not None:
                self.thresholds[threshold] += 1
            if _ids(result, "FaceIds") or _ids(result, "UserIds"):
                self.matched += 1
                who.matched += 1
        if entry.purpose:
            self.purposes[entry.purpose] += 1
        else:
            self.without_purpose += 1
        if entry.case_ref:
            self.cases[entry.case_ref] += 1
        else:
            self.without_case += 1

    def _add_removal(self, entry: AuditEntry, result: Mapping[str, Any]) -> None:
        faces, users = len(_ids(result, "FaceIds")), len(_ids(result, "UserIds"))
        if entry.operation == "Erase":
            self.erasures += 1
            self.erased_faces += faces
            self.erased_users += users
        else:
            self.expiries += 1
            self.expired_faces += faces
        self.removals.append(Removal(entry.seq, entry.time, REMOVALS[entry.operation],
                                     entry.principal, entry.purpose, entry.case_ref, faces,
                                     users))

    def add_erasure_share(self, entry: AuditEntry, faces: int) -> None:
        """Count the faces an erasure naming no collection removed from this collection (the
        entry itself belongs to the group of entries naming no collection)."""
        self.erasures += 1
        self.erasure_shares += 1
        self.erased_faces += faces
        self.removals.append(Removal(entry.seq, entry.time, ERASURE_SHARE, entry.principal,
                                     entry.purpose, entry.case_ref, faces, None))

    def _add_policy(self, entry: AuditEntry, result: Mapping[str, Any]) -> None:
        if entry.operation == "CreateCollection":
            self.tags = _tags(result.get("Tags"))
            self.created, self.deleted = entry.time, None
            return
        tags = dict(self.tags or {})
        changes: dict[str, str | None]
        if entry.operation == "TagResource":
            added = _tags(result.get("Tags"))
            tags.update(added)
            changes = dict(added)
        else:
            changes = {str(k): None for k in _ids(result, "TagKeys")}
            for key in changes:
                tags.pop(key, None)
        self.tags = tags
        changes = {k: v for k, v in changes.items() if k.startswith(PREFIX)}
        if changes:
            self.policy_changes += 1
            self.recent_policy_changes.append(
                PolicyChange(entry.seq, entry.time, entry.principal, changes))


@dataclass
class LedgerFigures:
    """The whole ledger's size and period, and the figures of each collection it names."""

    entries: int = 0
    first: str | None = None
    last: str | None = None
    collections: dict[str | None, CollectionFigures] = field(default_factory=dict)

    def group(self, name: str | None) -> CollectionFigures:
        found = self.collections.get(name)
        if found is None:
            found = self.collections[name] = CollectionFigures(name)
        return found


def ledger_figures(entries: Iterable[AuditEntry], collection: str | None = None,
                   erased_everywhere: Container[str] | None = None) -> LedgerFigures:
    """Tally ``entries`` in one pass. With ``collection``, only that collection is tallied (plus
    the erasures that named no collection, which applied to it too); the ledger's size and
    period always cover every entry.

    ``erased_everywhere``: the FaceIds that erasures naming no collection removed (see
    ``erased_without_collection``); the pass remembers which collection indexed those, to
    count each in its collection. None: remember every indexed face (fine for small ledgers)."""
    figures = LedgerFigures()
    owners: dict[str, str] = {}  # FaceId -> the collection that indexed it
    for entry in entries:
        figures.entries += 1
        figures.first = figures.first or entry.time
        figures.last = entry.time
        if collection is not None and entry.collection != collection and not (
                entry.collection is None and entry.operation in REMOVALS):
            continue
        figures.group(entry.collection).add(entry)
        result = _result(entry)
        if "Error" in result:
            continue
        if entry.operation == "IndexFaces" and entry.collection is not None:
            owners.update((f, entry.collection) for f in _ids(result, "FaceIds")
                          if erased_everywhere is None or f in erased_everywhere)
        elif entry.operation == "Erase" and entry.collection is None:
            shares = Counter(owners.pop(f) for f in _ids(result, "FaceIds") if f in owners)
            for name, faces in sorted(shares.items()):
                figures.group(name).add_erasure_share(entry, faces)
    return figures


def erased_without_collection(entries: Iterable[AuditEntry]) -> set[str]:
    """The FaceIds removed by erasures that named no collection (from the Erase entries)."""
    return {str(f) for e in entries if e.operation == "Erase" and e.collection is None
            for f in _ids(_result(e), "FaceIds")}


def iso_week(time: str) -> Week | None:
    """The ISO (year, week) of a ledger time, or None if it is not one (an edited entry)."""
    when = parse_time(time)
    if when is None:
        return None
    year, week, _ = when.isocalendar()
    return year, week


def week_span(first: Week, last: Week) -> list[Week]:
    """Every ISO week from ``first`` to ``last``: quiet weeks are shown as such, not skipped."""
    day, end = date.fromisocalendar(*first, 1), date.fromisocalendar(*last, 1)
    weeks = []
    while day <= end:
        year, week, _ = day.isocalendar()
        weeks.append((year, week))
        day += timedelta(days=7)
    return weeks


def parse_time(time: str | None) -> datetime | None:
    try:
        return datetime.strptime(time or "", "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=timezone.utc)
    except ValueError:
        return None


def _result(entry: AuditEntry) -> Mapping[str, Any]:
    return entry.result if isinstance(entry.result, dict) else {}


def _ids(result: Mapping[str, Any], member: str) -> list[Any]:
    value = result.get(member)
    return value if isinstance(value, list) else []


def _tags(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# -- what the service adds ----------------------------------------------------------------------
@dataclass
class ReportData:
    """Everything the page shows: the ledger's figures, its verification, and the catalog now."""

    figures: LedgerFigures
    chain: ChainReport
    current: dict[str, CollectionInfo]  # collections in the catalog now (the filtered one)
    users: dict[str, int]  # collection name -> users now
    keys: dict[str, AccessKey]  # access key id -> key (for names)
    collection: str | None = None  # the report's filter


def gather(service: RegardService, collection: str | None = None) -> ReportData:
    """Verify the chain, tally the ledger and read the catalog. A ``collection`` that neither
    exists nor appears in the ledger is ResourceNotFound (not an empty report)."""
    ledger = service.gate.ledger
    catalog = service.store.catalog
    chain = ledger.verify()
    erased = erased_without_collection(ledger.entries(operations=["Erase"]))
    figures = ledger_figures(ledger.entries(), collection, erased)
    if collection is not None:
        try:
            current = [catalog.get_collection(collection)]
        except ResourceNotFoundError:
            if collection not in figures.collections:
                raise
            current = []
    else:
        current = service.all_collections()
    return ReportData(figures=figures, chain=chain,
                      current={c.name: c for c in current},
                      users={c.name: catalog.user_count(c.name) for c in current},
                      keys={k.access_key_id: k for k in service.keys.list()},
                      collection=collection)


def build_report(service: RegardService, collection: str | None = None,
                 now: datetime | None = None) -> str:
    """The transparency report of ``service`` as one HTML page (``collection``: only that one;
    ``now``: the generation time shown)."""
    return render(gather(service, collection), now)


# -- HTML ---------------------------------------------------------------------------------------
class Html(str):
    """Markup built in this module from escaped parts: the only string ``_cell`` passes as is."""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: object) -> str:
    return value if isinstance(value, Html) else esc(value)


CSS = """
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2329;
 max-width:62rem;margin:2rem auto;padding:0 1rem}
h1{font-size:1.7rem;margin-bottom:.2rem}h2{margin-top:2.5rem;border-bottom:2px solid #d5dbe1;
 padding-bottom:.2rem}h3{margin:1.6rem 0 .3rem}h4{margin:1.2rem 0 .3rem}
p.explain{color:#4a5661;margin:.1rem 0 .6rem;font-size:.95rem}
table{border-collapse:collapse;margin:.4rem 0 1rem}
th,td{text-align:left;padding:.25rem .7rem;border-bottom:1px solid #e3e7eb;vertical-align:top}
th{background:#f3f5f7}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.stats{display:flex;flex-wrap:wrap;gap:.6rem;margin:.4rem 0 1rem}
.stat{border:1px solid #d5dbe1;border-radius:6px;padding:.4rem .8rem;flex:1 1 0;
 min-width:6.5rem}
.stat b{display:block;font-size:1.5rem}.stat span{color:#4a5661;font-size:.85rem}
.ok,.bad,.warn{border-radius:6px;padding:.7rem 1rem;margin:.8rem 0}
.ok{background:#e8f5ec;border:1px solid #7bbf8e}.bad{background:#fbeaea;border:1px solid #d27b7b}
.warn{background:#fff6e0;border:1px solid #e0bb5b}
.badge{font-size:.8rem;background:#6b7782;color:#fff;border-radius:4px;padding:.1rem .4rem;
 vertical-align:middle}
.chart{overflow-x:auto}dl.top{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}
dl.top dt{font-weight:600}dl.top dd{margin:0}code{font-size:.9em}
@media print{body{margin:0;max-width:none}.chart{overflow:visible}}
"""

ERRORS = {  # error name -> what it means for a search, in plain words
    "InvalidParameterException": "refused as invalid (e.g. a threshold below the floor, or no "
                                 "face in the image)",
    "ValidationException": "refused as malformed",
    "AccessDeniedException": "refused: the caller's key was not allowed to search",
    "ResourceNotFoundException": "failed: the collection did not exist",
    "InvalidImageFormatException": "failed: the image could not be read",
    "ImageTooLargeException": "failed: the image was too large",
}

POLICY_ROWS = {  # CollectionPolicy.to_dict() member -> (label, what it means)
    "Purpose": ("Purpose", "What the collection is for; every use should serve it."),
    "LegalBasis": ("Legal basis", "The legal ground for holding these faces."),
    "RetentionDays": ("Retention", "Faces older than this are deleted automatically."),
    "ConsentRequired": ("Consent required", "Adding a face needs a recorded consent reference."),
    "ThresholdFloor": ("Threshold floor",
                       "Searches asking for a lower similarity threshold are refused."),
    "MaxMatches": ("Maximum matches", "A search returns at most this many matches."),
    "HumanReview": ("Human review", "Matches are marked as needing a person's review."),
    "LiveIdentification": ("Live identification",
                           "Stream processors may search this collection on camera feeds."),
}


def render(data: ReportData, now: datetime | None = None) -> str:
    """The page for ``data``; ``now``: the generation time shown (default: the current time)."""
    now = now or datetime.now(timezone.utc)
    figures = data.figures
    named = [c for c in figures.collections if c is not None]
    order = [c for c in data.current] + sorted(c for c in named if c not in data.current)
    sections = [_collection_section(name, figures.collections.get(name) or
                                     CollectionFigures(name), data) for name in order]
    outside = figures.collections.get(None)
    show_outside = outside is not None and (data.collection is None or outside.erasures > 0)
    if outside is not None and show_outside:
        sections.append(_outside_section(outside, data))
    scope = (f"Collection {_quote(data.collection)} only" if data.collection is not None else
             f"All collections: {len(data.current)} now in use"
             + (f", {len(order) - len(data.current)} deleted" if len(order) > len(data.current)
                else ""))
    contents = "".join(f'<li><a href="#{_anchor(n)}">{esc(n)}</a>'
                       f'{"" if n in data.current else " (deleted)"}</li>' for n in order)
    if show_outside:
        contents += '<li><a href="#outside">Outside any one collection</a></li>'
    period = (f"{_when(figures.first)} to {_when(figures.last)}" if figures.first
              else "no entries yet")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        "<title>Face recognition transparency report</title>"
        f"<style>{CSS}</style></head><body>"
        "<h1>Face recognition transparency report</h1>"
        "<p class=\"explain\">What this face recognition service (Regard) was used for, by whom "
        "and how often, computed from its audit ledger: the tamper-evident record of every "
        "operation, written as each one happens.</p>"
        "<dl class=\"top\">"
        f"<dt>Generated</dt><dd>{_when_dt(now)}</dd>"
        f"<dt>Period covered</dt><dd>{esc(period)}</dd>"
        f"<dt>Ledger entries</dt><dd>{figures.entries:,}</dd>"
        f"<dt>Scope</dt><dd>{esc(scope)}</dd>"
        f"<dt>Ledger integrity</dt><dd>{'intact' if data.chain.ok else '<b>NOT intact</b>'}"
        "</dd></dl>"
        f"{_chain_box(data.chain)}"
        + (f"<nav><h2>Contents</h2><ul>{contents}</ul></nav>" if contents else
           "<p>No collection to report on.</p>")
        + "".join(sections)
        + "<h2>How to check this report</h2><p class=\"explain\">Anyone with access to the "
        "server can re-run the checks: <code>regard audit verify</code> checks the chain, "
        "<code>regard audit export</code> writes every entry with its hashes, and "
        "<code>regard audit head</code> prints the signed head to compare with a copy kept "
        "elsewhere (which also detects a ledger replaced as a whole). All times are UTC; weeks "
        "are ISO weeks (Monday to Sunday).</p></body></html>\n")


def _chain_box(chain: ChainReport) -> str:
    if chain.ok and not chain.entries:
        return "<div class=\"ok\"><b>The ledger is intact.</b> It has no entries yet.</div>"
    if chain.ok:
        return ("<div class=\"ok\"><b>The ledger is intact.</b> All "
                f"{chain.entries:,} entries are linked to each other by their hashes and the "
                "last one matches the head signed with the server's ledger key: no entry has "
                "been altered, removed, inserted or reordered since it was written.</div>")
    where = (f" The figures below come from the ledger as it is now; from entry "
             f"{chain.first_bad_seq} on they may not be what happened." if chain.first_bad_seq
             else " The figures below come from the ledger as it is now and may not be what "
                  "happened.")
    problems = "".join(f"<li>{esc(p)}</li>" for p in chain.problems)
    return ("<div class=\"bad\"><b>The ledger is NOT intact.</b> It was changed outside "
            f"Regard after it was written.{where} Problems found:<ul>{problems}</ul></div>")


def _collection_section(name: str, fig: CollectionFigures, data: ReportData) -> str:
    info = data.current.get(name)
    badge = "" if info is not None else ' <span class="badge">deleted</span>'
    life = []
    if info is not None:
        life.append(f"created {_when_dt(info.created)}")
    elif fig.created:
        life.append(f"created {_when(fig.created)}")
    if info is None:
        life.append(f"deleted {_when(fig.deleted)}" if fig.deleted else
                    "no longer in the catalog")
    span = (f"; ledger entries from {_when(fig.first)} to {_when(fig.last)}" if fig.entries
            else "; no ledger entries")
    parts = [f'<section id="{_anchor(name)}"><h2>Collection {esc(_quote(name))}{badge}</h2>',
             f"<p>{esc(_sentence(', '.join(life) + span))} ({fig.entries:,} entries).</p>",
             _policy_part(info, fig), _faces_part(info, data.users.get(name), fig),
             _searches_part(fig, data.keys), _live_part(fig), _removals_part(fig),
             _policy_changes_part(fig), _operations_part(fig, data.keys), "</section>"]
    return "".join(parts)


def _policy_part(info: CollectionInfo | None, fig: CollectionFigures) -> str:
    head = ("<h3>Policy</h3><p class=\"explain\">The rules declared for this collection; Regard "
            "enforces the threshold floor, the match cap and consent, and deletes faces past "
            "their retention.</p>")
    tags = info.tags if info is not None else fig.tags
    if tags is None:
        return head + "<p>No policy is recorded for this collection.</p>"
    if info is None:
        head += "<p>As last recorded in the ledger before the collection was deleted.</p>"
    try:
        policy = CollectionPolicy.from_tags(tags).to_dict()
    except RegardError as exc:
        return head + f'<p class="warn">The policy tags are not valid: {esc(exc.message)}</p>'
    rows = [(POLICY_ROWS[k][0], _policy_value(k, v), POLICY_ROWS[k][1])
            for k, v in policy.items() if k in POLICY_ROWS]
    return head + _table(("Rule", "Setting", "What it means"), rows)


def _policy_value(member: str, value: Any) -> str:
    if value is None:
        return {"RetentionDays": "not set: kept until deleted",
                "MaxMatches": "not capped"}.get(member, "not set")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if member == "RetentionDays":
        return f"{value} days"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _faces_part(info: CollectionInfo | None, users: int | None, fig: CollectionFigures) -> str:
    stats = [("faces held now", f"{info.face_count:,}" if info is not None else "none"),
             ("users now", f"{users:,}" if users is not None else "none"),
             ("faces added", f"{fig.faces_indexed:,}"),
             ("faces deleted", f"{fig.faces_deleted:,}"),
             ("faces erased", f"{fig.erased_faces:,}"),
             ("faces expired", f"{fig.expired_faces:,}")]
    return ("<h3>Faces</h3><p class=\"explain\">How many faces the collection holds now (and "
            "users: several faces grouped as one person), and how many faces the ledger records "
            "going in and out (deleted, erased on request, or expired under the retention rule)."
            "</p>" + _stats(stats))


def _live_part(fig: CollectionFigures) -> str:
    """Live identifications per stream processor (only when there were any)."""
    if not fig.live_faces and not fig.live_batches:
        return ""
    rows = [(name, fig.live_faces[name], fig.live_batches[name])
            for name in sorted(fig.live_batches)]
    return ("<h3>Live identifications</h3><p class=\"explain\">Faces of this collection "
            "identified on live camera feeds by stream processors (each identification of a "
            "person is recorded once, in batches; they are counted among the searches above)."
            "</p>" + _table(("Stream processor", "Identifications", "Ledger entries"), rows,
                            numeric=(1, 2)))


def _searches_part(fig: CollectionFigures, keys: Mapping[str, AccessKey]) -> str:
    head = ("<h3>Searches</h3><p class=\"explain\">A search compares a face against the "
            "collection; a match means a similarity at or above the threshold.</p>")
    if not fig.searches:
        return head + "<p>No searches were recorded.</p>"
    rate = fig.match_rate
    stats = [("searches", f"{fig.searches:,}"),
             ("completed", f"{fig.completed:,}"),
             ("matched at least one face", f"{fig.matched:,}"),
             ("match rate (of completed)", "n/a" if rate is None else _percent(rate)),
             ("refused or failed", f"{fig.refused:,}")]
    principals = sorted(fig.principals.items(), key=lambda kv: (-kv[1].searches, kv[0]))
    who = [(p, _principal_kind(p, keys), f.searches, f.matched, f.refused, _when(f.last))
           for p, f in principals]
    thresholds = [(f"{t:g}", n) for t, n in sorted(fig.thresholds.items())]
    refusals = [(e, ERRORS.get(e, "refused or failed"), n)
                for e, n in fig.refusals.most_common()]
    return "".join([
        head, _stats(stats),
        ("<h4>Who searched</h4><p class=\"explain\">Each access key (a program or person given "
         "access) or local user on the server that searched, and how often.</p>"),
        _table(("Principal", "Who that is", "Searches", "Matched", "Refused", "Last search"),
               who, numeric=(2, 3, 4)),
        ("<h4>Searches per week</h4><p class=\"explain\">How many searches were made each week; "
         "the red part of a bar is searches that were refused or failed.</p>"),
        week_chart(fig.weeks, fig.refused_weeks),
        ("<h4>Thresholds used</h4><p class=\"explain\">The similarity a search required to count "
         "as a match; a lower threshold gives more matches and more mistaken ones.</p>"),
        _table(("Threshold", "Searches"), thresholds, numeric=(0, 1)) if thresholds
        else "<p>No search completed.</p>",
        ("<h4>Refused or failed searches</h4><p class=\"explain\">Searches that did not run, "
         "because the policy or the caller's permissions forbade them or the request was "
         "wrong; they are recorded all the same.</p>"),
        _table(("Error", "Meaning", "Searches"), refusals, numeric=(2,)) if refusals
        else "<p>None.</p>",
        _declared_part(fig)])


def _declared_part(fig: CollectionFigures) -> str:
    parts = [("<h4>Declared purposes and cases</h4><p class=\"explain\">Why searchers said they "
              "searched, and the case or ticket they searched for; a search without a declared "
              "purpose cannot be checked against the collection's purpose.</p>")]
    if fig.without_purpose:
        parts.append(f'<p class="warn"><b>{fig.without_purpose:,} of {fig.searches:,} searches '
                     f"({_percent(fig.without_purpose / fig.searches)}) declared no purpose."
                     "</b></p>")
    parts.append(_top("Purpose", fig.purposes, fig.without_purpose, "no purpose declared"))
    parts.append(_top("Case reference", fig.cases, fig.without_case, "no case reference"))
    return "".join(parts)


def _top(label: str, counts: Counter[str], without: int, without_label: str) -> str:
    rows: list[tuple[object, ...]] = [(value, n) for value, n in counts.most_common(TOP)]
    others = len(counts) - TOP
    if others > 0:
        rows.append((Html(f"<i>{others:,} other{'s' if others > 1 else ''}</i>"),
                     sum(counts.values()) - sum(n for _, n in counts.most_common(TOP))))
    if without:
        rows.append((Html(f"<i>{esc(without_label)}</i>"), without))
    return _table((label, "Searches"), rows, numeric=(1,))


def _removals_part(fig: CollectionFigures) -> str:
    head = ("<h3>Erasures and retention expiries</h3><p class=\"explain\">An erasure removes "
            "one person's faces on request; a retention expiry removes faces kept longer than "
            "the policy allows.</p>")
    stats = [("erasures", f"{fig.erasures:,}"), ("faces erased", f"{fig.erased_faces:,}"),
             ("users erased", f"{fig.erased_users:,}"), ("retention expiries", f"{fig.expiries:,}"),
             ("faces expired", f"{fig.expired_faces:,}")]
    body = head + _stats(stats) + _removal_table(fig)
    if fig.erasure_shares:
        body += (f"<p>{esc(_quote(ERASURE_SHARE))}: an erasure that named no collection "
                 "and so applied to every one; the faces it removed from this collection are "
                 "counted here, the users it removed under <a href=\"#outside\">outside any "
                 "one collection</a>.</p>")
    return body


def _removal_table(fig: CollectionFigures) -> str:
    if not fig.removals:
        return ""
    listed = len(fig.removals)
    total = fig.erasures + fig.expiries
    note = (f"<p>The {listed} most recent of {total:,}:</p>" if total > listed else "")
    rows = [(_when(r.time), r.kind, r.principal, r.purpose or "", r.case_ref or "", r.faces,
             "\u2014" if r.users is None else r.users) for r in reversed(fig.removals)]
    return note + _table(("When", "What", "By", "Purpose", "Case", "Faces", "Users"), rows,
                         numeric=(5, 6))


def _policy_changes_part(fig: CollectionFigures) -> str:
    if not fig.policy_changes:
        return ""
    listed = len(fig.recent_policy_changes)
    note = (f"<p>The {listed} most recent of {fig.policy_changes:,}:</p>"
            if fig.policy_changes > listed else "")
    rows = [(_when(c.time), c.principal,
             "; ".join(f"{k.removeprefix(PREFIX)} " + ("removed" if v is None else f"set to {v}")
                       for k, v in sorted(c.changes.items())))
            for c in reversed(fig.recent_policy_changes)]
    return ("<h3>Policy changes</h3><p class=\"explain\">Changes to the rules above after the "
            "collection was created, and who made them.</p>" + note
            + _table(("When", "By", "Change"), rows))


def _operations_part(fig: CollectionFigures, keys: Mapping[str, AccessKey]) -> str:
    rows = [(op, n, fig.failed_operations[op]) for op, n in sorted(fig.operations.items())]
    if not rows:
        return ""
    return ("<details><summary>Every recorded operation on this collection</summary>"
            "<p class=\"explain\">All ledger entries by operation name (Amazon Rekognition's "
            "names, plus Regard's Erase and RetentionSweep), and by who made them.</p>"
            + _table(("Operation", "Entries", "Failed"), rows, numeric=(1, 2))
            + _actors_table(fig, keys) + "</details>")


def _actors_table(fig: CollectionFigures, keys: Mapping[str, AccessKey]) -> str:
    rows = [(p, _principal_kind(p, keys), n) for p, n in
            sorted(fig.actors.items(), key=lambda kv: (-kv[1], kv[0]))]
    return _table(("Principal", "Who that is", "Entries"), rows, numeric=(2,))


def _outside_section(fig: CollectionFigures, data: ReportData) -> str:
    parts = ['<section id="outside"><h2>Outside any one collection</h2>',
             ("<p class=\"explain\">Operations that name no collection: erasures applied to every "
              "collection, face comparisons and detections on single images, and reads of the "
              "ledger itself.</p>")]
    if fig.erasures:
        parts.append("<h3>Erasures across all collections</h3><p class=\"explain\">An erasure "
                     "that names no collection removes the person's faces and users from every "
                     "collection; its faces are also counted in the collections they were in."
                     "</p>"
                     + _stats([("erasures", f"{fig.erasures:,}"),
                               ("faces erased", f"{fig.erased_faces:,}"),
                               ("users erased", f"{fig.erased_users:,}")])
                     + _removal_table(fig))
    if data.collection is None:
        rows = [(op, n, fig.failed_operations[op]) for op, n in sorted(fig.operations.items())]
        parts.append("<h3>Operations</h3><p class=\"explain\">Every entry that names no "
                     "collection, by operation and by who made it.</p>"
                     + _table(("Operation", "Entries", "Failed"), rows, numeric=(1, 2))
                     + _actors_table(fig, data.keys))
    parts.append("</section>")
    return "".join(parts)


def week_chart(weeks: Mapping[Week, int], refused: Mapping[Week, int] | None = None) -> str:
    """Searches per ISO week as an inline SVG bar chart (refused ones stacked in red on top);
    every week from the first to the last is a bar, so quiet weeks show as gaps."""
    if not weeks:
        return "<p>No searches.</p>"
    refused = refused or {}
    span = week_span(min(weeks), max(weeks))
    step = max(4.0, min(56.0, 720 / len(span)))
    bar = max(2.0, step * 0.8)
    left, top, plot, bottom = 44.0, 10.0, 160.0, 34.0
    width, height = left + step * len(span) + 8, top + plot + bottom
    peak = max(weeks.values())
    tick = _nice_step(peak)
    ceiling = math.ceil(peak / tick) * tick
    out = [(f'<div class="chart"><svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
            'font-family="system-ui,sans-serif" font-size="10">'
            f"<title>Searches per ISO week, {_week_label(span[0])} to "
            f"{_week_label(span[-1])}</title>")]
    for value in range(0, ceiling + 1, tick):
        y = top + plot - plot * value / ceiling
        out.append(f'<line x1="{left - 4:.0f}" x2="{width - 4:.0f}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#e3e7eb"/><text x="{left - 7:.0f}" y="{y + 3.5:.1f}" '
                   f'text-anchor="end" fill="#4a5661">{value:,}</text>')
    label_every = math.ceil(62 / step)
    for i, week in enumerate(span):
        total, failed = weeks.get(week, 0), min(refused.get(week, 0), weeks.get(week, 0))
        x = left + i * step + (step - bar) / 2
        done_h, failed_h = plot * (total - failed) / ceiling, plot * failed / ceiling
        monday = date.fromisocalendar(*week, 1)
        title = (f"{_week_label(week)} (week of {monday:%d %b %Y}): {total:,} search"
                 f"{'' if total == 1 else 'es'}" + (f", {failed:,} refused" if failed else ""))
        out.append(f"<g><title>{esc(title)}</title>")
        out.append(f'<rect x="{x:.1f}" y="{top + plot - done_h:.1f}" width="{bar:.1f}" '
                   f'height="{done_h:.1f}" fill="#2f6f9f"/>')
        if failed:
            out.append(f'<rect x="{x:.1f}" y="{top + plot - done_h - failed_h:.1f}" '
                       f'width="{bar:.1f}" height="{failed_h:.1f}" fill="#c0392b"/>')
        out.append("</g>")
        if i % label_every == 0:
            out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot + 14:.1f}" '
                       f'text-anchor="middle" fill="#4a5661">{_week_label(week)}</text>'
                       f'<text x="{x + bar / 2:.1f}" y="{top + plot + 26:.1f}" '
                       f'text-anchor="middle" fill="#8a949d">{monday:%d %b}</text>')
    out.append(f'<line x1="{left - 4:.0f}" x2="{width - 4:.0f}" y1="{top + plot:.1f}" '
               f'y2="{top + plot:.1f}" stroke="#6b7782"/></svg></div>')
    busiest = max(span, key=lambda w: (weeks.get(w, 0), w))
    out.append(f"<p class=\"explain\">{len(span)} week(s); busiest: {_week_label(busiest)} with "
               f"{weeks[busiest]:,} search(es). Blue: completed; red: refused or failed.</p>")
    return "".join(out)


def _nice_step(peak: int) -> int:
    """A gridline step of 1, 2 or 5 times a power of ten giving at most four gridlines."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            if peak <= 4 * factor * magnitude:
                return factor * magnitude
        magnitude *= 10


def _table(head: Sequence[str], rows: Iterable[Sequence[object]],
           numeric: Sequence[int] = ()) -> str:
    def cells(tag: str, values: Sequence[object]) -> str:
        return "".join(f'<{tag}{" class=n" if i in numeric else ""}>{_cell(v)}</{tag}>'
                       for i, v in enumerate(values))

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table><thead><tr>{cells('th', head)}</tr></thead><tbody>{body}</tbody></table>"


def _stats(items: Sequence[tuple[str, str]]) -> str:
    return ('<div class="stats">'
            + "".join(f'<div class="stat"><b>{_cell(v)}</b><span>{_cell(label)}</span></div>'
                      for label, v in items) + "</div>")


def _principal_kind(principal: str, keys: Mapping[str, AccessKey]) -> str:
    if principal.startswith("local:"):
        return f"local user {principal.removeprefix('local:')} (command line or Python)"
    key = keys.get(principal)
    if key is None:
        return "unknown access key" if principal.startswith("RGK") else ""
    name = f"access key {_quote(key.name)}" if key.name else "access key (no name)"
    return name + (f", revoked {_when_dt(key.revoked)}" if key.revoked else "")


def _anchor(name: str) -> str:
    return "c-" + esc(name)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _quote(text: str) -> str:
    return f"\u201c{text}\u201d"


def _percent(share: float) -> str:
    return f"{100 * share:.1f}%".replace(".0%", "%")


def _week_label(week: Week) -> str:
    return f"{week[0]}-W{week[1]:02d}"


def _when(time: str | None) -> str:
    """A ledger time for people (minutes, UTC), as plain text; an unreadable one (an edited
    entry) as it is."""
    when = parse_time(time)
    return _when_dt(when) if when is not None else time or "unknown"


def _when_dt(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d\u00a0%H:%M\u00a0UTC")
