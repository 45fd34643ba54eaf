"""Readers for the four documented dataset layouts (see the package docstring), and discovery.

Why a reader per layout rather than per dataset: ``regard eval`` must measure any operator's own
data, not only the dev sets, so each reader takes the generic form (``pairs.csv``, ``faces.csv``,
``labels.csv``, ``gallery/<identity>/``) and the official formats the public sets ship in
(LFW ``pairs.txt``, WIDER ``wider_face_val_bbx_gt.txt``). Group columns are whatever extra
columns a CSV has, so a new demographic attribute needs no code. ``regard.datasets`` stays the
fixed reader of the dev layout for the tests and benchmarks; these readers accept a superset.

Every reader returns paths as given (relative to the dataset folder, made absolute) and keeps the
file's order, which the ``--limit`` selections depend on to be reproducible.
"""

from __future__ import annotations

import csv
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}

# Where the dev data keeps each part, relative to the dev root (``regard eval --data``).
DEV_LAYOUT = {
    "verification": "verification/lfw",
    "detection": "detection/wider_face_val",
    "labels": "demographics/utkface",
    "gallery": "identification/bbt_faceapi",
}


class LayoutError(ValueError):
    """A dataset folder that does not follow its documented layout."""


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k is not None}
                for r in reader]
        return [c.strip() for c in reader.fieldnames or []], rows


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "y", "t"}


def _require(columns: Sequence[str], needed: Iterable[str], path: Path) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise LayoutError(f"{path}: missing column(s) {', '.join(missing)}")


# -- 1. verification ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class VerificationPair:
    image1: Path
    image2: Path
    same: bool
    fold: int | None
    identity1: str
    identity2: str
    groups1: Mapping[str, str] = field(default_factory=dict)
    groups2: Mapping[str, str] = field(default_factory=dict)


@dataclass
class VerificationSet:
    """Labelled pairs. ``identity_source`` says where identities came from (columns, names in
    ``pairs.txt``, or the image's parent folder), because the cross-identity analyses trust them."""

    root: Path
    source: str
    pairs: list[VerificationPair]
    group_columns: list[str]
    identity_source: str

    def images(self) -> list[Path]:
        """Distinct images in first-seen order."""
        return list(dict.fromkeys(p for pair in self.pairs for p in (pair.image1, pair.image2)))

    def identities(self) -> dict[Path, str]:
        out: dict[Path, str] = {}
        for p in self.pairs:
            out.setdefault(p.image1, p.identity1)
            out.setdefault(p.image2, p.identity2)
        return out

    def image_groups(self) -> dict[Path, dict[str, str]]:
        """Per image, its group labels (the first non-blank value seen for each column)."""
        out: dict[Path, dict[str, str]] = defaultdict(dict)
        for p in self.pairs:
            for image, groups in ((p.image1, p.groups1), (p.image2, p.groups2)):
                for col, value in groups.items():
                    if value and not out[image].get(col):
                        out[image][col] = value
        return {image: dict(out.get(image, {})) for image in self.images()}

    def identities_consistent(self) -> bool:
        """Do the identities agree with every pair's label? (Folder names can lie.)"""
        return all((p.identity1 == p.identity2) == p.same for p in self.pairs)


_PAIR_COLUMNS = {"fold", "official_fold", "image1", "image2", "same_identity", "identity1",
                 "identity2"}


def read_verification(folder: Path) -> VerificationSet:
    """``pairs.csv`` when present (it can carry group columns), else LFW's ``pairs.txt``."""
    folder = Path(folder)
    if (folder / "pairs.csv").is_file():
        return _read_pairs_csv(folder)
    if (folder / "pairs.txt").is_file():
        return _read_pairs_txt(folder)
    raise LayoutError(f"{folder}: no pairs.csv or pairs.txt")


