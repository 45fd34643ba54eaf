"""`regard eval` and `regard.evaluation`: the statistics on hand-computed numbers, the matching and
threshold rules on synthetic inputs (no images), an end-to-end run on images made here from
scikit-image's astronaut and cameraman, and (marked data/slow) a run on the real dev data."""

from __future__ import annotations

import csv
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from regard.cli import app
from regard.evaluation import detection as det
from regard.evaluation import groups as grp
from regard.evaluation import identification as ident
from regard.evaluation import layouts
from regard.evaluation import verification as ver
from regard.evaluation.embeddings import (
    ImageDetections,
    ImageEmbedding,
    load_detections,
    load_embeddings,
    save_detections,
    save_embeddings,
)
from regard.evaluation.render import Table, rate_cell, to_markdown
from regard.evaluation.stats import Rate, largest_ratio, wilson_interval
from regard.evaluation.svg import Scale
from regard.vision import calibration

from conftest import encode, face_crop, paste_faces

runner = CliRunner()


# -- statistics ----------------------------------------------------------------------------------
def test_wilson_interval_known_values():
    low, high = wilson_interval(0, 100)
    assert low == 0.0 and high == pytest.approx(0.0370, abs=5e-5)  # z^2 / (n + z^2)
    low, high = wilson_interval(50, 100)
    assert (low, high) == (pytest.approx(0.4038, abs=5e-5), pytest.approx(0.5962, abs=5e-5))
    low, high = wilson_interval(1, 10)
    assert (low, high) == (pytest.approx(0.0179, abs=5e-5), pytest.approx(0.4042, abs=5e-5))
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(10 / (10 + 1.959964 ** 2), abs=1e-6) and high == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_rate_texts_and_dict():
    zero = Rate(0, 100)
    assert zero.text() == "0 of 100 (95% CI upper 0.0370)"
    assert zero.to_dict()["ci95_low"] == 0.0 and zero.to_dict()["rate"] == 0.0
    half = Rate(50, 100)
    assert half.text() == "0.5000 (50 of 100, 95% CI 0.4038-0.5962)"
    assert half.complement() == Rate(50, 100)
    assert Rate(0, 0).to_dict()["rate"] is None and Rate(0, 0).text() == "no trials"
    assert rate_cell(zero.to_dict()) == "0/100 (<= 0.0370)"
    assert rate_cell(Rate(0, 0).to_dict()) == "-"


def test_largest_ratio_measurable_and_not():
    r = largest_ratio({"a": Rate(4, 100), "b": Rate(1, 100), "c": Rate(2, 100)})
    assert r.measurable and r.ratio == pytest.approx(4.0)
    assert (r.highest, r.lowest) == ("a", "b")

    r = largest_ratio({"a": Rate(2, 100), "b": Rate(0, 50), "c": Rate(1, 100)})
    assert not r.measurable and r.ratio is None and r.lowest == "b"
    assert "not measurable" in r.note and "b: 0 of 50" in r.note
    assert r.ratio_nonzero == pytest.approx(2.0) and r.lowest_nonzero == "c"

    r = largest_ratio({"a": Rate(0, 10), "b": Rate(0, 20)})
    assert not r.measurable and "no group has any event" in r.note
    assert not largest_ratio({"a": Rate(1, 10), "b": Rate(0, 0)}).measurable  # one group tried


# -- detection matching ----------------------------------------------------------------------------
def test_iou_matrix_hand_values():
    dets = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    gts = np.array([[0, 0, 10, 10]], dtype=float)
    iou = det.iou_matrix(dets, gts)
    assert iou[:, 0] == pytest.approx([1.0, 50 / 150, 0.0])
    assert det.iou_matrix(np.zeros((0, 4)), gts).shape == (0, 1)


def test_greedy_match_one_to_one_best_first():
    gts = np.array([[0, 0, 10, 10], [6, 0, 16, 10]], dtype=float)
    # det 0 overlaps gt 0 best (IoU 1), det 1 overlaps gt 1 (IoU 0.8) and gt 0 (IoU 4/16=0.25)
    dets = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=float)
    assert det.greedy_match(dets, gts).tolist() == [0, 1]
    # one detection between two boxes matches only the better one
    assert det.greedy_match(np.array([[1, 0, 11, 10]], float), gts).tolist() == [0, -1]
    assert det.greedy_match(np.zeros((0, 4)), gts).tolist() == [-1, -1]


