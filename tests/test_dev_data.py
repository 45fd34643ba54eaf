"""Sanity checks on the real research data (skipped when REGARD_DATA is absent). The figures that
matter are measured by bench/; these only guard against regressions that would wreck them."""

from __future__ import annotations

import numpy as np
import pytest

from regard.datasets import lfw_pairs, wider_images
from regard.vision.packs import get_pack

pytestmark = [pytest.mark.data, pytest.mark.slow]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_lfw_pairs_sample(dev_data, engine, version):
    pack = get_pack(version)
    pairs = lfw_pairs(dev_data)
    sample = [p for p in pairs if p.same][:40] + [p for p in pairs if not p.same][:40]
    cache: dict = {}

    def central(path):
        if path not in cache:
            faces = engine.embed(path, pack)
            cache[path] = min(faces, key=lambda f: abs((f.left + f.right) / 2 - 125)
                              + abs((f.top + f.bottom) / 2 - 125)).embedding
        return cache[path]

    dist = np.array([np.linalg.norm(central(p.image1) - central(p.image2)) for p in sample])
    same = np.array([p.same for p in sample])
    sims = pack.similarities(dist)
    assert (sims[~same] < 80).all()  # no impostor reaches the default threshold
    if version == "1.0":  # face_recognition's tolerance on dlib's embeddings
        assert ((dist < 0.6) == same).mean() >= 0.95
    else:  # MobileFaceNet is useful at the default: most genuine pairs reach 80
        assert (sims[same] >= 80).mean() >= 0.6


def test_wider_recall_on_clear_faces(dev_data, engine):
    images = [im for im in wider_images(dev_data) if not im.is_crowd][:8]
    found = total = 0
    for im in images:
        faces = engine.detect(im.path).faces
        boxes = [(f.left, f.top, f.right, f.bottom) for f in faces]
        for gt in im.faces:
            if gt.invalid or gt.h < 40:
                continue
            total += 1
            g = (gt.x, gt.y, gt.x + gt.w, gt.y + gt.h)
            found += any(_iou(g, b) >= 0.5 for b in boxes)
    assert total >= 10 and found / total >= 0.8


def test_crowd_photo_caps_at_100(dev_data, engine):
    selfie = dev_data / "crowd_unannotated" / "worlds-largest-selfie.jpg"
    faces = engine.detect(selfie).faces
    assert len(faces) == 100
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
