"""1:1 verification on labelled pairs: TAR/FNMR and FMR at calibrated thresholds, cross-validated
accuracy, ROC/DET curves, error rates against the similarity threshold, and TAR by group.

Why these figures: a Rekognition user picks a ``SimilarityThreshold``; what they need to know is,
at that threshold, how often the same person is rejected (FNMR = 1 - TAR) and how often two
different people are accepted (FMR), with how many pairs stand behind each number. The
cross-validated accuracy is the figure LFW results are usually quoted with (the threshold is
chosen on the other folds, never on the fold it is scored on), kept for comparison with the
literature, not as an operating point.

Rules (the same as ``bench/verification.py``, whose logic moved here):
- a pair's score is the Euclidean distance between the central-face embeddings of its images;
- a pair matches at similarity ``s`` when ``calibration.similarity(distance) >= s``;
- a pair where either image has no face (or failed to load) has no distance and is a non-match at
  every threshold: right for an impostor pair, a false non-match for a genuine one. Such pairs are
  counted and reported, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from regard.evaluation.stats import Rate
from regard.vision import calibration

SIMILARITY_THRESHOLDS: tuple[float, ...] = (50.0, 80.0, 90.0, 95.0, 99.0)
MAX_CURVE_POINTS = 300


def pair_distances(image1: Sequence[Path], image2: Sequence[Path], paths: Sequence[Path],
                   emb: np.ndarray) -> np.ndarray:
    """Distance per pair (float64); NaN where either image has no embedding."""
    index = {p: i for i, p in enumerate(paths)}
    a = emb[[index[p] for p in image1]].astype(np.float64)
    b = emb[[index[p] for p in image2]].astype(np.float64)
    return np.linalg.norm(a - b, axis=1)


def accept_at(dist: np.ndarray, threshold: float) -> np.ndarray:
    """Same identity when the distance is <= threshold; missing distances never match."""
    return np.nan_to_num(dist, nan=np.inf) <= threshold


def accept_at_similarity(dist: np.ndarray, similarity: float) -> np.ndarray:
    """Match when the calibrated similarity is >= ``similarity``; missing distances never match."""
    sims = calibration.similarity(np.nan_to_num(dist, nan=np.inf))
    return ~np.isnan(dist) & (sims >= similarity)


def best_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    """Distance threshold maximizing accuracy (the first, i.e. smallest, of ties), among the
    midpoints between consecutive distinct distances and just outside both ends.

    Vectorized form of the loop in bench/verification.py (same candidates, same tie rule)."""
    same = np.asarray(same, dtype=bool)
    finite = ~np.isnan(dist)
    values = np.unique(dist[finite])
    if len(values) == 0:
        return 0.0
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2,
                                 [values[-1] + 1e-6]])
    genuine = np.sort(dist[finite & same])
    impostor = np.sort(dist[finite & ~same])
    # correct = genuine accepted + impostor rejected (NaN impostors are always rejected)
    g_acc = np.searchsorted(genuine, candidates, side="right")
    i_acc = np.searchsorted(impostor, candidates, side="right")
    correct = g_acc + (int((~same).sum()) - i_acc)
    return float(candidates[int(np.argmax(correct))])


def cross_validate(dist: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict[str, Any]:
    """For each fold, the threshold best on the other folds, applied to it."""
    same = np.asarray(same, dtype=bool)
    per_fold = []
    correct = total = 0
    for k in sorted(set(folds.tolist())):
        train, test = folds != k, folds == k
        thr = best_threshold(dist[train], same[train])
        ok = accept_at(dist[test], thr) == same[test]
        correct += int(ok.sum())
        total += int(ok.size)
        per_fold.append({"fold": int(k), "threshold_distance": thr,
                         "threshold_similarity": float(calibration.similarity(thr)),
                         "accuracy": Rate(int(ok.sum()), int(ok.size)).to_dict()})
    accs = np.array([f["accuracy"]["rate"] for f in per_fold], dtype=float)
    return {"mean": float(accs.mean()), "std": float(accs.std()), "folds": per_fold,
            "pooled": Rate(correct, total).to_dict()}


def assign_folds(folds: Sequence[int | None], k_max: int = 10) -> tuple[np.ndarray, str]:
    """The pairs' folds, or k interleaved folds (pair index mod k) when the layout has none."""
    if all(f is not None for f in folds) and len(set(folds)) >= 2:
        n = len(set(folds))
        return np.array(folds), f"{n}-fold cross-validation on the dataset's folds"
    k = min(k_max, len(folds))
    return np.arange(len(folds)) % max(k, 1), (
        f"{k}-fold cross-validation on interleaved folds (the dataset has none)")


