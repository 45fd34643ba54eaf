"""Measure a face-model pack's distance -> similarity table on identity-labelled pairs and write
the pack's calibration file.

    python bench/calibrate.py [--pack 1.0] [--detector NAME] [--bootstrap 200] [--refresh]
                              [--dry-run] [--json OUT]

One mapping for everyone: each anchor (similarity S <-> target false-match rate t) sits at the
distance where the worst-off demographic group, measured on the best data for it, reaches t.

Groups (adults; every image's central face, embedded by ``Engine().detect(path, embed=True,
pack=get_pack(VERSION))`` with the Engine's default detector unless ``--detector``):
- identity-labelled, these set the anchors:
  - LFW dev by gender ("LFW female", "LFW male"): every pair of images of two different people;
  - LFW dev by race x gender: race from ``race_labels.csv`` (usc-sail/mica-race-from-face,
    identities with one label only), gender per image from the pairs file;
  - the London set (Face Research Lab, 2 studio photos per person) by self-reported ethnicity:
    every pair of images of two different people within the group.
  A group sets anchors only when it has at least ``MIN_SETTING_IDENTITIES`` people and
  ``MIN_SETTING_PAIRS`` impostor pairs (smaller ones are printed; no quantile of theirs means
  anything);
- a pessimistic bound beside them, never setting an anchor: UTKFace dev gender x race cells, 18+.
  UTKFace has no identity labels and holds several photos of some people, so its cross-image
  pairs are only presumed impostors. Cleaning rule: a pair whose two file-name datetimes
  (``age_gender_race_yyyymmddHHMMSSFFF``, the time the image entered UTKFace) are less than one
  hour apart is dropped (``regard.datasets.utkface_close_pairs``); a name without a datetime
  drops nothing. The script prints how many pairs that removes and the FMR before and after.
  Why a bound and not a setter: even cleaned, a within-cell pair may be one person (photos of one
  person collected on different days), which can only make FMR look worse, and its cells hold
  ~30-50 images, so the low-FMR anchors come from a normal tail fit to a few hundred pairs.
  Children (<18) are out of scope and printed apart (the closest impostors are infants).

Per group and anchor: the empirical distance below which at most t of the impostor pairs fall;
where the group has too few pairs to resolve t (n * t < ``MIN_EXPECTED_FALSE_MATCHES``), a normal
fit through its median and 5th percentile extrapolated to t, when that is lower (the anchor's
``method`` says which): the primitives of ``regard.evaluation.calibration_fit``, the rule
``regard models calibrate`` applies too. The anchor is the smallest over the setting groups; it
names the group and the data (``set_by``, ``data``).

Uncertainty (``--bootstrap N``, default 200; 0 skips the intervals): N resamples, stratified
(LFW: identities within race label x majority gender; London: identities within group; UTKFace:
images within cell), drawn with replacement; a pair of two copies of one person or one image is
never an impostor pair. Each anchor's ``ci95`` is the 2.5-97.5 percentile range of the rule's
distance (the minimum over every setting group, all resampled together); ``ci95_set_by`` the
same range of the setting group's own threshold; ``set_by_share`` how often each group set it.

Genuine pairs: TAR is every same-identity pair among the LFW dev images (the table's figure);
LFW's listed pairs give ``regard compare``-style accuracy (genuine accepted + impostors rejected,
a missing face a non-match); the London set's same-person pairs (one session: optimistic) are
reported beside it. Identification: LFW dev as ``regard eval`` derives it
(``layouts.gallery_from_verification`` + ``evaluation.identification``). Each figure is printed
for the pack's current table and the new one. ``--json`` (default
bench/out/calibrate_pack<V>.json) keeps the full report; embeddings are cached in bench/out per
dataset, pack and detector (biometric templates of the research data: never commit them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from statistics import NormalDist

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, embed_images, print_table, require_data, write_json  # noqa: E402

from regard.datasets import (  # noqa: E402
    london_face_set,
    lfw_genders,
    lfw_identity,
    lfw_images,
    lfw_race_labels,
    utkface,
    utkface_close_pairs,
)
from regard.evaluation import identification as ident  # noqa: E402
from regard.evaluation import layouts  # noqa: E402
from regard.evaluation.calibration_fit import (  # noqa: E402
    ANCHORS,
    MIN_EXPECTED_FALSE_MATCHES,
    group_threshold,
)
from regard.evaluation.embeddings import ImageEmbedding  # noqa: E402
from regard.vision.calibration import CalibrationTable, load_table  # noqa: E402
from regard.vision.detect import default_detector_name  # noqa: E402
from regard.vision.packs import FaceModelPack, get_pack  # noqa: E402

MIN_SETTING_IDENTITIES = 8       # fewer people: printed, never sets an anchor
MIN_SETTING_PAIRS = 100
ZERO_SIMILARITY_DISTANCE = 1.5   # euclidean packs: beyond any pair of dlib embeddings (norm ~1)
ADULT_AGE = 18
REPORTED = (80.0, 90.0, 99.0)


# -- embeddings ---------------------------------------------------------------------------------
def embed(paths: list[Path], dataset: str, pack: FaceModelPack, detector: str, workers: int,
          refresh: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N, embedding_size) embeddings, NaN rows where no face was found, and the found mask;
    cached in bench/out by dataset, pack version and detector."""
    return embed_images(paths, f"calibrate_{dataset}_pack{pack.version}_{detector}",
                        {"detector": detector}, workers, refresh, pack)