def _read_pairs_csv(folder: Path) -> VerificationSet:
    path = folder / "pairs.csv"
    columns, rows = _read_csv(path)
    _require(columns, ("image1", "image2", "same_identity"), path)
    # Group columns come in twos: gender1/gender2 -> "gender".
    groups = [c[:-1] for c in columns
              if c.endswith("1") and c not in _PAIR_COLUMNS and c[:-1] + "2" in columns]
    has_ids = "identity1" in columns and "identity2" in columns
    pairs = []
    for r in rows:
        a, b = folder / r["image1"], folder / r["image2"]
        fold = int(r["fold"]) if r.get("fold", "").lstrip("-").isdigit() else None
        pairs.append(VerificationPair(
            a, b, _truthy(r["same_identity"]), fold,
            r["identity1"] if has_ids and r["identity1"] else a.parent.name,
            r["identity2"] if has_ids and r["identity2"] else b.parent.name,
            {g: r[g + "1"] for g in groups}, {g: r[g + "2"] for g in groups}))
    return VerificationSet(folder, "pairs.csv", pairs, groups,
                           "identity1/identity2 columns" if has_ids else "parent folder name")


def _lfw_image(folder: Path, name: str, number: str) -> Path:
    rel = Path(name) / f"{name}_{int(number):04d}.jpg"
    under_images = folder / "images" / rel
    return under_images if under_images.exists() or not (folder / rel).exists() else folder / rel


def _read_pairs_txt(folder: Path) -> VerificationSet:
    """LFW View 2: a header ``<folds> <pairs per half-fold>`` (or one number: one fold), then per
    fold that many same-person lines ``name i j`` and different-person lines ``n1 i n2 j``."""
    path = folder / "pairs.txt"
    lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise LayoutError(f"{path}: empty")
    header = [int(x) for x in lines[0]]
    folds, per = (header[0], header[1]) if len(header) >= 2 else (1, header[0])
    body = lines[1:]
    if len(body) != folds * per * 2:
        raise LayoutError(f"{path}: header says {folds} x 2 x {per} pairs, found {len(body)} lines")
    pairs = []
    for i, parts in enumerate(body):
        fold = i // (2 * per) + 1
        if len(parts) == 3:
            name, a, b = parts
            pairs.append(VerificationPair(_lfw_image(folder, name, a), _lfw_image(folder, name, b),
                                          True, fold if folds > 1 else None, name, name))
        elif len(parts) == 4:
            n1, a, n2, b = parts
            pairs.append(VerificationPair(_lfw_image(folder, n1, a), _lfw_image(folder, n2, b),
                                          False, fold if folds > 1 else None, n1, n2))
        else:
            raise LayoutError(f"{path}: line {i + 2} is neither 'name i j' nor 'n1 i n2 j'")
    return VerificationSet(folder, "pairs.txt", pairs, [], "names in pairs.txt")


# -- 2. detection -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class GroundTruthBox:
    x: float
    y: float
    w: float
    h: float
    invalid: bool = False
    # Official WIDER difficulty membership; None when the layout does not say.
    easy: bool | None = None
    medium: bool | None = None
    hard: bool | None = None
    groups: Mapping[str, str] = field(default_factory=dict)

    @property
    def ltrb(self) -> tuple[float, float, float, float]:
        return self.x, self.y, self.x + self.w, self.y + self.h


@dataclass(frozen=True, eq=False)
class DetectionImage:
    path: Path
    boxes: tuple[GroundTruthBox, ...]


@dataclass
class DetectionSet:
    root: Path
    source: str
    images: list[DetectionImage]
    group_columns: list[str]
    has_difficulty: bool


_FACE_COLUMNS = {"image", "face_idx", "x", "y", "w", "h", "blur", "expression", "illumination",
                 "invalid", "occlusion", "pose", "in_easy", "in_medium", "in_hard"}
GT_FILE = "wider_face_val_bbx_gt.txt"


def read_detection(folder: Path) -> DetectionSet:
    """``faces.csv`` when present (difficulty and group columns), else the official gt file."""
    folder = Path(folder)
    if (folder / "faces.csv").is_file():
        return _read_faces_csv(folder)
    if (folder / GT_FILE).is_file():
        return _read_wider_gt(folder)
    raise LayoutError(f"{folder}: no faces.csv or {GT_FILE}")


