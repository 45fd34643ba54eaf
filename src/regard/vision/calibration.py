"""Embedding distance <-> similarity (0-100), from a table measured on real impostor/genuine pairs.

Each face-model pack has its own table (``FaceModelPack.calibration_file``, written by
``bench/calibrate.py`` or ``regard models calibrate``). Each anchor
ties a similarity to the Euclidean distance at which the *worst-off* demographic group in the
calibration data reaches a stated false-match rate, so that a threshold has one published meaning
for everyone (e.g. similarity 80 => FMR <= 1e-3 in every measured group). Between anchors the
mapping is linear in distance; it is strictly decreasing, so thresholds order like distances.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np



@dataclass(frozen=True)
class CalibrationTable:
    """Anchors sorted by distance ascending (similarity descending)."""

    distances: np.ndarray
    similarities: np.ndarray
    meta: dict

    def __post_init__(self) -> None:
        d, s = self.distances, self.similarities
        if len(d) < 2 or len(d) != len(s):
            raise ValueError("calibration table needs at least two anchors")
        if not (np.all(np.diff(d) > 0) and np.all(np.diff(s) < 0)):
            raise ValueError("calibration table must be strictly monotone")

    def similarity(self, distance: float | np.ndarray) -> np.ndarray:
        """0-100; distances beyond the last anchor map to its similarity (0)."""
        return np.interp(distance, self.distances, self.similarities)

    def distance(self, similarity: float) -> float:
        """Largest distance whose similarity is still >= ``similarity`` (the match threshold)."""
        return float(np.interp(similarity, self.similarities[::-1], self.distances[::-1]))


def load_table(path: Path) -> CalibrationTable:
    data = json.loads(path.read_text())
    anchors = sorted(data["anchors"], key=lambda a: a["distance"])
    return CalibrationTable(
        distances=np.array([a["distance"] for a in anchors], dtype=np.float64),
        similarities=np.array([a["similarity"] for a in anchors], dtype=np.float64),
        meta=data,  # the anchors as published too: group, data and method of each
    )


def default_table() -> CalibrationTable:
    """The default face-model pack's table (``regard eval`` and the benchmarks measure it)."""
    from regard.vision.packs import default_pack

    return default_pack().calibration


def similarity(distance: float | np.ndarray) -> np.ndarray:
    """Similarity 0-100 for Euclidean distance(s) between the default pack's embeddings."""
    return default_table().similarity(distance)