def test_detection_evaluate_synthetic():
    def box(x, y, w, h, invalid=False, skin=""):
        return layouts.GroundTruthBox(x, y, w, h, invalid, None, None, None,
                                      {"perceived_skin": skin})

    image = layouts.DetectionImage(Path("a.jpg"), (
        box(0, 0, 10, 10, skin="II"),     # found, < 20 px
        box(100, 0, 30, 30, skin="V"),    # found, 20-40
        box(200, 0, 50, 50, skin="VI"),   # missed, 40-80
        box(300, 0, 90, 90, invalid=True),  # invalid: matched, neither hit nor unmatched
    ))
    dets = ImageDetections(np.array([[0, 0, 10, 10], [101, 1, 131, 31], [300, 0, 390, 90],
                                     [500, 500, 520, 520]], float), np.ones(4))
    out = det.evaluate([image], [dets], ["perceived_skin"], has_difficulty=False)
    assert out["recall"]["k"] == 2 and out["recall"]["n"] == 3
    assert out["unmatched_detections"] == 1 and out["detections_on_invalid_faces"] == 1
    assert out["by_size"]["<20"]["k"] == 1 and out["by_size"]["40-80"]["n"] == 1
    assert out["by_size"]["40-80"]["k"] == 0 and out["by_size"][">=80"]["n"] == 0
    skin = out["by_group"]["perceived_skin"]["values"]
    assert skin["I-III"]["all"]["k"] == 1 and skin["I-III"]["all"]["n"] == 1
    assert skin["IV-VI"]["all"]["k"] == 1 and skin["IV-VI"]["all"]["n"] == 2
    assert "by_difficulty" not in out
    assert det.skin_bin("iv") == "IV-VI" and det.skin_bin("Not Sure") == "Not Sure"


# -- verification thresholds ------------------------------------------------------------------------
def _d(similarity: float, eps: float = 1e-4) -> float:
    """A distance just inside the match region of ``similarity``."""
    return calibration.default_table().distance(similarity) - eps


FAR = calibration.default_table().distance(25) + 0.1  # beyond every match region shown


def test_verification_rates_at_calibrated_thresholds():
    genuine = [_d(99), _d(80), _d(50), FAR, np.nan]
    impostor = [FAR + 0.3, _d(80), np.nan]
    dist = np.array(genuine + impostor)
    same = np.array([True] * 5 + [False] * 3)
    out = ver.evaluate(dist, same, [1, 1, 2, 2, 3, 1, 2, 3])
    by = {t["similarity"]: t for t in out["thresholds"]}
    assert (by[99.0]["tar"]["k"], by[80.0]["tar"]["k"], by[50.0]["tar"]["k"]) == (1, 2, 3)
    assert by[80.0]["tar"]["n"] == 5 and by[80.0]["fnmr"]["k"] == 3
    assert (by[80.0]["fmr"]["k"], by[50.0]["fmr"]["k"], by[90.0]["fmr"]["k"]) == (1, 1, 0)
    assert by[80.0]["distance"] == pytest.approx(calibration.default_table().distance(80))
    assert out["pairs"] == {"total": 8, "genuine": 5, "impostor": 3, "with_missing_face": 2,
                            "genuine_with_missing_face": 1, "impostor_with_missing_face": 1}
    vs = out["curves"]["vs_threshold"]
    assert len(vs) == 101
    fmr = [p["fmr"] for p in vs]
    fnmr = [p["fnmr"] for p in vs]
    assert all(a >= b for a, b in zip(fmr, fmr[1:])) and all(a <= b for a, b in zip(fnmr, fnmr[1:]))
    assert fmr[0] == pytest.approx(2 / 3) and fnmr[0] == pytest.approx(1 / 5)  # NaN never matches
    assert "3-fold" in out["accuracy"]["method"]


def test_best_threshold_matches_brute_force():
    rng = np.random.default_rng(7)
    dist = np.concatenate([rng.normal(0.4, 0.08, 60), rng.normal(0.75, 0.1, 60)])
    dist[[3, 70]] = np.nan
    same = np.arange(120) < 60
    values = np.unique(dist[~np.isnan(dist)])
    cands = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2,
                            [values[-1] + 1e-6]])
    accs = [float((ver.accept_at(dist, t) == same).mean()) for t in cands]
    assert ver.best_threshold(dist, same) == float(cands[int(np.argmax(accs))])
    cv = ver.cross_validate(dist, same, np.arange(120) % 4)
    assert len(cv["folds"]) == 4 and 0.8 < cv["mean"] <= 1.0
    assert cv["pooled"]["n"] == 120


