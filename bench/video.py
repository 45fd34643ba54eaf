"""Stored video: analysis throughput, redaction speed and leaks against deface, tracking identity.

    bash bench/setup_deface.sh                     # once: the peer, in its own venv .bench-deface
    .venv/bin/python bench/video.py [--quick] [--leak-every N] [--wider N] [--json OUT]

All on this machine's cores (2 here), one system at a time, on the same clips:

- Clips (H.264, made in bench/out/video): three 720p 25 fps clips from tests/video_clips.py
  (``moving_and_scaling``, ``leave_and_return``, ``cut_between`` with a hard cut; exact per-frame
  face boxes and identities), the real dev clip short_hamilton_clip.mp4 (640x360, 29.97 fps) and
  that clip upscaled to 1280x720 (PyAV/swscale bicubic, libx264 crf 18). ``--quick``: shorter
  made clips, the first 2 s of the real one, 20 WIDER images, leaks on every 5th frame.
- Analysis throughput: ``analyze_video(VideoReader(path), engine, AnalysisOptions(...))`` at the
  default 200 ms sampling, wall time from opening the file to the result (every frame decoded,
  one in five to six converted and analysed), in three job modes: face detection
  (``track=False``, as the StartFaceDetection job runs it), tracking (``track=True``) and face
  search (``track=True, embed=True, pack=default_pack()``). The Engine is created and its models
  loaded once before (a job server keeps them loaded). "x RT" = video duration / wall time.
- Redaction of every frame: Regard's ``redact_video(src, dst, RedactionOptions())`` in this
  process (its models loaded before, by a warm-up image) against ``deface IN -o OUT`` (deface
  1.5, CenterFace) with its defaults, stated in ``DEFACE_DEFAULTS``. fps = frames / wall.
  deface's wall time includes starting Python and loading its model: that start-up is measured
  on its own (one 64x64 image) and deface's "steady" fps excludes it; the ratio uses the steady
  figure (the one kinder to deface).
- Leaks in the redacted videos, counted per true face per evaluated frame (every
  ``--leak-every``-th frame). True faces: the made clips' exact boxes; for the real clip, the
  union of Regard's YuNet (its default threshold, 50) and CenterFace (deface's default, 0.2) on
  the ORIGINAL frame (a CenterFace box overlapping a YuNet one at IoU > 0.3 is the same face;
  the union gives each tool's own detector a say in what a face is). A true face is *found* in
  an output frame when a detection there overlaps it (IoU > 0.3, or the detection's centre
  inside it), from either of two detectors at low thresholds: YuNet at confidence >= 30 on a
  window around the face (the box grown by its own size on every side) upscaled 2x (long side
  capped at 1280 px), and CenterFace at score >= 0.1 on the same window, in deface's venv
  (bench/deface_runner.py). Found is not leaked: both tools leave a face-shaped blob that these
  detectors still call a face (every blurred face of the made clips is found). A face is
  *leaked* when found AND still recognisable: Regard's default-pack embedding of the output at
  the face's landmarks (dlib's 5 points, located on the original frame) matches the original's
  at calibrated similarity >= 80 (Rekognition's default match threshold). Neither test alone
  works: a blurred face is found; an already dark, out-of-focus face scores ~99 whether blurred
  or not. Detections away from the true faces (blobs in the background) never count. Output
  frames are compared with the input's frame by frame (deface writes 640x368 for a 640x360
  input, a macro-block multiple: its frames are scaled back; and it can add or drop frames:
  ``frame_offset`` lines them up).
- Leaks on WIDER FACE dev images with their ground truth: each image's decoded pixels are saved
  as PNG (so that untouched pixels stay exact); Regard redacts them with
  ``redact_image_file(src, dst, RedactionOptions())`` (what the CLI and the API run: detection
  on the analysis-size copy, then ``redact_image`` with the boxes found) and deface in image
  mode (``deface DIR``, writing NNNN_anonymized.png). Faces counted: valid ground-truth boxes
  >= 20 px high. Leaked as above; *intact*: >= 50% of the box's pixels unchanged (every
  channel within 2 levels); the leak rate counts either. ms/image: PNG in to PNG out.
- Tracking on the made clips (true identities known): observations are matched to the true boxes
  of their frame (greedy, IoU >= 0.3); for each true person, the sequence of person Indexes over
  the analysed frames where it is matched; an identity switch is a change of Index between
  consecutive ones. Persons found vs true persons, with ``embed=False`` and ``embed=True``.

Targets: analysis >= 4x real time; redaction >= the clip's fps at 720p and >= 3x deface's fps,
with fewer leaked faces.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))
from _common import OUT, print_table, ratio, require_data, write_json  # noqa: E402
from video_clips import cut_between, leave_and_return, make_clip, moving_and_scaling  # noqa: E402

from regard.analysis import Engine  # noqa: E402
from regard.datasets import WiderImage, wider_images  # noqa: E402
from regard.evaluation.detection import greedy_match, iou_matrix  # noqa: E402
from regard.video.decode import VideoReader  # noqa: E402
from regard.vision.detect import Detection, YuNetDetector  # noqa: E402
from regard.vision.packs import default_pack  # noqa: E402

Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels
Region = tuple[Box, str]  # a true face and what says so: "truth", "yunet" or "centerface"

VIDEO_OUT = OUT / "video"
DEFACE_VENV = ROOT / ".bench-deface"
DEFACE = DEFACE_VENV / "bin" / "deface"
DEFACE_PY = DEFACE_VENV / "bin" / "python"
DEFACE_DEFAULTS = ("--thresh 0.2 --mask-scale 1.3 --replacewith blur (ellipse masks) "
                   "--backend auto (onnxrt, CPUExecutionProvider) --ffmpeg-config "
                   "'{\"codec\": \"libx264\"}' (imageio-ffmpeg, quality 5), no --scale "
                   "(CenterFace at full resolution), no --keep-audio")
HAMILTON = "video/short_hamilton_clip.mp4"

SAMPLE_MS = 200.0
TARGET_X_RT = 4.0
TARGET_VS_DEFACE = 3.0
LEAK_IOU = 0.3  # a detection overlapping a true face this much (or centred in it) finds it
LEAK_YUNET = 30.0  # YuNet confidence for leak search (Regard's default: 50)
LEAK_CENTERFACE = 0.1  # CenterFace score for leak search (deface's default: 0.2)
TRUTH_CENTERFACE = 0.2  # the real clip's true faces: CenterFace at deface's default
UPSCALE = 2.0
MAX_WINDOW = 1280
MIN_GT_PX = 20
UNCHANGED_LEVELS = 2
UNCHANGED_LEAK = 0.5
LEAK_SIMILARITY = 80.0  # Rekognition's default match threshold: a face search would match
TRACK_IOU = 0.3


# -- clips --------------------------------------------------------------------------------------
@dataclass
class BenchClip:
    """One clip: its file, and for the made ones each frame's true face box per person."""

    name: str
    path: Path
    people: list[dict[str, Box]] | None = None  # made clips: per frame, person -> face box
    fps: float = 0.0
    frames: int = 0
    size: tuple[int, int] = (0, 0)
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        with VideoReader(self.path) as reader:
            meta = reader.metadata
            self.frames = sum(1 for _ in reader.decoded())
        self.fps, self.size = meta.frame_rate, (meta.frame_width, meta.frame_height)
        self.duration_s = meta.duration_millis / 1000

    @property
    def is_720p(self) -> bool:
        return self.size == (1280, 720)


