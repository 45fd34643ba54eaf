"""MobileFaceNet against dlib's ResNet (ONNX port, the Engine's default) on the LFW dev pairs.

    REGARD_DATA=... .venv/bin/python bench/mobilefacenet.py [--detector NAME] [--limit N]
        [--rotate DEG] [--refresh] [--json OUT] [--measure-dlib5-template]

Each image's central face (``_common.central_box_index``: nearest the centre, ties to the larger)
is found once by the detector (default: the best installed, as the Engine) and dlib's 5-point
predictor (``landmarks.Aligner``, as the Engine); the landmarks are cached in ``bench/out``. Then
every system embeds the same faces:

- ``dlib``: the Engine's path, ``Aligner.chip`` (150x150) -> ``OnnxFaceEmbedder``; Euclidean
  distance of raw descriptors;
- ``mfn kp``: MobileFaceNet on ArcFace chips from the detector's 5 keypoints;
- ``mfn dlib5``: MobileFaceNet on chips from dlib's 5 points onto ``DLIB5_TEMPLATE`` (the path for
  the dlib detectors, which give no keypoints);
- ``mfn auto``: ``mobilefacenet.face_chip``: keypoints when they agree with dlib's eyes, else dlib5.
``+mirror``: each chip and its horizontal flip, combined - MobileFaceNet: mean of the two unit
vectors, renormalised; dlib: mean of the two raw descriptors (the space its distance thresholds
live in; dlib's own LFW protocol averages jittered descriptors the same way).
MobileFaceNet's unit vectors are compared by Euclidean distance, which orders like cosine.

Figures, with a pair whose image has no face scored "different" at every threshold:
- 3-fold cross-validated accuracy (threshold best on two folds applied to the third);
- TAR at FMR 1e-2 / 1e-3, with the threshold set on (a) the 900 impostor pairs (at 1e-3 that is
  zero false accepts of 900) and (b) every cross-identity pair of the dev images (millions of
  comparisons, finer FMR resolution); TAR over the 900 genuine pairs;
- ms/face: chip cutting, and embedding at batch 1 (200 faces) and batch 32 (all faces), with ONNX
  Runtime's default threads (both cores), run one after the other in this process.
``--rotate DEG``: every image turned in its plane by +DEG or -DEG (alternating in path order; same
canvas, bilinear) before detection: how each alignment copes with tilted heads.
``--measure-dlib5-template``: print where dlib's 5 points land in keypoint-aligned ArcFace chips
(the ``arcface_align.DLIB5_TEMPLATE`` constant) and exit.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, central_box_index, print_table, require_data, write_json  # noqa: E402

from regard import imaging  # noqa: E402
from regard.datasets import Pair, lfw_identity, lfw_pairs  # noqa: E402
from regard.evaluation.verification import accept_at, best_threshold  # noqa: E402
from regard.vision import arcface_align  # noqa: E402
from regard.vision.arcface_align import (  # noqa: E402
    ARCFACE_TEMPLATE,
    arcface_chip,
    dlib5_chip,
    similarity_transform,
)
from regard.vision.detect import create_detector  # noqa: E402
from regard.vision.dlib_resnet_onnx import OnnxFaceEmbedder  # noqa: E402
from regard.vision.landmarks import Aligner, Landmarks  # noqa: E402
from regard.vision.mobilefacenet import (  # noqa: E402
    MobileFaceNetEmbedder,
    face_chip,
    keypoints_agree,
)

FMRS = (1e-2, 1e-3)
TIMING_SINGLE = 200


# -- landmarks ------------------------------------------------------------------------------------
def select_pairs(pairs: list[Pair], limit: int | None) -> list[Pair]:
    """The first ceil(limit/6) pairs of each (fold, genuine/impostor) cell (as verification.py)."""
    if limit is None:
        return pairs
    per_cell, taken, out = math.ceil(limit / 6), {}, []
    for p in pairs:
        key = (p.fold, p.same)
        if taken.get(key, 0) < per_cell:
            taken[key] = taken.get(key, 0) + 1
            out.append(p)
    return out


def load(path: Path, index: int, rotate: float) -> np.ndarray:
    rgb = imaging.load(path).pixels
    if not rotate:
        return rgb
    from PIL import Image

    angle = rotate if index % 2 == 0 else -rotate
    return np.asarray(Image.fromarray(rgb).rotate(angle, resample=Image.Resampling.BILINEAR))


def find_landmarks(paths: list[Path], detector_name: str | None, refresh: bool,
                   rotate: float = 0.0) -> dict:
    """Per image: found, box, detector keypoints (NaN when none), dlib's 5 points and the dlib box
    (rect) of the central face; cached in bench/out."""
    detector = create_detector(detector_name)
    OUT.mkdir(exist_ok=True)
    suffix = f"_rot{rotate:g}" if rotate else ""
    cache = OUT / f"mfn_landmarks_{detector.name}_{len(paths)}{suffix}.npz"
    keys = np.array([str(p) for p in paths])
    if cache.exists() and not refresh:
        data = dict(np.load(cache, allow_pickle=False))
        if data["keys"].shape == keys.shape and (data["keys"] == keys).all():
            data["detector"] = detector.name
            return data
    aligner = Aligner()
    n = len(paths)
    out = {"keys": keys, "found": np.zeros(n, bool), "box": np.full((n, 4), np.nan),
           "keypoints": np.full((n, 5, 2), np.nan), "dlib5": np.full((n, 5, 2), np.nan),
           "rect": np.zeros((n, 4), np.int64)}
    t0 = time.perf_counter()
    for i, path in enumerate(paths):
        rgb = load(path, i, rotate)
        dets = detector.detect(rgb)
        j = central_box_index([(d.left, d.top, d.right, d.bottom) for d in dets],
                              rgb.shape[1], rgb.shape[0])
        if j is None:
            continue
        det = dets[j]
        marks = aligner.landmarks(rgb, det)
        out["found"][i] = True
        out["box"][i] = (det.left, det.top, det.right, det.bottom)
        if det.keypoints is not None:
            out["keypoints"][i] = det.keypoints
        out["dlib5"][i] = marks.dlib5
        out["rect"][i] = marks.rect
    np.savez(cache, **out)
    print(f"{detector.name}: landmarks of {n} images ({out['found'].sum()} with a face) in "
          f"{time.perf_counter() - t0:.1f} s -> {cache}", file=sys.stderr)
    out["detector"] = detector.name
    return out


def agreeing(lm: dict) -> np.ndarray:
    """Images whose keypoint eyes agree with dlib's (``mobilefacenet.keypoints_agree``)."""
    return np.array([bool(f) and not np.isnan(k).any() and keypoints_agree(k, d)
                     for f, k, d in zip(lm["found"], lm["keypoints"], lm["dlib5"])])


