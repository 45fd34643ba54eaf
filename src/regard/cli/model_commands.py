"""``regard models``: the face-model packs installed here and their published error rates."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from regard.cli.common import app, err, out
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
                     "Licence": pack.licence, "Calibrated": pack.calibrated,
                     "FMR": {str(s): pack.fmr_at(s) if pack.calibrated else None
                             for s in (80, 90, 99)}})
    if as_json:
        sys.stdout.write(json.dumps({"Models": rows}) + "\n")
        return
    table = Table(title="Face models (worst-off measured group's false-match rate per pair)")
    for column in ("version", "name", "size", "metric", "FMR @80", "FMR @90", "FMR @99", ""):
        table.add_column(column)
    for r in rows:
        table.add_row(r["FaceModelVersion"], r["Name"], str(r["EmbeddingSize"]), r["Metric"],
                      *(_rate(r["FMR"][s]) for s in ("80", "90", "99")),
                      "default" if r["Default"] else "" if r["Calibrated"] else
                      "not calibrated")
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
    if not info["Calibrated"]:
        out.print(f"[yellow]not calibrated: run `regard models calibrate {version} --labels "
                  "DIR` before a collection can use it[/yellow]")
        return
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


@models_app.command("add")
def models_add(
    model_file: Path = typer.Argument(..., help="The ONNX file you hold"),
    version: str = typer.Option(..., "--version",
                                help="The FaceModelVersion it gets, e.g. 10.0 ([0-9.]+)"),
    recipe: Optional[str] = typer.Option(
        None, "--recipe", help="A recipe Regard knows (sface, dlib-resnet-onnx), or none for a "
                               "custom one given by the options below"),
    alignment: Optional[str] = typer.Option(None, "--alignment", help="arcface-112 | dlib-150"),
    layout: Optional[str] = typer.Option(None, "--layout", help="NCHW | NHWC"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | uint8"),
    channels: Optional[str] = typer.Option(None, "--channels", help="RGB | BGR"),
    mean: Optional[str] = typer.Option(None, "--mean", help="Per channel, 0-255 scale: R,G,B"),
    std: Optional[str] = typer.Option(None, "--std", help="Per channel: R,G,B"),
    embedding_size: Optional[int] = typer.Option(None, "--embedding-size"),
    metric: Optional[str] = typer.Option(None, "--metric", help="cosine | euclidean"),
    name: Optional[str] = typer.Option(None, "--name"),
    licence: Optional[str] = typer.Option(None, "--licence", help="The model's licence"),
    provenance: Optional[str] = typer.Option(None, "--provenance", help="Where it comes from"),
    training_data: Optional[str] = typer.Option(None, "--training-data",
                                                help="What it was trained on"),
) -> None:
    """Install a face-recognition model you hold as a face-model pack (nothing is downloaded).
    It serves collections once `regard models calibrate VERSION` has measured it."""
    from regard.errors import InvalidParameterError, RegardError
    from regard.vision.custom_models import install, recipe_from

    custom: dict[str, object] = {k: v for k, v in {
        "alignment": alignment, "layout": layout, "dtype": dtype, "channels": channels,
        "embedding_size": embedding_size, "metric": metric}.items() if v is not None}
    try:
        for key, raw in (("mean", mean), ("std", std)):
            if raw is not None:
                values = [float(v) for v in raw.split(",")]
                if len(values) != 3:
                    raise InvalidParameterError(f"--{key} takes three numbers: R,G,B")
                custom[key] = values
        if not version.replace(".", "").isdigit():
            raise InvalidParameterError("--version must look like 10.0 ([0-9.]+)")
        if any(p.version == version for p in packs()):
            raise InvalidParameterError(f"Face model {version} exists already")
        installed = install(model_file, version, recipe_from(recipe, custom), name=name,
                            licence=licence, provenance=provenance, training_data=training_data)
    except (RegardError, ValueError) as exc:
        err.print(f"[red]{getattr(exc, 'code', 'InvalidParameterException')}[/red]: "
                  f"{getattr(exc, 'message', exc)}")
        raise typer.Exit(code=1)
    out.print(f"installed face model {version} ({installed.name}, sha256 {installed.sha256}); "
              f"calibrate it before use: regard models calibrate {version} --labels DIR")


@models_app.command("calibrate")
def models_calibrate(
    version: str = typer.Argument(..., help="An installed model's FaceModelVersion"),
    labels: list[Path] = typer.Option(
        ..., "--labels", help="Identity-labelled data, `regard eval`'s labelled layout: "
                              "labels.csv with image, identity and group columns (repeatable)"),
    min_age: float = typer.Option(18, "--min-age", help="Images of younger people are left out"),
    workers: int = typer.Option(0, "--workers", help="Processes (default: all cores)"),
) -> None:
    """Measure a model's distance -> similarity table on your identity-labelled data under the
    shipped packs' rule: each anchor (similarity 80 <-> false-match rate 1e-3, ...) is set by the
    group with the most false matches, one mapping for everyone; then it can serve collections."""
    import numpy as np

    from regard.batch import default_workers, map_images
    from regard.errors import RegardError
    from regard.evaluation.calibration_fit import fit_table, identity_labelled_distances
    from regard.evaluation.embeddings import central_embedding
    from regard.evaluation.layouts import LayoutError, read_labels
    from regard.private_files import private_file
    from regard.vision.custom_models import InstalledModel, packs_dir

    folder = packs_dir() / version
    if not (folder / "pack.json").is_file():
        err.print(f"[red]{version} is not a model installed with `regard models add` (the "
                  "shipped packs are calibrated by bench/calibrate.py)[/red]")
        raise typer.Exit(code=2)
    pack = get_pack(version)
    paths: list[str] = []
    identities: list[str] = []
    cells: list[str] = []
    for root in labels:
        try:
            labelled = read_labels(root)
        except LayoutError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(code=2)
        if not labelled.has_identity:
            err.print(f"[red]{root}: labels.csv has no identity column; calibration needs "
                      "identity-labelled images (repeated people would count as impostors)[/red]")
            raise typer.Exit(code=2)
        for image in labelled.images:
            if image.age is not None and image.age < min_age:
                continue
            paths.append(str(image.path))
            identities.append(f"{root.name}/{image.identity}")
            cells.append(f"{root.name} " + ", ".join(
                f"{k}={v}" for k, v in sorted(image.groups.items())) if image.groups
                else root.name)
    results = list(map_images(central_embedding, [(p, version) for p in paths],
                              workers=workers or default_workers()))
    rows = np.full((len(paths), pack.embedding_size), np.nan, dtype=np.float32)
    for i, vector in enumerate(results):
        if vector is not None and not isinstance(vector, RegardError):
            rows[i] = vector
    impostors, genuine = identity_labelled_distances(rows, identities, cells)
    found = int((~np.isnan(rows).any(axis=1)).sum())
    try:
        table = fit_table(impostors, genuine,
                          data=f"{found} of {len(paths)} images with a face from "
                               f"{', '.join(str(p) for p in labels)}",
                          description=f"{pack.name}: distance -> similarity, each anchor where "
                                      "the worst-off group reaches its false-match rate; "
                                      "measured by `regard models calibrate`",
                          zero_distance=2.0 if pack.metric == "cosine" else
                          float(np.nanmax(impostors["all"])) * 1.5)
    except ValueError as exc:
        err.print(f"[red]cannot calibrate: {exc}[/red]")
        raise typer.Exit(code=1)
    private_file(folder / "calibration.json").write_text(json.dumps(table, indent=1))
    meta = InstalledModel.from_json((folder / "pack.json").read_text())
    meta.calibration = {"measured_on": table["measured_on"], "data": table["data"],
                        "groups": sorted(impostors), "genuine_pairs": int(len(genuine))}
    (folder / "pack.json").write_text(meta.to_json())
    out.print(f"face model {version} calibrated on {found} images "
              f"({len(genuine)} genuine pairs, {len(impostors) - 1} group(s)):")
    for anchor in table["anchors"]:
        if "target_fmr" in anchor:
            tar = table["measurements"]["tar"][f"{anchor['similarity']:g}"]
            out.print(f"  similarity {anchor['similarity']:g}: distance {anchor['distance']:.4f}"
                      f", FMR {anchor['target_fmr']:g} (set by {anchor['set_by']}, "
                      f"{anchor['method']}), TAR {tar['accepted'] / tar['pairs']:.1%}")
