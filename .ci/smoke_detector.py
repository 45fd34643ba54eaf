"""CI smoke test for a fresh ``pip install .`` on another Python (run by .ci/run from outside the
source tree, so ``regard`` comes from site-packages with its package data): the default detector
is the ONNX YuNet everywhere, and it finds the astronaut, landmarks included; the default face
model embeds it."""

from __future__ import annotations

import sys
import time

import numpy as np
from skimage import data

import regard
from regard import Engine
from regard.vision.detect import available_detectors, default_detector_name
from regard.vision.packs import default_pack


def main() -> None:
    print(f"Python {sys.version.split()[0]}; regard from {regard.__file__}")
    assert "site-packages" in regard.__file__, "regard is not the installed package"
    print(f"detectors here: {', '.join(available_detectors())}")
    assert default_detector_name() == "yunet", default_detector_name()
    t0 = time.perf_counter()
    faces = Engine().detect(np.ascontiguousarray(data.astronaut())).faces
    assert len(faces) == 1, f"{len(faces)} faces in the astronaut"
    f = faces[0]
    cx, cy = (f.left + f.right) / 2, (f.top + f.bottom) / 2
    assert 200 < cx < 250 and 90 < cy < 150, (cx, cy)
    assert "eyeLeft" in f.landmarks.points
    print(f"ok: 1 face at ({cx:.0f}, {cy:.0f}), confidence {f.confidence:.1f}, "
          f"{1000 * (time.perf_counter() - t0):.0f} ms")
    # the default face model (MobileFaceNet, converted from its .tflite at first use) embeds it
    pack = default_pack()
    assert pack.version == "2.0" and pack.calibrated, pack.version
    (face,) = Engine().embed(np.ascontiguousarray(data.astronaut()))
    assert face.embedding.shape == (pack.embedding_size,), face.embedding.shape
    assert abs(float(np.linalg.norm(face.embedding)) - 1.0) < 1e-4
    print(f"ok: face model {pack.version} ({pack.name}) embeds it, {pack.embedding_size}-d")


if __name__ == "__main__":
    main()