def made_clips(quick: bool) -> list[BenchClip]:
    """The three scenes at 1280x720, 25 fps, with their exact truth."""
    moving_s, leave_s, cut_s = (2.0, 3.6, 2.0) if quick else (4.0, 5.0, 4.0)
    cut_at = cut_s / 2
    scenes = [("moving", moving_and_scaling(moving_s), moving_s, ()),
              ("leave-return", leave_and_return(leave_s), leave_s, ()),
              ("cut", cut_between(cut_s, cut_at), cut_s, (cut_at,))]
    out = []
    for name, actors, seconds, cuts in scenes:
        path = VIDEO_OUT / f"{name}_{seconds:g}s_720p.mp4"
        clip = make_clip(path, actors, seconds=seconds, fps=25, size=(1280, 720), cuts=cuts)
        out.append(BenchClip(name, path, people=clip.truth))
    return out


def transcode(src: Path, dst: Path, size: tuple[int, int] | None, max_s: float | None) -> Path:
    """``src`` re-encoded (libx264 crf 18, no audio), resized to ``size``, cut at ``max_s``."""
    import av

    if dst.exists():
        return dst
    tmp = dst.with_suffix(".part.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or Fraction(25)
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height = size or (vin.codec_context.width, vin.codec_context.height)
        vout.pix_fmt = "yuv420p"
        vout.options = {"crf": "18", "preset": "veryfast"}
        for i, frame in enumerate(inp.decode(vin)):
            if max_s is not None and i >= round(max_s * float(rate)):
                break
            f = frame.reformat(width=vout.width, height=vout.height, format="yuv420p",
                               interpolation="BICUBIC")
            f.pts, f.time_base = i, 1 / Fraction(rate)
            for packet in vout.encode(f):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
    tmp.rename(dst)
    return dst


def real_clips(root: Path, quick: bool) -> list[BenchClip]:
    """The dev clip as it is (or its first 2 s with ``quick``) and upscaled to 720p."""
    src = root / HAMILTON
    max_s = 2.0 if quick else None
    tag = "2s" if quick else "full"
    native = transcode(src, VIDEO_OUT / f"hamilton_{tag}_360p.mp4", None, max_s) if quick else src
    upscaled = transcode(src, VIDEO_OUT / f"hamilton_{tag}_720p.mp4", (1280, 720), max_s)
    return [BenchClip("hamilton 360p", native), BenchClip("hamilton 720p", upscaled)]


# -- analysis throughput and tracking -------------------------------------------------------------
MODES = ("detection", "tracking", "search")


def analysis_options(mode: str) -> Any:
    from regard.video.analysis import AnalysisOptions

    if mode == "detection":
        return AnalysisOptions(sample_ms=SAMPLE_MS, track=False)
    if mode == "tracking":
        return AnalysisOptions(sample_ms=SAMPLE_MS, track=True, embed=False)
    return AnalysisOptions(sample_ms=SAMPLE_MS, track=True, embed=True, pack=default_pack())


def run_analyses(clips: list[BenchClip], engine: Engine) -> dict[str, dict[str, dict]]:
    """{clip: {mode: {seconds, x_rt, frames_analysed, faces, persons, analysis}}}."""
    from regard.video.analysis import analyze_video

    results: dict[str, dict[str, dict]] = {}
    for clip in clips:
        for mode in MODES:
            t0 = time.perf_counter()
            with VideoReader(clip.path) as reader:
                analysis = analyze_video(reader, engine, analysis_options(mode))
            wall = time.perf_counter() - t0
            results.setdefault(clip.name, {})[mode] = {
                "seconds": wall, "x_real_time": clip.duration_s / wall,
                "frames_analysed": analysis.frames_analysed,
                "observations": len(analysis.observations),
                "persons": len(analysis.persons) if mode != "detection" else None,
                "analysis": analysis}
            print(f"  analysis {clip.name} {mode}: {wall:.2f} s "
                  f"({clip.duration_s / wall:.1f}x real time)", file=sys.stderr)
    return results


def tracking_score(clip: BenchClip, analysis: Any) -> dict:
    """Identity switches and persons against the made clip's truth (see the module doc)."""
    assert clip.people is not None
    by_frame: dict[int, list] = {}
    for obs in analysis.observations:
        by_frame.setdefault(obs.frame_index, []).append(obs)
    analysed = sorted({round(ms * clip.fps / 1000) for ms in analysis.analysed_ms})
    sequences: dict[str, list[int]] = {}
    present = matched = 0
    for fi in analysed:
        truth = clip.people[fi] if fi < len(clip.people) else {}
        names = list(truth)
        present += len(names)
        obs = by_frame.get(fi, [])
        dets = np.array([(o.face.left, o.face.top, o.face.right, o.face.bottom) for o in obs])
        true_boxes = np.array([truth[n] for n in names]).reshape(-1, 4)
        match = greedy_match(dets.reshape(-1, 4), true_boxes, TRACK_IOU)
        for name, m in zip(names, match):
            if m >= 0:
                matched += 1
                sequences.setdefault(name, []).append(obs[m].person)
    switches = sum(sum(a != b for a, b in pairwise(s)) for s in sequences.values())
    owners: dict[int, set[str]] = {}
    for name, seq in sequences.items():
        for index in seq:
            owners.setdefault(index, set()).add(name)
    true_people = {n for frame in clip.people for n in frame}
    return {"true_persons": len(true_people), "persons": len(analysis.persons),
            "id_switches": switches,
            "indexes_per_person": {n: sorted(set(s)) for n, s in sequences.items()},
            "merged_indexes": sum(1 for v in owners.values() if len(v) > 1),
            "detected": matched / present if present else None}


# -- redaction timing -----------------------------------------------------------------------------
def count_frames(path: Path) -> int:
    with VideoReader(path) as reader:
        return sum(1 for _ in reader.decoded())


def redact_regard(clips: list[BenchClip], tag: str) -> dict[str, dict]:
    from regard.video.redact import RedactionOptions, redact_video

    out = {}
    for clip in clips:
        dst = VIDEO_OUT / f"{clip.path.stem}.{tag}.regard.mp4"
        t0 = time.perf_counter()
        redact_video(clip.path, dst, RedactionOptions())
        wall = time.perf_counter() - t0
        out[clip.name] = {"path": dst, "seconds": wall, "fps": clip.frames / wall,
                          "frames_out": count_frames(dst)}
        print(f"  regard redaction {clip.name}: {clip.frames / wall:.1f} fps", file=sys.stderr)
    return out


def warm_redaction(rgb: np.ndarray, tmp: Path) -> None:
    """Load the models redaction uses (its default Engine is shared by images and videos)."""
    from regard.video.redact import RedactionOptions, redact_image_file

    Image.fromarray(rgb).save(tmp / "warm.png")
    redact_image_file(tmp / "warm.png", tmp / "warm_out.png", RedactionOptions())


def deface_startup(tmp: Path) -> float:
    """Seconds deface takes to start, load CenterFace and write a 64x64 image."""
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp / "start.png")
    t0 = time.perf_counter()
    run_deface([str(tmp / "start.png"), "-o", str(tmp / "start_out.png")])
    return time.perf_counter() - t0