def test_verification_by_group_labels():
    dist = np.array([_d(80), FAR, FAR + 0.3, _d(50)])
    same = np.array([True, True, False, False])
    g1 = [{"gender": "female"}, {"gender": "male"}, {"gender": "female"}, {"gender": "male"}]
    g2 = [{"gender": "female"}, {"gender": "male"}, {"gender": "male"}, {"gender": "male"}]
    out = ver.by_group(dist, same, g1, g2, ["gender"])["gender"]
    assert out["genuine_tar"]["female"]["80"]["k"] == 1
    assert out["genuine_tar"]["male"]["80"]["k"] == 0
    assert out["impostor_fmr"]["female-male"]["50"]["k"] == 0
    assert out["impostor_fmr"]["male"]["50"]["k"] == 1


# -- groups ---------------------------------------------------------------------------------------------
def test_blockwise_impostor_distances_equal_full_matrix():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(23, 128)).astype(np.float32)
    ids = [f"p{i % 7}" for i in range(23)]
    full, same = grp.pairwise_distances(emb, np.array(ids))
    block = grp.impostor_distances(emb, ids, block=5)
    assert np.sort(block) == pytest.approx(np.sort(full[~same]))
    assert len(grp.impostor_distances(emb, None, block=4)) == 23 * 22 // 2


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 128))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_group_fmr_children_apart_and_ratio():
    rng = np.random.default_rng(11)
    far = _unit(rng, 8)  # random unit vectors: distances ~1.4, never a false match
    emb = np.zeros((11, 128))
    emb[:8] = far
    emb[8] = far[0] + 0.01  # a near-duplicate of image 0 in cell A (one false match)
    emb[9] = far[5] * 1.0
    emb[10] = far[5] + 0.001  # children in cell B, near-identical
    members = [grp.Member(i, None, {"g": "A" if i < 4 or i == 8 else "B"},
                          40.0 if i < 9 else 5.0) for i in range(11)]
    found = np.ones(11, dtype=bool)
    found[7] = False
    out = grp.evaluate(emb, found, members, ["g"], identified=False, min_age=18)
    cells = {c["group"]: c for c in out["cells"]}
    assert cells["A"]["images_used"] == 5 and cells["A"]["impostor_pairs"] == 10
    assert cells["A"]["fmr"]["80"]["k"] == 1
    assert cells["B"]["images_used"] == 3 and cells["B"]["images_without_face"] == 1
    assert cells["B"]["fmr"]["80"] == Rate(0, 3).to_dict()
    ratio = out["largest_ratio"]["80"]
    assert not ratio["measurable"] and ratio["highest_group"] == "A" and ratio["lowest_group"] == "B"
    assert out["children"]["images"] == 2
    assert out["children"]["pooled_within_cells"]["99"]["k"] == 1
    assert out["age_filter"] == {"min_age": 18, "images_below": 2}
    assert out["all_pairs"]["images_used"] == 8
    # identities: the near-duplicate is the same person, no longer an impostor pair
    for i, m in enumerate(members):
        m.identity = "x" if i in (0, 8) else f"id{i}"
    out = grp.evaluate(emb, found, members, ["g"], identified=True, min_age=18)
    assert {c["group"]: c for c in out["cells"]}["A"]["fmr"]["80"]["k"] == 0


