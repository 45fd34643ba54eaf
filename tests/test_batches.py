"""The batch machinery without a Ray cluster (``regard.cluster``): the job row a driver holds and
a restarted driver takes over, the worker's exactly-once indexing as the batch's principal,
listing an object store, progress in ``regard jobs`` and ``/metrics``. The same code on a real
cluster is ``tests/test_cluster.py``."""

from __future__ import annotations

import hashlib
import threading
import time

import httpx
import pytest
from typer.testing import CliRunner

from regard.cli import app
from regard.cluster import INDEX_BATCH
from regard.cluster import worker
from regard.cluster.batch import BatchJob, BatchTakenError, Tally
from regard.context import CallContext
from regard.errors import InvalidS3ObjectError
from regard.jobs.store import FAILED, SUCCEEDED, JobStore
from regard.object_store import LocalObjectStore
from regard.service import RegardService
from regard.store import Store

from conftest import encode, face_crop
from live_server import LiveServer

CONTEXT = CallContext.operator("local:archivist", client="cli", purpose="archive",
                               consent="release-form-7")
PARAMS = {"CollectionId": "archive", "Sources": ["/photos"], "QualityFilter": "NONE"}


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REGARD_HOME", str(tmp_path))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    worker._services.clear()  # a worker process keeps its service: these tests change catalogs
    yield tmp_path
    for svc in worker._services.values():
        svc.store.close()
    worker._services.clear()


@pytest.fixture()
def jobs(home) -> JobStore:
    return JobStore(Store().database)


def test_a_batch_is_taken_over_only_once_its_driver_stopped(jobs):
    first = BatchJob(jobs, INDEX_BATCH, CONTEXT, PARAMS, lease_seconds=1)
    job = first.start()
    assert not first.resumed and job.attempts == 1 and job.owner == "local:archivist"
    first.report(Tally(total=10, done=4, faces=3, skipped=1), force=True)
    progress = jobs.get(job.job_id).progress
    assert progress["done"] == 4 and progress["faces"] == 3 and progress["skipped"] == 1

    second = BatchJob(jobs, INDEX_BATCH, CONTEXT, PARAMS, lease_seconds=1)
    with pytest.raises(BatchTakenError, match="held by driver"):
        second.start(wait_seconds=0.3)  # the first still heartbeats
    first._stop.set()  # the first driver dies: no more heartbeats
    taken = second.start(wait_seconds=5)
    assert second.resumed and taken.job_id == job.job_id and taken.attempts == 2
    first.report(Tally(total=10, done=5), force=True)  # its writes are fenced off now
    assert first.lost and jobs.get(job.job_id).progress["done"] == 4

    assert second.finish(Tally(total=10, done=10, faces=9, skipped=1))
    assert jobs.get(job.job_id).state == SUCCEEDED
    third = BatchJob(jobs, INDEX_BATCH, CONTEXT, PARAMS, lease_seconds=1)
    assert third.start().job_id != job.job_id and not third.resumed  # finished: a new batch
    third.release()


def test_a_released_batch_is_resumed_at_once_and_other_batches_are_their_own(jobs):
    first = BatchJob(jobs, INDEX_BATCH, CONTEXT, PARAMS, lease_seconds=60)
    job = first.start()
    first.release()  # Ctrl-C: given back
    started = time.monotonic()
    again = BatchJob(jobs, INDEX_BATCH, CONTEXT, PARAMS, lease_seconds=60)
    assert again.start(wait_seconds=0).job_id == job.job_id
    assert time.monotonic() - started < 5
    other = BatchJob(jobs, INDEX_BATCH, CONTEXT, {**PARAMS, "CollectionId": "b"},
                     lease_seconds=60)
    assert other.start().job_id != job.job_id
    someone = BatchJob(jobs, INDEX_BATCH, CallContext.operator("local:other"), PARAMS,
                       lease_seconds=60)
    assert someone.start().job_id != job.job_id  # another principal's batch is not theirs
    again.finish(Tally(total=3, done=3, failed=1))
    assert jobs.get(job.job_id).state == FAILED
    assert "1 of 3" in jobs.get(job.job_id).status_message
    for held in (other, someone):
        held.release()