def run_deface(args: list[str]) -> None:
    done = subprocess.run([str(DEFACE), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"deface failed ({done.returncode}): {done.stderr[-2000:]}")


def redact_deface(clips: list[BenchClip], tag: str, startup_s: float) -> dict[str, dict]:
    out = {}
    for clip in clips:
        dst = VIDEO_OUT / f"{clip.path.stem}.{tag}.deface.mp4"
        t0 = time.perf_counter()
        run_deface([str(clip.path), "-o", str(dst)])
        wall = time.perf_counter() - t0
        steady = max(wall - startup_s, 1e-6)
        out[clip.name] = {"path": dst, "seconds": wall, "fps": clip.frames / wall,
                          "fps_steady": clip.frames / steady, "frames_out": count_frames(dst)}
        print(f"  deface {clip.name}: {clip.frames / wall:.1f} fps "
              f"({clip.frames / steady:.1f} without start-up)", file=sys.stderr)
    return out


# -- leak detection -------------------------------------------------------------------------------
def overlaps(det: Box, region: Box) -> bool:
    cx, cy = (det[0] + det[2]) / 2, (det[1] + det[3]) / 2
    if region[0] <= cx <= region[2] and region[1] <= cy <= region[3]:
        return True
    return bool(iou_matrix(np.array([det]), np.array([region]))[0, 0] > LEAK_IOU)


class Judge:
    """The leak tests, the same for both tools: YuNet on an upscaled window around a true face,
    and whether the output face would still match the original in a face search."""

    def __init__(self, engine: Engine) -> None:
        self.yunet = YuNetDetector(min_confidence=LEAK_YUNET)
        self.engine = engine
        self.pack = default_pack()
        self.embedder = engine.embedder_for(self.pack)

    def found_by_yunet(self, rgb: np.ndarray, region: Box) -> bool:
        """YuNet on the region grown by its own size on each side, upscaled (module doc)."""
        h, w = rgb.shape[:2]
        l, t, r, b = region
        bw, bh = r - l, b - t
        x0, y0 = max(0, int(l - bw)), max(0, int(t - bh))
        x1, y1 = min(w, int(r + bw) + 1), min(h, int(b + bh) + 1)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return False
        crop = rgb[y0:y1, x0:x1]
        s = min(UPSCALE, MAX_WINDOW / max(crop.shape[:2]))
        if s != 1:
            size = (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s)))
            crop = np.asarray(Image.fromarray(crop).resize(size, Image.BILINEAR))
        sx, sy = crop.shape[1] / (x1 - x0), crop.shape[0] / (y1 - y0)
        return any(overlaps((d.left / sx + x0, d.top / sy + y0, d.right / sx + x0,
                             d.bottom / sy + y0), region) for d in self.yunet.detect(crop))

    def landmarks(self, rgb: np.ndarray, region: Box) -> Any:
        return self.engine.aligner.landmarks(rgb, Detection(*region, 100.0))

    def embed(self, rgb: np.ndarray, marks: Any) -> np.ndarray:
        return self.embedder.embed_faces(rgb, [marks])[0]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        return Engine.similarity(a, b, self.pack)


