"""MobileFaceNet: the shipped weights, the TFLite -> ONNX conversion against LiteRT, ArcFace
alignment and the embedder's contract."""

from __future__ import annotations

import hashlib
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regard.vision.arcface_align import (
    ARCFACE_TEMPLATE,
    DLIB5_TEMPLATE,
    arcface_chip,
    dlib5_chip,
    similarity_transform,
    warp_chip,
)
from regard.vision.mobilefacenet import (
    TFLITE_PATH,
    TFLITE_SHA256,
    MobileFaceNetEmbedder,
    build_mobilefacenet_onnx,
    face_chip,
    keypoints_agree,
    preprocess,
)
from regard.vision.tflite_onnx import (
    UnsupportedModelError,
    convert,
    find_prelus,
    read_tflite,
    same_padding,
)

# Measured (default detector, yunet or yuface): the astronaut against its mirror image, a shifted
# crop, a half-size copy and a JPEG at quality 40: cosine 0.96-0.995 (either alignment); against
# the cameraman: -0.02-0.08.
SAME_MIN_COSINE = 0.9
OTHER_MAX_COSINE = 0.4
LFW_DIR = Path(os.environ.get("REGARD_DATA", "/work/shared/data/dev")) / "verification/lfw/images"


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> MobileFaceNetEmbedder:
    return MobileFaceNetEmbedder(cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def face_models() -> tuple:
    from regard.vision.detect import create_detector
    from regard.vision.landmarks import Aligner

    return create_detector(None), Aligner()


def _face(rgb: np.ndarray, models: tuple) -> tuple[tuple | None, np.ndarray]:
    """(detector keypoints, dlib's 5 points) of the largest face."""
    detector, aligner = models
    det = max(detector.detect(rgb), key=lambda d: d.width)
    return det.keypoints, aligner.landmarks(rgb, det).dlib5


def _chip(rgb: np.ndarray, models: tuple) -> np.ndarray:
    keypoints, dlib5 = _face(rgb, models)
    return face_chip(rgb, keypoints, dlib5)


# -- the shipped file -----------------------------------------------------------------------------


def test_weights_match_provenance() -> None:
    digest = hashlib.sha256(TFLITE_PATH.read_bytes()).hexdigest()
    assert digest == TFLITE_SHA256
    provenance = (TFLITE_PATH.parent / "PROVENANCE.md").read_text()
    assert re.findall(r"\b[0-9a-f]{64}\b", provenance) == [digest]
    assert TFLITE_PATH.stat().st_size == 5_233_396
    assert "Apache License" in (TFLITE_PATH.parent / "LICENSE").read_text()


def test_reader_parses_the_file() -> None:
    model = read_tflite(TFLITE_PATH)
    ops = [o.op for o in model.operators]
    assert len(ops) == 230
    assert {op: ops.count(op) for op in set(ops)} == {
        "CONV_2D": 35, "DEPTHWISE_CONV_2D": 17, "RELU": 33, "ABS": 33, "SUB": 33, "MUL": 33,
        "ADD": 45, "RESHAPE": 1}
    assert model.tensors[model.inputs[0]].shape == (2, 112, 112, 3)
    assert model.tensors[model.outputs[0]].shape == (2, 192)
    assert {t.dtype for t in model.tensors} == {"FLOAT32", "INT32"}  # INT32: the reshape target
    first = model.operators[0]
    assert first.op == "CONV_2D" and first.options["stride_h"] == 2
    assert model.tensors[first.inputs[1]].data.shape == (64, 3, 3, 3)  # OHWI


def test_reader_rejects_other_files(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError):
        read_tflite(b"\x00" * 64)
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"12345678not a flatbuffer")
    with pytest.raises(UnsupportedModelError):
        read_tflite(bad)


def test_same_padding_is_tflites() -> None:
    # out = ceil(in / stride); the odd pixel of padding goes after
    assert same_padding(112, 3, 2) == (0, 1)
    assert same_padding(56, 3, 1) == (1, 1)
    assert same_padding(7, 7, 1) == (3, 3)
    assert same_padding(5, 2, 2) == (0, 1)
    assert same_padding(8, 1, 2) == (0, 0)