@dataclass
class ThresholdRates:
    similarity: float
    distance: float
    tar: Rate
    fmr: Rate

    def to_dict(self) -> dict[str, Any]:
        return {"similarity": self.similarity, "distance": self.distance,
                "tar": self.tar.to_dict(), "fnmr": self.tar.complement().to_dict(),
                "fmr": self.fmr.to_dict()}


def rates_at(dist: np.ndarray, same: np.ndarray, similarity: float) -> ThresholdRates:
    accept = accept_at_similarity(dist, similarity)
    same = np.asarray(same, dtype=bool)
    return ThresholdRates(similarity, calibration.default_table().distance(similarity),
                          Rate(int((accept & same).sum()), int(same.sum())),
                          Rate(int((accept & ~same).sum()), int((~same).sum())))


def _curve_thresholds(genuine: np.ndarray, impostor: np.ndarray) -> np.ndarray:
    """Distance thresholds for ROC/DET points: evenly spaced through the genuine distances and
    log-spaced through the impostor tail (so very low FMRs get points too)."""
    half = MAX_CURVE_POINTS // 2
    parts = [np.array([0.0])]
    if len(genuine):
        parts.append(genuine[np.unique(np.linspace(0, len(genuine) - 1, half).astype(int))])
    if len(impostor):
        idx = np.unique(np.geomspace(1, len(impostor), half).astype(int) - 1)
        parts.append(impostor[idx])
    return np.unique(np.concatenate(parts))


def error_curves(dist: np.ndarray, same: np.ndarray, impostor: np.ndarray | None = None
                 ) -> dict[str, list[dict[str, Any]]]:
    """ROC/DET points over distance thresholds (about ``MAX_CURVE_POINTS``), and FMR/FNMR at
    every integer similarity threshold 0..100.

    ``impostor``: other impostor distances to use instead of the impostor pairs in ``dist`` (e.g.
    every cross-identity pair of the images, for FMR resolution far below 1/len(pairs)). A
    missing distance (NaN) counts in the denominators and never matches."""
    same = np.asarray(same, dtype=bool)
    finite = ~np.isnan(dist)
    ng = int(same.sum())
    genuine = np.sort(dist[finite & same])
    if impostor is None:
        ni = int((~same).sum())
        imp = np.sort(dist[finite & ~same])
    else:
        imp = np.sort(impostor[~np.isnan(impostor)])
        ni = int(len(impostor))
    roc = []
    for t in _curve_thresholds(genuine, imp):
        ga = int(np.searchsorted(genuine, t, side="right"))
        ia = int(np.searchsorted(imp, t, side="right"))
        roc.append({"distance": float(t), "similarity": float(calibration.similarity(t)),
                    "tar": ga / ng if ng else None, "fnmr": 1 - ga / ng if ng else None,
                    "fmr": ia / ni if ni else None, "false_matches": ia})
    # similarity is decreasing in distance: sort the similarities ascending once, then count
    g_sims = np.sort(calibration.similarity(genuine)) if len(genuine) else np.zeros(0)
    i_sims = np.sort(calibration.similarity(imp)) if len(imp) else np.zeros(0)
    vs = []
    for s in range(101):
        ga = len(g_sims) - int(np.searchsorted(g_sims, s, side="left"))  # sims >= s
        ia = len(i_sims) - int(np.searchsorted(i_sims, s, side="left"))
        vs.append({"similarity": float(s),
                   "distance": calibration.default_table().distance(float(s)),
                   "fmr": ia / ni if ni else None, "fnmr": (ng - ga) / ng if ng else None,
                   "false_matches": ia, "false_non_matches": ng - ga})
    return {"roc": roc, "vs_threshold": vs}