def distance_matrix(emb: np.ndarray) -> np.ndarray:
    e = np.asarray(emb, dtype=np.float64)
    sq = (e ** 2).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * e @ e.T, 0))


# -- thresholds (the rule's primitives are regard.evaluation.calibration_fit's) -----------------
def tail_fit_fmr(impostor: np.ndarray, distance: float) -> float:
    """The FMR the normal tail fit of ``tail_fit_threshold`` predicts at ``distance``."""
    med, q05 = np.quantile(impostor, [0.5, 0.05])
    sigma = float(med - q05) / -NormalDist().inv_cdf(0.05)
    return float(NormalDist(float(med), sigma).cdf(distance))


def group_thresholds(impostor: np.ndarray) -> list[tuple[float, str] | None]:
    """Per anchor: (distance, "empirical" | "tail fit"), None without pairs."""
    if len(impostor) == 0:
        return [None] * len(ANCHORS)
    s = np.sort(impostor)  # sorted once: the rule's own sorts are then quick
    return [group_threshold(s, fmr) for _, fmr in ANCHORS]


# -- data: pools of images and groups within them ----------------------------------------------
@dataclass
class Pool:
    """One data set's images with a face: distances, which pairs count as impostor pairs, and the
    units a bootstrap resamples (identities, or images where there are none) by stratum."""

    name: str
    paths: list[Path]
    dist: np.ndarray            # (n, n)
    impostor: np.ndarray        # (n, n) bool: pair (i, j) is an impostor pair
    same_identity: np.ndarray | None  # (n, n) bool (genuine pairs), None without identities
    unit_rows: dict[str, np.ndarray]  # unit -> its rows
    strata: dict[str, list[str]]      # stratum -> its units

    def resample(self, rng: np.random.Generator) -> np.ndarray:
        """Rows of one stratified bootstrap draw (with multiplicity)."""
        parts = []
        for units in self.strata.values():
            for u in rng.integers(0, len(units), len(units)):
                parts.append(self.unit_rows[units[u]])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=int)


@dataclass
class Group:
    name: str
    pool: Pool
    rows: np.ndarray
    data: str
    identified: bool
    identities: int | None
    sets_anchors: bool = False
    note: str = ""
    member: np.ndarray = field(init=False, repr=False)
    impostor: np.ndarray = field(init=False, repr=False)
    genuine: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.member = np.zeros(len(self.pool.paths), dtype=bool)
        self.member[self.rows] = True
        self.impostor = pair_values(self.pool.dist, self.pool.impostor, self.rows)
        self.genuine = (pair_values(self.pool.dist, self.pool.same_identity, self.rows)
                        if self.pool.same_identity is not None else np.zeros(0))
        if self.identified:
            self.sets_anchors = (self.identities or 0) >= MIN_SETTING_IDENTITIES and \
                len(self.impostor) >= MIN_SETTING_PAIRS
            if not self.sets_anchors:
                self.note = (f"too small to set anchors (< {MIN_SETTING_IDENTITIES} people or "
                             f"< {MIN_SETTING_PAIRS} impostor pairs)")

    def resampled_impostor(self, draw: np.ndarray) -> np.ndarray:
        return pair_values(self.pool.dist, self.pool.impostor, draw[self.member[draw]])


