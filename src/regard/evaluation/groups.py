"""False-match rates per demographic group, from every impostor pair within each group cell, and
the largest ratio between groups.

Why within a cell: a false match that matters is two *similar-looking* different people being
confused, and people of the same gender and ethnicity are the hardest impostors; pairs across
cells would dilute a group's rate with easy pairs. This is how the calibration table was set
(``bench/calibrate.py``, whose pair logic moved here), so these figures check the table's promise:
"similarity 80 means FMR <= 1e-3 in every measured group". The ratio between the worst and best
group at the default threshold is the single disparity figure a reader asks for; when the best
group has 0 false matches the ratio is *not measurable* (its rate is only bounded), and the report
says so instead of dividing by zero.

Impostor pairs: with identity labels, every pair of images of different identities; without
(UTKFace), every pair of different images, which slightly overstates FMR when one person has
several photos. Children are out of scope for this model (infants' embeddings are much closer
together; the calibration excludes them): with an age column, images below ``min_age`` are kept
out of the cells and reported separately. Pairs share images, so pair counts overstate the
evidence and the Wilson intervals are optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from regard.evaluation.stats import Rate, largest_ratio
from regard.vision import calibration

GROUP_THRESHOLDS: tuple[float, ...] = (50.0, 80.0, 90.0, 95.0, 99.0)
RATIO_THRESHOLDS: tuple[float, ...] = (80.0, 50.0)
BLOCK = 1024


def pairwise_distances(emb: np.ndarray, labels: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Upper-triangle pairwise distances (float64), and whether each pair shares a label.
    (The form of ``bench/calibrate.py``; fine for a few thousand images.)"""
    e = np.asarray(emb, dtype=np.float64)
    sq = (e ** 2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * e @ e.T, 0)
    iu = np.triu_indices(len(e), k=1)
    dist = np.sqrt(d2[iu])
    same = (np.zeros_like(dist, dtype=bool) if labels is None
            else np.asarray(labels)[iu[0]] == np.asarray(labels)[iu[1]])
    return dist, same


def impostor_distances(emb: np.ndarray, identities: Sequence[str] | None = None,
                       block: int = BLOCK) -> np.ndarray:
    """Distances of every pair i < j whose identities differ (every pair when ``identities`` is
    None), computed in row blocks so tens of millions of pairs fit in memory."""
    e = np.asarray(emb, dtype=np.float64)
    n = len(e)
    ids = None if identities is None else np.asarray(identities, dtype=object)
    sq = (e ** 2).sum(1)
    parts = []
    for a in range(0, n, block):
        b = min(n, a + block)
        d2 = np.maximum(sq[a:b, None] + sq[None, a:] - 2 * e[a:b] @ e[a:].T, 0)
        rows, cols = np.triu_indices(b - a, k=1, m=n - a)  # j > i within [a, n)
        keep = np.ones(len(rows), dtype=bool)
        if ids is not None:
            keep = ids[a + rows] != ids[a + cols]
        parts.append(np.sqrt(d2[rows[keep], cols[keep]]))
    return np.concatenate(parts) if parts else np.zeros(0)


def fmr_at(impostor: np.ndarray, thresholds: Sequence[float] = GROUP_THRESHOLDS
           ) -> dict[str, Rate]:
    """False matches (calibrated similarity >= s) among the impostor distances, per threshold."""
    sims = calibration.similarity(impostor) if len(impostor) else np.zeros(0)
    return {f"{s:g}": Rate(int((sims >= s).sum()), int(len(impostor))) for s in thresholds}


def cell_name(attributes: Mapping[str, str]) -> str:
    return " / ".join(attributes.values())


@dataclass
class Member:
    """One labelled image: row in the embedding matrix, identity, group attributes, age."""

    row: int
    identity: str | None
    attributes: dict[str, str]
    age: float | None


def _cell_entry(name: str, attributes: Mapping[str, str], members: Sequence[Member],
                emb: np.ndarray, found: np.ndarray, thresholds: Sequence[float],
                identified: bool) -> tuple[dict[str, Any], dict[str, Rate]]:
    used = [m for m in members if found[m.row]]
    rows = [m.row for m in used]
    ids = [m.identity or "" for m in used] if identified else None
    impostor = impostor_distances(emb[rows], ids)
    rates = fmr_at(impostor, thresholds)
    return ({"group": name, "attributes": dict(attributes), "images": len(members),
             "images_used": len(used), "images_without_face": len(members) - len(used),
             "identities": len({m.identity for m in used}) if identified else None,
             "impostor_pairs": int(len(impostor)),
             "fmr": {k: r.to_dict() for k, r in rates.items()}}, rates)


