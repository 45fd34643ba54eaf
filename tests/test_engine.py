"""The Engine on real faces: detection, landmarks, pose, quality, embeddings, CompareFaces, and the
Rekognition response shapes (checked against botocore's service model)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image, ImageFilter

from regard import Engine
from regard.errors import InvalidParameterError
from regard.vision.packs import get_pack

from conftest import encode, face_crop, paste_faces
from shapes import assert_shape

def test_astronaut_one_face(engine, astronaut):
    result = engine.detect(encode(astronaut))
    assert len(result.faces) == 1
    face = result.faces[0]
    # The astronaut's face: roughly x 180-265, y 65-175 in the 512x512 image.
    assert 160 < face.left < 200 and 250 < face.right < 290
    assert 40 < face.top < 90 and 160 < face.bottom < 200
    assert face.confidence > 80
    body = result.detect_faces_response()
    assert_shape(body, "DetectFacesResponse")
    detail = body["FaceDetails"][0]
    assert {"BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"} <= set(detail)
    assert not {"Gender", "AgeRange", "Emotions"} & set(detail)  # not inferred, by design
    types = {lm["Type"] for lm in detail["Landmarks"]}
    assert {"eyeLeft", "eyeRight", "nose", "leftEyeLeft", "leftEyeRight", "rightEyeLeft",
            "rightEyeRight", "mouthLeft", "mouthRight"} == types
    lm = {m["Type"]: (m["X"], m["Y"]) for m in detail["Landmarks"]}
    assert lm["eyeLeft"][0] < lm["eyeRight"][0]  # image-left eye has the smaller X
    assert lm["eyeLeft"][1] < lm["nose"][1] < lm["mouthLeft"][1]
    box = detail["BoundingBox"]
    for x, y in lm.values():
        assert box["Left"] < x < box["Left"] + box["Width"]
        assert box["Top"] < y < box["Top"] + box["Height"]
    assert abs(detail["Pose"]["Roll"]) < 8 and abs(detail["Pose"]["Yaw"]) < 20


def test_no_face_in_a_face_free_image(engine):
    rng = np.random.default_rng(1)
    sky = np.clip(rng.normal(120, 3, (300, 400, 3)), 0, 255).astype(np.uint8)
    assert engine.detect(sky).faces == []
    assert engine.detect(sky).detect_faces_response() == {"FaceDetails": []}


def test_several_faces_largest_first(engine, astronaut):
    image, placed = paste_faces(face_crop(astronaut), [420, 300, 200, 140])
    faces = engine.detect(image).faces
    assert len(faces) == 4
    heights = [f.bottom - f.top for f in faces]
    assert heights == sorted(heights, reverse=True)
    for face, (x, y, h) in zip(faces, placed):  # each found where it was pasted
        cx = (face.left + face.right) / 2
        assert x < cx < x + h * face_crop(astronaut).shape[1] / face_crop(astronaut).shape[0]


def test_at_most_100_largest_faces(astronaut):
    face = np.asarray(Image.fromarray(face_crop(astronaut)).resize((60, 84)))
    canvas = np.full((11 * 90, 12 * 66, 3), 128, dtype=np.uint8)
    sizes = []
    for i in range(11):
        for j in range(12):
            scale = 1.0 if (i * 12 + j) % 3 else 0.8  # every third tile smaller
            tile = np.asarray(Image.fromarray(face).resize((round(60 * scale), round(84 * scale))))
            canvas[i * 90:i * 90 + tile.shape[0], j * 66:j * 66 + tile.shape[1]] = tile
            sizes.append(scale)
    engine = Engine()
    raw = engine.detector.detect(canvas)
    assert len(raw) > 110
    faces = engine.detect(canvas).faces
    assert len(faces) == 100
    kept_min = min(f.area for f in faces)
    dropped = sorted((d.width * d.height for d in raw), reverse=True)[100:]
    assert all(a <= kept_min for a in dropped)
    assert len(Engine(max_faces=5).detect(canvas).faces) == 5


@pytest.mark.parametrize("angle", [-25, -10, 10, 25])
def test_roll_follows_rotation(engine, astronaut, angle):
    upright = engine.detect(astronaut).faces[0].pose.roll
    rotated = np.asarray(Image.fromarray(astronaut).rotate(angle, resample=Image.BILINEAR))
    faces = engine.detect(rotated).faces
    assert len(faces) == 1
    # PIL rotates counter-clockwise for positive angles: the image-right eye rises, roll falls.
    assert faces[0].pose.roll == pytest.approx(upright - angle, abs=5)


def test_scaling_keeps_the_face_and_identity(engine, astronaut):
    ref = engine.embed(astronaut)[0]
    for size in (256, 1024):
        scaled = np.asarray(Image.fromarray(astronaut).resize((size, size), Image.BICUBIC))
        face = engine.embed(scaled)[0]
        box = face.bounding_box()
        assert box == pytest.approx(ref.bounding_box(), abs=0.03)
        assert Engine.similarity(ref.embedding, face.embedding) > 95


def test_sharpness_and_brightness(engine, astronaut):
    sharp = engine.detect(astronaut).faces[0].quality
    blurred = engine.detect(
        np.asarray(Image.fromarray(astronaut).filter(ImageFilter.GaussianBlur(3)))
    ).faces[0].quality
    dark = engine.detect((astronaut * 0.35).astype(np.uint8)).faces[0].quality
    assert sharp.sharpness > 80 > 30 > blurred.sharpness
    assert 0 <= dark.brightness < sharp.brightness - 20 <= 100


def test_min_face_size(astronaut):
    image, _ = paste_faces(face_crop(astronaut), [400, 120])
    assert len(Engine().detect(image).faces) == 2
    assert len(Engine(min_face_size=100).detect(image).faces) == 1


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_embeddings(engine, astronaut, cameraman, version):
    pack = get_pack(version)
    a = engine.embed(astronaut, pack)[0].embedding
    c = engine.embed(cameraman, pack)[0].embedding
    assert a.shape == (pack.embedding_size,) and a.dtype == np.float32
    if pack.metric == "cosine":
        assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    else:
        assert np.isfinite(a).all() and np.linalg.norm(a) > 0.5  # dlib does not L2-normalize
    flipped = engine.embed(np.ascontiguousarray(astronaut[:, ::-1]), pack)[0].embedding
    assert engine.similarity(a, flipped, pack) > 80 > 50 > engine.similarity(a, c, pack)
    if version == "1.0":
        assert np.linalg.norm(a - flipped) < 0.3 < 0.6 < np.linalg.norm(a - c)


def test_compare_same_and_different_person(engine, astronaut, cameraman):
    crowd, _ = paste_faces(face_crop(astronaut), [300], canvas=(700, 1200))
    crowd[200:600, 600:1000] = np.asarray(
        Image.fromarray(cameraman[90:230, 170:290]).resize((400, 400)))
    result = engine.compare(encode(astronaut), crowd, threshold=80)
    body = result.compare_faces_response()
    assert_shape(body, "CompareFacesResponse")
    assert len(body["FaceMatches"]) == 1 and len(body["UnmatchedFaces"]) == 1
    assert body["FaceMatches"][0]["Similarity"] > 90
    assert body["FaceMatches"][0]["Face"]["BoundingBox"]["Left"] < 0.3  # the astronaut copy
    # At threshold 0 every target face matches, best first.
    everything = engine.compare(astronaut, crowd, threshold=0)
    assert len(everything.matches) == 2
    assert everything.matches[0].similarity > everything.matches[1].similarity


def test_compare_errors(engine, astronaut):
    blank = np.full((200, 200, 3), 90, dtype=np.uint8)
    with pytest.raises(InvalidParameterError, match="no faces in the source"):
        engine.compare(blank, astronaut)
    assert engine.compare(astronaut, blank).compare_faces_response()["FaceMatches"] == []
    with pytest.raises(InvalidParameterError):
        engine.compare(astronaut, astronaut, threshold=101)
    with pytest.raises(InvalidParameterError):
        engine.compare(astronaut, astronaut, quality_filter="BEST")


def test_quality_filter_drops_blurred_faces(engine, astronaut):
    blurred = np.asarray(Image.fromarray(astronaut).filter(ImageFilter.GaussianBlur(4)))
    face = engine.detect(blurred).faces[0]
    assert "LOW_SHARPNESS" in face.quality_reasons("HIGH")
    assert face.quality_reasons("NONE") == []
    with pytest.raises(InvalidParameterError):
        engine.compare(blurred, astronaut, quality_filter="HIGH")


def test_engine_is_thread_safe(astronaut, cameraman):
    engine = Engine()  # models load lazily, here from several threads at once
    expected = {0: Engine().embed(astronaut)[0].embedding, 1: Engine().embed(cameraman)[0].embedding}
    errors, results = [], []

    def work(i: int) -> None:
        try:
            img = astronaut if i % 2 == 0 else cameraman
            results.append((i % 2, engine.embed(img)[0].embedding))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 8
    for kind, vec in results:
        assert np.abs(vec - expected[kind]).max() < 1e-5


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_calibration_table_is_monotone_and_strict(version):
    table = get_pack(version).calibration
    d = np.linspace(0, table.distances[-1] + 0.1, 500)
    s = table.similarity(d)
    assert np.all(np.diff(s) <= 0) and s[0] == 100 and s[-1] == 0
    for sim in (50, 80, 90, 95, 99):
        assert table.similarity(table.distance(sim)) == pytest.approx(sim)
    if version == "1.0":  # similarity 80 is well inside face_recognition's tolerance of 0.6
        assert table.distance(80) < 0.45


def test_detector_backends_agree_on_the_astronaut(astronaut):
    from regard.vision.detect import available_detectors

    boxes = {}
    for name in available_detectors():
        faces = Engine(detector=name).detect(astronaut).faces
        assert faces, name
        boxes[name] = faces[0]  # the largest
    for face in boxes.values():
        cx, cy = (face.left + face.right) / 2, (face.top + face.bottom) / 2
        assert 200 < cx < 250 and 90 < cy < 150


def test_unknown_detector():
    with pytest.raises(InvalidParameterError, match="Unknown detector"):
        Engine(detector="magic").detect(np.zeros((100, 100, 3), np.uint8))