def pair_values(dist: np.ndarray, keep: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Distances of the pairs i < j (positions in ``rows``) with ``keep`` true."""
    sub = np.ix_(rows, rows)
    iu = np.triu_indices(len(rows), k=1)
    return dist[sub][iu][keep[sub][iu]]


def make_pool(name: str, paths: list[Path], emb: np.ndarray, identities: np.ndarray | None,
              strata_of_units: dict[str, str], excluded: set[tuple[int, int]] = frozenset()
              ) -> Pool:
    """``identities``: per image (None: every image is its own unit and every pair of different
    images an impostor pair); ``excluded``: pairs (i < j) never counted as impostor pairs."""
    n = len(paths)
    units = identities if identities is not None else np.array([str(i) for i in range(n)])
    if identities is not None:
        same = identities[:, None] == identities[None, :]
        impostor = ~same
    else:
        same = None
        impostor = ~np.eye(n, dtype=bool)
    for i, j in excluded:
        impostor[i, j] = impostor[j, i] = False
    unit_rows: dict[str, list[int]] = {}
    for i, u in enumerate(units):
        unit_rows.setdefault(str(u), []).append(i)
    strata: dict[str, list[str]] = {}
    for u in unit_rows:
        strata.setdefault(strata_of_units[u], []).append(u)
    return Pool(name, paths, distance_matrix(emb), impostor, same,
                {u: np.array(r) for u, r in unit_rows.items()}, strata)


@dataclass
class Data:
    groups: list[Group]
    lfw: Pool
    lfw_all_impostor: np.ndarray
    lfw_genuine: np.ndarray          # every same-identity pair among the LFW dev images
    listed_dist: np.ndarray          # LFW's listed pairs (NaN: a face missing)
    listed_same: np.ndarray
    london_genuine: np.ndarray
    utk_children: np.ndarray
    cleaning: dict
    counts: dict
    gallery: layouts.Gallery
    gallery_embeddings: dict[Path, ImageEmbedding]
    previous_rule: list[Group]       # the groups the previous rule took the minimum over


def load_data(root: Path, pack: FaceModelPack, detector: str, workers: int,
              refresh: bool) -> Data:
    counts: dict = {}
    # LFW dev: identities from the folder names, gender per image, race per identity
    lfw_paths = lfw_images(root)
    emb, found = embed(lfw_paths, "lfw_dev", pack, detector, workers, refresh)
    genders = lfw_genders(root)
    races = lfw_race_labels(root, single_only=True)
    paths = [p for p, f in zip(lfw_paths, found) if f]
    ids = np.array([lfw_identity(p) for p in paths])
    gend = np.array([genders.get(p, "unknown") for p in paths])
    race = np.array([races.get(i, "") for i in ids])
    majority = {}
    for i in set(ids.tolist()):
        g = gend[ids == i]
        vals, cnt = np.unique(g, return_counts=True)
        majority[i] = vals[cnt.argmax()]
    lfw = make_pool("LFW dev", paths, emb[found], ids,
                    {i: f"{races.get(i, 'unlabelled')}/{majority[i]}" for i in majority})
    counts["lfw"] = {"images": len(lfw_paths), "with_face": int(found.sum()),
                     "identities": len(set(ids.tolist())),
                     "race_labelled_identities": len({i for i in ids if races.get(i)})}
    groups: list[Group] = []
    lfw_data = "LFW dev, cross-identity pairs (identity-labelled)"
    for g in ("female", "male"):
        rows = np.nonzero(gend == g)[0]
        groups.append(Group(f"LFW {g}", lfw, rows, f"{lfw_data}, gender labels",
                            True, len(set(ids[rows].tolist()))))
    for r in sorted(set(race.tolist()) - {""}):
        for g in ("female", "male"):
            rows = np.nonzero((race == r) & (gend == g))[0]
            if len(rows):
                groups.append(Group(f"LFW {r} {g}", lfw, rows,
                                    f"{lfw_data}, race labels (mica-race-from-face, single label) "
                                    f"x gender labels", True, len(set(ids[rows].tolist()))))
    iu = np.triu_indices(len(paths), k=1)
    all_impostor = lfw.dist[iu][lfw.impostor[iu]]
    lfw_genuine = lfw.dist[iu][lfw.same_identity[iu]]

    # LFW's listed pairs and the identification gallery (as regard eval derives them)
    vset = layouts.read_verification(root / "verification" / "lfw")
    row_of = {str(p): i for i, p in enumerate(lfw_paths)}
    full = emb.astype(np.float64)
    listed = []
    for p in vset.pairs:
        a, b = full[row_of[str(p.image1)]], full[row_of[str(p.image2)]]
        listed.append(float(np.linalg.norm(a - b)))  # NaN when either has no face
    listed_same = np.array([p.same for p in vset.pairs])
    gallery = layouts.gallery_from_verification(vset)
    gallery_embeddings = {}
    for p in vset.images():
        e = emb[row_of[str(p)]]
        ok = not np.isnan(e[0])
        gallery_embeddings[p] = ImageEmbedding(e if ok else None, int(ok))

    # London set: identities, self-reported group
    london = london_face_set(root)
    l_emb, l_found = embed([f.image for f in london], "london", pack, detector, workers, refresh)
    lf = [f for f, ok in zip(london, l_found) if ok]
    l_ids = np.array([f.identity for f in lf])
    lpool = make_pool("London set", [f.image for f in lf], l_emb[l_found], l_ids,
                      {f.identity: f.group for f in lf})
    counts["london"] = {"images": len(london), "with_face": int(l_found.sum()),
                        "identities": len({f.identity for f in london})}
    for grp in sorted({f.group for f in lf}):
        rows = np.array([i for i, f in enumerate(lf) if f.group == grp])
        groups.append(Group(f"London {grp}", lpool, rows,
                            "London set, cross-identity pairs within the self-reported group "
                            "(identity-labelled; studio, one session)", True,
                            len(set(l_ids[rows].tolist()))))
    iu = np.triu_indices(len(lf), k=1)
    london_genuine = lpool.dist[iu][lpool.same_identity[iu]]

    # UTKFace dev: gender x race cells, adults; cleaned of pairs collected < 1 h apart
    utk = utkface(root)
    u_emb, u_found = embed([f.image for f in utk], "utkface_dev", pack, detector, workers,
                           refresh)
    uf = [f for f, ok in zip(utk, u_found) if ok]
    close = utkface_close_pairs(uf)
    raw_pool = make_pool("UTKFace dev", [f.image for f in uf], u_emb[u_found], None,
                         {str(i): f.group for i, f in enumerate(uf)})
    upool = make_pool("UTKFace dev (cleaned)", [f.image for f in uf], u_emb[u_found], None,
                      {str(i): f.group for i, f in enumerate(uf)}, close)
    counts["utkface"] = {"images": len(utk), "with_face": int(u_found.sum())}
    previous = [g for g in groups if g.name in ("LFW female", "LFW male")]
    cleaning = {"rule": "a within-cell pair is dropped when the two file-name datetimes "
                        "(yyyymmddHHMMSSFFF, when the image entered UTKFace) are less than 1 h "
                        "apart; a name without a datetime drops nothing",
                "cells": {}}
    for cell in sorted({f.group for f in uf}):
        rows = np.array([i for i, f in enumerate(uf) if f.group == cell and f.age >= ADULT_AGE])
        g = Group(f"UTKFace {cell}", upool, rows,
                  "UTKFace dev, within-cell image pairs, 18+, cleaned (no identity labels: "
                  "pessimistic bound, sets no anchor)", False, None,
                  note="bound: no identity labels")
        raw = pair_values(raw_pool.dist, raw_pool.impostor, rows)
        cleaning["cells"][f"UTKFace {cell}"] = {"images": int(len(rows)), "pairs_before": len(raw),
                                                "pairs_after": len(g.impostor), "raw": raw}
        groups.append(g)
        previous.append(Group(f"UTKFace {cell} (uncleaned)", raw_pool, rows,
                              "UTKFace dev, every within-cell image pair, 18+", False, None))
    kids = np.array([i for i, f in enumerate(uf) if f.age < ADULT_AGE])
    cell_of = np.array([f.group for f in uf])
    same_cell = cell_of[:, None] == cell_of[None, :]
    utk_children = pair_values(upool.dist, upool.impostor & same_cell, kids)
    return Data(groups, lfw, all_impostor, lfw_genuine, np.array(listed), listed_same,
                london_genuine, utk_children, cleaning, counts, gallery, gallery_embeddings,
                previous)


# -- the table ----------------------------------------------------------------------------------
def build_anchors(setting: list[Group], zero_distance: float) -> list[dict]:
    """The table: each anchor at the smallest of the ``setting`` groups' thresholds."""
    per_group = {g.name: group_thresholds(g.impostor) for g in setting}
    anchors = [{"similarity": 100.0, "distance": 0.0}]
    for k in sorted(range(len(ANCHORS)), key=lambda k: -ANCHORS[k][0]):
        sim, fmr = ANCHORS[k]
        worst = min(setting, key=lambda g: per_group[g.name][k][0])
        thr, method = per_group[worst.name][k]
        floor = anchors[-1]["distance"] + 1e-6  # strictly monotone, as calibration_fit does
        anchors.append({"similarity": sim, "distance": round(max(thr, floor), 6),
                        "target_fmr": fmr, "set_by": worst.name, "method": method,
                        "data": worst.data})
    anchors.append({"similarity": 0.0,
                    "distance": max(zero_distance, anchors[-1]["distance"] + 1e-3)})
    return anchors


def bootstrap(groups: list[Group], n: int, seed: int) -> dict[str, np.ndarray]:
    """Per group, (n, anchors) resampled thresholds (NaN without pairs); pools resampled once per
    draw, so groups of one pool share the draw."""
    rng = np.random.default_rng(seed)
    pools = list({id(g.pool): g.pool for g in groups}.values())
    out = {g.name: np.full((n, len(ANCHORS)), np.nan) for g in groups}
    for r in range(n):
        draws = {id(p): p.resample(rng) for p in pools}
        for g in groups:
            th = group_thresholds(g.resampled_impostor(draws[id(g.pool)]))
            out[g.name][r] = [t[0] if t else np.nan for t in th]
    return out


def add_intervals(anchors: list[dict], setting_groups: list[Group],
                  boot: dict[str, np.ndarray]) -> None:
    setting = [g.name for g in setting_groups]
    stacked = np.stack([boot[g] for g in setting])  # (groups, n, anchors)
    rule = np.nanmin(stacked, axis=0)
    setter = np.nanargmin(np.where(np.isnan(stacked), np.inf, stacked), axis=0)
    sims = [s for s, _ in ANCHORS]
    for a in anchors:
        if "target_fmr" not in a:
            continue
        k = sims.index(a["similarity"])
        lo, hi = np.percentile(rule[:, k], [2.5, 97.5])
        own = np.percentile(boot[a["set_by"]][:, k], [2.5, 97.5])
        share = np.bincount(setter[:, k], minlength=len(setting)) / len(rule)
        a["ci95"] = [round(float(lo), 6), round(float(hi), 6)]
        a["ci95_set_by"] = [round(float(own[0]), 6), round(float(own[1]), 6)]
        a["set_by_share"] = {setting[i]: round(float(share[i]), 3) for i in np.argsort(-share)
                             if share[i] > 0}


# -- figures for one table -----------------------------------------------------------------------
def identification(table: CalibrationTable, data: "Data", thresholds: list[float]) -> dict:
    """``evaluation.identification`` scored with ``table`` (a stand-in pack that has it)."""
    return ident.evaluate(data.gallery, data.gallery_embeddings, thresholds=thresholds,
                          pack=types.SimpleNamespace(calibration=table))


def count(dist: np.ndarray, table: CalibrationTable, sim: float) -> int:
    d = np.nan_to_num(np.asarray(dist, dtype=np.float64), nan=np.inf)
    return int((~np.isinf(d) & (table.similarity(d) >= sim)).sum())


def figures(table: CalibrationTable, data: Data) -> dict:
    sims = sorted({s for s, _ in ANCHORS} | set(REPORTED))
    out: dict = {"distance": {f"{s:g}": table.distance(s) for s in sims}}
    out["tar_lfw"] = {f"{s:g}": [count(data.lfw_genuine, table, s), len(data.lfw_genuine)]
                      for s in sims}
    out["tar_london"] = {f"{s:g}": [count(data.london_genuine, table, s),
                                    len(data.london_genuine)] for s in sims}
    same = data.listed_same
    listed = {}
    for s in sims:
        acc_g = count(data.listed_dist[same], table, s)
        acc_i = count(data.listed_dist[~same], table, s)
        listed[f"{s:g}"] = {"genuine_accepted": [acc_g, int(same.sum())],
                            "impostor_accepted": [acc_i, int((~same).sum())],
                            "accuracy": (acc_g + int((~same).sum()) - acc_i) / len(same)}
    out["lfw_listed_pairs"] = listed
    out["groups"] = {g.name: {f"{s:g}": [count(g.impostor, table, s), len(g.impostor)]
                              for s in sims} for g in data.groups}
    out["groups"]["LFW all (pooled, not a group)"] = {
        f"{s:g}": [count(data.lfw_all_impostor, table, s), len(data.lfw_all_impostor)]
        for s in sims}
    out["utkface_raw"] = {c: {f"{s:g}": [count(v["raw"], table, s), len(v["raw"])] for s in sims}
                          for c, v in data.cleaning["cells"].items()}
    out["utkface_children"] = {f"{s:g}": [count(data.utk_children, table, s),
                                          len(data.utk_children)] for s in sims}
    idr = identification(table, data, sims)
    out["identification"] = {
        "rank1": [idr["rank1"]["k"], idr["rank1"]["n"]],
        "mated_probes": idr["mated_probes"], "nonmated_probes": idr["nonmated_probes"],
        "enrolled": idr["enrolled"],
        **{key: {f"{r['similarity']:g}": [r[key]["k"], r[key]["n"]] for r in idr["thresholds"]}
           for key in ("fnir", "fpir")},
    }
    return out


def rate(kn: list[int]) -> str:
    k, n = kn
    if n == 0:
        return "- (0/0)"
    r = k / n
    return f"{r:.2e} ({k}/{n})" if 0 < r < 1e-2 else f"{r:.4f} ({k}/{n})"


def pct(kn: list[int]) -> str:
    k, n = kn
    return f"{100 * k / n:.1f} % ({k}/{n})" if n else "-"


# -- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", default="1.0", help="face-model pack version (default 1.0)")
    ap.add_argument("--detector", default=None, help="detector (default: the Engine's default)")
    ap.add_argument("--refresh", action="store_true", help="recompute cached embeddings")
    ap.add_argument("--dry-run", action="store_true", help="print, do not write the table")
    ap.add_argument("--bootstrap", type=int, default=200, metavar="N",
                    help="resamples for the anchors' 95 %% intervals (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None,
                    help="full report (default bench/out/calibrate_pack<V>.json)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    root = require_data()
    pack = get_pack(args.pack)
    detector = args.detector or default_detector_name()
    print(f"pack {pack.version} ({pack.name}, {pack.embedding_size}-d, {pack.metric}), "
          f"detector {detector}")

    data = load_data(root, pack, detector, args.workers, args.refresh)
    t_embedded = time.perf_counter()
    c = data.counts
    print(f"LFW dev: {c['lfw']['with_face']}/{c['lfw']['images']} images with a face, "
          f"{c['lfw']['identities']} identities ({c['lfw']['race_labelled_identities']} with a "
          f"single race label), {len(data.lfw_all_impostor):,} impostor and "
          f"{len(data.lfw_genuine):,} genuine pairs")
    print(f"London set: {c['london']['with_face']}/{c['london']['images']} images with a face, "
          f"{c['london']['identities']} identities, {len(data.london_genuine)} genuine pairs")
    print(f"UTKFace dev: {c['utkface']['with_face']}/{c['utkface']['images']} images with a face")

    zero = 2.0 if pack.metric == "cosine" else max(
        ZERO_SIMILARITY_DISTANCE, 1.05 * float(data.lfw_all_impostor.max()))
    setting = [g for g in data.groups if g.sets_anchors]
    anchors = build_anchors(setting, zero)
    # the previous rule (LFW by gender + uncleaned UTKFace cells set the anchors; its pooled "LFW
    # all" never set one) on the same embeddings, for comparison
    previous = build_anchors(data.previous_rule, zero)
    boot = (bootstrap(data.groups + data.previous_rule[2:], args.bootstrap, args.seed)
            if args.bootstrap else None)
    if boot is not None:
        add_intervals(anchors, setting, boot)
        add_intervals(previous, data.previous_rule, boot)
    t_boot = time.perf_counter()
    new = CalibrationTable(np.array([a["distance"] for a in anchors], dtype=np.float64),
                           np.array([a["similarity"] for a in anchors], dtype=np.float64),
                           {"anchors": anchors})
    path = pack.calibration_file
    current = load_table(path) if path.exists() else None
    fig_new = figures(new, data)
    fig_cur = figures(current, data) if current is not None else None

    # -- per-group table
    k3 = [s for s, _ in ANCHORS].index(80.0)
    print(f"\nper group (impostor pairs; FMR at similarity 80 / 90 with the new table; distance "
          f"at FMR 1e-3 [95 % CI over {args.bootstrap} resamples])")
    rows = []
    for g in data.groups:
        th = group_thresholds(g.impostor)[k3]
        ci = ("" if boot is None or np.isnan(boot[g.name][:, k3]).all() else
              "[{:.4f}, {:.4f}]".format(*np.nanpercentile(boot[g.name][:, k3], [2.5, 97.5])))
        rows.append([g.name, "sets" if g.sets_anchors else ("bound" if not g.identified
                                                              else "too small"),
                     g.identities if g.identities is not None else "-", len(g.impostor),
                     rate(fig_new["groups"][g.name]["80"]), rate(fig_new["groups"][g.name]["90"]),
                     f"{th[0]:.4f} ({th[1]})" if th else "-", ci,
                     pct([count(g.genuine, new, 80.0), len(g.genuine)]) if len(g.genuine)
                     else "-"])
    print_table(["group", "role", "people", "pairs", "FMR@80", "FMR@90", "d@1e-3", "95 % CI",
                 "TAR@80 (own genuine)"], rows)

    # -- anchors old vs new
    print("\nanchors: current table -> new table")
    old = {a["similarity"]: a for a in (current.meta.get("anchors", []) if current else [])}
    rows = []
    for a in sorted(anchors, key=lambda a: -a["similarity"]):
        if "target_fmr" not in a:
            continue
        o = old.get(a["similarity"], {})
        rows.append([f"{a['similarity']:g}", f"{a['target_fmr']:.0e}",
                     f"{o.get('distance', float('nan')):.4f}",
                     f"{o.get('set_by', '-')} ({o.get('method', '-')})", f"{a['distance']:.4f}",
                     "[{:.4f}, {:.4f}]".format(*a["ci95"]) if "ci95" in a else "-",
                     f"{a['set_by']} ({a['method']})"])
    print_table(["S", "target FMR", "current d", "current set by", "new d", "new 95 % CI",
                 "new set by"], rows)
    print("\nthe previous rule on these embeddings (LFW by gender + uncleaned UTKFace cells):")
    rows = [[f"{a['similarity']:g}", f"{a['distance']:.4f}",
             "[{:.4f}, {:.4f}]".format(*a["ci95"]) if "ci95" in a else "-",
             f"{a['set_by']} ({a['method']})"]
            for a in sorted(previous, key=lambda a: -a["similarity"]) if "target_fmr" in a]
    print_table(["S", "d", "95 % CI", "set by"], rows)
    if boot is not None:
        print("\nwho sets each anchor across resamples, and the setting group's own 95 % CI:")
        for a in sorted(anchors, key=lambda a: -a["similarity"]):
            if "set_by_share" in a:
                shares = ", ".join(f"{g} {s:.1%}" for g, s in a["set_by_share"].items())
                print(f"  S={a['similarity']:g}: {shares}; {a['set_by']} alone "
                      f"[{a['ci95_set_by'][0]:.4f}, {a['ci95_set_by'][1]:.4f}]")

    # -- figures side by side
    print("\nfigures: current table | new table")
    rows = []
    for s in REPORTED:
        k = f"{s:g}"
        rows.append([f"TAR@{k} (LFW dev, all same-identity pairs)",
                     pct(fig_cur["tar_lfw"][k]) if fig_cur else "-", pct(fig_new["tar_lfw"][k])])
    for s in REPORTED:
        k = f"{s:g}"
        rows.append([f"TAR@{k} (LFW dev listed genuine pairs)",
                     pct(fig_cur["lfw_listed_pairs"][k]["genuine_accepted"]) if fig_cur else "-",
                     pct(fig_new["lfw_listed_pairs"][k]["genuine_accepted"])])
    for s in REPORTED:
        k = f"{s:g}"
        rows.append([f"TAR@{k} (London, same person, one session)",
                     pct(fig_cur["tar_london"][k]) if fig_cur else "-",
                     pct(fig_new["tar_london"][k])])
    rows.append(["accuracy@80 (LFW dev 1,800 listed pairs)"]
                + [f"{100 * f['lfw_listed_pairs']['80']['accuracy']:.2f} %" if f else "-"
                   for f in (fig_cur, fig_new)])
    rows.append(["listed impostors accepted @80",
                 pct(fig_cur["lfw_listed_pairs"]["80"]["impostor_accepted"]) if fig_cur else "-",
                 pct(fig_new["lfw_listed_pairs"]["80"]["impostor_accepted"])])
    idn, idc = fig_new["identification"], fig_cur["identification"] if fig_cur else None
    rows.append(["identification rank-1 (LFW dev)", pct(idc["rank1"]) if idc else "-",
                 pct(idn["rank1"])])
    for s in REPORTED:
        k = f"{s:g}"
        rows.append([f"identification FNIR@{k}", pct(idc["fnir"][k]) if idc else "-",
                     pct(idn["fnir"][k])])
        rows.append([f"identification FPIR@{k}", pct(idc["fpir"][k]) if idc else "-",
                     pct(idn["fpir"][k])])
    print_table(["figure", "current", "new"], rows)
    print(f"(identification: {idn['enrolled']} enrolled, {idn['mated_probes']} mated and "
          f"{idn['nonmated_probes']} non-mated probes)")
    d50 = float(np.quantile(data.lfw_genuine, 0.5))
    print(f"\nwhat TAR 50 % at 80 would take: distance {d50:.4f} (median LFW genuine pair); "
          f"there, per setting group: false matches / pairs, tail-fit FMR")
    for g in sorted(setting, key=lambda g: -tail_fit_fmr(g.impostor, d50))[:6]:
        print(f"  {g.name:<24} {int((g.impostor <= d50).sum())}/{len(g.impostor)}  "
              f"{tail_fit_fmr(g.impostor, d50):.1e}")

    print("\nFMR per group at 80 / 90: current table | new table")
    rows = []
    for name in list(fig_new["groups"]):
        rows.append([name] + [rate(f["groups"][name][k]) if f else "-"
                              for k in ("80", "90") for f in (fig_cur, fig_new)])
    rows.append(["UTKFace children <18 (within cell, cleaned)"]
                + [rate(f["utkface_children"][k]) if f else "-"
                   for k in ("80", "90") for f in (fig_cur, fig_new)])
    print_table(["group", "80 current", "80 new", "90 current", "90 new"], rows)

    # -- UTKFace cleaning
    print(f"\nUTKFace cleaning: {data.cleaning['rule']}")
    rows = []
    tot = [0, 0]
    for cell, v in data.cleaning["cells"].items():
        tot[0] += v["pairs_before"]
        tot[1] += v["pairs_after"]
        rows.append([cell, v["images"], v["pairs_before"], v["pairs_before"] - v["pairs_after"],
                     rate(fig_new["utkface_raw"][cell]["80"]), rate(fig_new["groups"][cell]["80"]),
                     rate(fig_new["utkface_raw"][cell]["50"]), rate(fig_new["groups"][cell]["50"])]
                    + ([rate(fig_cur["utkface_raw"][cell]["80"]),
                        rate(fig_cur["groups"][cell]["80"])] if fig_cur else ["-", "-"]))
    rows.append(["all cells", "", tot[0], tot[0] - tot[1]] + [""] * 6)
    print_table(["cell", "images", "pairs", "removed", "FMR@80 before", "after", "FMR@50 before",
                 "after", "cur. table @80 before", "after"], rows)

    t_end = time.perf_counter()
    print(f"\nruntime: {t_end - t_start:.1f} s (data and embeddings {t_embedded - t_start:.1f} s, "
          f"bootstrap {t_boot - t_embedded:.1f} s)")

    def kn_dict(kn: dict) -> dict:
        return {s: {"false_matches": v[0], "pairs": v[1]} for s, v in kn.items()}

    anchor_sims = [f"{s:g}" for s, _ in ANCHORS]
    measurements = {
        "groups": {name: {s: {"false_matches": v[s][0], "pairs": v[s][1]} for s in anchor_sims}
                   for name, v in fig_new["groups"].items() if v[anchor_sims[0]][1]},
        "tar": {s: {"accepted": fig_new["tar_lfw"][s][0], "pairs": fig_new["tar_lfw"][s][1]}
                for s in anchor_sims},
        "tar_other": {"London set (same person, neutral vs smiling, one session)": {
            s: {"accepted": fig_new["tar_london"][s][0], "pairs": fig_new["tar_london"][s][1]}
            for s in anchor_sims}},
        "group_data": {g.name: {"data": g.data, "sets_anchors": g.sets_anchors,
                                "people": g.identities, "impostor_pairs": len(g.impostor),
                                **({"note": g.note} if g.note else {})} for g in data.groups},
        "utkface_cleaning": {"rule": data.cleaning["rule"], "cells": {
            c: {"images": v["images"], "pairs_before": v["pairs_before"],
                "pairs_after": v["pairs_after"],
                "false_matches_before": {s: fig_new["utkface_raw"][c][s][0] for s in anchor_sims}}
            for c, v in data.cleaning["cells"].items()}},
    }
    measurements["groups"][f"UTKFace children <{ADULT_AGE} (within cell, cleaned)"] = kn_dict(
        {s: fig_new["utkface_children"][s] for s in anchor_sims})
    table_json = {
        "description": f"Euclidean distance between {pack.name} embeddings -> similarity 0-100. "
                       "Each anchor's distance is where the worst-off group measured on "
                       "identity-labelled pairs reaches target_fmr (ci95: 95 % bootstrap interval "
                       "of that distance); UTKFace is a pessimistic bound reported beside them. "
                       "Regenerate with bench/calibrate.py --pack " + pack.version + ".",
        "pack": pack.version,
        "measured_on": str(date.today()),
        "detector": detector,
        "data": "Anchors: LFW dev cross-identity pairs by gender and by race (mica-race-from-face) "
                "x gender, London set cross-identity pairs by self-reported ethnicity. Bound: "
                "UTKFace dev within gender x race cells, 18+, pairs collected < 1 h apart dropped. "
                "TAR: LFW dev same-identity pairs.",
        "rule": f"each anchor: smallest over groups with >= {MIN_SETTING_IDENTITIES} people and "
                f">= {MIN_SETTING_PAIRS} impostor pairs of the distance where the group's FMR "
                f"reaches the target (empirical; normal tail fit where pairs x target < "
                f"{MIN_EXPECTED_FALSE_MATCHES})",
        "anchors": anchors,
        "measurements": measurements,
    }
    report = {"pack": pack.version, "detector": detector, "counts": data.counts,
              "anchors": anchors, "current_anchors": current.meta.get("anchors") if current
              else None, "previous_rule_anchors": previous, "figures_new": fig_new,
              "figures_current": fig_cur,
              "runtime_s": round(t_end - t_start, 1),
              "cleaning": {c: {k: v for k, v in d.items() if k != "raw"}
                           for c, d in data.cleaning["cells"].items()}}
    write_json(args.json or str(OUT / f"calibrate_pack{pack.version}.json"), report)
    if not args.dry_run:
        path.write_text(json.dumps(table_json, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
