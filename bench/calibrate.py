"""Measure the distance -> similarity table on real pairs and write vision/calibration.json.

    python bench/calibrate.py [--refresh] [--dry-run] [--bootstrap N]

Impostor pairs: every cross-identity pair among the LFW dev images (about 2.7 million), split by
gender (female-female, male-male, mixed), plus every within-cell pair of each gender x race cell of
UTKFace dev (UTKFace has no identity labels and is mostly one image per person; its cross-image
pairs are treated as impostors), adults only (18+): children, and infants above all, are out of
scope for identification with this model (the closest impostor pairs are infants at distance
0.25, where adult genuine pairs sit), and their FMR is printed separately. Genuine pairs: every same-identity pair among the LFW dev images.

For each anchor (similarity S <-> target false-match rate t) the threshold distance is the
smallest, over all groups, of
  - the empirical distance below which at most t of the group's impostor pairs fall, and
  - where the group has too few pairs to resolve t (n * t < 10), a normal fit to the lower half of
    its impostor distances, extrapolated to t,
so every group meets the target where it can be measured, and the worst-off group sets one mapping
for everyone (never per-group thresholds at run time).

``--bootstrap N`` also prints how uncertain the anchors are: N resamples (with replacement) of the
images of each UTKFace cell, the anchors recomputed each time (the LFW groups, millions of pairs,
are held fixed), and the 2.5 / 50 / 97.5 percentiles of each anchor's distance and of the TAR on
LFW genuine pairs there. Printed only; the table is the point estimate.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from statistics import NormalDist

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import embed_images, require_data  # noqa: E402

from regard.datasets import lfw_genders, lfw_identity, lfw_images, utkface  # noqa: E402
from regard.evaluation.groups import pairwise_distances as pair_distances  # noqa: E402
from regard.vision.calibration import TABLE_PATH  # noqa: E402

# similarity -> target worst-group FMR
ANCHORS = [(25.0, 1e-1), (50.0, 1e-2), (80.0, 1e-3), (90.0, 1e-4), (95.0, 3e-5), (99.0, 1e-5)]
MIN_EXPECTED_FALSE_MATCHES = 10  # below this, the empirical quantile is too noisy on its own
ZERO_SIMILARITY_DISTANCE = 1.5   # beyond any pair of dlib embeddings seen (they have norm ~1)
ADULT_AGE = 18


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
    """Normal fit through the median and the 5th percentile, extrapolated to ``fmr``.

    Quantiles rather than moments: UTKFace has no identity labels and holds a few photos of the
    same person under different file names (seen by eye among the closest "impostor" pairs);
    they would drag a moment fit far down, but move the 5th percentile very little.
    """
    med, q05 = np.quantile(impostor, [0.5, 0.05])
    sigma = float(med - q05) / -NormalDist().inv_cdf(0.05)
    return float(med + sigma * NormalDist().inv_cdf(fmr))


def group_threshold(impostor: np.ndarray, fmr: float) -> tuple[float, str]:
    emp = empirical_threshold(impostor, fmr)
    if len(impostor) * fmr >= MIN_EXPECTED_FALSE_MATCHES:
        return emp, "empirical"
    fit = tail_fit_threshold(impostor, fmr)
    return (fit, "tail fit") if fit < emp else (emp, "empirical")


def print_bootstrap(groups: dict[str, np.ndarray], cell_embeddings: dict[str, np.ndarray],
                    genuine: np.ndarray, n: int, seed: int = 0) -> None:
    """Percentiles of each anchor's distance and TAR over ``n`` image resamples of the UTKFace
    cells (pairs of an image with its own copy are left out)."""
    rng = np.random.default_rng(seed)
    fixed = {sim: min(group_threshold(d, fmr)[0] for g, d in groups.items()
                      if g not in cell_embeddings) for sim, fmr in ANCHORS}
    thresholds = {sim: [] for sim, _ in ANCHORS}
    for _ in range(n):
        resampled = {}
        for cell, emb in cell_embeddings.items():
            pick = rng.integers(0, len(emb), len(emb))
            dist, same_image = pair_distances(emb[pick], pick)
            resampled[cell] = dist[~same_image]
        for sim, fmr in ANCHORS:
            thresholds[sim].append(min([fixed[sim]] + [group_threshold(d, fmr)[0]
                                                        for d in resampled.values()]))
    print(f"\nbootstrap over {n} resamples of the UTKFace cells' images (LFW groups fixed): "
          f"2.5 / 50 / 97.5 percentiles")
    print(f"{'similarity':>10}  {'distance':>26}  {'TAR (LFW genuine)':>26}")
    for sim, _ in sorted(ANCHORS, reverse=True):
        d = np.percentile(thresholds[sim], [2.5, 50, 97.5])
        tar = [float((genuine <= x).mean()) for x in d]
        print(f"{sim:>10.0f}  {d[0]:8.4f} {d[1]:8.4f} {d[2]:8.4f}  "
              f"{tar[0]:8.4f} {tar[1]:8.4f} {tar[2]:8.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refresh", action="store_true", help="recompute cached embeddings")
    ap.add_argument("--dry-run", action="store_true", help="print, do not write the table")
    ap.add_argument("--bootstrap", type=int, default=0, metavar="N",
                    help="also print the anchors' 95 %% intervals over N resamples of UTKFace")
    args = ap.parse_args()
    root = require_data()

    lfw_paths = lfw_images(root)
    lfw_emb, lfw_found = embed_images(lfw_paths, "lfw_dev_embeddings", refresh=args.refresh)
    genders = lfw_genders(root)
    ids = np.array([lfw_identity(p) for p in lfw_paths])[lfw_found]
    gend = np.array([genders.get(p, "unknown") for p in lfw_paths])[lfw_found]
    dist, same = pair_distances(lfw_emb[lfw_found], ids)
    iu = np.triu_indices(int(lfw_found.sum()), k=1)
    g1, g2 = gend[iu[0]], gend[iu[1]]
    impostor = ~same
    groups: dict[str, np.ndarray] = {
        "LFW all": dist[impostor],
        "LFW female-female": dist[impostor & (g1 == "female") & (g2 == "female")],
        "LFW male-male": dist[impostor & (g1 == "male") & (g2 == "male")],
    }
    genuine = dist[same]

    utk = utkface(root)
    utk_emb, utk_found = embed_images([f.image for f in utk], "utkface_dev_embeddings",
                                      refresh=args.refresh)
    cells = sorted({f.group for f in utk})
    cell_embeddings: dict[str, np.ndarray] = {}
    for cell in cells:
        idx = [i for i, f in enumerate(utk) if f.group == cell and utk_found[i]
               and f.age >= ADULT_AGE]
        cell_embeddings[f"UTKFace {cell}"] = utk_emb[idx]
        groups[f"UTKFace {cell}"] = pair_distances(utk_emb[idx])[0]
    children = [i for i, f in enumerate(utk) if f.age < ADULT_AGE and utk_found[i]]
    child_cells = [f.group for f in np.array(utk)[children]]
    child_dist, child_same_cell = pair_distances(utk_emb[children], np.array(child_cells))
    reported_only = {f"UTKFace children <{ADULT_AGE} (within cell)": child_dist[child_same_cell]}

    print(f"LFW dev: {lfw_found.sum()}/{len(lfw_paths)} images with a face, "
          f"{len(groups['LFW all']):,} impostor and {len(genuine):,} genuine pairs")
    print(f"UTKFace dev: {utk_found.sum()}/{len(utk)} images with a face, {len(cells)} cells, "
          f"{ADULT_AGE}+ for calibration")

    anchors = [{"similarity": 100.0, "distance": 0.0}]
    rows = []
    for sim, fmr in sorted(ANCHORS, reverse=True):
        per_group = {g: group_threshold(d, fmr) for g, d in groups.items()}
        worst = min(per_group, key=lambda g: per_group[g][0])
        thr, method = per_group[worst]
        anchors.append({"similarity": sim, "distance": round(thr, 6), "target_fmr": fmr,
                        "set_by": worst, "method": method})
        rows.append((sim, fmr, thr, worst, method))
    anchors.append({"similarity": 0.0, "distance": ZERO_SIMILARITY_DISTANCE})
    anchors.sort(key=lambda a: a["distance"])
    for a, b in zip(anchors, anchors[1:]):
        if not b["distance"] > a["distance"]:
            sys.exit(f"non-monotone anchors: {a} then {b}")

    print("\nsimilarity  target FMR  distance  set by (method)")
    for sim, fmr, thr, worst, method in rows:
        print(f"{sim:>10.0f}  {fmr:>10.0e}  {thr:8.4f}  {worst} ({method})")

    print("\nat similarity >= S: FMR per group (false matches / pairs), TAR on LFW genuine pairs")
    header = f"{'group':<28}" + "".join(f"{'S=' + str(int(s)):>22}" for s, _ in ANCHORS)
    print(header)
    table = {"groups": {}, "tar": {}}
    for g, d in {**groups, **reported_only}.items():
        cells_txt = []
        for sim, _ in ANCHORS:
            thr = next(a["distance"] for a in anchors if a["similarity"] == sim)
            k = int((d <= thr).sum())
            cells_txt.append(f"{k / len(d):.2e} ({k}/{len(d)})")
            table["groups"].setdefault(g, {})[str(int(sim))] = {"false_matches": k, "pairs": len(d)}
        print(f"{g:<28}" + "".join(f"{c:>22}" for c in cells_txt))
    tar_txt = []
    for sim, _ in ANCHORS:
        thr = next(a["distance"] for a in anchors if a["similarity"] == sim)
        k = int((genuine <= thr).sum())
        tar_txt.append(f"{k / len(genuine):.4f} ({k}/{len(genuine)})")
        table["tar"][str(int(sim))] = {"accepted": k, "pairs": len(genuine)}
    print(f"{'TAR (LFW genuine)':<28}" + "".join(f"{c:>22}" for c in tar_txt))

    if args.bootstrap:
        print_bootstrap(groups, cell_embeddings, genuine, args.bootstrap)

    if not args.dry_run:
        TABLE_PATH.write_text(json.dumps({
            "description": "Euclidean distance between dlib ResNet embeddings -> similarity 0-100. "
                           "Each anchor's distance is where the worst-off measured group reaches "
                           "target_fmr. Regenerate with bench/calibrate.py.",
            "measured_on": str(date.today()),
            "data": "LFW dev (all cross-identity pairs, by gender) + UTKFace dev (within gender x race cells)",
            "anchors": anchors,
            "measurements": table,
        }, indent=1) + "\n")
        print(f"\nwrote {TABLE_PATH}")


if __name__ == "__main__":
    main()