def evaluate(emb: np.ndarray, found: np.ndarray, members: Sequence[Member],
             columns: Sequence[str], *, identified: bool, min_age: float | None = None,
             thresholds: Sequence[float] = GROUP_THRESHOLDS,
             ratio_thresholds: Sequence[float] = RATIO_THRESHOLDS,
             all_pairs: bool = True, all_impostor: np.ndarray | None = None
             ) -> dict[str, Any]:
    """Per-cell impostor FMR (cells: each combination of the ``columns`` values), the pooled
    figure over every impostor pair, children apart, and the largest ratio between cells.
    ``all_impostor``: the pooled impostor distances when the caller already has them."""
    found = np.asarray(found, dtype=bool)
    labelled = [m for m in members if all(m.attributes.get(c) for c in columns)]
    has_age = any(m.age is not None for m in members)
    use_age = has_age and min_age is not None and min_age > 0

    def adult(m: Member) -> bool:
        return not use_age or m.age is None or m.age >= min_age  # type: ignore[operator]

    in_scope = [m for m in labelled if adult(m)]
    children = [m for m in labelled if not adult(m)]
    cells: dict[tuple[str, ...], list[Member]] = {}
    for m in in_scope:
        cells.setdefault(tuple(m.attributes[c] for c in columns), []).append(m)
    all_by_cell: dict[tuple[str, ...], int] = {}
    for m in labelled:
        key = tuple(m.attributes[c] for c in columns)
        all_by_cell[key] = all_by_cell.get(key, 0) + 1

    entries, rates = [], {}
    for key in sorted(cells):
        attrs = dict(zip(columns, key))
        name = cell_name(attrs)
        entry, r = _cell_entry(name, attrs, cells[key], emb, found, thresholds, identified)
        entry["images_all_ages"] = all_by_cell[key]
        entries.append(entry)
        rates[name] = r
    out: dict[str, Any] = {
        "group_columns": list(columns),
        "impostor_rule": ("pairs of images of different identities within the cell"
                          if identified else
                          "every pair of different images within the cell (no identity labels)"),
        "images": len(members),
        "images_unlabelled": len(members) - len(labelled),
        "images_without_face": int(sum(not found[m.row] for m in members)),
        "age_filter": ({"min_age": min_age, "images_below": len(children)} if use_age else None),
        "cells": entries,
        "largest_ratio": {f"{s:g}": largest_ratio({g: r[f"{s:g}"] for g, r in rates.items()})
                          .to_dict() for s in thresholds},
        "ratio_thresholds": [f"{s:g}" for s in ratio_thresholds],
    }
    if all_pairs:
        used = [m for m in members if found[m.row] and adult(m)]
        impostor = all_impostor if all_impostor is not None else impostor_distances(
            emb[[m.row for m in used]], [m.identity or "" for m in used] if identified else None)
        out["all_pairs"] = {
            "rule": "every impostor pair among the in-scope images, across cells too",
            "images_used": len(used), "impostor_pairs": int(len(impostor)),
            "fmr": {k: r.to_dict() for k, r in fmr_at(impostor, thresholds).items()}}
    if use_age:
        child_cells: dict[tuple[str, ...], list[Member]] = {}
        for m in children:
            child_cells.setdefault(tuple(m.attributes[c] for c in columns), []).append(m)
        child_entries = []
        pooled: dict[str, list[int]] = {f"{s:g}": [0, 0] for s in thresholds}
        for key in sorted(child_cells):
            attrs = dict(zip(columns, key))
            entry, r = _cell_entry(cell_name(attrs), attrs, child_cells[key], emb, found,
                                   thresholds, identified)
            child_entries.append(entry)
            for s, rr in r.items():
                pooled[s][0] += rr.k
                pooled[s][1] += rr.n
        out["children"] = {
            "rule": f"age < {min_age:g}, pairs within each cell; out of scope for this model, "
                    "reported for information, not in the ratios",
            "images": len(children),
            "cells": child_entries,
            "pooled_within_cells": {s: Rate(k, n).to_dict() for s, (k, n) in pooled.items()},
        }
    return out
