"""Face detection recall on the WIDER FACE dev subset: Regard's detectors against face_recognition.

    .venv/bin/python bench/detection.py [--detector yunet|yuface|mmod|hog ...] [--limit N]
        [--json OUT]
    .venv/bin/python bench/detection.py --sweep [--limit N]   # YuNet score threshold x NMS grid

Systems, all run in the same process on the same images, image by image (so load on the machine
hits every system alike), after one warm-up image each:

- ``regard:<backend>``: ``Engine(detector=<backend>).detect(path)``, i.e. what DetectFaces returns:
  at most the 100 largest faces per image (Rekognition's rule). ms/image from the file: decode,
  detect, 5-point landmarks, pose and quality for every returned face.
- ``regard:<backend> raw``: ``engine.detector.detect(rgb)`` on the decoded pixels, no cap.
  ms/image: the detector alone.
- ``peer:hog``: ``face_recognition.face_locations(img)`` (HOG, number_of_times_to_upsample=1, its
  defaults). ms from the file: ``load_image_file`` + ``face_locations``; detector alone: the latter.

Scoring: detections are matched to every ground-truth box of the image (invalid ones included)
greedily, highest IoU first, one-to-one, IoU >= 0.5. A valid face is found when matched. A
detection matching no box is a false positive (FP); one matching an invalid box is neither a hit
nor an FP. Recall subsets: all valid faces, WIDER's official easy / medium / hard membership,
valid faces >= 40 px high, valid faces of the crowd images; then per perceived skin type and
perceived gender where annotated (overall and >= 40 px, since small faces dominate the misses).
Ratios are Regard / peer.

``--sweep``: how YuNet's defaults were chosen. The network runs once per image (decoded pixels, as
the Engine sees them); every (score threshold, NMS IoU) pair is then scored as DetectFaces would
return it (the 100 largest faces), giving recall (all, h>=40, crowd) and unmatched detections.
No peer, no timing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    peer_box,
    print_table,
    ratio,
    require_data,
    require_peer,
    write_json,
)

from regard.analysis import Engine  # noqa: E402
from regard.datasets import GroundTruthFace, WiderImage, wider_images  # noqa: E402
from regard.evaluation.detection import greedy_match  # noqa: E402
from regard.vision.detect import _BACKENDS, available_detectors  # noqa: E402

IOU_MATCH = 0.5
MIN_HEIGHT = 40
PEER = "peer:hog"
SKIN_LIGHT = {"I", "II", "III"}
SKIN_DARK = {"IV", "V", "VI"}


@dataclass
class Run:
    """One system's detections on every image, and seconds per image."""

    name: str
    boxes: list[np.ndarray] = field(default_factory=list)  # per image: (k, 4) left, top, right, bottom
    file_s: list[float] = field(default_factory=list)  # from the file (decode included)
    det_s: list[float] = field(default_factory=list)  # the detector alone on decoded pixels


# -- matching ------------------------------------------------------------------------------------
def gt_boxes(image: WiderImage) -> np.ndarray:
    return np.array([(f.x, f.y, f.x + f.w, f.y + f.h) for f in image.faces]).reshape(-1, 4)


@dataclass
class Scored:
    found: np.ndarray  # per gt face of the whole set (flattened): matched?
    false_positives: int
    on_invalid: int  # detections matched to an invalid box (neither hit nor FP)


def score(run: Run, images: list[WiderImage]) -> Scored:
    found, fps, on_invalid = [], 0, 0
    for image, dets in zip(images, run.boxes):
        match = greedy_match(dets, gt_boxes(image))
        invalid = np.array([f.invalid for f in image.faces], dtype=bool)
        found.append(match >= 0)
        fps += len(dets) - int((match >= 0).sum())
        on_invalid += int(((match >= 0) & invalid).sum())
    return Scored(np.concatenate(found) if found else np.zeros(0, bool), fps, on_invalid)


# -- subsets of ground-truth faces ----------------------------------------------------------------
FacePredicate = Callable[[GroundTruthFace, WiderImage], bool]

SUBSETS: dict[str, FacePredicate] = {
    "all": lambda f, im: not f.invalid,
    "easy": lambda f, im: f.easy,
    "medium": lambda f, im: f.medium,
    "hard": lambda f, im: f.hard,
    f"h>={MIN_HEIGHT}": lambda f, im: not f.invalid and f.h >= MIN_HEIGHT,
    "crowd": lambda f, im: not f.invalid and im.is_crowd,
}