@dataclass
class LeakCount:
    """Per tool: true faces looked at, found in the output, leaked (found and recognisable)."""

    faces: int = 0
    found: int = 0  # a detector finds a face there (what the redaction left: a blob counts)
    by_yunet: int = 0
    by_centerface: int = 0
    leaked: int = 0  # found, and the output face matches the original at >= LEAK_SIMILARITY
    intact: int = 0  # images: >= UNCHANGED_LEAK of the box's pixels unchanged
    leaked_or_intact: int = 0
    frames: int = 0
    frames_with_leak: int = 0
    similarity_sum: float = 0.0  # over found faces
    unchanged_sum: float = 0.0  # images
    leaked_heights: list = field(default_factory=list)  # px, of each leaked or intact face
    faces_by_source: dict = field(default_factory=dict)  # what found the true face (real clip)
    leaked_by_source: dict = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.leaked / self.faces if self.faces else None

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__
               if not k.endswith("_sum")}
        out["leak_rate"] = self.rate
        out["mean_similarity_found"] = self.similarity_sum / self.found if self.found else None
        out["mean_unchanged"] = self.unchanged_sum / self.faces if self.faces else None
        return out

    def __add__(self, other: LeakCount) -> LeakCount:
        def plus(a: Any, b: Any) -> Any:
            if isinstance(a, dict):
                return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}
            return a + b

        return LeakCount(**{k: plus(getattr(self, k), getattr(other, k))
                            for k in self.__dataclass_fields__})


def judge_frame(judge: Judge, count: LeakCount, orig: np.ndarray, out: np.ndarray,
                regions: list[Region], cf_dets: list | None, cache: dict,
                unchanged: np.ndarray | None = None) -> None:
    """Count one tool's output frame (or image) against the original's true faces. ``cache``:
    the original faces' landmarks and embeddings, shared by the tools."""
    cf = [tuple(d[:4]) for d in cf_dets or []]
    count.frames += 1
    leak_here = False
    for k, (region, source) in enumerate(regions):
        yn = judge.found_by_yunet(out, region)
        by_cf = any(overlaps(d, region) for d in cf)
        leaked = False
        if yn or by_cf:
            if k not in cache:
                marks = judge.landmarks(orig, region)
                cache[k] = (marks, judge.embed(orig, marks))
            marks, reference = cache[k]
            similarity = judge.similarity(reference, judge.embed(out, marks))
            count.similarity_sum += similarity
            leaked = similarity >= LEAK_SIMILARITY
        intact = False
        if unchanged is not None:
            l, t, r, b = (round(v) for v in region)
            patch = unchanged[max(t, 0):max(b, t + 1), max(l, 0):max(r, l + 1)]
            fraction = float(patch.mean()) if patch.size else 0.0
            count.unchanged_sum += fraction
            intact = fraction >= UNCHANGED_LEAK
        count.faces += 1
        count.found += yn or by_cf
        count.by_yunet += yn
        count.by_centerface += by_cf
        count.leaked += leaked
        count.intact += intact
        count.leaked_or_intact += leaked or intact
        leak_here |= leaked or intact
        count.faces_by_source[source] = count.faces_by_source.get(source, 0) + 1
        if leaked or intact:
            count.leaked_heights.append(round(region[3] - region[1]))
            count.leaked_by_source[source] = count.leaked_by_source.get(source, 0) + 1
    count.frames_with_leak += leak_here


