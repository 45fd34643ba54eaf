"""Deleted and erased embeddings leave no copy in the memory the server holds.

A real server (``LiveServer``, boto3 and REST clients on 127.0.0.1) indexes faces, searches with
them, associates them with a user, then deletes them (DeleteFaces), erases them (REST
``/v1/erasure``) or deletes their collection; after each, the process scans its own memory
(/proc/self/mem: every readable heap, anonymous and private writable mapping) for the
embedding's bytes: all 512, a 64-byte slice of them (a partly overwritten copy), and the vector
as float64.

glibc does not clear freed memory, and SQLite frees the buffers it copied rows into: the bytes
stay in the heap until reused, out of Regard's reach (README, Erasure). So the server runs in a
child process started with ``GLIBC_TUNABLES`` that make glibc overwrite freed blocks
(``perturb``) and not keep small ones aside unwiped (``tcache_count=0``): what the scan can still
find is memory that something still holds (Regard's buffers and index, numpy's cache of small
arrays, SQLite's page caches and statements, ONNX Runtime's arena), where no copy may remain.

The scan never meets the test's own copies: a subprocess reads the stored blob and hands it over
XOR-masked, and the plain patterns are built in place, in buffers whose addresses the scan skips
and which are zeroed right after it."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from regard.secure_memory import CLEARING_ALLOCATOR

MASK = 0x5A
CHUNK = 32 << 20
MAX_REGION = 2 << 30
SKIPPED = ("[vvar]", "[vsyscall]", "[vdso]", "[vvar_vclock]")


def masked_embedding(db: Path, face_id: str) -> bytes:
    """The stored embedding of ``face_id``, XOR ``MASK``, read by another process (so that this
    one never holds the plain bytes outside the scan's own, skipped buffers)."""
    code = ("import sqlite3, sys\n"
            "con = sqlite3.connect(sys.argv[1])\n"
            "blob, = con.execute('SELECT embedding FROM faces WHERE face_id = ?', "
            "(sys.argv[2],)).fetchone()\n"
            f"print(bytes(b ^ {MASK} for b in blob).hex())\n")
    out = subprocess.run([sys.executable, "-c", code, str(db), face_id], check=True,
                         capture_output=True, text=True).stdout
    return bytes.fromhex(out.strip())


def _address(buffer: bytearray | np.ndarray) -> int:
    if isinstance(buffer, np.ndarray):
        return int(buffer.ctypes.data)
    return ctypes.addressof((ctypes.c_char * len(buffer)).from_buffer(buffer))


def _regions() -> list[tuple[int, int, str]]:
    """(start, end, description) of the mappings that can hold data written at run time."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            perms = fields[1]
            path = fields[5].strip() if len(fields) > 5 else ""
            if perms[0] != "r" or path in SKIPPED or end - start > MAX_REGION:
                continue
            if path and not path.startswith("[") and perms[1] != "w":
                continue  # read-only file mappings: code and constants
            out.append((start, end, f"{perms} {path or '[anon]'}"))
    return out


@dataclass
class Hit:
    pattern: str
    address: int
    region: str

    def __str__(self) -> str:
        return f"{self.pattern} at {self.address:#x} in {self.region}"


def scan(masked: bytes) -> list[Hit]:
    """Every place in this process's memory holding the unmasked embedding (outside the scan's
    own buffers): the 512 bytes, a 64-byte slice of them, or the vector as float64."""
    full = bytearray(masked)
    for i in range(len(full)):
        full[i] ^= MASK
    part = full[192:256]
    wide = np.frombuffer(full, dtype="<f4").astype("<f8")
    buffer = bytearray(CHUNK)
    patterns = {"embedding": full, "slice": part, "float64": memoryview(wide.view(np.uint8))}
    own = [(_address(full), len(full)), (_address(part), len(part)),
           (_address(wide), wide.nbytes), (_address(buffer), len(buffer))]
    overlap = 2 * wide.nbytes
    hits: list[Hit] = []
    try:
        with open("/proc/self/mem", "rb", buffering=0) as mem:
            for start, end, desc in _regions():
                at = start
                while at < end:
                    size = min(CHUNK, end - at)
                    try:
                        mem.seek(at)
                        got = mem.readinto(memoryview(buffer)[:size]) or 0
                    except (OSError, ValueError, OverflowError):
                        break
                    for name, pat in patterns.items():
                        pos = buffer.find(pat, 0, got)
                        while pos >= 0:
                            if not any(a <= at + pos < a + n for a, n in own):
                                hits.append(Hit(name, at + pos, desc))
                            pos = buffer.find(pat, pos + 1, got)
                    if got < size or at + size >= end:
                        break
                    at += size - overlap
    finally:
        full[:] = bytes(len(full))
        part[:] = bytes(len(part))
        wide.fill(0.0)
        buffer[:] = bytes(len(buffer))
    return _distinct(hits)


def _distinct(hits: list[Hit]) -> list[Hit]:
    """One hit per address and pattern (chunks overlap); slices inside whole copies dropped."""
    whole = {h.address for h in hits if h.pattern == "embedding"}
    out = {(h.pattern, h.address): h for h in hits
           if not (h.pattern == "slice" and h.address - 192 in whole)}
    return sorted(out.values(), key=lambda h: (h.pattern, h.address))


# -- the server side, run in the child process ----------------------------------------------------
def _scenarios(home: Path) -> dict[str, dict[str, list[str]]]:
    """Run the three ways a face goes and scan before and after each; the hits, per scenario."""
    import boto3
    import httpx
    from botocore.config import Config
    from skimage import data

    from conftest import encode, face_crop, paste_faces
    from live_server import LiveServer
    from regard import Engine
    from regard.api.server import ServerSettings

    astronaut = np.ascontiguousarray(data.astronaut())
    cameraman = np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))
    group, _ = paste_faces(face_crop(astronaut), [220, 180], canvas=(480, 640))
    photos = {"face": encode(face_crop(astronaut)), "astronaut": encode(astronaut),
              "cameraman": encode(cameraman), "group": encode(group)}
    settings = ServerSettings(workers=2, queue=16, retention_sweep_seconds=0,
                              index_refresh_seconds=0)
    report: dict[str, dict[str, list[str]]] = {}
    with LiveServer(home, Engine(), settings) as live:
        key, secret = live.server.keys.create("memory test")
        rek = boto3.client("rekognition", endpoint_url=live.url, region_name="eu-west-1",
                           aws_access_key_id=key.access_key_id, aws_secret_access_key=secret,
                           config=Config(retries={"max_attempts": 1}))
        db = home / "catalog.db"

        def index(collection: str, photo: str, **params: object) -> list[str]:
            records = rek.index_faces(CollectionId=collection, Image={"Bytes": photos[photo]},
                                      **params)["FaceRecords"]
            return [r["Face"]["FaceId"] for r in records]

        def scans(masked: list[bytes]) -> list[str]:
            return [str(h) for m in masked for h in scan(m)]

        # DeleteFaces of the face indexed last (its insert is the last statement SQLite ran),
        # after searches by image, by FaceId and by a user it was associated with alone.
        rek.create_collection(CollectionId="deleted")
        other = index("deleted", "cameraman", ExternalImageId="other")[0]
        face_id = index("deleted", "face", ExternalImageId="subject")[0]
        masked = [masked_embedding(db, face_id)]
        found = rek.search_faces_by_image(CollectionId="deleted",
                                          Image={"Bytes": photos["astronaut"]})["FaceMatches"]
        assert [m["Face"]["FaceId"] for m in found] == [face_id]
        rek.search_faces(CollectionId="deleted", FaceId=face_id, FaceMatchThreshold=0)
        rek.search_faces(CollectionId="deleted", FaceId=other, FaceMatchThreshold=0)
        rek.create_user(CollectionId="deleted", UserId="alone")
        rek.associate_faces(CollectionId="deleted", UserId="alone", FaceIds=[face_id])
        rek.search_users(CollectionId="deleted", UserId="alone", UserMatchThreshold=0)
        rek.disassociate_faces(CollectionId="deleted", UserId="alone", FaceIds=[face_id])
        rek.list_faces(CollectionId="deleted")
        before = scans(masked)
        assert rek.delete_faces(CollectionId="deleted", FaceIds=[face_id])["DeletedFaces"] == \
            [face_id]
        report["DeleteFaces"] = {"before": before, "after": scans(masked)}

        # Erasure of a user's two faces after association and user searches.
        rek.create_collection(CollectionId="erased")
        faces = index("erased", "group", ExternalImageId="subject", QualityFilter="NONE")
        index("erased", "cameraman", ExternalImageId="other")
        masked = [masked_embedding(db, f) for f in faces]
        rek.create_user(CollectionId="erased", UserId="subject")
        rek.associate_faces(CollectionId="erased", UserId="subject", FaceIds=faces,
                            UserMatchThreshold=0)
        rek.search_faces(CollectionId="erased", FaceId=faces[0], FaceMatchThreshold=0)
        rek.search_users(CollectionId="erased", UserId="subject", UserMatchThreshold=0)
        rek.search_users(CollectionId="erased", FaceId=faces[1], UserMatchThreshold=0)
        found = rek.search_users_by_image(CollectionId="erased", Image={"Bytes": photos["face"]})
        assert found["UserMatches"][0]["User"]["UserId"] == "subject"
        rek.list_faces(CollectionId="erased", UserId="subject")
        before = scans(masked)
        erased = httpx.post(f"{live.url}/v1/erasure", json={"UserId": "subject"}, timeout=30,
                            headers={"Authorization": f"Bearer {key.access_key_id}:{secret}"})
        assert erased.status_code == 200, erased.text
        assert sorted(erased.json()["FaceIds"]) == sorted(faces)
        report["Erase"] = {"before": before, "after": scans(masked)}

        # DeleteCollection of a searched collection.
        rek.create_collection(CollectionId="dropped")
        face_id = index("dropped", "astronaut")[0]
        masked = [masked_embedding(db, face_id)]
        rek.search_faces(CollectionId="dropped", FaceId=face_id, FaceMatchThreshold=0)
        before = scans(masked)
        rek.delete_collection(CollectionId="dropped")
        report["DeleteCollection"] = {"before": before, "after": scans(masked)}
    return report


# -- the test --------------------------------------------------------------------------------------
def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, dict[str, list[str]]]:
    if not Path("/proc/self/mem").exists() or not _glibc():
        pytest.skip("needs Linux's /proc/self/mem and glibc's allocator tunables")
    home = tmp_path_factory.mktemp("memory")
    out = home / "report.json"
    env = {**os.environ, "GLIBC_TUNABLES": CLEARING_ALLOCATOR}
    done = subprocess.run([sys.executable, __file__, str(home), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("operation", ["DeleteFaces", "Erase", "DeleteCollection"])
def test_no_copy_of_the_embeddings_remains_in_memory(report, operation):
    before, after = report[operation]["before"], report[operation]["after"]
    assert before, "the scan finds the embeddings while the faces exist"
    assert not after, (f"{len(before)} copies before {operation}, left after it:\n"
                       + "\n".join(after))


if __name__ == "__main__":  # the child: python test_memory_erasure.py HOME REPORT
    Path(sys.argv[2]).write_text(json.dumps(_scenarios(Path(sys.argv[1]))))
