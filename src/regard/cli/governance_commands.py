"""`regard audit | erase | retention | collections policy`: accountability from the command line."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from regard.cli.common import CaseOpt, PurposeOpt, _fail, app, err, local_context, out
from regard.cli.collection_commands import _call, _emit, _service, collections_app
from regard.errors import RegardError

audit_app = typer.Typer(help="The audit ledger: verify it, export it, ask who searched for whom.",
                        no_args_is_help=True)
retention_app = typer.Typer(help="Retention: delete faces past their collection's limit.",
                            no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(retention_app, name="retention")


def _when(text: Optional[str], option: str) -> Optional[datetime]:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        err.print(f"[red]{option}[/red]: not an ISO date or time: {text!r}")
        raise typer.Exit(code=2) from exc
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# -- audit ---------------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(as_json: bool = typer.Option(False, "--json")) -> None:
    """Check the whole hash chain and its signed head; exit 1 and say where it breaks.
    (Reading the ledger is itself recorded, as every other audit read.)"""
    try:
        report = _service().call("AuditVerify", {}, local_context())
    except RegardError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    elif report["ok"]:
        out.print(f"[green]ledger intact[/green]: {report['entries']} entries, signed head at "
                  f"{report['head_seq']}")
    else:
        out.print(f"[red]ledger NOT intact[/red] ({report['entries']} entries, first break at "
                  f"entry {report['first_bad_seq']}):")
        for problem in report["problems"]:
            out.print(f"  - {problem}")
    if not report["ok"]:
        raise typer.Exit(code=1)


@audit_app.command("export")
def audit_export(
    since: Optional[str] = typer.Option(None, "--since", help="ISO date/time (inclusive)"),
    until: Optional[str] = typer.Option(None, "--until", help="ISO date/time (exclusive)"),
    output: Optional[Path] = typer.Option(None, "--out", help="File (default: standard output)"),
) -> None:
    """Entries as JSON Lines, hashes included (anyone can re-check the chain from them)."""
    service = _service()
    start, end = _when(since, "--since"), _when(until, "--until")

    def write() -> dict[str, Any]:
        sink = output.open("w") if output else sys.stdout
        n = 0
        try:
            for entry in service.gate.ledger.entries(start, end):
                sink.write(json.dumps(entry.to_dict(), sort_keys=True) + "\n")
                n += 1
        finally:
            if output:
                sink.close()
        return {"Count": n}

    params = {"Since": since, "Until": until}
    try:
        n = service.run_audited("AuditExport", params, local_context(), write)["Count"]
    except RegardError as exc:
        _fail(exc)
        return
    err.print(f"{n} entries exported")


@audit_app.command("head")
def audit_head() -> None:
    """The signed chain head: publish or store it elsewhere to anchor the ledger."""
    sys.stdout.write(json.dumps(_service().gate.ledger.head()) + "\n")


@audit_app.command("who-searched")
def audit_who_searched(
    face_id: Optional[list[str]] = typer.Option(None, "--face-id", help="FaceId (repeatable)"),
    external_image_id: Optional[str] = typer.Option(None, "--external-image-id"),
    user_id: Optional[str] = typer.Option(None, "--user-id"),
    as_json: bool = typer.Option(False, "--json", help="JSON Lines of the entries"),
) -> None:
    """Who searched for this person, when, why, and with what result.

    A person is named by FaceIds, an ExternalImageId (its faces now in the catalog, and those
    an erasure recorded) or a UserId."""
    if not face_id and not external_image_id and not user_id:
        err.print("[red]give --face-id, --external-image-id or --user-id[/red]")
        raise typer.Exit(code=2)
    try:
        body = _service().call("WhoSearched", {"FaceIds": face_id or [],
                                               "ExternalImageId": external_image_id,
                                               "UserId": user_id}, local_context())
    except RegardError as exc:
        _fail(exc)
        return
    if as_json:
        for entry in body["Entries"]:
            sys.stdout.write(json.dumps(entry, sort_keys=True) + "\n")
        return
    found = [_AsEntry(e) for e in body["Entries"]]
    table = Table(title=f"{len(found)} search(es) matched or probed with this person")
    for col in ("seq", "time (UTC)", "principal", "operation", "collection", "purpose", "case",
                "threshold", "top similarity"):
        table.add_column(col)
    for e in found:
        table.add_row(str(e.seq), e.time[:19], e.principal, e.operation, e.collection or "",
                      e.purpose or "", e.case_ref or "", str(e.result.get("Threshold", "")),
                      str(e.result.get("TopSimilarity", "")))
    out.print(table)


class _AsEntry:
    """Attribute access to an entry dict (for the table)."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.__dict__.update(entry)


