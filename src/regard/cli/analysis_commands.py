"""`regard detect | compare | detectors`: the engine from the command line.

With ``--json`` they print exactly the body of Rekognition's DetectFaces / CompareFaces response;
for several images, one JSON object per line with an added ``"Image"`` member.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from regard import config
from regard.analysis import DEFAULT_SIMILARITY_THRESHOLD, Engine, ImageFaces
from regard.batch import default_workers, map_images
from regard.cli.common import (
    CaseOpt,
    DetectorOpt,
    MinFaceOpt,
    PurposeOpt,
    _engine_kwargs,
    _fail,
    _print_error,
    _progress,
    app,
    local_context,
    out,
)
from regard.errors import RegardError
from regard.vision.detect import available_detectors


def _detect_task(engine: Engine, item: tuple[str, Optional[str]]) -> dict[str, Any]:
    """Runs in a worker: detect, optionally draw, return the response body (picklable)."""
    path, draw_to = item
    rgb = engine.load(path)
    result = engine.detect(rgb)
    if draw_to:
        draw_faces(rgb, result, Path(draw_to))
    return result.detect_faces_response()


def draw_faces(rgb: Any, result: ImageFaces, dest: Path) -> None:
    """Write a copy of the image with boxes, landmarks and confidences drawn on it."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(rgb)
    pen = ImageDraw.Draw(image)
    width = max(2, round(min(image.size) / 300))
    for face in result.faces:
        pen.rectangle((face.left, face.top, face.right, face.bottom), outline=(0, 255, 0),
                      width=width)
        r = max(1.0, face.size / 40)
        for x, y in face.landmarks.points.values():
            pen.ellipse((x - r, y - r, x + r, y + r), fill=(255, 0, 0))
        pen.text((face.left, max(0, face.top - 12)), f"{face.confidence:.0f}", fill=(0, 255, 0))
    dest.parent.mkdir(parents=True, exist_ok=True)
    image.save(dest)


def _draw_destinations(images: list[Path], draw: Optional[Path]) -> list[Optional[str]]:
    if draw is None:
        return [None] * len(images)
    if len(images) == 1 and draw.suffix:
        return [str(draw)]
    return [str(draw / f"{p.stem}.faces.png") for p in images]


@app.command()
def detect(
    images: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG, WebP)"),
    as_json: bool = typer.Option(False, "--json", help="Print Rekognition DetectFaces bodies"),
    draw: Optional[Path] = typer.Option(
        None, "--draw", help="Write annotated copies: a file for one image, else a folder"
    ),
    detector: Optional[str] = DetectorOpt,
    min_face_size: int = MinFaceOpt,
    workers: int = typer.Option(0, "--workers", help="Processes (default: all cores)"),
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
) -> None:
    """Detect faces: boxes, landmarks, pose, quality and confidence.

    Each image is recorded in the audit ledger (DetectFaces; REGARD_AUDIT_DETECT=0 turns that
    off)."""
    audit = _detect_auditor(purpose, case)
    items = list(zip((str(p) for p in images), _draw_destinations(images, draw)))
    n_workers = workers or min(default_workers(), len(items))
    results = map_images(_detect_task, items, workers=n_workers,
                         engine_kwargs=_engine_kwargs(detector, min_face_size))
    failed = 0
    with _progress(len(items)) as progress:
        task = progress.add_task("detecting", total=len(items))
        for path, result in zip(images, results):
            progress.advance(task)
            if audit is not None:
                result = audit(path, result)
            if isinstance(result, RegardError):
                failed += 1
                if len(images) == 1:
                    _fail(result)
                _print_error(path, result, as_json)
                continue
            if as_json:
                body = result if len(images) == 1 else {"Image": str(path), **result}
                sys.stdout.write(json.dumps(body) + "\n")
            else:
                _print_faces_table(path, result)
    if failed:
        raise typer.Exit(code=1)


