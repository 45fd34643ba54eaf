"""The overview: collections with their faces and users, searches and refused requests per day,
and the ledger's state: two audited reads (DescribeCollections, AuditSummary), each shown only
when the key may make it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from regard.console.web import Console
from regard.errors import RegardError


def routes(console: Console, router: APIRouter) -> None:
    @router.get("")
    async def overview(request: Request) -> Response:
        visitor = request.state.visitor
        collections: dict[str, Any] | None = None
        summary: dict[str, Any] | None = None
        errors: list[RegardError] = []
        if visitor.may("DescribeCollections"):
            try:
                collections = await console.call(request, "DescribeCollections",
                                                 {"MaxResults": 100})
            except RegardError as exc:
                errors.append(exc)
        if visitor.may("AuditSummary"):
            try:
                summary = await console.call(request, "AuditSummary", {"Days": 14})
            except RegardError as exc:
                errors.append(exc)
        totals = None
        if collections is not None:
            listed = collections["Collections"]
            totals = {"collections": len(listed), "more": "NextToken" in collections,
                      "faces": sum(c["FaceCount"] for c in listed),
                      "users": sum(c["UserCount"] for c in listed)}
        peak = max([d["Searches"] + d["Refused"] for d in summary["Days"]] + [1]) \
            if summary else 1
        return console.render(request, "overview.html", collections=collections,
                              totals=totals, summary=summary, peak=peak, errors=errors)
