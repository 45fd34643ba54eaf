"""5-point landmarks for alignment, and their mapping to Rekognition's landmark types.

Alignment uses dlib's 5-point shape predictor (eye corners + base of the nose; trained on dlib's
own permissively licensed data; the 68-point model is deliberately not used, its training data
forbids commercial use). The predictor expects dlib-style square boxes, so boxes from other
detectors are first mapped onto that convention (``dlib_style_box``; the mapping was measured on
LFW faces detected by both libfacedetection and dlib HOG).

Rekognition landmark types we can give (image-left/right, as Rekognition reports them:
``eyeLeft`` is the eye with the smaller X):

==================  ==========================================================================
type                source
==================  ==========================================================================
leftEyeLeft/Right   dlib 5-point: corners of the image-left eye
rightEyeLeft/Right  dlib 5-point: corners of the image-right eye
eyeLeft/eyeRight    mean of the two dlib corners of that eye
nose                dlib's point at the base of the nose (Rekognition's is the tip: a few pixels
                    higher)
mouthLeft/Right     libfacedetection keypoints, only when its eye keypoints agree with dlib's
                    (they do not follow in-plane rotation); absent for the dlib detectors
==================  ==========================================================================
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from regard.vision.detect import Detection
from regard.vision.models import model_path

# dlib 5-point order: 0,1 image-right eye outer/inner corner; 2,3 image-left eye outer/inner;
# 4 base of the nose.
_RIGHT_EYE_OUTER, _RIGHT_EYE_INNER, _LEFT_EYE_OUTER, _LEFT_EYE_INNER, _NOSE_BASE = range(5)

# yuface box -> dlib-style box, measured on 199 LFW dev faces found by both detectors:
# dlib's square box is 1.127x the yuface width, its centre 0.038w right and 0.090w lower.
# YuNet's boxes (``yunet``, the same network family) map alike: against dlib HOG boxes on 298 LFW
# dev faces, its side ratio and centre offsets differ from yuface's by at most 0.6 % of the width.
_YU_TO_DLIB_SIDE = 1.127
_YU_TO_DLIB_DX = 0.038
_YU_TO_DLIB_DY = 0.090

CHIP_SIZE = 150
CHIP_PADDING = 0.25


@dataclass(frozen=True)
class Landmarks:
    """Named landmark points in pixel coordinates, plus the raw dlib 5 points used for alignment."""

    points: dict[str, tuple[float, float]]
    dlib5: np.ndarray  # (5, 2) float, dlib's integer points
    rect: tuple[int, int, int, int]  # the dlib-style box the predictor ran on
    # The detector's own five keypoints when it gives them (libfacedetection's order: eyes,
    # nose tip, mouth corners); ArcFace-style packs align on them.
    keypoints: tuple[tuple[float, float], ...] | None = None


def dlib_style_box(det: Detection) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the square box dlib's predictor was trained on."""
    if det.keypoints is None:  # dlib's own detectors: already the right convention
        return int(round(det.left)), int(round(det.top)), int(round(det.right)), int(round(det.bottom))
    w = det.width
    cx = (det.left + det.right) / 2 + _YU_TO_DLIB_DX * w
    cy = (det.top + det.bottom) / 2 + _YU_TO_DLIB_DY * w
    half = _YU_TO_DLIB_SIDE * w / 2
    return (
        int(round(cx - half)),
        int(round(cy - half)),
        int(round(cx + half)),
        int(round(cy + half)),
    )


class Aligner:
    """Runs the 5-point predictor and cuts the 150x150 chip the ResNet expects."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(model_path("shape_predictor_5_face_landmarks.dat"))
        self._lock = threading.Lock()

    def landmarks(self, rgb: np.ndarray, det: Detection) -> Landmarks:
        """Landmarks for one detection."""
        rect = self._dlib.rectangle(*dlib_style_box(det))
        with self._lock:
            shape = self._predictor(rgb, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        return Landmarks(points=_named_points(pts, det.keypoints), dlib5=pts,
                         rect=(rect.left(), rect.top(), rect.right(), rect.bottom()),
                         keypoints=det.keypoints)

    def chip(self, rgb: np.ndarray, marks: Landmarks, padding: float = CHIP_PADDING
             ) -> np.ndarray:
        """The aligned (150, 150, 3) uint8 RGB chip, exactly as dlib's face recognition expects
        (``padding``: dlib's margin around the face; the model was trained with the default)."""
        dlib = self._dlib
        parts = dlib.points()
        for x, y in marks.dlib5:
            parts.append(dlib.point(int(x), int(y)))
        shape = dlib.full_object_detection(dlib.rectangle(*marks.rect), parts)
        return np.asarray(
            dlib.get_face_chip(rgb, shape, size=CHIP_SIZE, padding=padding), dtype=np.uint8
        )


def _named_points(
    pts: np.ndarray, keypoints: tuple[tuple[float, float], ...] | None
) -> dict[str, tuple[float, float]]:
    def p(i: int) -> tuple[float, float]:
        return float(pts[i, 0]), float(pts[i, 1])

    left_eye = pts[[_LEFT_EYE_OUTER, _LEFT_EYE_INNER]].mean(axis=0)
    right_eye = pts[[_RIGHT_EYE_OUTER, _RIGHT_EYE_INNER]].mean(axis=0)
    named = {
        "eyeLeft": (float(left_eye[0]), float(left_eye[1])),
        "eyeRight": (float(right_eye[0]), float(right_eye[1])),
        "nose": p(_NOSE_BASE),
        "leftEyeLeft": p(_LEFT_EYE_OUTER),
        "leftEyeRight": p(_LEFT_EYE_INNER),
        "rightEyeLeft": p(_RIGHT_EYE_INNER),
        "rightEyeRight": p(_RIGHT_EYE_OUTER),
    }
    if keypoints is not None and _keypoints_agree(keypoints, left_eye, right_eye):
        named["mouthLeft"] = keypoints[3]
        named["mouthRight"] = keypoints[4]
    return named


def _keypoints_agree(
    keypoints: tuple[tuple[float, float], ...], left_eye: np.ndarray, right_eye: np.ndarray
) -> bool:
    """libfacedetection's keypoints stay upright on rotated faces; trust its mouth corners only
    when its eye centres land within 15 % of the eye distance of dlib's."""
    eye_dist = float(np.linalg.norm(right_eye - left_eye))
    err = max(
        float(np.linalg.norm(np.array(keypoints[0]) - left_eye)),
        float(np.linalg.norm(np.array(keypoints[1]) - right_eye)),
    )
    return eye_dist > 0 and err <= 0.15 * eye_dist
