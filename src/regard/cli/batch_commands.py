"""``regard index ... --ray ADDRESS`` (and the video and redaction batches) on a Ray cluster, and
``regard jobs``: every job and batch in the catalog, with its progress.

The commands here are the driver's side only; what the workers do is ``regard.cluster.worker``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from regard.cli.common import _fail, app, err, out
from regard.errors import RegardError

jobs_app = typer.Typer(help="Background jobs and batches: state and progress.",
                       no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

RayOpt = typer.Option(
    None, "--ray", help="Run on this Ray cluster (ray://HOST:10001, HOST:6379 or auto): "
                        "workers read the inputs where they are and write to the shared catalog")
ChunkOpt = typer.Option(8, "--chunk", min=1, max=1000,
                        help="Images per Ray task (with --ray)")


def _bar(total: int) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[faces]} faces, {task.fields[failed]} failed, "
                               "{task.fields[rate]:.1f}/s"),
                    TimeRemainingColumn(), console=err, transient=True,
                    disable=total < 2 or not err.is_terminal)


def run_on_ray(service: Any, address: str, kind: str, context: Any,
               parameters: dict[str, Any], items: Sequence[Any],
               task: Callable[..., list[dict[str, Any]]], *,
               chunk_size: int, label: str, as_json: bool,
               refs_of: Callable[[Sequence[Any]], list[str]],
               prepare: Callable[[Sequence[Any]], Sequence[Any]] = list) -> Any:
    """Run one batch on the cluster as ``context``, its job row in ``service``'s catalog (the
    driver's service, which made its checks); the tally. Failures are printed (or JSON lines);
    an interrupted driver gives its job back so that the same command resumes at once."""
    from regard.cluster.batch import BatchJob, BatchTakenError
    from regard.cluster.ray_driver import ClusterError, RayCluster, run_batch
    from regard.config import current
    from regard.jobs.store import JobStore

    job = BatchJob(JobStore(service.store.database), kind, context, parameters,
                   lease_seconds=current().job_lease_seconds)
    try:
        started = job.start()
    except BatchTakenError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(code=1) from None
    err.print(f"batch job {started.job_id} ({kind}"
              + (f", resumed: attempt {started.attempts}" if job.resumed else "") + ")")
    cluster: Any = None
    try:
        cluster = RayCluster(address)
        nodes = cluster.check_nodes(job.job_id)
        err.print(f"Ray: {len(nodes)} node(s), {cluster.cpus()} CPU(s)")
        with _bar(len(items)) as bar:
            progress = bar.add_task(label, total=len(items), faces=0, failed=0, rate=0.0)

            def seen(outcome: dict[str, Any], tally: Any) -> None:
                bar.update(progress, completed=tally.done, faces=tally.faces,
                           failed=tally.failed, rate=tally.rate)
                if as_json:
                    sys.stdout.write(json.dumps(outcome) + "\n")
                elif outcome.get("Error"):
                    err.print(f"{outcome['Ref']}: [red]{outcome['Error']}[/red]: "
                              f"{outcome['Message']}")

            tally = run_batch(cluster, job, task, items, chunk_size=chunk_size,
                              refs_of=refs_of, on_outcome=seen, prepare=prepare)
    except KeyboardInterrupt:
        job.release()
        err.print(f"interrupted: batch job {job.job_id} given back; the same command resumes it")
        raise typer.Exit(code=130) from None
    except ClusterError as exc:
        from regard.cluster.batch import Tally

        if not job.lost:
            job.finish(Tally(total=len(items)), exc.message)
        _fail(exc)
    finally:
        if cluster is not None:
            cluster.close()
    job.finish(tally)
    return tally


# -- regard jobs ---------------------------------------------------------------------------------
def _jobs_store() -> Any:
    from regard.jobs.store import JobStore
    from regard.store import Store

    return JobStore(Store().database)


def _job_body(job: Any) -> dict[str, Any]:
    return {"JobId": job.job_id, "Kind": job.kind, "State": job.state, "Owner": job.owner,
            "Purpose": job.purpose, "Created": job.created.isoformat(),
            "Started": job.started and job.started.isoformat(),
            "Finished": job.finished and job.finished.isoformat(), "Attempts": job.attempts,
            "HeldBy": job.lease_owner if job.state == "IN_PROGRESS" else None,
            "Progress": job.progress, "StatusMessage": job.status_message,
            "Parameters": job.parameters}


@jobs_app.command("list")
def jobs_list(kind: Optional[str] = typer.Option(None, "--kind", help="Only this kind "
                                                 "(IndexBatch, StartFaceDetection, ...)"),
              active: bool = typer.Option(False, "--active", help="Only QUEUED or IN_PROGRESS"),
              limit: int = typer.Option(50, "--limit", min=1, max=1000),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Jobs and batches, newest first."""
    from regard.jobs.store import ACTIVE_STATES

    try:
        jobs = _jobs_store().list(kind=kind, states=ACTIVE_STATES if active else None,
                                  limit=limit, newest_first=True)
    except RegardError as exc:
        _fail(exc)
        return
    if as_json:
        sys.stdout.write(json.dumps({"Jobs": [_job_body(j) for j in jobs]}) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"{len(jobs)} job(s)")
    for column in ("JobId", "kind", "state", "owner", "progress", "created"):
        table.add_column(column)
    for job in jobs:
        table.add_row(job.job_id, job.kind, job.state, job.owner, _progress_text(job.progress),
                      job.created.strftime("%Y-%m-%d %H:%M:%S"))
    out.print(table)


