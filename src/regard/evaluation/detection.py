"""Detection recall on box-annotated images: overall, by face size, by WIDER difficulty and by
each annotated group, plus the detections that match no face.

Why recall first: a face that is never detected can never be recognized, blurred or counted, and
misses are not spread evenly (small, dark, occluded faces). Recall per perceived skin type and
gender is the detection half of the per-group error rates. Size is reported beside the groups
because small faces dominate the misses and groups may differ in how small their faces are.

Rules (moved from ``bench/detection.py``): detections are matched one-to-one to every
ground-truth box of the image, invalid ones included, greedily, highest IoU first, at IoU >= 0.5.
A valid face is found when matched. A detection matching no box is an unmatched detection (a false
positive, or an unannotated face); one matching an invalid box is neither a hit nor unmatched.
What is scored is what DetectFaces returns: at most the 100 largest faces per image, so in crowds
of more than 100 faces recall is capped; images where that happened are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from regard.analysis import MAX_FACES
from regard.evaluation.embeddings import ImageDetections
from regard.evaluation.layouts import DetectionImage, GroundTruthBox
from regard.evaluation.stats import Rate
from regard.vision.detect import iou_matrix

IOU_MATCH = 0.5
# Face height buckets in pixels: [low, high).
SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<20", 0.0, 20.0), ("20-40", 20.0, 40.0), ("40-80", 40.0, 80.0), (">=80", 80.0, np.inf))
MIN_HEIGHT_FOR_GROUPS = 40.0
FITZPATRICK_LIGHT = {"I", "II", "III"}
FITZPATRICK_DARK = {"IV", "V", "VI"}


def greedy_match(dets: np.ndarray, gts: np.ndarray, iou: float = IOU_MATCH) -> np.ndarray:
    """For each gt box, the index of its matched detection or -1 (IoU >= ``iou``, best first)."""
    m = iou_matrix(dets, gts)
    match = np.full(m.shape[1], -1)
    used = np.zeros(m.shape[0], dtype=bool)
    rows, cols = np.nonzero(m >= iou)
    for k in np.argsort(-m[rows, cols], kind="stable"):
        d, g = rows[k], cols[k]
        if not used[d] and match[g] < 0:
            used[d], match[g] = True, d
    return match


def skin_bin(value: str) -> str:
    """Fitzpatrick types into the two bins the literature compares: I-III and IV-VI."""
    v = value.strip().upper()
    if v in FITZPATRICK_LIGHT:
        return "I-III"
    if v in FITZPATRICK_DARK:
        return "IV-VI"
    return value


def group_value(column: str, value: str) -> str:
    """The reported group of a box: skin columns binned, other values as annotated."""
    return skin_bin(value) if "skin" in column.lower() else value


@dataclass
class ScoredFace:
    box: GroundTruthBox
    found: bool


def score_image(image: DetectionImage, dets: ImageDetections, iou: float = IOU_MATCH
                ) -> tuple[list[ScoredFace], int, int]:
    """(faces with found flags, unmatched detections, detections on invalid boxes)."""
    gts = np.array([b.ltrb for b in image.boxes], dtype=np.float64).reshape(-1, 4)
    match = greedy_match(dets.boxes, gts, iou)
    invalid = np.array([b.invalid for b in image.boxes], dtype=bool)
    matched = match >= 0
    unmatched = len(dets.boxes) - int(matched.sum())
    return ([ScoredFace(b, bool(f)) for b, f in zip(image.boxes, matched)], unmatched,
            int((matched & invalid).sum()))


def _recall(faces: Sequence[ScoredFace], pred: Callable[[GroundTruthBox], bool]) -> Rate:
    sel = [f.found for f in faces if not f.box.invalid and pred(f.box)]
    return Rate(int(sum(sel)), len(sel))


def evaluate(images: Sequence[DetectionImage], detections: Sequence[ImageDetections],
             group_columns: Sequence[str], has_difficulty: bool,
             max_faces: int = MAX_FACES) -> dict[str, Any]:
    faces: list[ScoredFace] = []
    unmatched = on_invalid = failed = at_cap = over_cap = faces_in_capped = 0
    errors: list[str] = []
    for image, dets in zip(images, detections):
        if dets.error:
            failed += 1
            errors.append(f"{image.path.name}: {dets.error}")
        scored, u, inv = score_image(image, dets)
        faces += scored
        unmatched += u
        on_invalid += inv
        valid = sum(not b.invalid for b in image.boxes)
        if len(dets.boxes) >= max_faces:
            at_cap += 1
            faces_in_capped += valid
        over_cap += valid > max_faces
    out: dict[str, Any] = {
        "images": len(images),
        "images_failed": failed,
        "errors": errors[:20],
        "faces": len(faces),
        "valid_faces": sum(not f.box.invalid for f in faces),
        "invalid_faces": sum(f.box.invalid for f in faces),
        "iou": IOU_MATCH,
        "recall": _recall(faces, lambda b: True).to_dict(),
        "by_size": {name: _recall(faces, lambda b, lo=lo, hi=hi: lo <= b.h < hi).to_dict()
                    for name, lo, hi in SIZE_BUCKETS},
        "size_rule": "ground-truth box height in pixels",
        "detections": int(sum(len(d.boxes) for d in detections)),
        "unmatched_detections": unmatched,
        "detections_on_invalid_faces": on_invalid,
        "cap": {"max_faces": max_faces, "images_at_cap": at_cap,
                "valid_faces_in_images_at_cap": faces_in_capped,
                "images_with_more_valid_faces_than_cap": over_cap,
                "note": f"DetectFaces returns at most the {max_faces} largest faces per image; "
                        "recall in larger crowds is capped by design"},
    }
    if has_difficulty:
        out["by_difficulty"] = {
            "easy": _recall(faces, lambda b: bool(b.easy)).to_dict(),
            "medium": _recall(faces, lambda b: bool(b.medium)).to_dict(),
            "hard": _recall(faces, lambda b: bool(b.hard)).to_dict(),
        }
    groups: dict[str, Any] = {}
    for col in group_columns:
        values = sorted({group_value(col, f.box.groups.get(col, "")) for f in faces
                         if f.box.groups.get(col, "")})
        groups[col] = {
            "values": {
                v: {"all": _recall(faces, lambda b, v=v, c=col: group_value(
                        c, b.groups.get(c, "")) == v).to_dict(),
                    f"h>={MIN_HEIGHT_FOR_GROUPS:g}": _recall(
                        faces, lambda b, v=v, c=col: group_value(c, b.groups.get(c, "")) == v
                        and b.h >= MIN_HEIGHT_FOR_GROUPS).to_dict()}
                for v in values},
            "not_annotated": _recall(faces, lambda b, c=col: not b.groups.get(c, "")).to_dict(),
        }
    out["by_group"] = groups
    return out