def _read_faces_csv(folder: Path) -> DetectionSet:
    path = folder / "faces.csv"
    columns, rows = _read_csv(path)
    _require(columns, ("image", "x", "y", "w", "h"), path)
    groups = [c for c in columns if c not in _FACE_COLUMNS]
    has_diff = all(c in columns for c in ("in_easy", "in_medium", "in_hard"))
    by_image: dict[str, list[GroundTruthBox]] = {}
    for r in rows:
        box = GroundTruthBox(
            float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"]),
            _truthy(r.get("invalid", "0")),
            _truthy(r["in_easy"]) if has_diff else None,
            _truthy(r["in_medium"]) if has_diff else None,
            _truthy(r["in_hard"]) if has_diff else None,
            {g: r.get(g, "") for g in groups})
        by_image.setdefault(r["image"], []).append(box)
    images = [DetectionImage(folder / name, tuple(b)) for name, b in by_image.items()]
    return DetectionSet(folder, "faces.csv", images, groups, has_diff)


def _read_wider_gt(folder: Path) -> DetectionSet:
    """Blocks of: image path (relative to ``images/``), face count, then one line per face
    ``x y w h blur expression illumination invalid occlusion pose`` (a count of 0 is followed by
    one all-zero line)."""
    path = folder / GT_FILE
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    images, i = [], 0
    while i < len(lines):
        name, count = lines[i], int(lines[i + 1])
        rows = lines[i + 2: i + 2 + max(count, 1)]
        i += 2 + max(count, 1)
        boxes = []
        for row in rows[:count]:
            v = row.split()
            boxes.append(GroundTruthBox(float(v[0]), float(v[1]), float(v[2]), float(v[3]),
                                        len(v) > 7 and v[7] == "1"))
        image = folder / "images" / name
        if not image.exists() and (folder / name).exists():
            image = folder / name
        images.append(DetectionImage(image, tuple(boxes)))
    return DetectionSet(folder, GT_FILE, images, [], False)


# -- 3. labelled faces ------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LabelledImage:
    path: Path
    identity: str | None
    age: float | None
    groups: Mapping[str, str]


@dataclass
class LabelSet:
    root: Path
    images: list[LabelledImage]
    group_columns: list[str]
    has_identity: bool
    has_age: bool


# Columns never used as groups: ids, codes that duplicate a named column, ages (filtered apart).
_NOT_GROUPS = {"image", "identity", "age", "age_bucket"}
MAX_GROUP_VALUES = 20


def read_labels(folder: Path, group_columns: Sequence[str] | None = None) -> LabelSet:
    """``labels.csv``: ``image``, optional ``identity`` and ``age`` (years), and group columns:
    by default every other column with 2 to 20 distinct values, except ``*_code`` columns."""
    folder = Path(folder)
    path = folder / "labels.csv"
    if not path.is_file():
        raise LayoutError(f"{folder}: no labels.csv")
    columns, rows = _read_csv(path)
    _require(columns, ("image",), path)
    if group_columns is None:
        group_columns = [
            c for c in columns
            if c not in _NOT_GROUPS and not c.endswith("_code")
            and 2 <= len({r[c] for r in rows if r[c]}) <= MAX_GROUP_VALUES
        ]
    else:
        _require(columns, group_columns, path)
    has_id, has_age = "identity" in columns, "age" in columns

    def age(value: str) -> float | None:
        try:
            return float(value)
        except ValueError:
            return None

    images = [LabelledImage(folder / r["image"], (r["identity"] or None) if has_id else None,
                            age(r["age"]) if has_age else None,
                            {g: r[g] for g in group_columns}) for r in rows]
    return LabelSet(folder, images, list(group_columns), has_id, has_age)


# -- 4. identification gallery -----------------------------------------------------------------
@dataclass
class Gallery:
    """Per identity, its images in order: the first with a face is enrolled, the rest are mated
    probes. ``nonmated`` are probes of people who are not enrolled."""

    root: Path
    source: str
    identities: dict[str, list[Path]]
    nonmated: list[Path]


def read_gallery(folder: Path) -> Gallery:
    """``gallery/<identity>/*`` (or the folder itself holding the identity folders)."""
    folder = Path(folder)
    base = folder / "gallery" if (folder / "gallery").is_dir() else folder
    identities = {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for d in sorted(base.iterdir()) if d.is_dir()
    }
    identities = {k: v for k, v in identities.items() if v}
    if not identities:
        raise LayoutError(f"{base}: no identity folders with images")
    return Gallery(folder, "gallery folder", identities, [])


