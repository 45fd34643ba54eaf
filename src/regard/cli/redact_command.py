"""`regard redact`: hide every face in images and videos, irreversibly (``regard.video.redact``).

``regard redact IN OUT`` for one file; ``regard redact IN... --out-dir DIR`` for a batch, where
outputs that already exist are skipped, so an interrupted batch resumes where it stopped (an
output only appears once complete). Images (.jpg, .jpeg, .png, .webp) are decoded as images;
anything else is opened as a video by FFmpeg.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from regard.cli.batch_commands import RayOpt, ray_files
from regard.cli.common import CaseOpt, PurposeOpt, app, err, local_context, out
from regard.cluster import REDACTION_BATCH
from regard.errors import InvalidParameterError, RegardError
from regard.video.redact import (
    DEFAULT_DETECT_EVERY,
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_PRESET,
    IMAGE_FORMATS,
    RedactionOptions,
)


def _fill(text: str) -> tuple[int, int, int]:
    """``#rrggbb`` or ``r,g,b``."""
    try:
        if text.startswith("#") and len(text) == 7:
            return (int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16))
        r, g, b = (int(v) for v in text.split(","))
        return (r, g, b)
    except ValueError:
        raise InvalidParameterError(f"--fill must be #rrggbb or r,g,b, got {text!r}") from None


def _pairs(inputs: list[Path], out_dir: Optional[Path]) -> list[tuple[Path, Path]]:
    if out_dir is None:
        if len(inputs) != 2:
            raise InvalidParameterError("Give IN OUT, or several INs with --out-dir DIR")
        return [(inputs[0], inputs[1])]
    return [(path, out_dir / path.name) for path in inputs]


@app.command()
def redact(
    paths: list[Path] = typer.Argument(..., help="IN OUT, or the inputs when --out-dir is given"),
    out_dir: Optional[Path] = typer.Option(
        None, "--out-dir", help="Write each input here under its own name; existing outputs are "
        "skipped (resumable batches)"),
    method: str = typer.Option("blur", "--method", help="blur | mosaic | box"),
    shape: str = typer.Option("ellipse", "--shape", help="ellipse | box"),
    scale: float = typer.Option(1.3, "--scale", help="Mask size relative to the face box"),
    fill: str = typer.Option("#000000", "--fill", help="Colour of --method box (#rrggbb)"),
    codec: Optional[str] = typer.Option(
        None, "--codec", help="Video encoder (default: the source's, else libx264)"),
    crf: int = typer.Option(20, "--crf", help="Video quality, x264 scale (lower is better)"),
    preset: str = typer.Option(DEFAULT_PRESET, "--preset",
                               help="Encoder speed (x264 names; veryfast: smaller files, slower)"),
    detect_every: int = typer.Option(DEFAULT_DETECT_EVERY, "--detect-every",
                                     help="Detect faces on every n-th frame (tracked between)"),
    pad_ms: float = typer.Option(300.0, "--pad-ms",
                                 help="Keep masks this long before and after a face is seen"),
    min_confidence: float = typer.Option(DEFAULT_MIN_CONFIDENCE, "--min-confidence",
                                         help="Detector confidence, 0-100"),
    no_audio: bool = typer.Option(False, "--no-audio", help="Drop the audio (else copied)"),
    keep_collection: Optional[str] = typer.Option(
        None, "--keep-collection", help="Leave faces matching this collection visible"),
    only_collection: Optional[str] = typer.Option(
        None, "--only-collection", help="Hide only the faces matching this collection"),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Similarity for a collection match (default 80)"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per input"),
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
    ray_address: Optional[str] = RayOpt,
) -> None:
    """Hide every face, irreversibly: in images, and in every frame of videos (sound, frame
    rate, resolution, rotation and container kept). With --ray (and --out-dir, a folder every
    node sees) the files are redacted on a Ray cluster."""
    try:
        if keep_collection and only_collection:
            raise InvalidParameterError("--keep-collection and --only-collection exclude each "
                                        "other")
        settings = dict(
            method=method, shape=shape, scale=scale, fill=_fill(fill), codec=codec, crf=crf,
            preset=preset, detect_every=detect_every, pad_ms=pad_ms,
            min_confidence=min_confidence, audio=not no_audio,
            keep_matched=bool(keep_collection), only_matched=bool(only_collection))
        options = RedactionOptions(**settings)  # type: ignore[arg-type]
        pairs = _pairs(paths, out_dir)
        named = keep_collection or only_collection
        if ray_address:
            if out_dir is None:
                raise InvalidParameterError("--ray needs --out-dir (a folder every node sees)")
            ray_files(REDACTION_BATCH, pairs, address=ray_address,
                      context=local_context(purpose, case), as_json=as_json,
                      parameters={"Options": settings, "CollectionId": named,
                                  "FaceMatchThreshold": threshold, "OutDir": str(out_dir)},
                      preflight=_preflight(named, threshold, local_context(purpose, case)))
            return
        from regard.service import RegardService
        from regard.video.files import Redactor

        redactor = Redactor(RegardService(), local_context(purpose, case), options, named,
                            threshold)
    except RegardError as exc:
        err.print(f"[red]{exc.code}[/red]: {exc.message}")
        raise typer.Exit(code=1) from None
    failed = 0
    for src, dst in pairs:
        if out_dir is not None and dst.exists():
            _report(src, dst, {"Skipped": True}, as_json, "exists, skipped")
            continue
        try:
            if src.suffix.lower() in IMAGE_FORMATS:
                body = redactor.redact(src, dst)
            else:
                with _video_progress(src.name) as progress:
                    body = redactor.redact(src, dst, progress)
        except RegardError as exc:
            failed += 1
            if as_json:
                sys.stdout.write(json.dumps({"Input": str(src), **exc.to_dict()}) + "\n")
            else:
                err.print(f"{src}: [red]{exc.code}[/red]: {exc.message}")
            continue
        _report(src, dst, body, as_json, _summary(body))
    if failed:
        raise typer.Exit(code=1)