def dlib5_template(lm: dict) -> tuple[np.ndarray, int]:
    """Mean position of dlib's 5 points in keypoint-aligned ArcFace chips, over agreeing faces."""
    ok = agreeing(lm)
    pts = []
    for k, d in zip(lm["keypoints"][ok], lm["dlib5"][ok]):
        m = similarity_transform(k, ARCFACE_TEMPLATE)
        pts.append(d @ m[:, :2].T + m[:, 2])
    return np.mean(pts, axis=0), int(ok.sum())


def alignment_residual(lm: dict) -> dict | None:
    """How far the dlib5 chip's frame is from the keypoint chip's: the keypoints mapped through
    the dlib5 transform vs the ArcFace template, mean over the 5 points, in chip pixels."""
    if not np.any(arcface_align.DLIB5_TEMPLATE) or np.isnan(lm["keypoints"]).all():
        return None
    ok = agreeing(lm)
    err = []
    for k, d in zip(lm["keypoints"][ok], lm["dlib5"][ok]):
        m = similarity_transform(d, arcface_align.DLIB5_TEMPLATE)
        err.append(np.linalg.norm(k @ m[:, :2].T + m[:, 2] - ARCFACE_TEMPLATE, axis=1).mean())
    err = np.array(err)
    return {"faces": len(err), "median_px": float(np.median(err)),
            "p95_px": float(np.percentile(err, 95)), "max_px": float(err.max())}


# -- chips and embeddings -------------------------------------------------------------------------
def cut_chips(paths: list[Path], lm: dict, aligner: Aligner, rotate: float = 0.0
              ) -> tuple[dict, dict]:
    """Chips per alignment (rows for the images with a face) and ms/face to cut each."""
    idx = np.flatnonzero(lm["found"])
    has_kp = not np.isnan(lm["keypoints"][idx]).any()
    makers = {
        "dlib150": lambda rgb, i: aligner.chip(rgb, Landmarks({}, lm["dlib5"][i],
                                                              tuple(lm["rect"][i]))),
        "dlib5": lambda rgb, i: dlib5_chip(rgb, lm["dlib5"][i]),
        "auto": lambda rgb, i: face_chip(rgb, lm["keypoints"][i] if has_kp else None,
                                         lm["dlib5"][i]),
    }
    if has_kp:
        makers["kp"] = lambda rgb, i: arcface_chip(rgb, lm["keypoints"][i])
    chips = {k: [] for k in makers}
    spent = {k: 0.0 for k in makers}
    for i in idx:
        rgb = load(paths[i], i, rotate)
        for k, make in makers.items():
            t = time.perf_counter()
            chips[k].append(make(rgb, i))
            spent[k] += time.perf_counter() - t
    return ({k: np.stack(v) for k, v in chips.items()},
            {k: 1000 * v / max(len(idx), 1) for k, v in spent.items()})