def gallery_from_verification(vset: VerificationSet) -> Gallery:
    """Identities with >= 2 images: first enrolled, others mated probes; identities with one
    image: non-mated probes."""
    by_id: dict[str, list[Path]] = defaultdict(list)
    for image, identity in vset.identities().items():
        by_id[identity].append(image)
    enrolled = {k: sorted(v) for k, v in sorted(by_id.items()) if len(v) >= 2}
    single = [v[0] for k, v in sorted(by_id.items()) if len(v) == 1]
    return Gallery(vset.root, f"derived from verification ({vset.identity_source})", enrolled,
                   single)


# -- discovery ------------------------------------------------------------------------------------
def is_verification(folder: Path) -> bool:
    return (folder / "pairs.csv").is_file() or (folder / "pairs.txt").is_file()


def is_detection(folder: Path) -> bool:
    return (folder / "faces.csv").is_file() or (folder / GT_FILE).is_file()


def is_labels(folder: Path) -> bool:
    return (folder / "labels.csv").is_file()


def is_gallery(folder: Path) -> bool:
    return (folder / "gallery").is_dir()


_CHECKS = {"verification": is_verification, "detection": is_detection, "labels": is_labels,
           "gallery": is_gallery}


def discover(root: Path) -> dict[str, Path]:
    """The parts present under a data root: the dev sub-folders, or the root itself when it is
    one layout. Returns {part: folder} for verification, detection, labels, gallery."""
    root = Path(root)
    found: dict[str, Path] = {}
    for part, check in _CHECKS.items():
        for candidate in (root / DEV_LAYOUT[part], root):
            if candidate.is_dir() and check(candidate):
                found[part] = candidate
                break
    return found


# -- --limit selections ----------------------------------------------------------------------------
def limit_pairs(pairs: Sequence[VerificationPair], max_images: int | None
                ) -> list[VerificationPair]:
    """Pairs drawn round-robin over (fold, genuine/impostor) cells, in file order, while the
    distinct images stay <= ``max_images`` (so cross-validation keeps every fold)."""
    if max_images is None:
        return list(pairs)
    cells: dict[tuple[int | None, bool], list[VerificationPair]] = defaultdict(list)
    for p in pairs:
        cells[(p.fold, p.same)].append(p)
    queues = [iter(v) for v in cells.values()]
    images: set[Path] = set()
    chosen: list[VerificationPair] = []
    live = list(range(len(queues)))
    while live:
        for q in list(live):
            p = next(queues[q], None)
            if p is None:
                live.remove(q)
                continue
            new = {p.image1, p.image2} - images
            if len(images) + len(new) > max_images:
                live.remove(q)
                continue
            images |= new
            chosen.append(p)
    order = {id(p): i for i, p in enumerate(pairs)}
    return sorted(chosen, key=lambda p: order[id(p)])


def limit_labels(images: Sequence[LabelledImage], max_images: int | None) -> list[LabelledImage]:
    """At most ``max_images``, round-robin over group cells so every cell keeps its share."""
    if max_images is None or len(images) <= max_images:
        return list(images)
    cells: dict[tuple[str, ...], list[LabelledImage]] = defaultdict(list)
    for im in images:
        cells[tuple(im.groups.values())].append(im)
    chosen: list[LabelledImage] = []
    for batch in itertools.zip_longest(*cells.values()):
        for im in batch:
            if im is not None and len(chosen) < max_images:
                chosen.append(im)
    keep = {id(im) for im in chosen}
    return [im for im in images if id(im) in keep]


def limit_gallery(gallery: Gallery, max_images: int | None) -> Gallery:
    """Whole identities in order while the total stays <= ``max_images``; non-mated probes fill
    up to a fifth of the cap."""
    if max_images is None:
        return gallery
    kept: dict[str, list[Path]] = {}
    total = 0
    nonmated_cap = min(len(gallery.nonmated), max_images // 5) if gallery.nonmated else 0
    for name, paths in gallery.identities.items():
        if total + len(paths) > max_images - nonmated_cap:
            break
        kept[name] = paths
        total += len(paths)
    return Gallery(gallery.root, gallery.source, kept, gallery.nonmated[:nonmated_cap])
