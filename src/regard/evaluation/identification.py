"""1:N identification against a small gallery: rank-1 accuracy, FNIR and FPIR at thresholds.

Why: SearchFacesByImage is 1:N, and its errors grow with the gallery, so 1:1 figures do not
describe it. The two operational errors are (NIST FRVT 1:N terms):
- FNIR (false negative identification rate): a mated probe, whose identity is enrolled, for which
  that identity is *not* returned at or above the threshold (a probe with no face is such a miss);
- FPIR (false positive identification rate): a non-mated probe, whose identity is not enrolled,
  for which *any* candidate is returned at or above the threshold (probes with no face are left
  out of FPIR: they return nothing, and counting them would flatter it).
Rank-1 accuracy: the mated probes whose nearest enrolled face is their own identity.

One face per identity is enrolled (the first of its images in which a face is found; an identity
none of whose images has a face fails to enroll and its probes count as misses). Search is exact
(plain numpy over the whole gallery; galleries here are small), so the figures measure the model
and the calibration, not an approximate index. When the layout has no non-mated probes (a gallery
folder), FPIR is measured leave-one-identity-out: each mated probe is searched against the
gallery without its own identity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from regard.evaluation.embeddings import ImageEmbedding
from regard.evaluation.layouts import Gallery
from regard.evaluation.stats import Rate
from regard.vision.packs import FaceModelPack, default_pack

IDENTIFICATION_THRESHOLDS: tuple[float, ...] = (50.0, 80.0, 99.0)


def gallery_paths(gallery: Gallery) -> list[Path]:
    return [p for paths in gallery.identities.values() for p in paths] + list(gallery.nonmated)


def _distances(probes: np.ndarray, enrolled: np.ndarray) -> np.ndarray:
    """(P, G) Euclidean distances, float64."""
    p = probes.astype(np.float64)
    g = enrolled.astype(np.float64)
    d2 = (p ** 2).sum(1)[:, None] + (g ** 2).sum(1)[None, :] - 2 * p @ g.T
    return np.sqrt(np.maximum(d2, 0))


def evaluate(gallery: Gallery, embeddings: dict[Path, ImageEmbedding],
             thresholds: Sequence[float] = IDENTIFICATION_THRESHOLDS,
             pack: FaceModelPack | None = None) -> dict[str, Any]:
    """Rank-1, and FNIR / FPIR at each threshold, with ``pack``'s table (default: the default
    pack, whose embeddings ``embeddings`` must be)."""
    table = (pack or default_pack()).calibration
    names: list[str] = []
    enrolled: list[np.ndarray] = []
    mated: list[tuple[str, np.ndarray | None]] = []  # (true identity, embedding or None)
    failed_to_enroll = 0
    for name, paths in gallery.identities.items():
        with_face = [p for p in paths if embeddings[p].embedding is not None]
        if with_face:
            first = with_face[0]
            names.append(name)
            enrolled.append(embeddings[first].embedding)  # type: ignore[arg-type]
            mated += [(name, embeddings[p].embedding) for p in paths if p != first]
        else:
            failed_to_enroll += 1
            mated += [(name, None) for p in paths[1:]]
    nonmated = [embeddings[p].embedding for p in gallery.nonmated]
    nonmated_faces = [e for e in nonmated if e is not None]

    g = np.stack(enrolled) if enrolled else np.zeros((0, 0), np.float32)
    ids = np.array(names, dtype=object)
    m_emb = [e for _, e in mated if e is not None]
    m_ids = np.array([n for n, e in mated if e is not None], dtype=object)
    n_mated = len(mated)
    d_mated = _distances(np.stack(m_emb), g) if m_emb and len(g) else np.zeros((len(m_emb), 0))

    # rank 1: the nearest enrolled identity is the true one
    rank1 = 0
    own_dist = np.full(len(m_emb), np.inf)
    if d_mated.shape[1]:
        rank1 = int((ids[d_mated.argmin(axis=1)] == m_ids).sum())
        for i, name in enumerate(m_ids):
            own = np.nonzero(ids == name)[0]
            if len(own):
                own_dist[i] = d_mated[i, own[0]]

    if nonmated_faces:
        method = "non-mated probes: identities with one image (not enrolled)"
        d_non = _distances(np.stack(nonmated_faces), g) if len(g) else np.zeros((0, 0))
        best_non = d_non.min(axis=1) if d_non.size else np.full(len(nonmated_faces), np.inf)
    else:
        method = ("leave-one-identity-out: each mated probe searched against the gallery "
                  "without its own identity (the layout has no non-mated probes)")
        if d_mated.shape[1] > 1:
            masked = np.where(ids[None, :] == m_ids[:, None], np.inf, d_mated)
            best_non = masked.min(axis=1)
        else:  # one identity or none: nothing left to search
            best_non = np.zeros(0)
    own_sim = table.similarity(own_dist) if len(own_dist) else np.zeros(0)
    non_sim = table.similarity(best_non) if len(best_non) else np.zeros(0)
    own_sim = np.where(np.isinf(own_dist), -1.0, own_sim)
    non_sim = np.where(np.isinf(best_non), -1.0, non_sim)
    rows = []
    for s in thresholds:
        hits = int((own_sim >= s).sum())
        rows.append({
            "similarity": s, "distance": table.distance(s),
            "fnir": Rate(n_mated - hits, n_mated).to_dict(),
            "fpir": Rate(int((non_sim >= s).sum()), int(len(non_sim))).to_dict(),
        })
    return {
        "source": gallery.source,
        "path": str(gallery.root),
        "identities": len(gallery.identities),
        "enrolled": len(names),
        "failed_to_enroll": failed_to_enroll,
        "mated_probes": n_mated,
        "mated_probes_without_face": n_mated - len(m_emb),
        "nonmated_probes": len(nonmated),
        "nonmated_probes_without_face": len(nonmated) - len(nonmated_faces),
        "fpir_method": method,
        "search": "exact (numpy), one enrolled face per identity",
        "rank1": Rate(rank1, n_mated).to_dict(),
        "thresholds": rows,
    }
