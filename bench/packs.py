"""Face-model packs side by side at their own calibrated thresholds, on LFW dev.

    REGARD_DATA=... .venv/bin/python bench/packs.py [--packs 1.0,1.1,2.0] [--json OUT]

For each calibrated pack (default: every calibrated pack installed): the LFW dev images embedded
with the pack (the face nearest the centre; cached per pack in bench/out), then
- TAR on the 900 genuine dev pairs and FMR on the 900 impostor pairs at similarity 80, 90, 99;
- accuracy at 80: (genuine accepted + impostors rejected) / 1,800, what `regard compare` scores;
- the worst identity-labelled group's FMR at 80 (LFW by race and gender, the London set), and
  UTKFace's cleaned cells as a pessimistic bound, from the pack's published calibration
  measurements;
- identification on a gallery derived from LFW dev (first image of each identity with >= 2
  images enrolled, the others mated probes; identities with one image are non-mated probes):
  rank-1, and FNIR / FPIR at 80;
- ms per face for embedding (alignment + network, batched per image), on this machine.
Equal worst-group FMR is what makes the columns comparable: every pack's 80 is where its worst
measured group reaches FMR 1e-3.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibrate  # noqa: E402
from _common import print_table, require_data, write_json  # noqa: E402

from regard.analysis import Engine  # noqa: E402
from regard.datasets import lfw_images  # noqa: E402
from regard.evaluation.embeddings import ImageEmbedding  # noqa: E402
from regard.evaluation.identification import evaluate  # noqa: E402
from regard.evaluation.layouts import gallery_from_verification, read_verification  # noqa: E402
from regard.vision.detect import default_detector_name  # noqa: E402
from regard.vision.packs import FaceModelPack, get_pack, packs  # noqa: E402

THRESHOLDS = (80.0, 90.0, 99.0)


def embed(paths: list[Path], pack: FaceModelPack) -> np.ndarray:
    """(N, d) embeddings with NaN rows where no face was found (bench/calibrate.py's cache)."""
    return calibrate.embed(paths, "lfw_dev", pack, default_detector_name(), workers=2,
                           refresh=False)[0]


def ms_per_face(pack: FaceModelPack, paths: list[Path], n: int = 40) -> float:
    """Embedding cost alone (faces already detected), one face per image, one thread each."""
    engine = Engine(threads=1)
    detected = [engine.detect(p) for p in paths[:n]]
    rgbs = [engine.load(p) for p in paths[:n]]
    engine.embed_faces(rgbs[0], detected[0].faces[:1], pack)  # warm up
    started = time.perf_counter()
    faces = 0
    for rgb, found in zip(rgbs, detected):
        engine.embed_faces(rgb, found.faces[:1], pack)
        faces += len(found.faces[:1])
    return (time.perf_counter() - started) * 1000 / max(faces, 1)


def worst_group_fmr(pack: FaceModelPack, similarity: float, bound: bool = False
                    ) -> tuple[str, float] | None:
    """The highest FMR at ``similarity`` among the groups of the pack's calibration data:
    identity-labelled ones (LFW, London; what sets the anchors), or with ``bound`` UTKFace's
    cleaned adult cells (no identities: a pessimistic bound). Pooled and children's figures are
    published apart and left out here."""
    groups = pack.calibration.meta.get("measurements", {}).get("groups", {})
    key = f"{similarity:g}"
    wanted = ("UTKFace ",) if bound else ("LFW ", "London ")
    rates = [(g, m[key]["false_matches"] / m[key]["pairs"]) for g, m in groups.items()
             if g.startswith(wanted) and "pooled" not in g and "children" not in g
             and key in m and m[key]["pairs"]]
    return max(rates, key=lambda r: r[1]) if rates else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packs", help="comma-separated versions (default: every calibrated pack)")
    ap.add_argument("--json")
    args = ap.parse_args()
    root = require_data()
    vset = read_verification(root / "verification" / "lfw")
    paths = lfw_images(root)  # the order bench/calibrate.py caches them in
    index = {p.resolve(): i for i, p in enumerate(paths)}
    index.update({p: i for i, p in enumerate(paths)})
    chosen = ([get_pack(v) for v in args.packs.split(",")] if args.packs
              else [p for p in packs() if p.calibrated])
    results = {}
    rows = []
    for pack in chosen:
        emb = embed(paths, pack)
        a = np.array([index[p.image1] for p in vset.pairs])
        b = np.array([index[p.image2] for p in vset.pairs])
        same = np.array([p.same for p in vset.pairs])
        dist = np.linalg.norm(emb[a].astype(np.float64) - emb[b], axis=1)
        sims = np.where(np.isnan(dist), -1.0, pack.similarities(np.nan_to_num(dist, nan=9.0)))
        result: dict[str, object] = {"images_without_face": int(np.isnan(emb[:, 0]).sum())}
        for s in THRESHOLDS:
            result[f"TAR@{s:g}"] = float((sims[same] >= s).mean())
            result[f"FMR@{s:g}"] = float((sims[~same] >= s).mean())
        result["accuracy@80"] = float(((sims >= 80) == same).mean())
        worst = worst_group_fmr(pack, 80)
        bound = worst_group_fmr(pack, 80, bound=True)
        result["worst_group@80"] = worst
        result["utkface_bound@80"] = bound
        embeddings = {p: ImageEmbedding(None if np.isnan(emb[index[p], 0]) else emb[index[p]],
                                        1, None) for p in vset.identities()}
        ident = evaluate(gallery_from_verification(vset), embeddings, (80.0,), pack=pack)
        result["rank1"] = ident["rank1"]["rate"]
        result["FNIR@80"] = ident["thresholds"][0]["fnir"]["rate"]
        result["FPIR@80"] = ident["thresholds"][0]["fpir"]["rate"]
        result["ms_per_face"] = ms_per_face(pack, paths)
        results[pack.version] = result
        rows.append([f"{pack.version} {pack.name}",
                     *(f"{result[f'TAR@{s:g}']:.1%}" for s in THRESHOLDS),
                     f"{result['FMR@80']:.2%}", f"{result['accuracy@80']:.1%}",
                     "-" if worst is None else f"{worst[1]:.1e} ({worst[0]})",
                     "-" if bound is None else f"{bound[1]:.1e} ({bound[0]})",
                     f"{result['rank1']:.1%}", f"{result['FNIR@80']:.1%}",
                     f"{result['FPIR@80']:.1%}", f"{result['ms_per_face']:.1f}"])
    print_table(["pack", "TAR@80", "TAR@90", "TAR@99", "FMR@80 (LFW)", "accuracy@80",
                 "worst group FMR@80 (identity-labelled)", "UTKFace bound FMR@80",
                 "rank-1", "FNIR@80", "FPIR@80",
                 "ms/face"], rows)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