# -- identification ---------------------------------------------------------------------------------
def test_identification_rank1_fnir_fpir():
    rng = np.random.default_rng(5)
    base = _unit(rng, 4)
    paths = {name: [Path(f"{name}{i}.jpg") for i in range(3)] for name in ("a", "b", "c")}
    emb: dict[Path, ImageEmbedding] = {}
    for k, name in enumerate(("a", "b", "c")):
        emb[paths[name][0]] = ImageEmbedding(base[k].astype(np.float32), 1)
        emb[paths[name][1]] = ImageEmbedding((base[k] + 0.0001).astype(np.float32), 1)
        emb[paths[name][2]] = ImageEmbedding(None, 0)  # a probe without a face: a miss
    stranger = Path("z.jpg")
    emb[stranger] = ImageEmbedding(base[3].astype(np.float32), 1)
    gallery = layouts.Gallery(Path("."), "test", paths, [stranger])
    out = ident.evaluate(gallery, emb)
    assert out["mated_probes"] == 6 and out["mated_probes_without_face"] == 3
    assert out["rank1"]["k"] == 3 and out["rank1"]["n"] == 6
    t80 = next(t for t in out["thresholds"] if t["similarity"] == 80)
    assert t80["fnir"]["k"] == 3 and t80["fpir"] == Rate(0, 1).to_dict()
    assert "one image" in out["fpir_method"]
    loo = ident.evaluate(layouts.Gallery(Path("."), "test", paths, []), emb)
    assert "leave-one-identity-out" in loo["fpir_method"]
    assert next(t for t in loo["thresholds"] if t["similarity"] == 80)["fpir"]["n"] == 3


# -- layouts ----------------------------------------------------------------------------------------------
def test_read_pairs_txt_and_limit(tmp_path: Path):
    (tmp_path / "pairs.txt").write_text(
        "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nBob\t1\t2\nCy\t1\tAnn\t2\n")
    (tmp_path / "images" / "Ann").mkdir(parents=True)
    vset = layouts.read_verification(tmp_path)
    assert [p.fold for p in vset.pairs] == [1, 1, 2, 2]
    assert [p.same for p in vset.pairs] == [True, False, True, False]
    assert vset.pairs[0].image2 == tmp_path / "images" / "Ann" / "Ann_0002.jpg"
    assert vset.identities_consistent()
    limited = layouts.limit_pairs(vset.pairs, 4)
    assert len({p for pr in limited for p in (pr.image1, pr.image2)}) <= 4
    assert {p.fold for p in limited} == {1, 2}
    derived = layouts.gallery_from_verification(vset)
    assert set(derived.identities) == {"Ann", "Bob"} and len(derived.nonmated) == 1


def test_read_wider_gt_file(tmp_path: Path):
    (tmp_path / layouts.GT_FILE).write_text(
        "ev/a.jpg\n2\n10 20 30 40 0 0 0 0 0 0 \n1 2 3 4 0 0 0 1 0 0 \nev/b.jpg\n0\n"
        "0 0 0 0 0 0 0 0 0 0 \n")
    dset = layouts.read_detection(tmp_path)
    assert [len(im.boxes) for im in dset.images] == [2, 0]
    assert dset.images[0].path == tmp_path / "images" / "ev" / "a.jpg"
    assert dset.images[0].boxes[0].ltrb == (10, 20, 40, 60) and dset.images[0].boxes[1].invalid
    assert not dset.has_difficulty


def test_discover_dev_layout(tmp_path: Path):
    (tmp_path / "verification" / "lfw").mkdir(parents=True)
    (tmp_path / "verification" / "lfw" / "pairs.csv").write_text("image1,image2,same_identity\n")
    (tmp_path / "identification" / "bbt_faceapi" / "gallery").mkdir(parents=True)
    assert set(layouts.discover(tmp_path)) == {"verification", "gallery"}


def test_caches_round_trip(tmp_path: Path):
    e = {"a|1|2": ImageEmbedding(np.arange(128, dtype=np.float32), 2),
         "b|1|2": ImageEmbedding(None, 0, "InvalidImageFormatException: bad")}
    save_embeddings(tmp_path / "e.npz", e)
    back = load_embeddings(tmp_path / "e.npz")
    assert back["a|1|2"].faces == 2 and back["a|1|2"].embedding[5] == 5
    assert back["b|1|2"].embedding is None and back["b|1|2"].error.startswith("Invalid")
    d = {"x": ImageDetections(np.array([[1, 2, 3, 4.0]]), np.array([90.0])),
         "y": ImageDetections(np.zeros((0, 4)), np.zeros(0))}
    save_detections(tmp_path / "d.npz", d)
    back_d = load_detections(tmp_path / "d.npz")
    assert back_d["x"].boxes.tolist() == [[1, 2, 3, 4]] and len(back_d["y"].boxes) == 0


