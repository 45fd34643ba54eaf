"""Readers for the evaluation data layouts Regard measures itself on.

The data is research-licensed and never shipped: it is read from ``REGARD_DATA`` (default
``../shared/data/dev`` next to the checkout, then ``/work/shared/data/dev``). Layouts:

- ``verification/lfw/``: ``pairs.csv`` (fold, official_fold, image1, image2, same_identity,
  gender1, gender2) and ``images/<name>/<name>_NNNN.jpg`` (LFW);
- ``verification/lfw/race_labels.csv``: (identity, group, labels_raw, single_label), a race label
  per LFW identity (usc-sail/mica-race-from-face), joined on the LFW folder name;
- ``demographics/utkface/``: ``labels.csv`` (image, age, age_bucket, gender_code, gender,
  race_code, race) and ``images/``; file names ``age_gender_race_yyyymmddHHMMSSFFF.jpg.chip.jpg``;
- ``demographics/london_face_set/``: ``labels.csv`` (identity, image, group, gender, age,
  expression) and ``images/<identity>/`` (Face Research Lab London Set: 2 studio photos per
  person, self-reported ethnicity);
- ``detection/wider_face_val/``: ``faces.csv`` (one row per ground-truth box with WIDER
  attributes, easy/medium/hard membership, optional perceived gender/age/skin), ``images.csv``
  (per image, incl. ``is_crowd``) and ``images/<event>/<file>.jpg``.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from regard import config


def data_root() -> Path | None:
    """The evaluation data folder, or None when this machine has none (tests then skip)."""
    configured = config.current().data
    candidates = [configured] if configured is not None else []
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


def lfw_race_labels(root: Path, single_only: bool = True) -> dict[str, str]:
    """LFW identity (folder name) -> race group (Caucasian, African, East_Asian, Indian, Latino,
    ...) from ``race_labels.csv``; ``single_only`` keeps the identities with one label (the file
    also holds multi-label entries such as ``african,caucasian``). Most identities are unlabelled:
    absent from the result."""
    path = root / "verification" / "lfw" / "race_labels.csv"
    return {r["identity"]: r["group"] for r in _read_csv(path)
            if not single_only or r["single_label"] == "1"}


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


_UTK_DATETIME = re.compile(r"^\d+_\d+_\d+_(\d{17})\.")
# Two UTKFace images whose file-name datetimes are less than this apart are treated as possibly
# one person (not an impostor pair): UTKFace has no identity labels, and images that entered the
# set together were collected together, at times several photos of one person.
UTKFACE_SAME_SESSION = timedelta(hours=1)


def utkface_datetime(image: Path | str) -> datetime | None:
    """The datetime field of a UTKFace file name (``age_gender_race_yyyymmddHHMMSSFFF``, the last
    three digits milliseconds): when the image was collected into UTKFace, per its authors; None
    when the name has no such field or it is not a valid date."""
    m = _UTK_DATETIME.match(Path(image).name)
    if m is None:
        return None
    digits = m.group(1)
    try:
        return datetime.strptime(digits[:14], "%Y%m%d%H%M%S").replace(
            microsecond=int(digits[14:]) * 1000)
    except ValueError:
        return None


def utkface_close_pairs(faces: list[LabelledFace],
                        gap: timedelta = UTKFACE_SAME_SESSION) -> set[tuple[int, int]]:
    """Index pairs (i < j) of ``faces`` whose file-name datetimes are less than ``gap`` apart:
    the pairs the cleaned UTKFace impostor set drops. A face without a datetime is never close
    to another (its pairs are kept)."""
    timed = sorted((t, i) for i, f in enumerate(faces)
                   if (t := utkface_datetime(f.image)) is not None)
    out: set[tuple[int, int]] = set()
    for a, (ta, ia) in enumerate(timed):
        for tb, ib in timed[a + 1:]:
            if tb - ta >= gap:
                break
            out.add((min(ia, ib), max(ia, ib)))
    return out


# -- Face Research Lab London Set -------------------------------------------------------------
@dataclass(frozen=True)
class IdentifiedFace:
    """An image of a known person with self-reported attributes."""

    image: Path
    identity: str
    group: str
    gender: str
    age: int | None  # None where not reported ("NA")
    expression: str


def london_face_set(root: Path) -> list[IdentifiedFace]:
    """The London set's images (2 per identity: neutral, smiling), in ``labels.csv`` order."""
    base = root / "demographics" / "london_face_set"
    return [
        IdentifiedFace(base / r["image"], r["identity"], r["group"], r["gender"],
                       int(r["age"]) if r["age"].strip().isdigit() else None, r["expression"])
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