def _preflight(collection: Optional[str], threshold: Optional[float],
               context: Any) -> Callable[[Any], None]:
    """The checks a Redactor makes before any file, run by a --ray driver."""
    def check(service: Any) -> None:
        if collection:
            from regard.video.redact import collection_identifier

            collection_identifier(service, collection, context, threshold=threshold)
    return check


class _video_progress:
    """A rich progress bar per pass (analysing, writing): frames, fps, time left. Off when
    stderr is not a terminal."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[fps]:>6.1f} fps"), TimeRemainingColumn(),
                            console=err, transient=True, disable=not err.is_terminal)
        self.tasks: list[Any] = []
        self.started: list[float] = []

    def __enter__(self) -> Callable[[int, int], None]:
        self.bar.__enter__()
        return self.update

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]

    def update(self, done: int, total: int) -> None:
        frames = max(1, total // 2)
        phase = 0 if done <= frames and len(self.tasks) < 2 else 1
        while len(self.tasks) <= phase:
            label = ("analysing " if len(self.tasks) == 0 else "writing   ") + self.name
            self.tasks.append(self.bar.add_task(label, total=frames, fps=0.0))
            self.started.append(time.monotonic())
        if phase == 1:
            self.bar.update(self.tasks[0], completed=frames, total=frames)
        count = done if phase == 0 else done - frames
        elapsed = max(1e-6, time.monotonic() - self.started[phase])
        self.bar.update(self.tasks[phase], completed=count, total=frames, fps=count / elapsed)


def _summary(body: dict[str, Any]) -> str:
    if body["Kind"] == "image":
        return f"{body['FacesMasked']} of {body['Faces']} faces hidden"
    return (f"{body['Frames']} frames, {body['FramesWithMasks']} with masks, "
            f"{body['Tracks']} faces tracked, {body['FramesPerSecond']:.1f} fps"
            + ("" if body["AudioCopied"] else ", no audio"))


def _report(src: Path, dst: Path, body: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"Input": str(src), "Output": str(dst), **body}) + "\n")
    else:
        out.print(f"{src} -> {dst}: {text}")