def _photos(astronaut, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    face = face_crop(astronaut)
    paths = {}
    for name, quality in (("a.jpg", 90), ("b.jpg", 80)):
        paths[name] = folder / name
        paths[name].write_bytes(encode(face, quality=quality))
    paths["copy.jpg"] = folder / "copy.jpg"
    paths["copy.jpg"].write_bytes(paths["a.jpg"].read_bytes())
    paths["bad.jpg"] = folder / "bad.jpg"
    paths["bad.jpg"].write_bytes(b"not a photo")
    return paths


def test_a_worker_indexes_each_image_once_as_the_batch_principal(home, jobs, astronaut,
                                                                 tmp_path):
    service = RegardService()
    service.create_collection(CollectionId="archive", Tags={"regard:purpose": "archive"})
    paths = _photos(astronaut, tmp_path)
    batch = BatchJob(jobs, INDEX_BATCH, CONTEXT, PARAMS, lease_seconds=30)
    job = batch.start()
    items = [(str(paths[n]), n.replace(".jpg", "")) for n in ("a.jpg", "b.jpg", "copy.jpg",
                                                               "bad.jpg")]
    items.append((str(tmp_path / "gone.jpg"), "gone"))
    outcomes = {o["Ref"].rsplit("/", 1)[-1]: o for o in worker.index_chunk(job.job_id, items)}
    assert outcomes["a.jpg"]["Faces"] == 1 and outcomes["b.jpg"]["Faces"] == 1
    assert outcomes["copy.jpg"] == {"Ref": str(paths["copy.jpg"]), "Skipped": True}
    assert outcomes["bad.jpg"]["Error"] == "InvalidImageFormatException"
    assert "visible to every node" in outcomes["gone.jpg"]["Message"]

    again = worker.index_chunk(job.job_id, items[:3])  # Ray ran the chunk again
    assert all(o.get("Skipped") for o in again)
    faces = service.list_faces(CollectionId="archive")["Faces"]
    assert sorted(f["ExternalImageId"] for f in faces) == ["a", "b"]
    rows = service.store.catalog.list_faces("archive")
    assert {r.consent_ref for r in rows} == {"release-form-7"}
    entries = list(service.gate.ledger.entries(operations=["IndexFaces"]))
    assert len(entries) == 2
    assert {(e.principal, e.purpose, e.client) for e in entries} == {
        ("local:archivist", "archive", "cli")}
    batch.release()


def test_index_once_holds_when_two_workers_race_for_one_image(engine, postgres_url,
                                                             astronaut):
    """Two replicas on one PostgreSQL index the same photo at the same moment: one stores it."""
    services = [RegardService(engine, Store(postgres_url, checkpoint_dir=False))
                for _ in range(2)]
    services[0].create_collection(CollectionId="race", Tags={"regard:purpose": "test"})
    photo = encode(face_crop(astronaut))
    digest = hashlib.sha256(photo).hexdigest()
    detected = [engine.detect(photo, embed=True) for _ in services]
    barrier = threading.Barrier(2)
    answers: list[dict] = []

    def index(svc: RegardService, faces: object) -> None:
        barrier.wait()
        answers.append(svc.index_detected_faces(faces, digest, CONTEXT, once=True,
                                                CollectionId="race"))

    threads = [threading.Thread(target=index, args=pair) for pair in zip(services, detected)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(len(a["FaceRecords"]) for a in answers) == [0, 1]
    assert sum(bool(a.get("AlreadyIndexed")) for a in answers) == 1
    assert services[1].describe_collection(CollectionId="race")["FaceCount"] == 1
    for svc in services:
        svc.store.close()


def test_a_worker_on_another_catalog_refuses_the_batch(home, jobs, tmp_path, monkeypatch):
    batch = BatchJob(jobs, INDEX_BATCH, CONTEXT, PARAMS, lease_seconds=30)
    job = batch.start()
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "elsewhere"))
    worker._services.clear()
    with pytest.raises(worker.BatchGone, match="REGARD_DATABASE_URL"):
        worker.check(job.job_id)
    monkeypatch.setenv("REGARD_HOME", str(home))
    worker._services.clear()
    assert worker.check(job.job_id)["Version"]
    batch.finish(Tally(total=0))
    with pytest.raises(worker.BatchGone, match="SUCCEEDED, not running"):
        worker.index_chunk(job.job_id, [])


