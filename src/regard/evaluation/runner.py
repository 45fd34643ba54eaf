"""Run every evaluation the given data allows and assemble the report (a JSON-ready dict).

Why one runner: the CLI, the tests and a later CI job must produce the same report from the same
data, and the report must say exactly what was measured with what (data paths and counts, detector,
embedder, face model version, calibration table, options, date), so that a published figure can be
traced and reproduced. The model work happens once for all parts (``embeddings.analyse_images``),
then each part's statistics are computed from the cached per-image results. Rendering is elsewhere
(``render``): this module returns numbers only.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

import regard
from regard.analysis import MAX_FACES
from regard.errors import InvalidParameterError
from regard.evaluation import detection as det
from regard.evaluation import groups as grp
from regard.evaluation import identification as ident
from regard.evaluation import layouts
from regard.evaluation import verification as ver
from regard.evaluation.embeddings import (
    DETECT,
    EMBED,
    Analysed,
    ImageEmbedding,
    analyse_images,
    cache_names,
    embedding_matrix,
)
from regard.vision.detect import available_detectors, default_detector_name
from regard.vision.packs import default_pack

REPORT_SCHEMA = 1
EMBEDDER = "onnx"


@dataclass
class EvalConfig:
    """Which data to measure, and how. Parts left None are skipped."""

    verification: Path | None = None
    detection: Path | None = None
    labels: Path | None = None
    gallery: Path | None = None
    min_age: float | None = 18.0
    limit: int | None = None
    workers: int | None = None
    cache: Path | None = None
    detector: str | None = None
    data_root: Path | None = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_paths(cls, data: Path | None = None, **explicit: Any) -> "EvalConfig":
        """Parts found under ``data`` (``layouts.discover``), overridden by explicit folders."""
        found = layouts.discover(data) if data is not None else {}
        parts = {k: explicit.pop(k, None) or found.get(k)
                 for k in ("verification", "detection", "labels", "gallery")}
        return cls(**parts, data_root=data, **explicit)

    def parts(self) -> dict[str, Path]:
        return {k: Path(v) for k, v in (("verification", self.verification),
                                        ("detection", self.detection),
                                        ("labels", self.labels),
                                        ("gallery", self.gallery)) if v is not None}


# Progress: start(kind, total) once per kind, then advance(kind) per image.
ProgressStart = Callable[[str, int], None]
ProgressAdvance = Callable[[str], None]


def resolve_detector(name: str | None) -> str:
    installed = available_detectors()
    if name is None:
        return default_detector_name()
    if name not in installed:
        raise InvalidParameterError(
            f"Detector {name!r} is not available here; installed: {', '.join(installed) or 'none'}")
    return name


def model_info(detector: str) -> dict[str, Any]:
    pack = default_pack()
    table = pack.calibration
    anchors = [{"similarity": float(s), "distance": float(d)}
               for d, s in zip(table.distances, table.similarities)]
    meta_anchors = {a["similarity"]: a for a in table.meta.get("anchors", [])}
    for a in anchors:
        extra = meta_anchors.get(a["similarity"], {})
        a.update({k: extra[k] for k in ("target_fmr", "set_by", "method") if k in extra})
    return {
        "regard_version": regard.__version__,
        "detector": detector,
        "embedder": f"{pack.name} ({pack.runtime}), {pack.embedding_size}-d, "
                    f"{pack.alignment}",
        "face_model_version": pack.version,
        "max_faces_per_image": MAX_FACES,
        "calibration": {
            "path": str(pack.calibration_file),
            "sha256": _sha256(pack.calibration_file),
            "measured_on": table.meta.get("measured_on"),
            "data": table.meta.get("data"),
            "anchors": anchors,
        },
    }


def _sha256(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _face_counts(paths: list[Path], emb: dict[Path, ImageEmbedding]) -> dict[str, Any]:
    errors = [f"{p.name}: {emb[p].error}" for p in paths if emb[p].error]
    return {
        "images": len(paths),
        "images_without_face": sum(emb[p].embedding is None and not emb[p].error for p in paths),
        "images_failed": len(errors),
        "images_with_several_faces": sum(emb[p].faces > 1 for p in paths),
        "errors": errors[:20],
        "face_rule": "the face nearest the image centre (relative to its size), ties to the larger",
    }


def run(config: EvalConfig, start: ProgressStart | None = None,
        advance: ProgressAdvance | None = None) -> dict[str, Any]:
    """Measure every part present in ``config``; returns the report dict."""
    t0 = time.perf_counter()
    parts = config.parts()
    if not parts:
        raise InvalidParameterError("No dataset given: pass --data or a part folder")
    detector = resolve_detector(config.detector)
    models = model_info(detector)
    limit = config.limit

    # -- read the layouts ------------------------------------------------------------------
    datasets: dict[str, Any] = {}
    vset = dset = lset = gallery = None
    pairs: list[layouts.VerificationPair] = []
    if "verification" in parts:
        vset = layouts.read_verification(parts["verification"])
        pairs = layouts.limit_pairs(vset.pairs, limit)
        vset = layouts.VerificationSet(vset.root, vset.source, pairs, vset.group_columns,
                                       vset.identity_source)
        datasets["verification"] = {
            "path": str(vset.root), "format": vset.source, "pairs": len(pairs),
            "images": len(vset.images()), "identities_from": vset.identity_source,
            "group_columns": vset.group_columns}
    if "detection" in parts:
        dset = layouts.read_detection(parts["detection"])
        if limit is not None:
            dset.images = dset.images[:limit]
        datasets["detection"] = {
            "path": str(dset.root), "format": dset.source, "images": len(dset.images),
            "faces": sum(len(im.boxes) for im in dset.images),
            "group_columns": dset.group_columns, "difficulty": dset.has_difficulty}
    if "labels" in parts:
        lset = layouts.read_labels(parts["labels"])
        lset.images = layouts.limit_labels(lset.images, limit)
        datasets["labels"] = {
            "path": str(lset.root), "format": "labels.csv", "images": len(lset.images),
            "group_columns": lset.group_columns, "identity": lset.has_identity,
            "age": lset.has_age}
    if "gallery" in parts:
        gallery = layouts.limit_gallery(layouts.read_gallery(parts["gallery"]), limit)
        datasets["gallery"] = {
            "path": str(gallery.root), "format": "gallery/<identity>/*",
            "identities": len(gallery.identities),
            "images": sum(len(v) for v in gallery.identities.values())}

    # -- model work, once ------------------------------------------------------------------
    embed_paths: list[Path] = []
    if vset is not None:
        embed_paths += vset.images()
    if lset is not None:
        embed_paths += [im.path for im in lset.images]
    if gallery is not None:
        embed_paths += ident.gallery_paths(gallery)
    embed_paths = list(dict.fromkeys(embed_paths))
    detect_paths = [im.path for im in dset.images] if dset is not None else []
    if start:
        if embed_paths:
            start(EMBED, len(embed_paths))
        if detect_paths:
            start(DETECT, len(detect_paths))
    t_models = time.perf_counter()
    analysed: Analysed = analyse_images(
        embed_paths, detect_paths, engine_kwargs={"detector": detector},
        workers=config.workers, cache_dir=config.cache,
        cache_files=cache_names(detector, EMBEDDER, default_pack().version, MAX_FACES),
        on_result=advance)
    model_seconds = time.perf_counter() - t_models
    emb = analysed.embeddings

    report: dict[str, Any] = {
        "report": "regard eval",
        "schema": REPORT_SCHEMA,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "models": models,
        "options": {"min_age": config.min_age, "limit": limit, "workers": config.workers,
                    "cache": str(config.cache) if config.cache else None,
                    "data_root": str(config.data_root) if config.data_root else None},
        "datasets": datasets,
        "notes": list(config.notes),
        "groups": [],
        "identification": [],
    }
    calib_data = models["calibration"]["data"]
    if calib_data:
        report["notes"].append(
            f"The similarity calibration was measured on: {calib_data}. Figures on that same "
            "data are in-sample for the threshold mapping; publish figures from held-out data.")
    report["notes"].append(
        "95% intervals are Wilson score intervals; pairs that share images are not independent, "
        "so pair-based intervals (TAR, FMR) are narrower than they should be.")

    # -- verification ------------------------------------------------------------------------
    if vset is not None:
        paths = vset.images()
        matrix = embedding_matrix(paths, emb)
        dist = ver.pair_distances([p.image1 for p in pairs], [p.image2 for p in pairs], paths,
                                  matrix)
        same = np.array([p.same for p in pairs], dtype=bool)
        found = ~np.isnan(matrix[:, 0])
        identities = vset.identities()
        consistent = vset.identities_consistent()
        all_impostor = None
        if consistent:
            all_impostor = grp.impostor_distances(
                matrix[found], [identities[p] for p, f in zip(paths, found) if f])
        else:
            report["notes"].append(
                f"Verification identities ({vset.identity_source}) contradict some pair labels: "
                "the cross-identity analyses and the derived identification were skipped.")
        section = {"dataset": datasets["verification"], **_face_counts(paths, emb),
                   **ver.evaluate(dist, same, [p.fold for p in pairs],
                                  all_impostor=all_impostor)}
        if vset.group_columns:
            section["by_group"] = ver.by_group(dist, same, [p.groups1 for p in pairs],
                                               [p.groups2 for p in pairs], vset.group_columns)
        report["verification"] = section

        if consistent and vset.group_columns:
            image_groups = vset.image_groups()
            members = [grp.Member(i, identities[p], image_groups.get(p, {}), None)
                       for i, p in enumerate(paths)]
            report["groups"].append({
                "name": f"verification: {vset.root.name} (all cross-identity pairs)",
                "path": str(vset.root),
                **grp.evaluate(matrix, found, members, vset.group_columns, identified=True,
                               min_age=None, all_impostor=all_impostor)})
        del all_impostor
        if consistent:
            derived = layouts.gallery_from_verification(vset)
            if derived.identities:
                report["identification"].append(
                    {"name": f"derived from verification: {vset.root.name}",
                     **ident.evaluate(derived, emb)})

    # -- labelled faces -------------------------------------------------------------------------
    if lset is not None:
        paths = [im.path for im in lset.images]
        matrix = embedding_matrix(paths, emb)
        found = ~np.isnan(matrix[:, 0])
        members = [grp.Member(i, im.identity, dict(im.groups), im.age)
                   for i, im in enumerate(lset.images)]
        report["groups"].append({
            "name": f"labels: {lset.root.name}", "path": str(lset.root),
            "face_counts": _face_counts(paths, emb),
            **grp.evaluate(matrix, found, members, lset.group_columns,
                           identified=lset.has_identity, min_age=config.min_age)})

    # -- gallery ---------------------------------------------------------------------------------
    if gallery is not None:
        report["identification"].insert(0, {"name": f"gallery: {gallery.root.name}",
                                            **ident.evaluate(gallery, emb)})

    # -- detection ---------------------------------------------------------------------------------
    if dset is not None:
        report["detection"] = {
            "dataset": datasets["detection"],
            **det.evaluate(dset.images, [analysed.detections[im.path] for im in dset.images],
                           dset.group_columns, dset.has_difficulty)}

    report["timing"] = {
        "seconds_total": round(time.perf_counter() - t0, 2),
        "seconds_models": round(model_seconds, 2),
        "images_computed": analysed.computed,
        "images_from_cache": len(embed_paths) + len(detect_paths) - analysed.computed,
    }
    return report
