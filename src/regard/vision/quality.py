"""Per-face image quality (brightness, sharpness, 0-100) and head pose (degrees) from landmarks.

Pose comes from 5 landmarks and a generic head geometry, not from a 3D fit: good to a few degrees
for roll, and a coarse estimate (roughly +-10 degrees within +-45) for yaw and pitch, which is what
quality filtering needs. Conventions: roll is the in-plane rotation, positive when the image-right
eye is lower; yaw is positive when the nose moves towards the image's right; pitch is positive
when the face looks up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Frontal-face geometry: dlib's nose-base point lies about 0.75 eye-distances below the eye line
# (measured on LFW dev, mostly frontal) and about 0.6 eye-distances in front of it (anthropometric
# mean).
_NOSE_BASE_PER_EYE = 0.75
_NOSE_DEPTH_PER_EYE = 0.6
# Gradient energy -> 0-100 logistic: measured on the astronaut face, sharp = 16 (-> 95), Gaussian
# blur sigma 1 = 10.9 (-> 61), sigma 2 = 7.7 (-> 24), sigma 3 = 6.0 (-> 12).
_SHARPNESS_MID = 10.0
_SHARPNESS_SLOPE = 2.0


@dataclass(frozen=True)
class Pose:
    roll: float
    yaw: float
    pitch: float


@dataclass(frozen=True)
class Quality:
    brightness: float
    sharpness: float


def estimate_pose(dlib5: np.ndarray) -> Pose:
    """Roll, yaw and pitch in degrees from dlib's 5 points (eye corners + base of the nose).

    dlib's points are used for every detector because they follow in-plane rotation (measured:
    within 3 degrees of the true roll from -30 to +30 degrees), while libfacedetection's keypoints
    stay upright on rotated faces.
    """
    right_eye = dlib5[0:2].mean(axis=0)
    left_eye = dlib5[2:4].mean(axis=0)
    nose = dlib5[4]
    delta = right_eye - left_eye
    eye_dist = float(np.hypot(*delta))
    if eye_dist < 1e-6:
        return Pose(0.0, 0.0, 0.0)
    roll = math.atan2(delta[1], delta[0])
    # Undo roll so that the eye line is horizontal, with the eye midpoint at the origin.
    cos_r, sin_r = math.cos(-roll), math.sin(-roll)
    rot = np.array([[cos_r, -sin_r], [sin_r, cos_r]])
    n = rot @ (nose - (left_eye + right_eye) / 2) / eye_dist
    yaw = math.atan2(n[0], _NOSE_DEPTH_PER_EYE)
    # Looking up moves the protruding nose towards the eye line in the image.
    pitch = math.atan2(_NOSE_BASE_PER_EYE - n[1], _NOSE_DEPTH_PER_EYE)
    return Pose(
        roll=round(math.degrees(roll), 4),
        yaw=round(math.degrees(yaw), 4),
        pitch=round(math.degrees(pitch), 4),
    )


def measure_quality(rgb: np.ndarray, box: tuple[float, float, float, float]) -> Quality:
    """Brightness (mean luma) and sharpness (gradient energy) of the face region, each 0-100.

    Sharpness is measured on the face resized to 96 px wide, so it rates the face's own detail, not
    the image's resolution; a clearly focused face scores > 80, a Gaussian blur of sigma 3 about 12.
    """
    h, w = rgb.shape[:2]
    left, top, right, bottom = (int(round(v)) for v in box)
    left, top = max(0, left), max(0, top)
    right, bottom = min(w, right), min(h, bottom)
    if right - left < 2 or bottom - top < 2:
        return Quality(0.0, 0.0)
    region = rgb[top:bottom, left:right].astype(np.float32)
    luma = region @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    brightness = float(luma.mean()) / 255.0 * 100.0
    small = _resize_gray(luma, 96)
    gx = np.diff(small, axis=1)
    gy = np.diff(small, axis=0)
    energy = float(np.sqrt((gx[:-1, :] ** 2 + gy[:, :-1] ** 2).mean()))
    sharpness = 100.0 / (1.0 + math.exp(-(energy - _SHARPNESS_MID) / _SHARPNESS_SLOPE))
    return Quality(round(brightness, 4), round(sharpness, 4))


def _resize_gray(gray: np.ndarray, width: int) -> np.ndarray:
    from PIL import Image

    h, w = gray.shape
    height = max(2, int(round(h * width / max(w, 1))))
    img = Image.fromarray(np.clip(gray, 0, 255).astype(np.uint8))
    return np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.float32)


def _clamp(v: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, v))


# Rekognition's QualityFilter levels. Thresholds were chosen on LFW/WIDER dev faces so that LOW
# drops only unusable faces and HIGH keeps clear, near-frontal ones; AUTO is Rekognition's default
# for IndexFaces and equals LOW here.
QUALITY_LEVELS: dict[str, dict[str, float]] = {
    "LOW": {"sharpness": 10.0, "brightness_min": 8.0, "brightness_max": 97.0, "size": 20.0,
            "pose": 75.0, "confidence": 50.0},
    "MEDIUM": {"sharpness": 25.0, "brightness_min": 15.0, "brightness_max": 92.0, "size": 32.0,
               "pose": 60.0, "confidence": 70.0},
    "HIGH": {"sharpness": 40.0, "brightness_min": 25.0, "brightness_max": 88.0, "size": 50.0,
             "pose": 45.0, "confidence": 90.0},
}
QUALITY_LEVELS["AUTO"] = QUALITY_LEVELS["LOW"]
QUALITY_FILTERS = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")


def quality_reasons(
    level: str, quality: Quality, pose: Pose, face_size_px: float, confidence: float
) -> list[str]:
    """Rekognition ``Reasons`` for dropping a face at ``level``; empty when it passes."""
    if level == "NONE":
        return []
    bar = QUALITY_LEVELS[level]
    reasons = []
    if max(abs(pose.yaw), abs(pose.pitch), abs(pose.roll)) > bar["pose"]:
        reasons.append("EXTREME_POSE")
    if quality.brightness < bar["brightness_min"] or quality.brightness > bar["brightness_max"]:
        reasons.append("LOW_BRIGHTNESS")
    if quality.sharpness < bar["sharpness"]:
        reasons.append("LOW_SHARPNESS")
    if confidence < bar["confidence"]:
        reasons.append("LOW_CONFIDENCE")
    if face_size_px < bar["size"]:
        reasons.append("SMALL_BOUNDING_BOX")
    return reasons