# -- erasure and retention -----------------------------------------------------------------------
@app.command("erase")
def erase(
    external_image_id: Optional[str] = typer.Option(None, "--external-image-id"),
    user_id: Optional[str] = typer.Option(None, "--user-id"),
    collection: Optional[str] = typer.Option(None, "--collection",
                                             help="Only this collection (default: all)"),
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Erase a person: every face, embedding and user of theirs, from catalog and indexes.
    The erasure itself is recorded (identifiers only)."""
    try:
        body = _service().call("Erase", {"ExternalImageId": external_image_id,
                                         "UserId": user_id, "CollectionId": collection},
                               local_context(purpose, case))
    except RegardError as exc:
        _fail(exc)
        return
    if as_json:
        _emit(body)
        return
    for c in body["Collections"]:
        out.print(f"{c['CollectionId']}: erased {len(c['DeletedFaces'])} face(s), "
                  f"{len(c['DeletedUsers'])} user(s)")
    if not body["Collections"]:
        out.print("nothing to erase")


@retention_app.command("sweep")
def retention_sweep(as_json: bool = typer.Option(False, "--json")) -> None:
    """Delete the faces past their collection's retention (the server also does this hourly)."""
    body = _service().sweep_retention(local_context("retention"))
    if as_json:
        _emit(body)
        return
    for c in body["Collections"]:
        out.print(f"{c['CollectionId']}: {len(c['DeletedFaces'])} face(s) expired")
    if not body["Collections"]:
        out.print("no face is past its retention")


@collections_app.command("policy")
def collections_policy(
    collection: str = typer.Argument(...),
    purpose: Optional[str] = typer.Option(None, "--purpose", help="New declared purpose"),
    legal_basis: Optional[str] = typer.Option(None, "--legal-basis"),
    retention_days: Optional[int] = typer.Option(None, "--retention-days"),
    consent_required: Optional[bool] = typer.Option(None,
                                                    "--consent-required/--no-consent-required"),
    threshold_floor: Optional[float] = typer.Option(None, "--threshold-floor"),
    max_matches: Optional[int] = typer.Option(None, "--max-matches"),
    human_review: Optional[bool] = typer.Option(None, "--human-review/--no-human-review"),
    max_fpir: Optional[float] = typer.Option(None, "--max-fpir"),
    live_identification: Optional[bool] = typer.Option(
        None, "--live-identification/--no-live-identification"),
    case: Optional[str] = CaseOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show a collection's policy, or change it (TagResource on its regard: tags; audited)."""
    from regard.governance.policy import CollectionPolicy, policy_tags

    service = _service()
    try:
        arn = service.store.catalog.get_collection(collection).arn
    except RegardError as exc:
        _fail(exc)
        return
    tags = policy_tags(None, legal_basis, retention_days, consent_required, threshold_floor,
                       max_matches, human_review, max_fpir, live_identification)
    if purpose is not None:
        tags["regard:purpose"] = purpose
    if tags:
        _call("TagResource", {"ResourceArn": arn, "Tags": tags}, service,
              purpose="policy change", case=case)
    current = _call("ListTagsForResource", {"ResourceArn": arn}, service, case=case)["Tags"]
    policy = CollectionPolicy.from_tags(current).to_dict()
    if as_json:
        _emit(policy)
        return
    table = Table(title=f"{collection} policy")
    table.add_column("rule")
    table.add_column("value")
    for key, value in policy.items():
        table.add_row(key, "" if value is None else str(value))
    out.print(table)


# -- the transparency report ---------------------------------------------------------------------
@app.command("report")
def report(
    collection: Optional[str] = typer.Option(
        None, "--collection", help="Only this collection (default: all, deleted ones included)"),
    output: Path = typer.Option(Path("report.html"), "--out", help="Where to write the page"),
) -> None:
    """Write the transparency report: one self-contained HTML page for auditors, data-protection
    officers and the public (policies, faces held, who searched how often and why, erasures,
    and whether the ledger is intact). Exits 1 when the ledger is not intact (after writing)."""
    from regard.governance.report import gather, render

    try:
        data = gather(_service(), collection)
    except RegardError as exc:
        _fail(exc)
        return
    try:
        output.write_text(render(data), encoding="utf-8")
    except OSError as exc:
        err.print(f"cannot write {output}: {exc.strerror or exc}", markup=False,
                  highlight=False)
        raise typer.Exit(code=1) from exc
    out.print(f"report written to {output}", markup=False, highlight=False)
    if not data.chain.ok:
        where = (f": first break at entry {data.chain.first_bad_seq}"
                 if data.chain.first_bad_seq is not None else "")
        err.print(f"[red]ledger NOT intact[/red]{where}; the report lists the problems")
        raise typer.Exit(code=1)
