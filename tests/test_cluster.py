"""Batches on a real Ray cluster (``regard.cluster``): a head and two worker nodes on loopback,
the catalog on a real PostgreSQL server, both started here. The driver is the ``regard``
command in a subprocess, as an operator runs it; the checks read the shared catalog and its
audit ledger directly.

What must hold: every image indexed exactly once (a worker node killed mid-batch, the driver
killed and the command run again, two copies of one photo), through the service's gate (the
ledger names the principal who started the batch, with the consent reference), images read
where they are (a folder, or an S3-compatible server), progress in the job row.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regard.cluster import INDEX_BATCH, REDACTION_BATCH, VIDEO_BATCH
from regard.governance.gatekeeper import Gatekeeper
from regard.governance.ledger import Ledger
from regard.jobs.store import SUCCEEDED, JobStore
from regard.service import RegardService
from regard.store import Store

from ray_cluster import serve as serve_ray, unavailable_reason

pytestmark = pytest.mark.slow

KEY_HEX = "4c" * 32
REGARD = [sys.executable, "-m", "regard.cli"]


@pytest.fixture(scope="module")
def catalog_url(postgres) -> str:
    return postgres.new_database()


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    from live_server import free_port

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    yield f"http://127.0.0.1:{port}"
    moto.stop()


@pytest.fixture(scope="module")
def node_env(catalog_url, s3_endpoint, tmp_path_factory) -> dict[str, str]:
    """What every node and the driver are configured with (on real hosts: their environment)."""
    return {"REGARD_DATABASE_URL": catalog_url, "REGARD_LEDGER_KEY": KEY_HEX,
            "REGARD_HOME": str(tmp_path_factory.mktemp("node-home")),
            "REGARD_S3_ENDPOINT_URL": s3_endpoint, "REGARD_S3_ACCESS_KEY_ID": "minio",
            "REGARD_S3_SECRET_ACCESS_KEY": "minio123", "REGARD_S3_REGION": "us-east-1",
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cluster(node_env):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    yield from serve_ray(node_env, workers=2)


@pytest.fixture(scope="module")
def catalog(catalog_url):
    store = Store(catalog_url, checkpoint_dir=False)
    service = RegardService(store=store, gatekeeper=Gatekeeper(Ledger(
        store.database, key=bytes.fromhex(KEY_HEX))))
    yield service
    store.close()


def variants(astronaut: np.ndarray, count: int, seed: int) -> list[bytes]:
    """``count`` different photos of one face: crops, scales and brightness of the astronaut
    (different bytes, so different SHA-256: the batch treats each as its own image)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        top, left = int(rng.integers(0, 40)), int(rng.integers(60, 140))
        crop = astronaut[top:top + 360, left:left + 300]
        size = int(rng.integers(420, 640))  # big enough that a batch takes seconds
        img = Image.fromarray(np.clip(crop * rng.uniform(0.8, 1.1), 0, 255).astype(np.uint8))
        img = img.resize((size, int(size * 1.2)))
        from io import BytesIO

        buf = BytesIO()
        img.save(buf, format="JPEG", quality=int(85 + i % 10))
        out.append(buf.getvalue())
    assert len({hashlib.sha256(b).hexdigest() for b in out}) == count
    return out


