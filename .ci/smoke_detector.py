"""CI smoke test for a fresh ``pip install .`` on another Python (run by .ci/run from outside the
source tree, so ``regard`` comes from site-packages with its package data): the default detector
is the ONNX YuNet everywhere, and it finds the astronaut, landmarks included."""

from __future__ import annotations

import sys
import time

import numpy as np
from skimage import data

import regard
from regard import Engine
from regard.vision.detect import available_detectors, default_detector_name


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


if __name__ == "__main__":
    main()