def centerface(jobs: list[dict], tmp: Path) -> list[list]:
    """Run bench/deface_runner.py in deface's venv over ``jobs``; one per-frame list per job."""
    spec, result = tmp / "cf_jobs.json", tmp / "cf_out.json"
    spec.write_text(json.dumps(jobs))
    t0 = time.perf_counter()
    done = subprocess.run([str(DEFACE_PY), str(BENCH / "deface_runner.py"), str(spec),
                           str(result)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"deface_runner failed: {done.stderr[-2000:]}")
    print(f"  CenterFace on {len(jobs)} inputs: {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return json.loads(result.read_text())


def at(per_frame: list, i: int) -> list | None:
    return per_frame[i] if i < len(per_frame) else None


def frames_at(path: Path, wanted: set[int], size: tuple[int, int]
              ) -> Iterator[tuple[int, np.ndarray]]:
    """The ``wanted`` frames of ``path`` (decoding order) as RGB of ``size``, in order."""
    last = max(wanted, default=-1)
    with VideoReader(path) as reader:
        for i, _, frame in reader.decoded():
            if i > last:
                return
            if i not in wanted:
                continue
            rgb = reader.upright(frame)
            if (rgb.shape[1], rgb.shape[0]) != size:
                rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
            yield i, rgb


def thumbnails(path: Path) -> np.ndarray:
    """(frames, 36, 64) grey thumbnails of every frame, to line outputs up with the input."""
    with VideoReader(path) as reader:
        return np.stack([frame.reformat(width=64, height=36, format="gray").to_ndarray()[:36, :64]
                         for _, _, frame in reader.decoded()]).astype(np.float32)


def frame_offset(original: np.ndarray, output: np.ndarray, lead: int = 90) -> int:
    """The d for which output frame i + d shows input frame i. deface reads through imageio,
    which resamples to a constant rate from the container's start: the dev clip's video starts
    0.85 s in, so deface's output opens with 25 copies of its first frame (d = 25)."""
    best, best_err = 0, np.inf
    for d in range(-5, lead + 1):
        ks = np.arange(max(0, d), min(len(output), len(original) + d))
        if len(ks) < len(original) // 2:
            continue
        err = float(np.abs(output[ks] - original[ks - d]).mean())
        if err < best_err - 1e-6:
            best, best_err = d, err
    return best


def true_regions(clip: BenchClip, every: int, cf_original: list | None,
                 detector: YuNetDetector) -> dict[int, list[Region]]:
    """Per evaluated frame, the true face regions (module doc)."""
    if clip.people is not None:
        return {i: [(box, "truth") for box in p.values()]
                for i, p in enumerate(clip.people) if i % every == 0}
    assert cf_original is not None
    regions: dict[int, list[Region]] = {}
    for i, rgb in frames_at(clip.path, set(range(0, clip.frames, every)), clip.size):
        boxes = [(d.left, d.top, d.right, d.bottom) for d in detector.detect(rgb)]
        cf = [tuple(d[:4]) for d in at(cf_original, i) or []]
        if boxes and cf:
            same = iou_matrix(np.array(cf), np.array(boxes)).max(axis=1) > LEAK_IOU
            cf = [c for c, s in zip(cf, same) if not s]
        regions[i] = [(b, "yunet") for b in boxes] + [(c, "centerface") for c in cf]
    return regions


def video_leaks(clip: BenchClip, outputs: dict[str, Path], offsets: dict[str, int],
                regions: dict[int, list[Region]], cf: dict[str, list], judge: Judge
                ) -> dict[str, LeakCount]:
    """Each tool's output against the original, frame by frame (output frame i + offset for
    input frame i); ``regions`` only holds frames every output has."""
    counts = {tool: LeakCount() for tool in outputs}
    wanted = set(regions)
    streams = {t: frames_at(p, {i + offsets[t] for i in wanted}, clip.size)
               for t, p in outputs.items()}
    for i, orig in frames_at(clip.path, wanted, clip.size):
        cache: dict = {}
        for tool, stream in streams.items():
            k, out = next(stream)
            assert k == i + offsets[tool], (clip.name, tool, i, k)
            judge_frame(judge, counts[tool], orig, out, regions[i], at(cf[tool], k), cache)
    return counts


# -- WIDER FACE images ----------------------------------------------------------------------------
def counted_faces(image: WiderImage) -> list[Box]:
    return [(f.x, f.y, f.x + f.w, f.y + f.h) for f in image.faces
            if not f.invalid and f.h >= MIN_GT_PX]


def wider_redaction(images: list[WiderImage], engine: Engine, tmp: Path,
                    startup_s: float) -> dict[str, Any]:
    """Redact the images with both tools; inputs and outputs as PNG under ``tmp``; timings."""
    from regard.video.redact import RedactionOptions, redact_image_file

    src, mine = tmp / "wider_in", tmp / "wider_regard"
    src.mkdir()
    mine.mkdir()
    options = RedactionOptions()
    for k, image in enumerate(images):
        Image.fromarray(engine.load(image.path)).save(src / f"{k:04d}.png")
    t0 = time.perf_counter()
    for k in range(len(images)):
        redact_image_file(src / f"{k:04d}.png", mine / f"{k:04d}.png", options)
    regard_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_deface([str(src)])  # image mode, writes NNNN_anonymized.png beside each input
    deface_s = time.perf_counter() - t0
    return {"inputs": [src / f"{k:04d}.png" for k in range(len(images))],
            "regard": [mine / f"{k:04d}.png" for k in range(len(images))],
            "deface": [src / f"{k:04d}_anonymized.png" for k in range(len(images))],
            "regard_ms": 1000 * regard_s / len(images),
            "deface_ms": 1000 * max(deface_s - startup_s, 0) / len(images),
            "deface_ms_with_startup": 1000 * deface_s / len(images)}


def image_leaks(images: list[WiderImage], wider: dict[str, Any], cf: dict[str, list],
                judge: Judge) -> dict[str, LeakCount]:
    counts = {tool: LeakCount() for tool in ("regard", "deface")}
    for k, image in enumerate(images):
        regions = [(box, "truth") for box in counted_faces(image)]
        orig = np.asarray(Image.open(wider["inputs"][k]).convert("RGB"))
        cache: dict = {}
        for tool, count in counts.items():
            out = np.asarray(Image.open(wider[tool][k]).convert("RGB"))
            unchanged = (np.abs(orig.astype(np.int16) - out) <= UNCHANGED_LEVELS).all(axis=2)
            judge_frame(judge, count, orig, out, regions, at(cf[tool][k], 0), cache, unchanged)
    return counts


# -- report ---------------------------------------------------------------------------------------
def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def times(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def total_x_rt(analyses: dict, clips: list[BenchClip], mode: str) -> float:
    wall = sum(analyses[c.name][mode]["seconds"] for c in clips)
    return sum(c.duration_s for c in clips) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short clips, 20 images (~2 min)")
    ap.add_argument("--leak-every", type=int, help="count leaks on every Nth frame "
                    "(default 2; 5 with --quick)")
    ap.add_argument("--wider", type=int, help="WIDER FACE dev images (default all 132; 20 "
                    "with --quick)")
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    args = ap.parse_args()
    root = require_data()
    if not DEFACE.exists():
        sys.exit("The peer is missing: bash bench/setup_deface.sh (creates .bench-deface)")
    every = args.leak_every or (5 if args.quick else 2)
    n_wider = args.wider if args.wider is not None else (20 if args.quick else None)
    tag = "quick" if args.quick else "full"
    VIDEO_OUT.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(name: str) -> None:
        stages[name] = time.perf_counter()
        print(name, file=sys.stderr)


    stage("clips")
    made = made_clips(args.quick)
    clips = made + real_clips(root, args.quick)
    hd = [c for c in clips if c.is_720p]

    engine = Engine()
    with VideoReader(hd[0].path) as reader:
        warm = next(iter(reader.frames())).rgb
    engine.detect(warm, embed=True, pack=default_pack())  # loads every model once

    stage("analysis")
    analyses = run_analyses(hd, engine)

    stage("video redaction")
    tmp = Path(tempfile.mkdtemp(prefix="regard-bench-video-"))
    try:
        warm_redaction(warm, tmp)
        regard = redact_regard(clips, tag)
        startup = deface_startup(tmp)
        deface = redact_deface(clips, tag, startup)
        stage("image redaction")
        images = wider_images(root)[:n_wider]
        wider = wider_redaction(images, engine, tmp, startup)

        stage("leaks")
        tools = {"regard": regard, "deface": deface}
        for c in clips:  # line each output up with its input (see frame_offset)
            reference = thumbnails(c.path)
            for t in tools.values():
                t[c.name]["offset"] = frame_offset(reference, thumbnails(t[c.name]["path"]))
        real = [c for c in clips if c.people is None]
        cf_original = dict(zip((c.name for c in real), centerface(
            [{"path": str(c.path), "thresh": TRUTH_CENTERFACE, "size": None,
              "frames": list(range(0, c.frames, every))} for c in real], tmp)))
        truth_detector = YuNetDetector()
        regions = {}
        for c in clips:  # the evaluated frames: those every output has
            found = true_regions(c, every, cf_original.get(c.name), truth_detector)
            regions[c.name] = {i: r for i, r in found.items() if all(
                0 <= i + t[c.name]["offset"] < t[c.name]["frames_out"] for t in tools.values())}
        jobs = [{"path": str(t[c.name]["path"]), "thresh": LEAK_CENTERFACE, "size": list(c.size),
                 "regions": {str(i + t[c.name]["offset"]): [box for box, _ in r]
                             for i, r in regions[c.name].items() if r}}
                for c in clips for t in tools.values()]
        jobs += [{"path": str(p), "thresh": LEAK_CENTERFACE, "size": None,
                  "regions": {"0": counted_faces(image)}}
                 for t in tools for p, image in zip(wider[t], images)]
        cf = centerface(jobs, tmp)
        judge = Judge(engine)
        leaks: dict[str, dict[str, LeakCount]] = {}
        for k, c in enumerate(clips):
            outputs = {t: tools[t][c.name]["path"] for t in tools}
            offsets = {t: tools[t][c.name]["offset"] for t in tools}
            per_tool = {t: cf[2 * k + j] for j, t in enumerate(tools)}
            leaks[c.name] = video_leaks(c, outputs, offsets, regions[c.name], per_tool, judge)
        n, base = len(images), 2 * len(clips)
        wider_leaks = image_leaks(images, wider, {t: cf[base + j * n: base + (j + 1) * n]
                                                  for j, t in enumerate(tools)}, judge)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stage_end = time.perf_counter()
    tracking = {
        c.name: {embed: tracking_score(c, analyses[c.name][mode]["analysis"])
                 for embed, mode in (("embed=False", "tracking"), ("embed=True", "search"))}
        for c in made}

    # -- tables ---------------------------------------------------------------------------------
    print(f"\nStored video on {os.cpu_count()} cores, {'--quick' if args.quick else 'full'} run "
          f"({time.perf_counter() - t_start:.0f} s: " + ", ".join(
              f"{name} {end - start:.0f}" for (name, start), end in
              zip(stages.items(), [*list(stages.values())[1:], stage_end])) + ")")
    print(f"\n1. Analysis throughput, 720p H.264, sampling {SAMPLE_MS:g} ms "
          f"(x real time = duration / wall; target >= {TARGET_X_RT:g}x)\n")
    rows = [[c.name, f"{c.duration_s:.1f}", f"{c.fps:g}",
             analyses[c.name]["detection"]["frames_analysed"]]
            + [times(analyses[c.name][m]["x_real_time"]) for m in MODES] for c in hd]
    rows.append(["all 720p", f"{sum(c.duration_s for c in hd):.1f}", "", ""]
                + [times(total_x_rt(analyses, hd, m)) for m in MODES])
    print_table(["clip", "s", "fps", "analysed", "detection", "tracking", "search"], rows)

    print(f"\n2. Redaction of every frame: Regard redact_video vs deface "
          f"(deface flags: defaults, {DEFACE_DEFAULTS}); deface start-up {startup:.2f} s\n")
    rows = []
    for c in clips:
        r, d = regard[c.name], deface[c.name]
        rows.append([c.name, f"{c.size[0]}x{c.size[1]}", f"{c.fps:.2f}", c.frames,
                     f"{r['fps']:.1f}", f"{d['fps_steady']:.1f}", f"{d['fps']:.1f}",
                     times(ratio(r["fps"], d["fps_steady"])), times(r["fps"] / c.fps)])
    for label, group in (("all 720p", hd), ("all", clips)):
        frames = sum(c.frames for c in group)
        r_s = sum(regard[c.name]["seconds"] for c in group)
        d_s = sum(deface[c.name]["seconds"] for c in group)
        d_steady = d_s - startup * len(group)
        rows.append([label, "", "", frames, f"{frames / r_s:.1f}", f"{frames / d_steady:.1f}",
                     f"{frames / d_s:.1f}", times(d_steady / r_s), ""])
    print_table(["clip", "size", "fps", "frames", "regard fps", "deface fps", "deface e2e",
                 "regard/deface", "regard x RT"], rows)

    print(f"\n3. Leaked faces in the redacted videos: true faces of every {every}th frame; found = "
          f"a detection in the output overlaps it (YuNet >= {LEAK_YUNET:g} on a 2x window, or "
          f"CenterFace >= {LEAK_CENTERFACE:g}; blurred blobs count); leaked = found and the output "
          f"face still matches the original at similarity >= {LEAK_SIMILARITY:g}\n")
    rows = []
    tot = {t: LeakCount() for t in ("regard", "deface")}
    for c in clips:
        r, d = leaks[c.name]["regard"], leaks[c.name]["deface"]
        tot = {"regard": tot["regard"] + r, "deface": tot["deface"] + d}
        rows.append([c.name, r.frames, r.faces, r.found, r.leaked, pct(r.rate), d.found,
                     d.leaked, pct(d.rate)])
    rows.append(["all", tot["regard"].frames, tot["regard"].faces, tot["regard"].found,
                 tot["regard"].leaked, pct(tot["regard"].rate), tot["deface"].found,
                 tot["deface"].leaked, pct(tot["deface"].rate)])
    print_table(["clip", "frames", "faces", "regard found", "leaked", "rate", "deface found",
                 "leaked", "rate"], rows)
    real_counts = {t: sum((leaks[c.name][t] for c in clips if c.people is None), LeakCount())
                   for t in tools}
    if real_counts["regard"].faces:
        by = {t: ", ".join(f"{src} {lc.leaked_by_source.get(src, 0)}/{n}"
                           for src, n in sorted(lc.faces_by_source.items()))
              for t, lc in real_counts.items()}
        print(f"  real clip, leaked / true faces by the detector that found them in the original: "
              f"regard {by['regard']}; deface {by['deface']}")
    for c in clips:
        for t in tools:
            out = tools[t][c.name]
            if out["frames_out"] != c.frames or out["offset"]:
                print(f"  note: {c.name}: {t} wrote {out['frames_out']} frames for {c.frames}; "
                      f"its frame i + {out['offset']} shows input frame i (compared so)")

    print(f"\n4. WIDER FACE dev, {len(images)} images, valid faces >= {MIN_GT_PX} px high: found "
          f"and leaked as above; intact = >= {UNCHANGED_LEAK:.0%} of the box's pixels unchanged; "
          f"ms/image: PNG to PNG\n")
    rows = []
    for t in ("regard", "deface"):
        lc = wider_leaks[t]
        rows.append([t, lc.faces, f"{lc.found} ({lc.by_yunet}/{lc.by_centerface})", lc.leaked,
                     lc.intact, lc.leaked_or_intact, pct(lc.leaked_or_intact / lc.faces
                                                         if lc.faces else None),
                     pct(lc.as_dict()["mean_unchanged"]), f"{wider[t + '_ms']:.0f}"])
    print_table(["tool", "faces", "found (yunet/cf)", "leaked", "intact", "either", "rate",
                 "unchanged", "ms/image"], rows)

    print(f"\n5. Tracking on the made clips (IoU >= {TRACK_IOU:g} to the true box; switches = "
          f"Index changes of a true person between consecutive analysed frames)\n")
    rows = [[c.name, mode, t["true_persons"], t["persons"], t["id_switches"],
             " ".join(f"{n}:{v}" for n, v in sorted(t["indexes_per_person"].items())),
             t["merged_indexes"], pct(t["detected"])]
            for c in made for mode, t in tracking[c.name].items()]
    print_table(["clip", "mode", "true", "persons", "switches", "indexes", "merged", "detected"],
                rows)

    hd_rt = total_x_rt(analyses, hd, "detection")
    hd_frames = sum(c.frames for c in hd)
    hd_fps = hd_frames / sum(regard[c.name]["seconds"] for c in hd)
    hd_deface = hd_frames / (sum(deface[c.name]["seconds"] for c in hd) - startup * len(hd))
    print("\ntargets")
    print(f"  analysis (detection) {hd_rt:.2f}x real time (>= {TARGET_X_RT:g}x): "
          f"{'met' if hd_rt >= TARGET_X_RT else 'NOT met'}")
    print(f"  redaction 720p {hd_fps:.1f} fps (>= 25-30): "
          f"{'met' if hd_fps >= 30 else 'met at 25' if hd_fps >= 25 else 'NOT met'}")
    print(f"  vs deface {hd_fps / hd_deface:.2f}x (>= {TARGET_VS_DEFACE:g}x): "
          f"{'met' if hd_fps / hd_deface >= TARGET_VS_DEFACE else 'NOT met'}")
    wl = {t: wider_leaks[t].leaked_or_intact for t in tools}
    fewer = tot["regard"].leaked <= tot["deface"].leaked and wl["regard"] <= wl["deface"]
    print(f"  leaked faces: videos {tot['regard'].leaked} vs deface {tot['deface'].leaked}, "
          f"WIDER {wl['regard']} vs {wl['deface']} (fewer: {'met' if fewer else 'NOT met'})")

    write_json(args.json, {
        "benchmark": "video", "quick": args.quick, "cores": os.cpu_count(),
        "seconds": stage_end - t_start,
        "leak_every": every, "deface_flags": DEFACE_DEFAULTS, "deface_startup_s": startup,
        "clips": {c.name: {"path": str(c.path), "size": c.size, "fps": c.fps,
                           "frames": c.frames, "duration_s": c.duration_s} for c in clips},
        "analysis": {c: {m: {k: v for k, v in r.items() if k != "analysis"}
                         for m, r in modes.items()} for c, modes in analyses.items()},
        "redaction": {c.name: {"regard_fps": regard[c.name]["fps"],
                               "deface_fps_steady": deface[c.name]["fps_steady"],
                               "deface_fps": deface[c.name]["fps"],
                               "frames_out": {t: tools[t][c.name]["frames_out"] for t in tools},
                               "frame_offset": {t: tools[t][c.name]["offset"] for t in tools}}
                      for c in clips},
        "video_leaks_total": {t: lc.as_dict() for t, lc in tot.items()},
        "video_leaks": {c: {t: lc.as_dict() for t, lc in v.items()} for c, v in leaks.items()},
        "wider": {"images": len(images), "regard_ms": wider["regard_ms"],
                  "deface_ms": wider["deface_ms"],
                  "deface_ms_with_startup": wider["deface_ms_with_startup"],
                  "leaks": {t: lc.as_dict() for t, lc in wider_leaks.items()}},
        "tracking": tracking,
        "targets": {"analysis_x_real_time": hd_rt, "redaction_720p_fps": hd_fps,
                    "deface_720p_fps": hd_deface, "regard_vs_deface": hd_fps / hd_deface},
    })


if __name__ == "__main__":
    main()