@jobs_app.command("show")
def jobs_show(job_id: str = typer.Argument(...),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """One job: state, who started it and why, progress, attempts, message."""
    try:
        job = _jobs_store().get(job_id)
    except RegardError as exc:
        _fail(exc)
        return
    body = _job_body(job)
    if as_json:
        sys.stdout.write(json.dumps(body) + "\n")
        return
    for key, value in body.items():
        if key == "Progress":
            value = _progress_text(value)
        if value not in (None, ""):
            out.print(f"{key}: {value}")


def _progress_text(progress: Optional[dict[str, Any]]) -> str:
    if not progress:
        return ""
    text = f"{progress.get('done', 0)}/{progress.get('total') or '?'}"
    extra = [f"{progress[k]} {k}" for k in ("faces", "skipped", "failed") if k in progress]
    if "per_second" in progress:
        extra.append(f"{progress['per_second']}/s")
    return text + (f" ({', '.join(extra)})" if extra else "")


def ray_index(collection: str, sources: list[str], names: dict[str, str], *, address: str,
              quality_filter: str, max_faces: Optional[int], detector: Optional[str],
              min_face_size: int, chunk_size: int, as_json: bool, context: Any,
              csv: Optional[Path], manifest: bool = False) -> None:
    """``regard index --ray``: list the sources (names only), then index them on the
    cluster as one batch; exit 1 when any image failed. ``manifest``: the sources are the
    images themselves (a CSV's list), sent as they are: the workers report any they cannot
    read, and the driver does not touch millions of files to check them first."""
    from regard.cli.collection_commands import IMAGE_SUFFIXES, external_image_id, find_images
    from regard.cluster.batch import INDEX_BATCH
    from regard.cluster.sources import base_name, is_s3, list_s3
    from regard.cluster.worker import index_chunk
    from regard.service import RegardService

    service = RegardService()
    try:
        # The gate's checks now, before listing an archive: scopes, the collection, consent.
        service.preflight("IndexFaces", {"CollectionId": collection}, context)
        service.store.catalog.get_collection(collection)
        refs: list[str] = list(sources) if manifest else []
        for source in [] if manifest else sources:
            if is_s3(source):
                refs += list_s3(service.objects, source, IMAGE_SUFFIXES)
            else:
                refs += [str(p) for p in find_images([Path(source)])]
    except RegardError as exc:
        _fail(exc)
        return
    refs = list(dict.fromkeys(refs))  # the listing: references only (~100 bytes an image)

    def named(chunk: Sequence[str]) -> list[tuple[str, str]]:
        return [(ref, names.get(ref) or names.get(base_name(ref))
                 or external_image_id(base_name(ref))) for ref in chunk]

    parameters = {"CollectionId": collection, "Sources": sources,
                  "Csv": str(csv.resolve()) if csv else None, "QualityFilter": quality_filter,
                  "MaxFaces": max_faces, "Detector": detector, "MinFaceSize": min_face_size}
    tally = run_on_ray(service, address, INDEX_BATCH, context, parameters, refs, index_chunk,
                       chunk_size=chunk_size, label="indexing", as_json=as_json,
                       refs_of=lambda chunk: [ref for ref, _ in chunk], prepare=named)
    err.print(f"{tally.done - tally.failed - tally.skipped} image(s) indexed: {tally.faces} "
              f"face(s) added, {tally.unindexed} not indexed; {tally.skipped} already indexed; "
              f"{tally.failed} failed ({tally.rate:.1f} images/s)")
    if tally.faces:
        service.store.indexes.checkpoint_if_large(collection)  # the next search starts warm
    if tally.failed:
        raise typer.Exit(code=1)


def ray_files(kind: str, pairs: list[tuple[Path, Path]], *, address: str, context: Any,
              as_json: bool, parameters: dict[str, Any],
              preflight: Optional[Callable[[Any], None]] = None) -> None:
    """Video analyses or redactions on the cluster, one file per task: ``(input, output)``
    pairs, outputs in a folder every node sees; an output in place is skipped (done earlier).
    Exit 1 when any file failed."""
    from regard.cluster.worker import file_chunk
    from regard.service import RegardService

    service = RegardService()
    if preflight is not None:  # the gate's checks before the first file is sent
        try:
            preflight(service)
        except RegardError as exc:
            _fail(exc)
    items = [(str(src.resolve()), str(dst.resolve())) for src, dst in pairs]
    parameters = {**parameters, "Files": [src for src, _ in items]}
    tally = run_on_ray(service, address, kind, context, parameters, items, file_chunk,
                       chunk_size=1,
                       label="videos" if kind != "RedactionBatch" else "redacting",
                       as_json=as_json, refs_of=lambda chunk: [src for src, _ in chunk])
    err.print(f"{tally.done - tally.failed - tally.skipped} file(s) done, {tally.skipped} "
              f"done earlier, {tally.failed} failed")
    if tally.failed:
        raise typer.Exit(code=1)


__all__ = ["ChunkOpt", "RayOpt", "jobs_app", "ray_files", "ray_index", "run_on_ray"]