def test_probit_and_log_scales():
    s = Scale("probit", 0.001, 0.999)
    assert s(0.5) == pytest.approx(0.5) and s(0.001) == 0.0 and s(0.999) == 1.0
    assert s(1e-9) == 0.0  # clamped
    lg = Scale("log10", 1e-4, 1.0)
    assert lg(1e-2) == pytest.approx(0.5) and [v for v, _ in lg.ticks()][0] == pytest.approx(1e-4)


def test_markdown_escapes_data_but_keeps_comparisons():
    md = to_markdown([Table(["group", "S>=80"], [["<b>x</b> | y", "a & b &amp;"]])])
    assert "<b>" not in md and "&lt;b>" in md and "\\|" in md
    assert "S>=80" in md and "&amp;amp;" in md


# -- end to end on images made here --------------------------------------------------------------
FACE_IN_CROP = (40, 45, 86, 108)  # x, y, w, h of the astronaut's face in ``face_crop`` (by eye)


def _save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(np.ascontiguousarray(rgb), "PNG"))
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _scaled(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor))))


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory, astronaut, cameraman) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaldata")
    crop = face_crop(astronaut)
    variants = {
        "a1": crop, "a2": crop[:, ::-1], "a3": _scaled(crop, 0.8),
        "c1": cameraman, "c2": _scaled(cameraman, 0.8), "c3": _scaled(cameraman, 0.6),
    }
    # 1. verification: people in folders (identities), a face-less image in an impostor pair
    ver_dir = root / "ver"
    for name, rgb in variants.items():
        person = "astronaut" if name[0] == "a" else "cameraman"
        _save(ver_dir / person / f"{name}.png", rgb)
    _save(ver_dir / "nobody" / "n1.png", np.full((120, 120, 3), 128, np.uint8))
    folder = {"a": "astronaut", "c": "cameraman", "n": "nobody"}
    gender = {"a": "<b>", "c": "male", "n": ""}
    pairs = [(1, "a1", "a2", 1), (1, "a1", "c1", 0), (2, "a1", "a3", 1), (2, "a2", "c2", 0),
             (3, "c1", "c2", 1), (3, "a3", "n1", 0)]
    _write_csv(ver_dir / "pairs.csv", ["fold", "image1", "image2", "same_identity", "gender1",
                                       "gender2"],
               [[f, f"{folder[a[0]]}/{a}.png", f"{folder[b[0]]}/{b}.png", s, gender[a[0]],
                 gender[b[0]]] for f, a, b, s in pairs])
    # 2. detection: pasted faces with their boxes, one invalid box, a group column
    det_dir = root / "det"
    canvas, placed = paste_faces(crop, [300, 200, 150, 100, 60])
    _save(det_dir / "images" / "canvas.png", canvas)
    fx, fy, fw, fh = FACE_IN_CROP
    rows = []
    for i, (x, y, h) in enumerate(placed):
        s = h / crop.shape[0]
        rows.append(["images/canvas.png", round(x + fx * s), round(y + fy * s), round(fw * s),
                     round(fh * s), 0, "<b>" if i < 2 else "plain"])
    rows.append(["images/canvas.png", 1000, 50, 40, 40, 1, ""])
    _write_csv(det_dir / "faces.csv", ["image", "x", "y", "w", "h", "invalid", "shirt"], rows)
    # 3. labelled faces: identities, a group column, two children
    lab_dir = root / "lab"
    labels = [("a1", "astro", "<b>", 40), ("a2", "astro", "<b>", 41), ("c1", "cam", "<b>", 50),
              ("c2", "cam", "male", 30), ("a3", "astro", "male", 5), ("c3", "cam", "male", 6)]
    for name, *_ in labels:
        _save(lab_dir / "images" / f"{name}.png", variants[name])
    _write_csv(lab_dir / "labels.csv", ["image", "identity", "gender", "age"],
               [[f"images/{n}.png", i, gr, a] for n, i, gr, a in labels])
    # 4. gallery
    gal_dir = root / "gal"
    for name in ("a1", "a2", "a3", "c1", "c2"):
        _save(gal_dir / "gallery" / ("astro" if name[0] == "a" else "cam") / f"{name}.png",
              variants[name])
    return {"verification": ver_dir, "detection": det_dir, "labels": lab_dir,
            "gallery": gal_dir, "root": root}