# -- conversion against the reference runtime -----------------------------------------------------


def _real_chips(astronaut: np.ndarray, cameraman: np.ndarray, models: tuple) -> np.ndarray:
    images = [astronaut, cameraman]
    if LFW_DIR.is_dir():
        images += [np.asarray(Image.open(p).convert("RGB"))
                   for p in sorted(LFW_DIR.glob("*/*.jpg"))[:10]]
    chips = [_chip(img, models) for img in images]
    keypoints, dlib5 = _face(astronaut, models)
    chips.append(dlib5_chip(astronaut, dlib5))
    chips.append(chips[0][:, ::-1])
    return np.stack(chips)


def test_onnx_matches_litert(astronaut: np.ndarray, cameraman: np.ndarray, face_models: tuple,
                             embedder: MobileFaceNetEmbedder) -> None:
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_path=str(TFLITE_PATH), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    chips = _real_chips(astronaut, cameraman, face_models)
    x = preprocess(chips)
    if len(x) % 2:  # the file's batch is fixed at 2
        x = np.concatenate([x, x[-1:]])
    ref = []
    for i in range(0, len(x), 2):
        interpreter.set_tensor(inp, x[i:i + 2])
        interpreter.invoke()
        ref.append(interpreter.get_tensor(out).copy())
    ref = np.concatenate(ref)[:len(chips)]
    got = embedder.raw(chips)
    assert got.shape == ref.shape == (len(chips), 192)
    # Measured on 400 LFW dev chips: raw outputs (norms 46-96, entries up to 35) differ by at
    # most 4.4e-5 (1.3e-6 of the largest entry), the unit vectors by at most 6.6e-7.
    assert np.abs(got - ref).max() < 1e-5 * np.abs(ref).max()
    unit_ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.abs(embedder.embed(chips) - unit_ref).max() < 1e-5


def test_prelu_rewrite_is_bit_identical(astronaut: np.ndarray, cameraman: np.ndarray,
                                        face_models: tuple) -> None:
    from regard.vision.dlib_resnet_onnx import make_session

    model = read_tflite(TFLITE_PATH)
    assert len(find_prelus(model)) == 33
    x = preprocess(_real_chips(astronaut, cameraman, face_models))
    outputs = []
    for fuse in (True, False):
        session = make_session(convert(model, fuse_prelu=fuse).SerializeToString(), None)
        outputs.append(session.run(None, {"input": x})[0])
    assert (outputs[0] == outputs[1]).all()


def test_onnx_graph_has_a_dynamic_batch() -> None:
    import onnx

    model = onnx.load_from_string(build_mobilefacenet_onnx(TFLITE_PATH))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [112, 112, 3]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_converted_model_is_cached(tmp_path: Path) -> None:
    first = MobileFaceNetEmbedder(cache_dir=tmp_path)
    assert first.model_path is not None and first.model_path.parent == tmp_path
    stamp = first.model_path.stat().st_mtime_ns
    second = MobileFaceNetEmbedder(cache_dir=tmp_path)
    assert second.model_path == first.model_path
    assert first.model_path.stat().st_mtime_ns == stamp
    assert [p.suffix for p in tmp_path.iterdir()] == [".onnx"]


# -- alignment ------------------------------------------------------------------------------------


def test_similarity_transform_recovers_a_known_one() -> None:
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 300, (5, 2))
    angle, scale = 0.3, 0.45
    m = np.array([[scale * np.cos(angle), -scale * np.sin(angle), 12.0],
                  [scale * np.sin(angle), scale * np.cos(angle), -40.0]])
    dst = src @ m[:, :2].T + m[:, 2]
    assert np.allclose(similarity_transform(src, dst), m, atol=1e-9)
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), dst)