GROUPS: dict[str, FacePredicate] = {
    "skin I-III": lambda f, im: f.skin in SKIN_LIGHT,
    "skin IV-VI": lambda f, im: f.skin in SKIN_DARK,
    "skin not sure": lambda f, im: f.skin == "Not Sure",
    "gender female": lambda f, im: f.gender == "Female",
    "gender male": lambda f, im: f.gender == "Male",
    "gender not sure": lambda f, im: f.gender == "Not Sure",
}


def subset_mask(images: list[WiderImage], pred: FacePredicate, min_height: float = 0) -> np.ndarray:
    return np.array(
        [not f.invalid and f.h >= min_height and pred(f, im) for im in images for f in im.faces],
        dtype=bool,
    )


def recall(found: np.ndarray, mask: np.ndarray) -> float | None:
    return float(found[mask].mean()) if mask.any() else None


# -- running the systems ------------------------------------------------------------------------
def as_array(boxes: list[tuple[float, float, float, float]]) -> np.ndarray:
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def run_regard(engine: Engine, path: Path, capped: Run, raw: Run) -> None:
    t0 = time.perf_counter()
    faces = engine.detect(path).faces
    t1 = time.perf_counter()
    capped.boxes.append(as_array([(f.left, f.top, f.right, f.bottom) for f in faces]))
    capped.file_s.append(t1 - t0)
    rgb = engine.load(path)
    t2 = time.perf_counter()
    dets = engine.detector.detect(rgb)
    t3 = time.perf_counter()
    raw.boxes.append(as_array([(d.left, d.top, d.right, d.bottom) for d in dets]))
    raw.det_s.append(t3 - t2)


def run_peer(fr, path: Path, run: Run) -> None:  # fr: the face_recognition module
    t0 = time.perf_counter()
    img = fr.load_image_file(str(path))
    t1 = time.perf_counter()
    locations = fr.face_locations(img)  # defaults: number_of_times_to_upsample=1, model="hog"
    t2 = time.perf_counter()
    run.boxes.append(as_array([peer_box(css) for css in locations]))
    run.file_s.append(t2 - t0)
    run.det_s.append(t2 - t1)


