"""The worst-group rule that turns measured distances into a face-model pack's calibration table.

One mapping for everyone: for each anchor (similarity S <-> target false-match rate t) the
distance is the smallest, over all groups, of
  - the empirical distance below which at most t of the group's impostor pairs fall, and
  - where the group has too few pairs to resolve t (n * t < 10), a normal fit through its median
    and 5th percentile, extrapolated to t (quantiles, not moments: a few mislabelled "impostor"
    pairs that are really one person would drag a moment fit far down),
so every group meets the target where it can be measured and the worst-off group sets the table.
``regard models calibrate`` (operators' own models on their own data) and ``bench/calibrate.py``
(the shipped tables) both use it.
"""

from __future__ import annotations

from datetime import date
from statistics import NormalDist
from typing import Any, Mapping

import numpy as np

# similarity -> target worst-group FMR
ANCHORS: tuple[tuple[float, float], ...] = (
    (25.0, 1e-1), (50.0, 1e-2), (80.0, 1e-3), (90.0, 1e-4), (95.0, 3e-5), (99.0, 1e-5))
MIN_EXPECTED_FALSE_MATCHES = 10  # below this, the empirical quantile is too noisy on its own
MIN_GROUP_PAIRS = 20  # a group with fewer impostor pairs says nothing about a tail


def empirical_threshold(impostor: np.ndarray, fmr: float) -> float:
    """Largest distance D with count(impostor <= D) / n <= fmr."""
    s = np.sort(impostor)
    k = int(np.floor(fmr * len(s)))
    if k >= len(s):
        return float(s[-1])
    upper = s[k]
    lower = s[k - 1] if k > 0 else upper - 0.01
    return float((lower + upper) / 2) if lower < upper else float(np.nextafter(upper, 0))


def tail_fit_threshold(impostor: np.ndarray, fmr: float) -> float:
    """Normal fit through the median and the 5th percentile, extrapolated to ``fmr``."""
    med, q05 = np.quantile(impostor, [0.5, 0.05])
    sigma = float(med - q05) / -NormalDist().inv_cdf(0.05)
    return float(med + sigma * NormalDist().inv_cdf(fmr))


def group_threshold(impostor: np.ndarray, fmr: float) -> tuple[float, str]:
    emp = empirical_threshold(impostor, fmr)
    if len(impostor) * fmr >= MIN_EXPECTED_FALSE_MATCHES:
        return emp, "empirical"
    fit = tail_fit_threshold(impostor, fmr)
    return (fit, "tail fit") if fit < emp else (emp, "empirical")


def fit_table(impostors: Mapping[str, np.ndarray], genuine: np.ndarray, *, data: str,
              description: str, zero_distance: float,
              anchors: tuple[tuple[float, float], ...] = ANCHORS) -> dict[str, Any]:
    """A calibration table (the JSON ``vision.calibration.load_table`` reads): anchors set by the
    worst group, with the per-group false matches and genuine acceptance at each anchor."""
    groups = {g: np.asarray(d, dtype=np.float64) for g, d in impostors.items()
              if len(d) >= MIN_GROUP_PAIRS}
    if not groups:
        raise ValueError(f"no group has {MIN_GROUP_PAIRS} or more impostor pairs")
    if len(genuine) == 0:
        raise ValueError("no genuine pairs: the data needs several images of some people")
    table: list[dict[str, Any]] = [{"similarity": 100.0, "distance": 0.0}]
    for similarity, fmr in sorted(anchors, reverse=True):
        found = {g: group_threshold(d, fmr) for g, d in groups.items()}
        worst = min(found, key=lambda g: found[g][0])
        distance, method = found[worst]
        floor = table[-1]["distance"] + 1e-6  # strictly monotone even with equal quantiles
        table.append({"similarity": similarity, "distance": round(max(distance, floor), 6),
                      "target_fmr": fmr, "set_by": worst, "method": method})
    table.append({"similarity": 0.0,
                  "distance": max(zero_distance, table[-1]["distance"] + 1e-3)})
    thresholds = {a["similarity"]: a["distance"] for a in table if "target_fmr" in a}
    return {
        "description": description,
        "measured_on": date.today().isoformat(),
        "data": data,
        "anchors": table,
        "measurements": {
            "groups": {g: {f"{s:g}": {"false_matches": int((d <= t).sum()), "pairs": len(d)}
                           for s, t in thresholds.items()} for g, d in groups.items()},
            "tar": {f"{s:g}": {"accepted": int((np.asarray(genuine) <= t).sum()),
                               "pairs": len(genuine)} for s, t in thresholds.items()},
        },
    }


def identity_labelled_distances(embeddings: np.ndarray, identities: list[str],
                                cells: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Impostor distances per group cell (pairs of different people within a cell, and "all"
    cells together) and genuine distances (pairs of one person's images), from embeddings of
    identity-labelled images (rows with NaN are images without a face)."""
    keep = ~np.isnan(embeddings).any(axis=1)
    e = np.asarray(embeddings[keep], dtype=np.float64)
    ids = np.asarray(identities, dtype=object)[keep]
    cell = np.asarray(cells, dtype=object)[keep]
    sq = (e ** 2).sum(1)
    iu = np.triu_indices(len(e), k=1)
    dist = np.sqrt(np.maximum(sq[iu[0]] + sq[iu[1]] - 2 * (e[iu[0]] * e[iu[1]]).sum(1), 0))
    same = ids[iu[0]] == ids[iu[1]]
    same_cell = cell[iu[0]] == cell[iu[1]]
    impostors = {"all": dist[~same]}
    for name in sorted(set(cell)):
        impostors[name] = dist[~same & same_cell & (cell[iu[0]] == name)]
    return impostors, dist[same]