def _detect_auditor(purpose: Optional[str], case: Optional[str]) -> Any:
    """A function recording one image's DetectFaces in the ledger (the workers that ran it have
    no database), or None when DetectFaces is not audited."""
    import hashlib

    if not config.current().audit_detect:
        return None
    from regard.service import RegardService

    service = RegardService()
    context = local_context(purpose, case)

    def record(path: Path, result: Any) -> Any:
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = None

        def outcome() -> Any:
            if isinstance(result, RegardError):
                raise result
            return result

        try:
            return service.run_audited("DetectFaces", {}, context, outcome,
                                       [digest] if digest else [])
        except RegardError as exc:
            return exc

    return record


@app.command()
def compare(
    source: Path = typer.Argument(..., help="Image whose largest face is compared"),
    target: Path = typer.Argument(..., help="Image whose faces are searched"),
    threshold: float = typer.Option(
        DEFAULT_SIMILARITY_THRESHOLD, "--threshold", help="SimilarityThreshold, 0-100"
    ),
    quality_filter: str = typer.Option("NONE", "--quality-filter",
                                       help="NONE | AUTO | LOW | MEDIUM | HIGH"),
    as_json: bool = typer.Option(False, "--json", help="Print the Rekognition CompareFaces body"),
    detector: Optional[str] = DetectorOpt,
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
) -> None:
    """Compare the largest face in SOURCE with every face in TARGET (calibrated similarity).
    Recorded in the audit ledger (CompareFaces)."""
    import hashlib

    from regard.service import RegardService

    engine = Engine(detector=detector)
    try:
        data = [source.read_bytes(), target.read_bytes()]
    except OSError as exc:
        out.print(f"[red]cannot read image[/red]: {exc}")
        raise typer.Exit(code=1) from exc
    holder: list[Any] = []

    def run() -> dict[str, Any]:
        holder.append(engine.compare(data[0], data[1], threshold, quality_filter))
        return holder[0].compare_faces_response()

    params = {"SimilarityThreshold": threshold, "QualityFilter": quality_filter}
    try:
        RegardService(engine).run_audited("CompareFaces", params, local_context(purpose, case),
                                          run, [hashlib.sha256(d).hexdigest() for d in data])
    except RegardError as exc:
        _fail(exc)
        return
    result = holder[0]
    if as_json:
        sys.stdout.write(json.dumps(result.compare_faces_response()) + "\n")
        return
    table = Table(title=f"{source.name} vs {target.name} (threshold {threshold:g})")
    for col in ("face", "similarity", "match", "box (L,T,W,H)"):
        table.add_column(col)
    rows = [(m.face, m.similarity, True) for m in result.matches]
    rows += [(f, Engine.similarity(result.source_face.embedding, f.embedding), False)
             for f in result.unmatched]
    for i, (face, sim, matched) in enumerate(rows, 1):
        b = face.bounding_box()
        table.add_row(str(i), f"{sim:.2f}", "yes" if matched else "no",
                      f"{b['Left']:.3f},{b['Top']:.3f},{b['Width']:.3f},{b['Height']:.3f}")
    out.print(table)
    if not rows:
        out.print("No faces in the target image.")


@app.command()
def detectors() -> None:
    """List the detector backends installed here, default first."""
    for i, name in enumerate(available_detectors()):
        out.print(f"{name}{'  (default)' if i == 0 else ''}")


def _print_faces_table(path: Path, body: dict[str, Any]) -> None:
    faces = body["FaceDetails"]
    table = Table(title=f"{path} — {len(faces)} face(s)")
    for col in ("#", "confidence", "box (L,T,W,H)", "roll/yaw/pitch", "bright/sharp"):
        table.add_column(col)
    for i, f in enumerate(faces, 1):
        b, p, q = f["BoundingBox"], f["Pose"], f["Quality"]
        table.add_row(
            str(i),
            f"{f['Confidence']:.1f}",
            f"{b['Left']:.3f},{b['Top']:.3f},{b['Width']:.3f},{b['Height']:.3f}",
            f"{p['Roll']:.0f}/{p['Yaw']:.0f}/{p['Pitch']:.0f}",
            f"{q['Brightness']:.0f}/{q['Sharpness']:.0f}",
        )
    out.print(table)