def run_all(images: list[WiderImage], backends: list[str]) -> list[Run]:
    fr = require_peer()
    engines = {b: Engine(detector=b) for b in backends}
    warm = images[0].path
    for engine in engines.values():
        engine.detect(warm)  # loads detector and landmark models
    fr.face_locations(fr.load_image_file(str(warm)))
    runs = {b: (Run(f"regard:{b}"), Run(f"regard:{b} raw")) for b in backends}
    peer = Run(PEER)
    t0 = time.perf_counter()
    for i, image in enumerate(images, 1):
        for b, engine in engines.items():
            run_regard(engine, image.path, *runs[b])
        run_peer(fr, image.path, peer)
        if i % 10 == 0 or i == len(images):
            print(f"  {i}/{len(images)} images, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return [r for pair in runs.values() for r in pair] + [peer]


# -- report -----------------------------------------------------------------------------------------
def ms(seconds: list[float]) -> float | None:
    return 1000 * float(np.mean(seconds)) if seconds else None


def summarize(runs: list[Run], images: list[WiderImage]) -> dict:
    masks = {name: subset_mask(images, pred) for name, pred in SUBSETS.items()}
    groups: dict[str, np.ndarray] = {}
    for name, pred in GROUPS.items():
        groups[name] = subset_mask(images, pred)
        groups[f"{name}, h>={MIN_HEIGHT}"] = subset_mask(images, pred, MIN_HEIGHT)
    out: dict = {"counts": {k: int(m.sum()) for k, m in {**masks, **groups}.items()}, "systems": {}}
    for run in runs:
        s = score(run, images)
        out["systems"][run.name] = {
            "recall": {k: recall(s.found, m) for k, m in masks.items()},
            "group_recall": {k: recall(s.found, m) for k, m in groups.items()},
            "detections": int(sum(len(b) for b in run.boxes)),
            "false_positives": s.false_positives,
            "matched_invalid": s.on_invalid,
            "ms_per_image_from_file": ms(run.file_s),
            "ms_per_image_detector": ms(run.det_s),
        }
    peer = out["systems"][PEER]
    out["ratios_vs_peer"] = {
        name: {k: ratio(v, peer["recall"][k]) for k, v in sys_["recall"].items()}
        for name, sys_ in out["systems"].items() if name != PEER
    }
    return out


def print_report(summary: dict, n_images: int) -> None:
    counts = summary["counts"]
    subsets = list(SUBSETS)
    print(f"\nWIDER FACE dev: {n_images} images; valid faces per subset: "
          + ", ".join(f"{k} {counts[k]}" for k in subsets))
    print("recall at IoU >= 0.5; FP = detections matching no box; ms/image mean\n")
    headers = ["system"] + subsets + ["dets", "FP", "ms file", "ms det"]
    rows = [
        [name] + [s["recall"][k] for k in subsets]
        + [s["detections"], s["false_positives"], s["ms_per_image_from_file"],
           s["ms_per_image_detector"]]
        for name, s in summary["systems"].items()
    ]
    print_table(headers, rows)
    peer = summary["systems"][PEER]
    print(f"\nratios vs {PEER} (recall: Regard / peer; FP: Regard / peer; speed: peer ms / Regard ms)\n")
    ratio_rows = []
    for name, s in summary["systems"].items():
        if name == PEER:
            continue
        speed_key = "ms_per_image_detector" if name.endswith(" raw") else "ms_per_image_from_file"
        ratio_rows.append(
            [f"{name} / peer"] + [summary["ratios_vs_peer"][name][k] for k in subsets]
            + [ratio(s["false_positives"], peer["false_positives"]),
               ratio(peer[speed_key], s[speed_key])]
        )
    print_table(["ratio"] + subsets + ["FP", "speed"], ratio_rows, digits=2)

    print("\nrecall per perceived group (valid faces annotated with the attribute)\n")
    names = list(summary["systems"])
    group_rows = [
        [g, counts[g]] + [summary["systems"][n]["group_recall"][g] for n in names]
        for g in summary["systems"][PEER]["group_recall"]
    ]
    print_table(["group", "faces"] + names, group_rows)


# -- YuNet threshold / NMS sweep ------------------------------------------------------------------
SWEEP_SCORES = (0.3, 0.4, 0.5, 0.6, 0.7)
SWEEP_NMS = (0.2, 0.3, 0.4, 0.45, 0.5)


def sweep_yunet(images: list[WiderImage], max_faces: int = 100) -> list[dict]:
    from regard.vision.yunet import YuNetOnnx, decode, nms

    net, engine = YuNetOnnx(), Engine(detector="yunet")
    candidates = []
    for image in images:
        outputs, ph, pw = net.run(engine.load(image.path))
        boxes, scores, _ = decode(outputs, ph, pw, min(SWEEP_SCORES))
        candidates.append((boxes, scores))
    masks = {k: subset_mask(images, SUBSETS[k]) for k in ("all", f"h>={MIN_HEIGHT}", "crowd")}
    rows = []
    for iou in SWEEP_NMS:
        for threshold in SWEEP_SCORES:
            run = Run(f"yunet score>={threshold} nms {iou}")
            for boxes, scores in candidates:
                above = scores >= threshold
                kept = boxes[above][nms(boxes[above], scores[above], iou)]
                area = (kept[:, 2] - kept[:, 0]) * (kept[:, 3] - kept[:, 1])
                run.boxes.append(kept[np.argsort(-area, kind="stable")[:max_faces]])
            s = score(run, images)
            rows.append({"score": threshold, "nms": iou,
                         **{k: recall(s.found, m) for k, m in masks.items()},
                         "unmatched": s.false_positives,
                         "detections": int(sum(len(b) for b in run.boxes))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", action="append", choices=list(_BACKENDS),
                    help="Regard backend(s) to benchmark (repeatable; default: all installed)")
    ap.add_argument("--limit", type=int, help="only the first N images")
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    ap.add_argument("--sweep", action="store_true",
                    help="only YuNet's score threshold x NMS IoU grid (100 largest faces/image)")
    args = ap.parse_args()
    images = wider_images(require_data())[: args.limit]
    if args.sweep:
        rows = sweep_yunet(images)
        print(f"\nYuNet on WIDER FACE dev, {len(images)} images, 100 largest faces per image\n")
        print_table(["score", "nms", "all", f"h>={MIN_HEIGHT}", "crowd", "unmatched", "dets"],
                    [list(r.values()) for r in rows])
        write_json(args.json, {"benchmark": "detection-sweep", "dataset": "WIDER FACE dev",
                               "images": len(images), "iou": IOU_MATCH, "rows": rows})
        return
    backends = args.detector or available_detectors()
    print(f"benchmarking regard {', '.join(backends)} vs {PEER} on {len(images)} images",
          file=sys.stderr)
    summary = summarize(run_all(images, backends), images)
    print_report(summary, len(images))
    write_json(args.json, {"benchmark": "detection", "dataset": "WIDER FACE dev",
                           "images": len(images), "iou": IOU_MATCH, **summary})


if __name__ == "__main__":
    main()