class _Checker(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "line", "rect", "circle", "polyline"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.svgs = 0
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.svgs += tag == "svg"
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.svgs += tag == "svg"

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def test_eval_end_to_end(eval_data: dict[str, Path], tmp_path: Path):
    out_dir, cache = tmp_path / "report", tmp_path / "cache"
    args = ["eval", "--verification", str(eval_data["verification"]),
            "--detection", str(eval_data["detection"]), "--labels", str(eval_data["labels"]),
            "--gallery", str(eval_data["gallery"]), "--out", str(out_dir),
            "--cache", str(cache), "--workers", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "verification: 6 pairs" in result.stdout and "detection: recall" in result.stdout
    report = json.loads((out_dir / "report.json").read_text())

    v = report["verification"]
    by = {t["similarity"]: t for t in v["thresholds"]}
    assert by[80.0]["tar"]["k"] == by[80.0]["tar"]["n"] == 3 and by[80.0]["tar"]["rate"] == 1.0
    assert by[80.0]["fmr"]["k"] == 0 and by[80.0]["fmr"]["n"] == 3
    assert by[80.0]["fmr"]["ci95_high"] == pytest.approx(wilson_interval(0, 3)[1])
    assert v["images"] == 6 and v["images_without_face"] == 1
    assert v["pairs"]["with_missing_face"] == 1 and v["pairs"]["impostor_with_missing_face"] == 1
    assert v["accuracy"]["pooled"]["k"] == 6
    assert v["by_group"]["gender"]["genuine_tar"]["<b>"]["80"]["k"] == 2
    assert len(v["curves"]["vs_threshold"]) == 101 and v["curves"]["roc"]
    allimp = v["all_cross_identity_impostors"]  # 3 astronaut x 2 cameraman images with a face
    assert allimp["impostor_pairs"] == 6 and allimp["fmr"]["80"]["k"] == 0
    assert report["timing"]["images_computed"] == 6 + 1 + 6 + 5

    d = report["detection"]
    assert d["recall"]["k"] == d["recall"]["n"] == 5 and d["recall"]["rate"] == 1.0
    assert d["invalid_faces"] == 1 and d["unmatched_detections"] == 0
    assert d["by_group"]["shirt"]["values"]["<b>"]["all"]["n"] == 2
    assert d["by_size"]["20-40"]["n"] == 1 and d["by_size"][">=80"]["n"] == 2

    labels = next(g for g in report["groups"] if g["name"].startswith("labels"))
    cells = {c["group"]: c for c in labels["cells"]}
    assert cells["<b>"]["images_used"] == 3 and cells["<b>"]["impostor_pairs"] == 2
    assert cells["<b>"]["fmr"]["80"]["k"] == 0
    assert labels["children"]["images"] == 2
    assert not labels["largest_ratio"]["80"]["measurable"]
    lfw_like = next(g for g in report["groups"] if g["name"].startswith("verification"))
    assert {c["group"] for c in lfw_like["cells"]} == {"<b>", "male"}

    gallery, derived = report["identification"]
    assert gallery["rank1"]["k"] == gallery["rank1"]["n"] == 3
    assert "leave-one-identity-out" in gallery["fpir_method"]
    assert derived["nonmated_probes"] == 1 and derived["nonmated_probes_without_face"] == 1
    assert derived["rank1"]["k"] == 3

    m = report["models"]
    assert m["detector"] and m["face_model_version"] and m["calibration"]["anchors"]
    assert report["datasets"]["verification"]["pairs"] == 6 and report["date"]

    md = (out_dir / "report.md").read_text()
    html = (out_dir / "report.html").read_text()
    assert "| 80 |" in md and "<b>" not in md and "&lt;b>" in md
    assert "<svg" in html and "<script" not in html.lower()
    assert "<b>" not in html and "&lt;b&gt;" in html
    checker = _Checker()
    checker.feed(html)
    checker.close()
    assert not checker.errors and not checker.stack and checker.svgs >= 6

    # a rerun reads every image from the cache and gives the same figures
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    report2 = json.loads((out_dir / "report.json").read_text())
    assert report2["timing"]["images_computed"] == 0
    assert report2["verification"]["thresholds"] == v["thresholds"]
    assert report2["detection"]["recall"] == d["recall"]

    # the model card, from the saved report, with a remedies section
    remedies = tmp_path / "remedies.json"
    remedies.write_text(json.dumps({"summary": "tried <b>", "table": {
        "headers": ["variant", "worst cell FMR"], "rows": [["baseline", "3/351"]]},
        "conclusion": "none adopted"}))
    card = tmp_path / "MODEL_CARD.md"
    made = runner.invoke(app, ["model-card", str(out_dir / "report.json"), "--out", str(card),
                               "--remedies", str(remedies)])
    assert made.exit_code == 0, made.output
    text = card.read_text()
    for heading in ("## Models", "## Intended uses", "## Out of scope", "## Headline figures",
                    "## Known weaknesses", "## Group disparities: remedies tried",
                    "## Measurements", "## How to reproduce"):
        assert heading in text
    assert "CC0" in text and "| baseline | 3/351 |" in text and "<b>" not in text
    assert "TAR 1.0000 (3 of 3" in text
    assert runner.invoke(app, ["model-card", str(tmp_path / "nope.json")]).exit_code == 2


def test_eval_without_data_fails_cleanly(tmp_path: Path):
    result = runner.invoke(app, ["eval", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert not (tmp_path / "r").exists()


def test_eval_limit_and_unknown_detector(eval_data: dict[str, Path], tmp_path: Path):
    bad = runner.invoke(app, ["eval", "--verification", str(eval_data["verification"]),
                              "--detector", "nope", "--out", str(tmp_path / "r")])
    assert bad.exit_code == 1 and "nope" in bad.output
    result = runner.invoke(app, ["eval", "--labels", str(eval_data["labels"]), "--limit", "2",
                                 "--min-age", "0", "--out", str(tmp_path / "r"),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (labels,) = report["groups"]
    assert labels["images"] == 2 and labels["age_filter"] is None and "children" not in labels
    assert "verification" not in report and "detection" not in report


# -- the real dev data ----------------------------------------------------------------------------------
@pytest.mark.data
@pytest.mark.slow
def test_eval_on_dev_data(dev_data: Path, tmp_path: Path):
    """About a minute on 2 cores: 500 LFW images, all of WIDER dev (132), UTKFace dev (500) and
    the BBT gallery (40)."""
    out_dir = tmp_path / "report"
    result = runner.invoke(app, ["eval", "--data", str(dev_data), "--limit", "500",
                                 "--out", str(out_dir), "--workers", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out_dir / "report.json").read_text())

    v = report["verification"]
    by = {t["similarity"]: t for t in v["thresholds"]}
    assert v["pairs"]["genuine"] >= 150 and v["pairs"]["impostor"] >= 150
    assert v["accuracy"]["mean"] > 0.95  # the literature's LFW figure (dlib: ~0.99)
    # The shipped calibration is strict (similarity 50 <-> distance ~0.40): about 30 % of LFW
    # genuine pairs reach 50, not the 50 % one might expect; see the calibration table's notes.
    assert by[50.0]["tar"]["rate"] > 0.2
    assert by[80.0]["fmr"]["n"] == v["pairs"]["impostor"] and by[80.0]["fmr"]["k"] <= 2
    assert v["images_without_face"] <= 5

    d = report["detection"]
    assert 0.4 < d["recall"]["rate"] < 0.9 and d["recall"]["n"] > 1000
    assert set(d["by_group"]["perceived_skin"]["values"]) >= {"I-III", "IV-VI"}

    utk = next(g for g in report["groups"] if "utkface" in g["name"])
    assert len(utk["cells"]) == 10
    for cell in utk["cells"]:
        assert cell["images_all_ages"] >= 40
        for t in ("50", "80", "90", "95", "99"):
            r = cell["fmr"][t]
            assert r["n"] == cell["impostor_pairs"] > 0 and r["k"] >= 0
            assert r["ci95_high"] is not None
    assert "children" in utk and utk["children"]["images"] > 0
    for t in ("80", "50"):
        ratio = utk["largest_ratio"][t]
        assert ratio["measurable"] == (ratio["ratio"] is not None)
        assert ratio["ratio"] is None or ratio["ratio"] >= 1

    lfw = next(g for g in report["groups"] if g["name"].startswith("verification"))
    assert {"female", "male"} <= {c["group"] for c in lfw["cells"]}
    bbt = next(i for i in report["identification"] if i["name"].startswith("gallery"))
    assert bbt["rank1"]["rate"] >= 0.9 and bbt["mated_probes"] == 32
    assert math.isfinite(report["timing"]["seconds_total"])