def group_label(values: tuple[str, str]) -> str:
    """``male`` when both images agree, ``female-male`` (sorted) when they differ."""
    a, b = (v or "unlabelled" for v in values)
    return a if a == b else "-".join(sorted((a, b)))


def by_group(dist: np.ndarray, same: np.ndarray, groups1: Sequence[Mapping[str, str]],
             groups2: Sequence[Mapping[str, str]], columns: Sequence[str],
             thresholds: Sequence[float] = SIMILARITY_THRESHOLDS) -> dict[str, Any]:
    """Per group column: TAR on genuine pairs and FMR on impostor pairs, by the pair's group
    (both images' value when they agree, else the two values joined)."""
    same = np.asarray(same, dtype=bool)
    out: dict[str, Any] = {}
    for col in columns:
        labels = np.array([group_label((g1.get(col, ""), g2.get(col, "")))
                           for g1, g2 in zip(groups1, groups2)], dtype=object)
        section: dict[str, Any] = {"genuine_tar": {}, "impostor_fmr": {}}
        for label in sorted(set(labels.tolist())):
            m = labels == label
            for kind, sel in (("genuine_tar", m & same), ("impostor_fmr", m & ~same)):
                if not sel.any():
                    continue
                section[kind][label] = {
                    f"{s:g}": (Rate(int(accept_at_similarity(dist[sel], s).sum()),
                                    int(sel.sum()))).to_dict()
                    for s in thresholds}
        out[col] = section
    return out


def evaluate(dist: np.ndarray, same: np.ndarray, folds: Sequence[int | None],
             thresholds: Sequence[float] = SIMILARITY_THRESHOLDS,
             all_impostor: np.ndarray | None = None) -> dict[str, Any]:
    """Every verification figure from pair distances (NaN = a face missing) and labels.

    ``all_impostor``: distances of every cross-identity pair of the images (optional); adds FMR
    at each threshold and curves with that far larger impostor set."""
    same = np.asarray(same, dtype=bool)
    missing = np.isnan(dist)
    fold_ids, method = assign_folds(folds)
    accuracy: dict[str, Any]
    if len(dist) >= 2 and len(set(fold_ids.tolist())) >= 2:
        accuracy = {"method": method + "; threshold chosen on the other folds",
                    **cross_validate(dist, same, fold_ids)}
    else:
        accuracy = {"method": "not computed: fewer than two pairs"}
    out: dict[str, Any] = {
        "pairs": {"total": int(len(dist)), "genuine": int(same.sum()),
                  "impostor": int((~same).sum()),
                  "with_missing_face": int(missing.sum()),
                  "genuine_with_missing_face": int((missing & same).sum()),
                  "impostor_with_missing_face": int((missing & ~same).sum())},
        "thresholds": [rates_at(dist, same, s).to_dict() for s in thresholds],
        "accuracy": accuracy,
        "curves": error_curves(dist, same),
    }
    if all_impostor is not None:
        sims = calibration.similarity(all_impostor) if len(all_impostor) else np.zeros(0)
        out["all_cross_identity_impostors"] = {
            "rule": "every pair of images of different identities among the verification images "
                    "with a face (not only the listed impostor pairs); genuine pairs as listed",
            "impostor_pairs": int(len(all_impostor)),
            "fmr": {f"{s:g}": Rate(int((sims >= s).sum()), int(len(sims))).to_dict()
                    for s in thresholds},
            "curves": error_curves(dist, same, all_impostor),
        }
    return out