def test_similarity_transform_matches_scikit_image() -> None:
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(4)
    src = rng.uniform(0, 250, (5, 2))
    dst = ARCFACE_TEMPLATE + rng.normal(0, 2, (5, 2))
    if hasattr(transform.SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        ref = transform.SimilarityTransform.from_estimate(src, dst)
    else:
        ref = transform.SimilarityTransform()
        ref.estimate(src, dst)
    assert np.allclose(similarity_transform(src, dst), ref.params[:2], atol=1e-9)


def test_warp_is_pixel_centred(astronaut: np.ndarray) -> None:
    # an integer translation cuts exactly the pixels under the chip
    shift = np.array([[1.0, 0.0, -100.0], [0.0, 1.0, -50.0]])
    assert (warp_chip(astronaut, shift) == astronaut[50:162, 100:212]).all()
    # half-pixel shift: the mean of two neighbours (bilinear), as OpenCV's warpAffine
    half = np.array([[1.0, 0.0, -100.5], [0.0, 1.0, -50.0]])
    expect = (astronaut[50:162, 100:212].astype(int) + astronaut[50:162, 101:213]) / 2
    assert np.abs(warp_chip(astronaut, half) - expect).max() <= 1
    # outside the image: black
    away = np.array([[1.0, 0.0, 5000.0], [0.0, 1.0, 0.0]])
    assert not warp_chip(astronaut, away).any()


def test_arcface_chip_puts_the_keypoints_on_the_template(astronaut: np.ndarray,
                                                         face_models: tuple) -> None:
    keypoints, dlib5 = _face(astronaut, face_models)
    if keypoints is None:
        pytest.skip("the default detector gives no keypoints")
    m = similarity_transform(np.array(keypoints), ARCFACE_TEMPLATE)
    mapped = np.array(keypoints) @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 6  # a similarity cannot fit 5 points exactly
    chip = arcface_chip(astronaut, keypoints)
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    # dlib's points land near their template in the same chip
    d = np.array(dlib5) @ m[:, :2].T + m[:, 2]
    assert np.abs(d - DLIB5_TEMPLATE).max() < 8


def test_keypoints_agree_checks_position_and_angle() -> None:
    # dlib order: image-right eye outer, inner; image-left eye outer, inner; nose base
    dlib5 = np.array([[160.0, 100.0], [130.0, 100.0], [70.0, 100.0], [100.0, 100.0],
                      [115.0, 140.0]])
    keypoints = np.array([[85.0, 100.0], [145.0, 100.0], [115.0, 130.0], [90.0, 160.0],
                          [140.0, 160.0]])
    assert keypoints_agree(keypoints, dlib5)
    moved = keypoints + [0.0, 10.0]  # 10 px of a 60 px eye distance: beyond 15 %
    assert not keypoints_agree(moved, dlib5)
    turn = np.radians(8.0)  # right eye 8 degrees lower, within 15 % of the eye distance
    tilted = keypoints.copy()
    tilted[1] = keypoints[0] + 60 * np.array([np.cos(turn), np.sin(turn)])
    assert not keypoints_agree(tilted, dlib5)
    assert keypoints_agree(tilted, dlib5, max_angle=10)


def test_dlib5_fallback_follows_a_tilted_head(astronaut: np.ndarray, face_models: tuple,
                                              embedder: MobileFaceNetEmbedder) -> None:
    """libfacedetection's keypoints stay level on a tilted face; the chip from dlib's points
    turns with it, and face_chip falls back to it when the keypoints disagree with dlib's eyes."""
    _, dlib5 = _face(astronaut, face_models)
    upright = embedder.embed(dlib5_chip(astronaut, dlib5))
    tested = 0
    for angle in (20, -30):
        tilted = np.asarray(Image.fromarray(astronaut).rotate(angle, resample=Image.BILINEAR))
        if not face_models[0].detect(tilted):  # dlib's HOG misses strongly tilted faces
            continue
        tested += 1
        keypoints, dlib5_t = _face(tilted, face_models)
        e = embedder.embed(dlib5_chip(tilted, dlib5_t))
        assert float(upright[0] @ e[0]) > 0.97  # measured 0.993-0.997
        if keypoints is not None and not keypoints_agree(keypoints, dlib5_t):
            assert (face_chip(tilted, keypoints, dlib5_t) == dlib5_chip(tilted, dlib5_t)).all()
    if not tested:
        pytest.skip(f"{face_models[0].name} finds no tilted face")


# -- the embedder ---------------------------------------------------------------------------------


def test_embeds_a_unit_vector(astronaut: np.ndarray, face_models: tuple,
                              embedder: MobileFaceNetEmbedder) -> None:
    e = embedder.embed(_chip(astronaut, face_models))
    assert e.shape == (1, 192) and e.dtype == np.float32
    assert abs(float(np.linalg.norm(e)) - 1) < 1e-5
    assert embedder.embed(np.zeros((0, 112, 112, 3), np.uint8)).shape == (0, 192)
    with pytest.raises(ValueError):
        embedder.embed(np.zeros((1, 150, 150, 3), np.uint8))


def test_same_face_close_other_face_far(astronaut: np.ndarray, cameraman: np.ndarray,
                                        face_models: tuple,
                                        embedder: MobileFaceNetEmbedder) -> None:
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, "JPEG", quality=40)
    variants = [
        np.ascontiguousarray(astronaut[:, ::-1]),  # mirror image
        np.ascontiguousarray(astronaut[13:, 21:]),  # shifted crop
        np.asarray(Image.fromarray(astronaut).resize((256, 256), Image.BILINEAR)),
        np.asarray(Image.open(buf).convert("RGB")),
    ]
    ref = embedder.embed(_chip(astronaut, face_models))[0]
    same = embedder.embed(np.stack([_chip(v, face_models) for v in variants])) @ ref
    assert (same > SAME_MIN_COSINE).all(), same
    other = float(embedder.embed(_chip(cameraman, face_models))[0] @ ref)
    assert other < OTHER_MAX_COSINE


