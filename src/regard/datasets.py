"""Readers for the evaluation data layouts Regard measures itself on.

The data is research-licensed and never shipped: it is read from ``REGARD_DATA`` (default
``../shared/data/dev`` next to the checkout, then ``/work/shared/data/dev``). Layouts:

- ``verification/lfw/``: ``pairs.csv`` (fold, official_fold, image1, image2, same_identity,
  gender1, gender2) and ``images/<name>/<name>_NNNN.jpg`` (LFW);
- ``demographics/utkface/``: ``labels.csv`` (image, age, age_bucket, gender_code, gender,
  race_code, race) and ``images/``;
- ``detection/wider_face_val/``: ``faces.csv`` (one row per ground-truth box with WIDER
  attributes, easy/medium/hard membership, optional perceived gender/age/skin), ``images.csv``
  (per image, incl. ``is_crowd``) and ``images/<event>/<file>.jpg``.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


def data_root() -> Path | None:
    """The evaluation data folder, or None when this machine has none (tests then skip)."""
    candidates = []
    if os.environ.get("REGARD_DATA"):
        candidates.append(Path(os.environ["REGARD_DATA"]))
    here = Path(__file__).resolve()
    candidates += [p / "shared" / "data" / "dev" for p in here.parents[2:5]]
    candidates.append(Path("/work/shared/data/dev"))
    for path in candidates:
        if path.is_dir():
            return path
    return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# -- LFW ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    fold: int
    image1: Path
    image2: Path
    same: bool
    gender1: str
    gender2: str


def lfw_pairs(root: Path) -> list[Pair]:
    base = root / "verification" / "lfw"
    return [
        Pair(
            int(r["fold"]),
            base / r["image1"],
            base / r["image2"],
            r["same_identity"] == "1",
            r["gender1"],
            r["gender2"],
        )
        for r in _read_csv(base / "pairs.csv")
    ]


def lfw_identity(path: Path) -> str:
    """LFW identity from the folder name."""
    return path.parent.name


def lfw_images(root: Path) -> list[Path]:
    """Every LFW image present, sorted (the pairs reference all of them)."""
    return sorted((root / "verification" / "lfw" / "images").glob("*/*.jpg"))


def lfw_genders(root: Path) -> dict[Path, str]:
    """Per-image gender label from the pairs file (male / female / ambiguous / unknown)."""
    out: dict[Path, str] = {}
    for p in lfw_pairs(root):
        out[p.image1] = p.gender1
        out[p.image2] = p.gender2
    return out


# -- UTKFace --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelledFace:
    image: Path
    gender: str
    race: str
    age: int

    @property
    def group(self) -> str:
        return f"{self.race} {self.gender}"


def utkface(root: Path) -> list[LabelledFace]:
    base = root / "demographics" / "utkface"
    return [
        LabelledFace(base / r["image"], r["gender"], r["race"], int(r["age"]))
        for r in _read_csv(base / "labels.csv")
    ]


# -- WIDER FACE -----------------------------------------------------------------------------
@dataclass(frozen=True)
class GroundTruthFace:
    x: float
    y: float
    w: float
    h: float
    invalid: bool
    easy: bool
    medium: bool
    hard: bool
    skin: str
    gender: str


@dataclass(frozen=True)
class WiderImage:
    path: Path
    event: str
    is_crowd: bool
    faces: tuple[GroundTruthFace, ...]


def wider_images(root: Path) -> list[WiderImage]:
    base = root / "detection" / "wider_face_val"
    faces: dict[str, list[GroundTruthFace]] = defaultdict(list)
    for r in _read_csv(base / "faces.csv"):
        faces[r["image"]].append(
            GroundTruthFace(
                float(r["x"]),
                float(r["y"]),
                float(r["w"]),
                float(r["h"]),
                r["invalid"] == "1",
                r["in_easy"] == "1",
                r["in_medium"] == "1",
                r["in_hard"] == "1",
                r["perceived_skin"],
                r["perceived_gender"],
            )
        )
    return [
        WiderImage(base / r["image"], r["event"], r["is_crowd"] == "1", tuple(faces[r["image"]]))
        for r in _read_csv(base / "images.csv")
    ]