def test_a_local_object_store_lists_names_under_a_prefix(tmp_path):
    (tmp_path / "photos" / "2024" / "05").mkdir(parents=True)
    (tmp_path / "photos" / "2023").mkdir(parents=True)
    for name in ("2024/05/a.jpg", "2024/05/b.JPG", "2024/notes.txt", "2023/c.jpg"):
        (tmp_path / "photos" / name).write_bytes(b"x")
    store = LocalObjectStore(tmp_path)
    assert list(store.list_names("photos", "2024/")) == [
        "2024/05/a.jpg", "2024/05/b.JPG", "2024/notes.txt"]
    from regard.cluster.sources import list_s3

    assert list_s3(store, "s3://photos/2024", (".jpg",)) == [
        "s3://photos/2024/05/a.jpg", "s3://photos/2024/05/b.JPG"]
    with pytest.raises(InvalidS3ObjectError, match="does not exist"):
        list(store.list_names("nope"))


def test_batch_progress_is_shown_by_regard_jobs_and_exported_in_metrics(home, jobs, engine):
    batch = BatchJob(jobs, INDEX_BATCH, CONTEXT, PARAMS, lease_seconds=30)
    job = batch.start()
    batch.report(Tally(total=200, done=50, faces=61, skipped=3, failed=2), force=True)
    runner = CliRunner()
    listed = runner.invoke(app, ["jobs", "list", "--active", "--json"])
    assert listed.exit_code == 0, listed.output
    assert job.job_id in listed.output and '"faces": 61' in listed.output
    shown = runner.invoke(app, ["jobs", "show", job.job_id])
    assert "IndexBatch" in shown.output and "50/200" in shown.output
    assert "local:archivist" in shown.output
    with LiveServer(home, engine, database_url=f"sqlite:///{home / 'regard.db'}") as live:
        text = httpx.get(live.url + "/metrics").text
    labels = f'job_id="{job.job_id}",kind="IndexBatch",owner="local:archivist"'
    assert f"regard_batch_done{{{labels}}} 50.0" in text
    assert f"regard_batch_faces{{{labels}}} 61.0" in text
    assert f"regard_batch_total{{{labels}}} 200.0" in text
    batch.finish(Tally(total=200, done=200))
    assert runner.invoke(app, ["jobs", "show", "no-such-job"]).exit_code == 1


def test_a_csv_can_be_the_list_of_images_to_index(home, astronaut, tmp_path):
    paths = _photos(astronaut, tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image,external_image_id\nphotos/a.jpg,ana\nphotos/b.jpg,bo\n")
    runner = CliRunner()
    assert runner.invoke(app, ["collections", "create", "archive", "--purpose", "x"]
                         ).exit_code == 0
    nothing = runner.invoke(app, ["index", "archive"])
    assert nothing.exit_code == 2 and "--csv" in nothing.output
    done = runner.invoke(app, ["index", "archive", "--csv", str(manifest), "--workers", "1",
                               "--quality-filter", "NONE"])
    assert done.exit_code == 0, done.output
    faces = RegardService().list_faces(CollectionId="archive")["Faces"]
    assert sorted(f["ExternalImageId"] for f in faces) == ["ana", "bo"]  # copy.jpg not listed
    assert paths["copy.jpg"].exists()


def test_a_chunk_that_ray_could_not_run_fails_its_images_by_name():
    """The driver turns every way a Ray task ends into one outcome per image."""
    ray = pytest.importorskip("ray")
    from regard.cluster.ray_driver import ClusterError, RayCluster

    class FakeRay:
        exceptions = ray.exceptions

        def __init__(self, error: Exception) -> None:
            self.error = error

        def get(self, ref: object) -> list:
            raise self.error

    cluster = RayCluster.__new__(RayCluster)  # no connection: only the outcome mapping
    chunk = [("/p/a.jpg", "a"), ("/p/b.jpg", "b")]

    def outcomes(error: Exception) -> list:
        cluster.ray = FakeRay(error)
        return cluster._outcomes(object(), chunk, lambda c: [r for r, _ in c])

    lost = outcomes(ray.exceptions.WorkerCrashedError())
    assert [o["Ref"] for o in lost] == ["/p/a.jpg", "/p/b.jpg"]
    assert {o["Error"] for o in lost} == {"WorkerLost"} and "again" in lost[0]["Message"]
    assert {o["Error"] for o in outcomes(ray.exceptions.RayError())} == {"WorkerLost"}
    failed = outcomes(ray.exceptions.RayTaskError("index_chunk", "trace", ValueError("bug")))
    assert {o["Error"] for o in failed} == {"InternalServerError"}
    assert "trace" not in failed[0]["Message"]
    with pytest.raises(ClusterError, match="not running"):
        outcomes(ray.exceptions.RayTaskError("index_chunk", "trace",
                                             worker.BatchGone("Batch job x is FAILED, not "
                                                              "running")))
