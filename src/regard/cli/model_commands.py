"""``regard models``: the face-model packs installed here and their published error rates."""

from __future__ import annotations

import json
import sys

import typer
from rich.table import Table

from regard.cli.common import app, out
from regard.vision.packs import default_pack, get_pack, packs

models_app = typer.Typer(help="Face-model packs (FaceModelVersion): list, show",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


def _rate(value: float | None) -> str:
    if value is None:
        return ""
    return "0" if value == 0 else f"{value:.0e}" if value < 0.01 else f"{value:.1%}"


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Each installed pack with its size, metric and the worst-off group's false-match rate at
    the thresholds people use (80, 90, 99)."""
    rows = []
    for pack in packs():
        rows.append({"FaceModelVersion": pack.version, "Name": pack.name,
                     "Default": pack.version == default_pack().version,
                     "EmbeddingSize": pack.embedding_size, "Metric": pack.metric,
                     "Licence": pack.licence,
                     "FMR": {str(s): pack.fmr_at(s) for s in (80, 90, 99)}})
    if as_json:
        sys.stdout.write(json.dumps({"Models": rows}) + "\n")
        return
    table = Table(title="Face models (worst-off measured group's false-match rate per pair)")
    for column in ("version", "name", "size", "metric", "FMR @80", "FMR @90", "FMR @99", ""):
        table.add_column(column)
    for r in rows:
        table.add_row(r["FaceModelVersion"], r["Name"], str(r["EmbeddingSize"]), r["Metric"],
                      *(_rate(r["FMR"][s]) for s in ("80", "90", "99")),
                      "default" if r["Default"] else "")
    out.print(table)


@models_app.command("show")
def models_show(version: str = typer.Argument(..., help="FaceModelVersion, e.g. 1.0"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """A pack's facts (alignment, runtime, licence, provenance, training data) and its
    calibration: each anchor with the false-match rate it promises, the group and data that set
    it, and the measured error rates published with it."""
    info = get_pack(version).describe()
    if as_json:
        sys.stdout.write(json.dumps(info) + "\n")
        return
    facts = Table(title=f"Face model {version}", show_header=False)
    facts.add_column("field")
    facts.add_column("value")
    for key, value in info.items():
        if key != "Calibration":
            facts.add_row(key, str(value))
    out.print(facts)
    cal = info["Calibration"]
    anchors = Table(title=f"Calibration (measured {cal['MeasuredOn']}; {cal['Data']})")
    for column in ("similarity", "distance", "FMR (worst group)", "set by", "method",
                   "95 % interval"):
        anchors.add_column(column)
    for a in sorted(cal["Anchors"], key=lambda a: -a["similarity"]):
        interval = a.get("interval") or a.get("ci95")
        anchors.add_row(f"{a['similarity']:g}", f"{a['distance']:.4f}",
                        _rate(a.get("target_fmr")), a.get("set_by", ""), a.get("method", ""),
                        "" if not interval else f"{interval[0]:.4f}-{interval[1]:.4f}")
    out.print(anchors)
    measured = cal["ErrorRates"]
    thresholds = sorted(measured["TAR"], key=float)
    if thresholds:
        rates = Table(title="Measured on the calibration data: genuine pairs accepted (TAR) and "
                            "each group's false-match rate")
        rates.add_column("pairs")
        for s in thresholds:
            rates.add_column(f"@{s}")
        tar = measured["TAR"]
        rates.add_row(f"TAR ({tar[thresholds[0]]['pairs']} genuine)",
                      *(f"{tar[s]['rate']:.1%}" for s in thresholds))
        for group, by in sorted(measured["FMR"].items()):
            first = next(iter(by.values()))
            rates.add_row(f"FMR {group} ({first['pairs']})",
                          *(_rate(by[s]["rate"]) if s in by else "" for s in thresholds))
        out.print(rates)
