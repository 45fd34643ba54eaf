"""YuNet (the ``yunet`` detector): shipped weights, decoding, detections, and equivalence with the
``yuface`` pipeline it replaces as the default."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from regard.vision.packs import get_pack
from regard import Engine
from regard.errors import InvalidParameterError
from regard.vision.detect import YuNetDetector, available_detectors, default_detector_name
from regard.vision.yunet import (
    MODEL_FILE,
    MODEL_SHA256,
    STRIDES,
    WEIGHTS_DIR,
    decode,
    file_sha256,
    nms,
    pad_input,
)

from conftest import face_crop, paste_faces


@pytest.fixture(scope="module")
def yunet() -> YuNetDetector:
    return YuNetDetector()


# -- the shipped file -----------------------------------------------------------------------------
def test_shipped_weights_match_their_provenance():
    provenance = (WEIGHTS_DIR / "PROVENANCE.md").read_text()
    stated = re.search(r"yunet_n_dynamic\.onnx `([0-9a-f]{64})`", provenance)
    assert stated, "PROVENANCE.md states no sha256 for yunet_n_dynamic.onnx"
    assert stated.group(1) == MODEL_SHA256
    assert file_sha256(MODEL_FILE) == MODEL_SHA256
    assert "Apache License" in (WEIGHTS_DIR / "LICENSE").read_text()


# -- decoding -------------------------------------------------------------------------------------
def _empty_outputs(height: int, width: int) -> dict[str, np.ndarray]:
    out = {}
    for s in STRIDES:
        n = (height // s) * (width // s)
        out[f"cls_{s}"] = np.zeros((1, n, 1), np.float32)
        out[f"obj_{s}"] = np.zeros((1, n, 1), np.float32)
        out[f"bbox_{s}"] = np.zeros((1, n, 4), np.float32)
        out[f"kps_{s}"] = np.zeros((1, n, 10), np.float32)
    return out


def test_decoding_is_anchor_free_per_grid_cell():
    h, w = 96, 128
    out = _empty_outputs(h, w)
    cols = w // 16
    i = 2 * cols + 3  # stride 16, row 2, column 3
    out["cls_16"][0, i, 0], out["obj_16"][0, i, 0] = 0.81, 0.64
    out["bbox_16"][0, i] = (0.5, 0.25, np.log(2.0), np.log(3.0))
    out["kps_16"][0, i] = (0, 0, 1, 0, 0.5, 0.5, 0, 1, 1, 1)
    boxes, scores, kps = decode(out, h, w, 0.5)
    assert scores == pytest.approx([np.sqrt(0.81 * 0.64)])  # 0.72
    cx, cy = 3.5 * 16, 2.25 * 16
    assert boxes[0] == pytest.approx([cx - 16, cy - 24, cx + 16, cy + 24])
    assert kps[0] == pytest.approx(np.array([[3, 2], [4, 2], [3.5, 2.5], [3, 3], [4, 3]]) * 16)
    # below the threshold: nothing
    assert len(decode(out, h, w, 0.73)[0]) == 0


def test_input_is_bgr_zero_padded_to_multiples_of_32():
    rgb = np.zeros((33, 70, 3), np.uint8)
    rgb[..., 0] = 200  # red
    blob = pad_input(rgb)
    assert blob.shape == (1, 3, 64, 96) and blob.dtype == np.float32
    assert (blob[0, 2, :33, :70] == 200).all() and (blob[0, :2, :33, :70] == 0).all()
    assert not blob[0, :, 33:].any() and not blob[0, :, :, 70:].any()


def test_nms_suppresses_overlaps_above_the_threshold():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [6, 0, 16, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.3).tolist() == [0, 2, 3]  # IoU 0.82 and 0.25 with box 0
    assert nms(boxes, scores, 0.9).tolist() == [0, 1, 2, 3]


# -- detections -----------------------------------------------------------------------------------
def test_finds_the_astronaut_with_her_eyes_where_they_are(yunet, astronaut):
    dets = yunet.detect(astronaut)
    assert len(dets) == 1
    d = dets[0]
    assert 80 < d.confidence <= 100
    assert 170 < d.left < 190 and 55 < d.top < 75 and 255 < d.right < 280 and 165 < d.bottom < 190
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = d.keypoints
    # libfacedetection's order: image-left eye first; eyes above the nose above the mouth
    assert lx < nx < rx and mlx < mrx
    assert max(ly, ry) < ny < min(mly, mry)
    assert (lx, ly) == pytest.approx((203, 103), abs=5)
    assert (rx, ry) == pytest.approx((247, 104), abs=5)


def test_keypoints_agree_with_dlibs_landmarks(astronaut):
    face = Engine(detector="yunet").detect(astronaut).faces[0]
    points = face.landmarks.points
    # the aligner reports the mouth corners only when the detector's eyes agree with dlib's
    assert "mouthLeft" in points and "mouthRight" in points
    assert points["eyeLeft"] == pytest.approx((203.5, 102), abs=3)
    assert points["eyeRight"] == pytest.approx((246.5, 104), abs=3)


def test_finds_pasted_faces_of_different_sizes(yunet, astronaut):
    image, placed = paste_faces(face_crop(astronaut), [60, 120, 240, 480])
    dets = yunet.detect(image)
    assert len(dets) == len(placed)
    for x, y, h in placed:
        w = h * 170 / 240
        inside = [d for d in dets
                  if x < (d.left + d.right) / 2 < x + w and y < (d.top + d.bottom) / 2 < y + h]
        assert len(inside) == 1, (x, y, h)
        # the face is about half the tile's height
        assert 0.3 * h < inside[0].height < 0.7 * h


@pytest.mark.parametrize("shape,value", [((480, 640, 3), 0), ((480, 640, 3), 128),
                                         ((301, 457, 3), 255), ((5, 7, 3), 90)])
def test_flat_images_have_no_faces(yunet, shape, value):
    assert yunet.detect(np.full(shape, value, np.uint8)) == []


def test_concurrent_calls_agree(yunet, astronaut):
    expected = yunet.detect(astronaut)
    results: list = []

    def work() -> None:
        for _ in range(3):
            results.append(yunet.detect(astronaut))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12 and all(r == expected for r in results)


def test_rejects_bad_options():
    with pytest.raises(InvalidParameterError):
        YuNetDetector(min_confidence=150)
    with pytest.raises(InvalidParameterError):
        YuNetDetector(nms_iou=0)


def test_yunet_is_the_default_detector_everywhere():
    assert available_detectors()[0] == "yunet"
    assert default_detector_name() == "yunet"
    assert Engine().detector.name == "yunet"


def test_embeddings_match_the_yuface_pipeline(astronaut):
    pytest.importorskip("yuface")
    dlib = get_pack("1.0")  # dlib's aligner is what the box mapping feeds
    ours = Engine(detector="yunet").embed(astronaut, dlib)
    theirs = Engine(detector="yuface").embed(astronaut, dlib)
    assert len(ours) == len(theirs) == 1
    # same person, same photo: far inside the same-person distance (~0.4-0.6)
    assert np.linalg.norm(ours[0].embedding - theirs[0].embedding) < 0.1


def test_engine_threads_reach_the_onnx_session():
    # batch workers run Engine(threads=1): ONNX Runtime ignores OMP_NUM_THREADS
    session = Engine(threads=1).detector._impl._session
    assert session.get_session_options().intra_op_num_threads == 1