def write_images(folder: Path, photos: list[bytes]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(photos):
        (folder / f"img{i:03d}.jpg").write_bytes(photo)
    return [hashlib.sha256(p).hexdigest() for p in photos]


def create(catalog: RegardService, collection: str, **tags: str) -> None:
    catalog.create_collection(CollectionId=collection,
                              Tags={"regard:purpose": "archive search", **tags})


def driver(node_env: dict[str, str], *args: str, **extra: str) -> subprocess.Popen:
    env = {**os.environ, **node_env, "COLUMNS": "250", **extra}
    return subprocess.Popen([*REGARD, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def face_hashes(catalog: RegardService, collection: str) -> Counter:
    """Faces per image SHA-256 in the collection."""
    rows = catalog.store.catalog.list_faces(collection, limit=100_000)
    return Counter(r.image_sha256 for r in rows)


def wait_for_faces(catalog: RegardService, collection: str, at_least: int,
                   timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while sum(face_hashes(catalog, collection).values()) < at_least:
        assert time.monotonic() < deadline, f"fewer than {at_least} faces after {timeout} s"
        time.sleep(0.05)


def index_entries(catalog: RegardService, collection: str) -> list:
    return [e for e in catalog.gate.ledger.entries(operations=["IndexFaces"])
            if e.collection == collection]


def batch_jobs(catalog: RegardService, kind: str = INDEX_BATCH) -> list:
    return JobStore(catalog.store.database).list(kind=kind, newest_first=True)


def assert_once(catalog: RegardService, collection: str, hashes: list[str]) -> None:
    """Every image has exactly its one face, and one ledger entry that stored it."""
    faces = face_hashes(catalog, collection)
    assert set(faces) == set(hashes)
    assert set(faces.values()) == {1}, faces.most_common(3)
    stored = Counter(e.image_sha256[0] for e in index_entries(catalog, collection)
                     if e.result.get("FaceIds"))
    assert stored == Counter(hashes)


def test_a_worker_node_killed_mid_batch_loses_and_repeats_no_image(
        cluster, catalog, node_env, astronaut, tmp_path):
    hashes = write_images(tmp_path / "archive", variants(astronaut, 100, seed=1))
    # a copy of a photo under another name: the same image, indexed once
    (tmp_path / "archive" / "copy-of-img000.jpg").write_bytes(
        (tmp_path / "archive" / "img000.jpg").read_bytes())
    create(catalog, "killed-node")
    proc = driver(node_env, "index", "killed-node", str(tmp_path / "archive"), "--ray",
                  cluster.address, "--chunk", "2", "--quality-filter", "NONE",
                  "--consent", "form-2026-17", "--purpose", "newsroom archive")
    wait_for_faces(catalog, "killed-node", 10)
    cluster.kill_node(cluster.workers[0])
    assert sum(face_hashes(catalog, "killed-node").values()) < 100  # it was mid-batch
    try:
        code, output = finish(proc)
        assert code == 0, output
    finally:
        cluster.add_worker()  # two workers again for the next tests
    assert_once(catalog, "killed-node", hashes)
    entries = index_entries(catalog, "killed-node")
    principals = {e.principal for e in entries}
    assert len(principals) == 1 and principals.pop().startswith("local:")
    assert {e.purpose for e in entries} == {"newsroom archive"}
    rows = catalog.store.catalog.list_faces("killed-node", limit=1000)
    assert {r.consent_ref for r in rows} == {"form-2026-17"}
    job = batch_jobs(catalog)[0]
    assert job.state == SUCCEEDED and job.parameters["CollectionId"] == "killed-node"
    assert job.progress["done"] == job.progress["total"] == 101
    assert job.progress["faces"] == 100 and job.progress["failed"] == 0
    assert job.progress["skipped"] >= 1  # the copy (and any chunk Ray ran again)
    assert "0 failed" in output, output
    assert catalog.gate.ledger.verify().ok


def test_a_driver_killed_and_run_again_resumes_its_batch(cluster, catalog, node_env, astronaut,
                                                          tmp_path):
    hashes = write_images(tmp_path / "photos", variants(astronaut, 60, seed=2))
    create(catalog, "killed-driver")
    args = ["index", "killed-driver", str(tmp_path / "photos"), "--ray", cluster.address,
            "--chunk", "2", "--quality-filter", "NONE"]
    short_lease = {"REGARD_JOB_LEASE_SECONDS": "3"}
    first = driver(node_env, *args, **short_lease)
    wait_for_faces(catalog, "killed-driver", 8)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    job = batch_jobs(catalog)[0]
    assert job.state == "IN_PROGRESS" and job.attempts == 1
    done_before = sum(face_hashes(catalog, "killed-driver").values())
    assert done_before < 60

    code, output = finish(driver(node_env, *args, **short_lease))
    assert code == 0, output
    assert f"batch job {job.job_id}" in output and "resumed" in output
    assert_once(catalog, "killed-driver", hashes)
    again = JobStore(catalog.store.database).get(job.job_id)
    assert again.state == SUCCEEDED and again.attempts == 2
    assert again.progress["skipped"] >= done_before

    # Run once more: nothing left to do, nothing indexed twice; a new (finished) batch.
    code, output = finish(driver(node_env, *args))
    assert code == 0 and "0 image(s) indexed" in output and "60 already indexed" in output
    assert_once(catalog, "killed-driver", hashes)


def test_images_are_read_from_the_object_store_by_the_workers(cluster, catalog, node_env,
                                                             astronaut, s3_endpoint, tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id="minio", aws_secret_access_key="minio123")
    s3.create_bucket(Bucket="newsroom")
    photos = variants(astronaut, 6, seed=3)
    for i, photo in enumerate(photos):
        s3.put_object(Bucket="newsroom", Key=f"2024/05/photo{i}.jpg", Body=photo)
    s3.put_object(Bucket="newsroom", Key="2024/05/notes.txt", Body=b"not an image")
    s3.put_object(Bucket="newsroom", Key="2023/old.jpg", Body=photos[0])
    names = tmp_path / "names.csv"
    names.write_text("image,external_image_id\n"
                     "s3://newsroom/2024/05/photo0.jpg,alice\nphoto1.jpg,bob\n")
    create(catalog, "from-s3")
    code, output = finish(driver(node_env, "index", "from-s3", "s3://newsroom/2024/", "--ray",
                                 cluster.address, "--csv", str(names), "--quality-filter",
                                 "NONE"))
    assert code == 0, output
    assert "6 image(s) indexed" in output
    rows = catalog.store.catalog.list_faces("from-s3", limit=100)
    externals = sorted(r.external_image_id for r in rows)
    assert externals == sorted(["alice", "bob", "photo2.jpg", "photo3.jpg", "photo4.jpg",
                                "photo5.jpg"])
    assert {r.image_sha256 for r in rows} == {hashlib.sha256(p).hexdigest() for p in photos}

    # The CSV as the batch's manifest: only the images it lists, a missing one reported.
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("s3://newsroom/2024/05/photo0.jpg,alice\n"
                        "s3://newsroom/2023/old.jpg,old\n"
                        "s3://newsroom/2024/05/missing.jpg,nobody\n")
    create(catalog, "from-manifest")
    code, output = finish(driver(node_env, "index", "from-manifest", "--csv", str(manifest),
                                 "--ray", cluster.address, "--quality-filter", "NONE"))
    assert code == 1 and "missing.jpg: InvalidS3ObjectException" in output
    assert "1 image(s) indexed" in output and "1 already indexed" in output  # old = photo0
    rows = catalog.store.catalog.list_faces("from-manifest", limit=100)
    assert [r.external_image_id for r in rows] == ["alice"]


def test_a_batch_is_refused_by_the_gate_before_anything_runs(cluster, catalog, node_env,
                                                            astronaut, tmp_path):
    write_images(tmp_path / "few", variants(astronaut, 2, seed=4))
    create(catalog, "consent-only", **{"regard:consent-required": "true"})
    before = len(batch_jobs(catalog))
    code, output = finish(driver(node_env, "index", "consent-only", str(tmp_path / "few"),
                                 "--ray", cluster.address))
    assert code == 1 and "consent" in output.lower()
    assert len(batch_jobs(catalog)) == before  # no batch started
    assert catalog.store.catalog.get_collection("consent-only").face_count == 0


def test_videos_and_redactions_run_on_the_cluster(cluster, catalog, node_env, tmp_path):
    from video_clips import make_clip, moving_and_scaling

    videos = [make_clip(tmp_path / f"clip{i}.mp4", moving_and_scaling(2.0), seconds=2.0,
                        audio=False).path for i in range(2)]
    out = tmp_path / "out"
    code, output = finish(driver(node_env, "video", "detect", *map(str, videos), "--ray",
                                 cluster.address, "--out-dir", str(out),
                                 "--purpose", "footage review"))
    assert code == 0, output
    for video in videos:
        assert (out / f"{video.name}.json").stat().st_size > 100
    detections = [e for e in catalog.gate.ledger.entries(operations=["StartFaceDetection"])
                  if e.purpose == "footage review"]
    assert len(detections) == 2
    assert batch_jobs(catalog, VIDEO_BATCH)[0].state == SUCCEEDED

    redacted = tmp_path / "redacted"
    redacted.mkdir()
    args = ["redact", *map(str, videos), "--out-dir", str(redacted), "--ray", cluster.address,
            "--purpose", "publish footage"]
    code, output = finish(driver(node_env, *args))
    assert code == 0, output
    assert sorted(p.name for p in redacted.iterdir()) == sorted(v.name for v in videos)
    entries = [e for e in catalog.gate.ledger.entries(operations=["StartFaceRedaction"])
               if e.purpose == "publish footage"]
    assert len(entries) == 2
    code, output = finish(driver(node_env, *args))  # again: every output exists already
    assert code == 0 and "2 done earlier" in output
    assert len([e for e in catalog.gate.ledger.entries(operations=["StartFaceRedaction"])
                if e.purpose == "publish footage"]) == 2
    assert batch_jobs(catalog, REDACTION_BATCH)[0].state == SUCCEEDED


def test_an_unreachable_cluster_is_a_clear_error(catalog, node_env, astronaut, tmp_path):
    if unavailable_reason():
        pytest.skip(unavailable_reason())
    write_images(tmp_path / "one", variants(astronaut, 1, seed=5))
    create(catalog, "no-cluster")
    code, output = finish(driver(node_env, "index", "no-cluster", str(tmp_path / "one"),
                                 "--ray", "127.0.0.1:9"), timeout=180)
    assert code == 1 and "Ray cluster" in output and "Traceback" not in output
    job = batch_jobs(catalog)[0]
    assert job.state == "FAILED" and "Ray cluster" in job.status_message


def test_a_collection_is_moved_to_another_face_model_on_the_cluster(cluster, catalog, node_env,
                                                                     astronaut, tmp_path):
    hashes = write_images(tmp_path / "staff", variants(astronaut, 4, seed=6))
    create(catalog, "staff", **{"regard:threshold-floor": "85"})
    code, output = finish(driver(node_env, "index", "staff", str(tmp_path / "staff"), "--ray",
                                 cluster.address, "--quality-filter", "NONE"))
    assert code == 0, output
    faces = catalog.list_faces(CollectionId="staff")["Faces"]
    catalog.create_user(CollectionId="staff", UserId="eileen")
    catalog.associate_faces(CollectionId="staff", UserId="eileen",
                            FaceIds=[f["FaceId"] for f in faces], UserMatchThreshold=0)
    code, output = finish(driver(node_env, "collections", "reindex", "staff",
                                 str(tmp_path / "staff"), "--to-model", "1.0", "--ray",
                                 cluster.address))
    assert code == 0, output
    assert "4 of 4 faces" in " ".join(output.split())
    moved = catalog.list_faces(CollectionId="staff-v1.0")
    assert moved["FaceModelVersion"] == "1.0"
    assert {f.get("UserId") for f in moved["Faces"]} == {"eileen"}
    assert_once(catalog, "staff-v1.0", hashes)
    info = catalog.store.catalog.get_collection("staff-v1.0")
    assert info.tags["regard:threshold-floor"] == "85"
