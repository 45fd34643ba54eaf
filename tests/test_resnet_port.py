"""The ONNX port of dlib's face-recognition ResNet gives dlib's descriptors on real faces."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

dlib = pytest.importorskip("dlib")
frm = pytest.importorskip("face_recognition_models")
skimage_data = pytest.importorskip("skimage.data")

from regard.vision.dlib_dat import TAG_OR_SKIP, read_net  # noqa: E402
from regard.vision.dlib_resnet_onnx import OnnxFaceEmbedder, build_resnet_onnx  # noqa: E402

TOL = 1e-4
LFW_DIR = Path(os.environ.get("REGARD_DATA", "/work/shared/data/dev")) / "verification/lfw/images"
N_LFW = 24


@pytest.fixture(scope="module")
def dlib_models() -> tuple:
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
        dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    )


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> OnnxFaceEmbedder:
    return OnnxFaceEmbedder(cache_dir=tmp_path_factory.mktemp("models"))


def _chips(img: np.ndarray, models: tuple, upsample: int) -> list[np.ndarray]:
    detector, predictor, _ = models
    return [dlib.get_face_chip(img, predictor(img, d), 150, 0.25) for d in detector(img, upsample)]


def _assert_matches_dlib(chips: list[np.ndarray], models: tuple, embedder: OnnxFaceEmbedder) -> float:
    rec = models[2]
    ref = np.array([rec.compute_face_descriptor(c) for c in chips])
    got = embedder.embed(np.stack(chips))
    assert got.dtype == np.float32 and got.shape == (len(chips), 128)
    err = float(np.abs(got - ref).max())
    assert err < TOL, f"max |onnx - dlib| = {err}"
    return err


def test_reader_parses_whole_file() -> None:
    net = read_net(frm.face_recognition_model_location())
    kinds = [layer.kind for layer in net.layers if layer is not TAG_OR_SKIP]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert net.input.fields["nr"] == 150
    assert np.isclose(net.input.fields["avg_red"], 122.782)
    assert net.layers[0].fields["weights"].shape == (256, 128)


def test_astronaut_matches_dlib(dlib_models: tuple, embedder: OnnxFaceEmbedder) -> None:
    chips = _chips(skimage_data.astronaut(), dlib_models, 1)
    assert chips
    _assert_matches_dlib(chips, dlib_models, embedder)


@pytest.mark.data
def test_lfw_faces_match_dlib(dlib_models: tuple, embedder: OnnxFaceEmbedder) -> None:
    from PIL import Image

    paths = sorted(LFW_DIR.glob("*/*.jpg"))[::7] if LFW_DIR.is_dir() else []
    if len(paths) < N_LFW:
        pytest.skip(f"LFW images not found under {LFW_DIR}")
    chips: list[np.ndarray] = []
    for p in paths:
        chips += _chips(np.asarray(Image.open(p).convert("RGB")), dlib_models, 0)[:1]
        if len(chips) >= N_LFW:
            break
    assert len(chips) >= 20
    _assert_matches_dlib(chips, dlib_models, embedder)


def test_batched_equals_single(dlib_models: tuple, embedder: OnnxFaceEmbedder) -> None:
    rng = np.random.default_rng(0)
    face = _chips(skimage_data.astronaut(), dlib_models, 1)[0]
    # the real chip plus perturbed copies, so the batch holds distinct inputs
    noisy = [np.clip(face + rng.integers(-20, 21, face.shape), 0, 255).astype(np.uint8) for _ in range(9)]
    chips = np.stack([face, *noisy])
    batched = embedder.embed(chips)
    single = np.concatenate([embedder.embed(c[None]) for c in chips])
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)
    small = OnnxFaceEmbedder(cache_dir=Path(embedder.model_path).parent, max_batch=3)
    np.testing.assert_allclose(small.embed(chips), batched, atol=1e-5, rtol=0)
    assert embedder.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with ThreadPoolExecutor(4) as pool:  # one shared session, concurrent callers
        results = list(pool.map(lambda i: embedder.embed(chips[i : i + 5]), [0, 5, 0, 5]))
    np.testing.assert_allclose(np.concatenate(results[:2]), batched, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.concatenate(results[2:]), batched, atol=1e-5, rtol=0)


def test_conversion_is_cached(tmp_path: Path, embedder: OnnxFaceEmbedder) -> None:
    assert embedder.model_path is not None and embedder.model_path.is_file()
    again = OnnxFaceEmbedder(cache_dir=embedder.model_path.parent)
    assert again.model_path == embedder.model_path
    model = build_resnet_onnx(frm.face_recognition_model_location())
    assert model == embedder.model_path.read_bytes()
    with pytest.raises(ValueError):
        embedder.embed(np.zeros((1, 150, 150), np.uint8))