def time_embedding(embed, chips: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(embeddings of all chips at batch 32, ms/face at batch 1 over the first 200, ms/face at
    batch 32 over all)."""
    embed(chips[:2])  # warm-up
    t = time.perf_counter()
    single = chips[:TIMING_SINGLE]
    for c in single:
        embed(c[None])
    ms1 = 1000 * (time.perf_counter() - t) / max(len(single), 1)
    t = time.perf_counter()
    out = np.concatenate([embed(chips[i:i + 32]) for i in range(0, len(chips), 32)])
    ms32 = 1000 * (time.perf_counter() - t) / max(len(chips), 1)
    return out, ms1, ms32


def mfn_mirror(embedder: MobileFaceNetEmbedder, chips: np.ndarray, plain: np.ndarray
               ) -> np.ndarray:
    flipped = embedder.embed(chips[:, :, ::-1])
    v = plain + flipped
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# -- figures --------------------------------------------------------------------------------------
def cv_accuracy(dist: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    accs = []
    for k in sorted(set(folds.tolist())):
        train, test = folds != k, folds == k
        thr = best_threshold(dist[train], same[train])
        accs.append(float((accept_at(dist[test], thr) == same[test]).mean()))
    return float(np.mean(accs)), float(np.std(accs))


def tar_at_fmr(genuine: np.ndarray, impostor: np.ndarray, n_impostor: int, fmr: float) -> float:
    """TAR (NaN genuine distances never match) at the threshold admitting at most
    floor(fmr * n_impostor) impostors (NaN impostors never match, counted in n_impostor)."""
    allowed = int(math.floor(fmr * n_impostor))
    imp = np.sort(impostor[~np.isnan(impostor)])
    thr = np.inf if allowed >= len(imp) else imp[allowed]  # accept d < thr
    return float((np.nan_to_num(genuine, nan=np.inf) < thr).mean())


def cross_identity_distances(emb: np.ndarray, identities: np.ndarray) -> tuple[np.ndarray, int]:
    """Distances of every cross-identity pair of images with an embedding, and the number of
    cross-identity pairs including images without one."""
    n = len(emb)
    iu = np.triu_indices(n, 1)
    cross = identities[iu[0]] != identities[iu[1]]
    ok = ~np.isnan(emb[:, 0])
    e = np.nan_to_num(emb.astype(np.float64))
    sq = (e**2).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2 * e @ e.T
    d = np.sqrt(np.maximum(d2[iu], 0))
    keep = cross & ok[iu[0]] & ok[iu[1]]
    return d[keep], int(cross.sum())


def evaluate(name: str, emb: np.ndarray, pairs: list[Pair], paths: list[Path],
             identities: np.ndarray) -> dict:
    index = {p: i for i, p in enumerate(paths)}
    a = emb[[index[p.image1] for p in pairs]].astype(np.float64)
    b = emb[[index[p.image2] for p in pairs]].astype(np.float64)
    dist = np.linalg.norm(a - b, axis=1)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    mean, std = cv_accuracy(dist, same, folds)
    cross, n_cross = cross_identity_distances(emb, identities)
    row = {"system": name, "cv_accuracy": mean, "cv_std": std,
           "failed_pairs": int(np.isnan(dist).sum()), "impostor_pairs": int((~same).sum()),
           "cross_identity_pairs": n_cross}
    for f in FMRS:
        row[f"tar_pairs@{f:g}"] = tar_at_fmr(dist[same], dist[~same], int((~same).sum()), f)
        row[f"tar_all@{f:g}"] = tar_at_fmr(dist[same], cross, n_cross, f)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detector", help="detector backend (default: the best installed)")
    ap.add_argument("--limit", type=int, help="about N pairs, balanced over folds and labels")
    ap.add_argument("--rotate", type=float, default=0.0,
                    help="turn the images by +-DEG (alternating) before detection")
    ap.add_argument("--refresh", action="store_true", help="recompute the cached landmarks")
    ap.add_argument("--json", metavar="OUT", help="write the figures as JSON")
    ap.add_argument("--measure-dlib5-template", action="store_true",
                    help="print DLIB5_TEMPLATE measured on these faces and exit")
    args = ap.parse_args()
    root = require_data()
    pairs = select_pairs(lfw_pairs(root), args.limit)
    paths = sorted({p.image1 for p in pairs} | {p.image2 for p in pairs})
    lm = find_landmarks(paths, args.detector, args.refresh, args.rotate)
    has_kp = not np.isnan(lm["keypoints"][lm["found"]]).any()
    if args.measure_dlib5_template:
        if not has_kp:
            sys.exit(f"{lm['detector']} gives no keypoints: use a keypoint detector")
        tpl, n = dlib5_template(lm)
        print(f"# mean over {n} {lm['detector']} faces whose keypoint eyes agree with dlib's")
        print("DLIB5_TEMPLATE = np.array(\n    [" + ", ".join(
            f"[{x:.4f}, {y:.4f}]" for x, y in tpl) + "], dtype=np.float64)")
        return
    print(f"{len(pairs)} pairs, {len(paths)} images, detector {lm['detector']}; "
          f"{lm['found'].sum()} images with a face", file=sys.stderr)
    found = lm["found"]
    aligner = Aligner()
    chips, chip_ms = cut_chips(paths, lm, aligner, args.rotate)
    identities = np.array([lfw_identity(p) for p in paths])

    def full(rows: np.ndarray) -> np.ndarray:
        out = np.full((len(paths), rows.shape[1]), np.nan, dtype=np.float32)
        out[found] = rows
        return out

    results, timing = [], []
    dlib = OnnxFaceEmbedder(max_batch=32)
    emb, ms1, ms32 = time_embedding(dlib.embed, chips["dlib150"])
    timing.append(["dlib ResNet (ONNX)", "150", chip_ms["dlib150"], ms1, ms32])
    flipped = dlib.embed(chips["dlib150"][:, :, ::-1])
    results.append(evaluate("dlib", full(emb), pairs, paths, identities))
    results.append(evaluate("dlib +mirror", full((emb + flipped) / 2), pairs, paths, identities))

    mfn = MobileFaceNetEmbedder(max_batch=32)
    alignments = (["kp"] if has_kp else []) + ["dlib5"] + (["auto"] if has_kp else [])
    for k in alignments:
        if k == alignments[0]:
            emb, ms1, ms32 = time_embedding(mfn.embed, chips[k])
            timing.append(["MobileFaceNet (ONNX)", "112", chip_ms[k], ms1, ms32])
        else:
            emb = mfn.embed(chips[k])
        results.append(evaluate(f"mfn {k}", full(emb), pairs, paths, identities))
        results.append(evaluate(f"mfn {k} +mirror", full(mfn_mirror(mfn, chips[k], emb)),
                                pairs, paths, identities))

    n_agree = int(agreeing(lm).sum())
    turned = f", turned by +-{args.rotate:g} degrees" if args.rotate else ""
    print(f"\nLFW dev: {len(pairs)} pairs (folds 1-3), {len(paths)} images{turned}, detector "
          f"{lm['detector']}: {found.sum()} with a face"
          + (f", keypoints agree with dlib's eyes on {n_agree} (mfn auto uses dlib5 on the "
             f"other {int(found.sum()) - n_agree})" if has_kp else "")
          + f"; {results[0]['cross_identity_pairs']} cross-identity image pairs\n")
    pct = lambda x: f"{100 * x:.2f}"  # noqa: E731
    print_table(["system", "CV acc %", "std %", "failed pairs"]
                + [f"TAR@FMR{f:g} pairs %" for f in FMRS] + [f"TAR@FMR{f:g} all %" for f in FMRS],
                [[r["system"], pct(r["cv_accuracy"]), pct(r["cv_std"]), r["failed_pairs"]]
                 + [pct(r[f"tar_pairs@{f:g}"]) for f in FMRS]
                 + [pct(r[f"tar_all@{f:g}"]) for f in FMRS] for r in results])
    print(f"\nms/face on this machine (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; mirror doubles the embedding time)\n")
    print_table(["model", "chip", "cut chip ms", "embed ms batch 1", "embed ms batch 32"], timing,
                digits=2)
    residual = alignment_residual(lm)
    if residual:
        print(f"\ndlib5 chip frame vs keypoint chip frame, {residual['faces']} agreeing faces: "
              f"keypoints land {residual['median_px']:.2f} px (median; 95th pct "
              f"{residual['p95_px']:.2f}, max {residual['max_px']:.2f}) from the template")
    write_json(args.json, {
        "benchmark": "mobilefacenet", "dataset": "LFW dev pairs, folds 1-3",
        "pairs": len(pairs), "images": len(paths), "detector": lm["detector"],
        "rotate_degrees": args.rotate,
        "images_with_face": int(found.sum()), "keypoints_agree": n_agree if has_kp else None,
        "results": results,
        "timing_ms_per_face": [dict(zip(["model", "chip", "cut", "batch1", "batch32"], t))
                               for t in timing],
        "load_average": os.getloadavg()[0], "dlib5_residual": residual,
    })


if __name__ == "__main__":
    main()