def test_batch_equals_singles(astronaut: np.ndarray, cameraman: np.ndarray, face_models: tuple,
                              tmp_path: Path) -> None:
    chips = np.stack([_chip(astronaut, face_models), _chip(cameraman, face_models),
                      _chip(np.ascontiguousarray(astronaut[:, ::-1]), face_models)])
    chips = np.concatenate([chips, chips[:, :, ::-1]])  # 6 faces
    small = MobileFaceNetEmbedder(cache_dir=tmp_path, max_batch=4)  # 4 + 2
    batched = small.embed(chips)
    singles = np.concatenate([small.embed(c) for c in chips])
    assert np.abs(batched - singles).max() < 1e-5


def test_mirror_averages_the_flipped_chip(astronaut: np.ndarray, face_models: tuple,
                                          tmp_path: Path, embedder: MobileFaceNetEmbedder
                                          ) -> None:
    chip = _chip(astronaut, face_models)
    mirrored = MobileFaceNetEmbedder(cache_dir=tmp_path, mirror=True).embed(chip)[0]
    both = embedder.embed(np.stack([chip, chip[:, ::-1]]))
    expect = both.sum(axis=0) / np.linalg.norm(both.sum(axis=0))
    assert np.abs(mirrored - expect).max() < 1e-5
    assert abs(float(np.linalg.norm(mirrored)) - 1) < 1e-5


def test_embed_faces_and_threads(astronaut: np.ndarray, face_models: tuple,
                                 embedder: MobileFaceNetEmbedder) -> None:
    keypoints, dlib5 = _face(astronaut, face_models)
    by_faces = embedder.embed_faces(astronaut, [dlib5, dlib5], [keypoints, None])
    assert np.abs(by_faces[0] - embedder.embed(face_chip(astronaut, keypoints, dlib5))).max() < 1e-6
    assert np.abs(by_faces[1] - embedder.embed(dlib5_chip(astronaut, dlib5))).max() < 1e-6
    chips = np.stack([face_chip(astronaut, keypoints, dlib5), dlib5_chip(astronaut, dlib5)] * 4)
    serial = embedder.embed(chips)
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda c: embedder.embed(c)[0], chips))
    assert np.abs(np.stack(parallel) - serial).max() < 1e-5
