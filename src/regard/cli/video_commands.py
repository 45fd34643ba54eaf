"""`regard video detect | search`: stored-video analysis from the command line.

Each video is analysed in this process, as a job would be (``regard.video.analysis``), with a
progress bar (frames analysed, fps, ETA); ``--json`` prints the body GetFaceDetection /
GetFaceSearch would return. With ``--out-dir`` each video's result goes to ``<name>.json`` there
and a video whose result exists is skipped, so an interrupted batch resumes where it stopped.
A search is recorded in the audit ledger as one ``VideoFaceSearch`` per video, like a job's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from regard import config
from regard.cli.batch_commands import RayOpt, ray_files
from regard.cli.common import CaseOpt, PurposeOpt, _fail, app, err, local_context
from regard.video.files import write_result, write_result_file
from regard.errors import RegardError

video_app = typer.Typer(help="Faces in stored videos (detect, search); see also `regard redact`",
                        no_args_is_help=True)
app.add_typer(video_app, name="video")

SampleOpt = typer.Option(None, "--sample-ms", min=1,
                         help="Analyse a frame every this many ms (default "
                              "REGARD_VIDEO_SAMPLE_MS, 200)")
OutDirOpt = typer.Option(None, "--out-dir",
                         help="Write <video>.json here; videos already done are skipped")


def _bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.fields[frames]} frames, {task.fields[fps]:.1f} fps"),
                    TimeRemainingColumn(), console=err, transient=True,
                    disable=not err.is_terminal)


Analyse = Callable[[Path, Callable[[int, int], None], Any], Any]


def _each(videos: list[Path], out_dir: Optional[Path], as_json: bool, sample_ms: float,
          analyse: Analyse) -> None:
    from regard.video.jobs import Spool

    failed = 0
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    with _bar() as bar:
        for video in videos:
            target = out_dir / f"{video.name}.json" if out_dir is not None else None
            if target is not None and target.exists():
                err.print(f"{video}: done already ({target})")
                continue
            task = bar.add_task(video.name, total=None, frames=0, fps=0.0)
            started = time.monotonic()

            def progress(done_ms: int, total_ms: int, task: Any = task,
                         started: float = started) -> None:
                frames = int(done_ms // sample_ms) + 1  # analysed frames so far
                elapsed = max(1e-6, time.monotonic() - started)
                bar.update(task, completed=done_ms, total=total_ms or None, frames=frames,
                           fps=frames / elapsed)

            with Spool() as spool:
                try:
                    result = analyse(video, progress, spool)
                except RegardError as exc:
                    failed += 1
                    err.print(f"{video}: [red]{exc.code}[/red]: {exc.message}")
                    continue
                finally:
                    bar.remove_task(task)
                if target is not None:
                    write_result_file(target, result)
                if as_json:
                    write_result(sys.stdout, result,
                                {"Video": str(video)} if len(videos) > 1 else None)
                    sys.stdout.write("\n")
                elif target is None:
                    _summary(video, result)
    if failed:
        raise typer.Exit(code=1)


def _summary(video: Path, result: Any) -> None:
    seconds = result.metadata.get("DurationMillis", 0) / 1000
    if result.people is None:
        faces = sum(1 for _ in result.items())
        print(f"{video}: {seconds:.1f} s, {faces} faces in analysed frames")
        return
    print(f"{video}: {seconds:.1f} s, {len(result.people)} people")
    for index, matches in sorted(result.people.items()):
        best = matches[0] if matches else None
        print(f"  person {index}: " + (
            f"{best['Face'].get('ExternalImageId', best['Face']['FaceId'])} "
            f"({best['Similarity']:.1f})" if best else "no match"))


@video_app.command("detect")
def video_detect(
    videos: list[Path] = typer.Argument(..., help="Video files (anything FFmpeg reads)"),
    as_json: bool = typer.Option(False, "--json", help="Print GetFaceDetection's body"),
    sample_ms: Optional[int] = SampleOpt,
    out_dir: Optional[Path] = OutDirOpt,
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
    ray_address: Optional[str] = RayOpt,
) -> None:
    """Faces in every analysed frame of each video (Timestamp in ms, FaceDetail)."""
    from regard.service import RegardService
    from regard.video.analysis import AnalysisOptions
    from regard.video.files import detect_video

    context = local_context(purpose, case)
    sample = float(sample_ms or config.current().video_sample_ms)
    if ray_address:
        _on_ray(videos, out_dir, ray_address, context, as_json,
                {"Api": "StartFaceDetection", "SampleMs": sample})
        return
    service = RegardService()
    options = AnalysisOptions(sample_ms=sample, track=False)
    _each(videos, out_dir, as_json, options.sample_ms,
          lambda video, progress, spool: detect_video(service, context, video, options,
                                                      progress, spool))


@video_app.command("search")
def video_search(
    videos: list[Path] = typer.Argument(..., help="Video files (anything FFmpeg reads)"),
    collection: str = typer.Option(..., "--collection", "-c", help="Collection to search"),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", min=0, max=100,
        help="FaceMatchThreshold (default 80; the collection's floor applies)"),
    as_json: bool = typer.Option(False, "--json", help="Print GetFaceSearch's body"),
    sample_ms: Optional[int] = SampleOpt,
    out_dir: Optional[Path] = OutDirOpt,
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
    ray_address: Optional[str] = RayOpt,
) -> None:
    """Every person tracked in each video, with their matches in the collection."""
    from regard.service import RegardService
    from regard.video.analysis import AnalysisOptions
    from regard.video.files import search_options, search_video
    from regard.vision.packs import get_pack

    service = RegardService()
    context = local_context(purpose, case)
    sample = float(sample_ms or config.current().video_sample_ms)
    try:
        coll, used = search_options(service, context, collection, threshold)
    except RegardError as exc:
        _fail(exc)
    if ray_address:
        _on_ray(videos, out_dir, ray_address, context, as_json,
                {"Api": "StartFaceSearch", "SampleMs": sample, "CollectionId": collection,
                 "FaceMatchThreshold": threshold})
        return
    options = AnalysisOptions(sample_ms=sample, track=True, embed=True,
                              pack=get_pack(coll.face_model_version))
    _each(videos, out_dir, as_json, options.sample_ms,
          lambda video, progress, spool: search_video(service, context, video, coll.name, used,
                                                      options, progress, spool))


def _on_ray(videos: list[Path], out_dir: Optional[Path], address: str, context: Any,
            as_json: bool, parameters: dict[str, Any]) -> None:
    """The videos analysed on a Ray cluster, each result written to OUT_DIR/<video>.json."""
    from regard.cluster import VIDEO_BATCH

    if out_dir is None:
        err.print("[red]--ray needs --out-dir[/red] (a folder every node sees)")
        raise typer.Exit(code=2)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = [(video, out_dir / f"{video.name}.json") for video in videos]
    ray_files(VIDEO_BATCH, pairs, address=address, context=context, as_json=as_json,
              parameters={**parameters, "OutDir": str(out_dir)})
