"""`regard video detect | search`: stored-video analysis from the command line.

Each video is analysed in this process, as a job would be (``regard.video.analysis``), with a
progress bar (frames analysed, fps, ETA); ``--json`` prints the body GetFaceDetection /
GetFaceSearch would return. With ``--out-dir`` each video's result goes to ``<name>.json`` there
and a video whose result exists is skipped, so an interrupted batch resumes where it stopped.
A search is recorded in the audit ledger as one ``VideoFaceSearch`` per video, like a job's.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Optional

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from regard import config
from regard.cli.common import CaseOpt, PurposeOpt, _fail, app, err, local_context
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


@dataclass
class _Result:
    """One video's answer, its items read back from the job-style spool (never all in
    memory): ``member`` is ``Faces`` (GetFaceDetection) or ``Persons`` (GetFaceSearch)."""

    metadata: dict[str, Any]
    member: str
    items: Callable[[], Iterator[dict[str, Any]]]
    people: dict[int, list[dict[str, Any]]] | None = None  # search: each person's matches


Analyse = Callable[[Path, Callable[[int, int], None], Any], _Result]


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
                    tmp = target.with_suffix(".json.part")
                    with open(tmp, "w") as fh:
                        _write_body(fh, result)
                    tmp.replace(target)
                if as_json:
                    _write_body(sys.stdout, result,
                                {"Video": str(video)} if len(videos) > 1 else None)
                    sys.stdout.write("\n")
                elif target is None:
                    _summary(video, result)
    if failed:
        raise typer.Exit(code=1)


def _write_body(out: IO[str], result: _Result, extra: dict[str, Any] | None = None) -> None:
    """The Get* body as JSON, its items streamed one by one."""
    head = json.dumps({**(extra or {}), "JobStatus": "SUCCEEDED",
                       "VideoMetadata": result.metadata})
    out.write(head[:-1] + f", {json.dumps(result.member)}: [")
    for i, item in enumerate(result.items()):
        out.write((", " if i else "") + json.dumps(item))
    out.write("]}")


def _summary(video: Path, result: _Result) -> None:
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


def _analyse(service: Any, video: Path, options: Any, progress: Callable[[int, int], None],
             spool: Any) -> Any:
    from regard.video.analysis import analyze_video
    from regard.video.decode import VideoReader

    with VideoReader(video) as reader:
        return analyze_video(reader, service.engine, options, progress=progress,
                             sink=spool.add)


@video_app.command("detect")
def video_detect(
    videos: list[Path] = typer.Argument(..., help="Video files (anything FFmpeg reads)"),
    as_json: bool = typer.Option(False, "--json", help="Print GetFaceDetection's body"),
    sample_ms: Optional[int] = SampleOpt,
    out_dir: Optional[Path] = OutDirOpt,
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
) -> None:
    """Faces in every analysed frame of each video (Timestamp in ms, FaceDetail)."""
    from regard.service import RegardService
    from regard.video.analysis import AnalysisOptions
    service = RegardService()
    context = local_context(purpose, case)
    options = AnalysisOptions(sample_ms=float(sample_ms or config.current().video_sample_ms),
                              track=False)

    def analyse(video: Path, progress: Callable[[int, int], None], spool: Any) -> _Result:
        def run() -> dict[str, Any]:
            analysis = _analyse(service, video, options, progress, spool)
            return {"VideoMetadata": analysis.metadata.to_aws()}

        done = service.run_audited("StartFaceDetection", {"File": video.name}, context, run)
        return _Result(done["VideoMetadata"], "Faces", lambda: (
            {"Timestamp": ts, "Face": face} for ts, _, face in spool.in_time_order()))

    _each(videos, out_dir, as_json, options.sample_ms, analyse)


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
) -> None:
    """Every person tracked in each video, with their matches in the collection."""
    from regard.service import RegardService
    from regard.video.analysis import AnalysisOptions
    from regard.video.jobs import identify_persons, persons_by_time
    from regard.vision.packs import get_pack

    service = RegardService()
    context = local_context(purpose, case)
    asked: dict[str, Any] = {"CollectionId": collection}
    if threshold is not None:
        asked["FaceMatchThreshold"] = threshold
    try:
        coll = service.store.catalog.get_collection(collection)
        # the gate's own checks now, before minutes of analysis: scopes, the threshold floor
        checked = service.preflight("VideoFaceSearch", asked, context)
    except RegardError as exc:
        _fail(exc)
    used = float(checked.get("FaceMatchThreshold", config.DEFAULT_MATCH_THRESHOLD))
    options = AnalysisOptions(sample_ms=float(sample_ms or config.current().video_sample_ms),
                              track=True, embed=True, pack=get_pack(coll.face_model_version))

    def analyse(video: Path, progress: Callable[[int, int], None], spool: Any) -> _Result:
        analysis = _analyse(service, video, options, progress, spool)
        found = identify_persons(service, context, f"cli:{uuid.uuid4()}", coll.name, used,
                                 analysis)
        return _Result(analysis.metadata.to_aws(), "Persons",
                       lambda: persons_by_time(spool, analysis.person_of, found),
                       {i: found.get(i, []) for i in analysis.persons})

    _each(videos, out_dir, as_json, options.sample_ms, analyse)
