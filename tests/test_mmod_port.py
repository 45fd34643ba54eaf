"""The ONNX port of dlib's MMOD CNN face detector finds dlib's boxes with dlib's scores."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

dlib = pytest.importorskip("dlib")
frm = pytest.importorskip("face_recognition_models")
skimage_data = pytest.importorskip("skimage.data")

from regard.vision.dlib_dat import read_net  # noqa: E402
from regard.vision.dlib_mmod_onnx import MmodOnnxDetector, resize_bilinear, resize_bilinear_rgb  # noqa: E402

WIDER_DIR = Path(os.environ.get("REGARD_DATA", "/work/shared/data/dev")) / "detection/wider_face_val"
N_WIDER = 10
WIDTH = 640  # dlib's detector takes ~3 s per 640-wide image on CPU; keep the reference run short


@pytest.fixture(scope="module")
def reference() -> object:
    return dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> MmodOnnxDetector:
    return MmodOnnxDetector(cache_dir=tmp_path_factory.mktemp("models"))


def _compare(img: np.ndarray, upsample: int, reference: object, detector: MmodOnnxDetector) -> int:
    ref = [
        (d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, d.confidence)
        for d in reference(img, upsample)
    ]
    got = detector.detect(img, upsample=upsample)
    assert len(got) == len(ref), (ref, got)
    for box in ref:
        ious = [_iou(box, g) for g in got]
        best = int(np.argmax(ious))
        assert ious[best] > 0.9, (box, got)
        assert abs(got[best][4] - box[4]) < 0.05, (box, got[best])
    return len(ref)


def _iou(a: tuple, b: tuple) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_resize_is_dlibs() -> None:
    rng = np.random.default_rng(0)
    for h, w, oh, ow in [(480, 640, 400, 533), (37, 53, 30, 44), (250, 250, 208, 208), (7, 13, 15, 28)]:
        img = rng.standard_normal((h, w)).astype(np.float32)
        np.testing.assert_array_equal(resize_bilinear(img[None], oh, ow)[0], dlib.resize_image(img, oh, ow))
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.testing.assert_array_equal(resize_bilinear_rgb(rgb, oh, ow), dlib.resize_image(rgb, oh, ow))


def test_reader_parses_mmod_file() -> None:
    net = read_net(frm.cnn_face_detector_model_location())
    opts = net.loss.fields["options"]
    assert [(w["width"], w["height"]) for w in opts["detector_windows"]] == [(80, 80)]
    assert 0 < opts["overlaps_nms"][0] < 1
    assert [layer.kind for layer in net.layers].count("con") == 7


def test_astronaut_matches_dlib(reference: object, detector: MmodOnnxDetector) -> None:
    img = skimage_data.astronaut()
    assert _compare(img, 0, reference, detector) == 1
    small = np.ascontiguousarray(img[::3, ::3])  # face too small at upsample 0, found at 1
    assert _compare(small, 1, reference, detector) == 1
    assert detector.detect(np.zeros((3, 3, 3), np.uint8)) == []


@pytest.mark.data
@pytest.mark.slow
def test_wider_images_match_dlib(reference: object, detector: MmodOnnxDetector) -> None:
    from PIL import Image

    faces = WIDER_DIR / "faces.csv"
    if not faces.is_file():
        pytest.skip(f"WIDER FACE annotations not found under {WIDER_DIR}")
    widest: dict[str, int] = defaultdict(int)
    with faces.open() as fh:
        for row in csv.DictReader(fh):
            widest[row["image"]] = max(widest[row["image"]], int(row["w"]))
    # images with at least one face large enough for MMOD's 80 px window at 640 px width
    names = sorted(name for name, w in widest.items() if w >= 130)[:N_WIDER]
    assert len(names) == N_WIDER
    found = 0
    for name in names:
        im = Image.open(WIDER_DIR / name).convert("RGB")
        im = im.resize((WIDTH, round(im.height * WIDTH / im.width)), Image.BILINEAR)
        found += _compare(np.asarray(im), 0, reference, detector)
    assert found >= N_WIDER
