"""ArcFace-style 112x112 face chips: a similarity transform of 5 landmarks onto a fixed template.

The chips ArcFace-family models (InsightFace, MobileFaceNet trained on MS1M-refine-v2) were trained
on: the least-squares similarity transform (rotation, uniform scale, translation; Umeyama 1991,
as ``skimage.transform.SimilarityTransform.estimate`` and InsightFace's ``norm_crop``) taking the
face's 5 points - eye centres, nose tip, mouth corners - onto ``ARCFACE_TEMPLATE``, then a bilinear
warp with black outside the image. Coordinates are pixel-centred (pixel (0, 0) covers
[-0.5, 0.5]), as in OpenCV's ``warpAffine``, which the template was made with; the warp is done by
Pillow, whose sampling grid is corrected for this below, on a crop around the face so that the
cost does not grow with the image (no OpenCV dependency). Checked against a numpy bilinear
reference with OpenCV's conventions: equal within 1 grey level (rounding), except in the
half-pixel band along the image border, where Pillow gives black instead of a blend with black.

Points:

- detectors with keypoints (libfacedetection / YuNet): their order - image-left eye, image-right
  eye, nose tip, image-left mouth corner, image-right mouth corner - is the template's order;
- detectors without (dlib's MMOD and HOG): dlib's 5-point shape predictor gives eye *corners* and
  the base of the nose, not the template's points, and no mouth. Rather than guess the missing
  points, ``DLIB5_TEMPLATE`` holds where dlib's 5 points land, on average, in ArcFace chips cut from
  YuNet's keypoints (measured on LFW dev faces where both agree, see its comment); the chip is the
  similarity transform of dlib's 5 points onto it. An approximation: the mouth does not take part,
  so a chip's scale and position follow the eyes and nose only, and a face whose proportions differ
  from the mean is framed differently than by its own keypoints: mapped into the dlib5 chip, the
  keypoints of LFW dev faces lie a median 3.2 px (95th percentile 5 px) from the ArcFace template.
  Recognition does not suffer from it on LFW dev (``bench/mobilefacenet.py``: as accurate as the
  keypoint chips upright, more accurate on tilted heads).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "ARCFACE_TEMPLATE",
    "CHIP_SIZE",
    "DLIB5_TEMPLATE",
    "arcface_chip",
    "dlib5_chip",
    "similarity_transform",
    "warp_chip",
]

CHIP_SIZE = 112

#: InsightFace's 112x112 template: left eye, right eye, nose tip, left and right mouth corners
#: (image left/right), pixel-centred.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]], dtype=np.float64)

#: dlib's 5 points (its order: image-right eye outer and inner corner, image-left eye outer and
#: inner corner, base of the nose) in the ArcFace 112x112 frame: the mean over 1,869 LFW dev faces
#: of dlib's points mapped by the transform of YuNet's keypoints onto ``ARCFACE_TEMPLATE`` (the
#: faces whose keypoints agree with dlib's eyes, ``mobilefacenet.keypoints_agree``).
#: libfacedetection's (yuface) keypoints give the same points within 1.2 px (1,565 faces).
#: Measured by ``bench/mobilefacenet.py --measure-dlib5-template``.
DLIB5_TEMPLATE = np.array(
    [[80.1058, 52.5940], [66.2365, 53.1131], [31.1015, 52.9444], [44.9458, 53.2601],
     [55.8698, 79.8014]], dtype=np.float64)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix ``M`` of the least-squares similarity transform with ``M @ [x, y, 1]``
    closest to ``dst`` for the points ``src`` (both (K, 2), K >= 2; Umeyama's method, reflections
    excluded)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two (K, 2) point sets, K >= 2; got {src.shape}, {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = float((src_c**2).sum() / len(src))
    if not np.isfinite(src_var) or src_var <= 1e-12:
        raise ValueError("the source points coincide: no transform")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((s * d).sum() / src_var)
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - scale * rot @ src_mean
    return m


def warp_chip(rgb: np.ndarray, matrix: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """(size, size, 3) uint8: ``rgb`` resampled bilinearly through the 2x3 ``matrix`` (image ->
    chip, pixel-centred coordinates like OpenCV's ``warpAffine``); black outside the image."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
    a = np.linalg.inv(np.asarray(matrix, dtype=np.float64)[:, :2])
    t = np.asarray(matrix, dtype=np.float64)[:, 2]
    # chip pixel (cx, cy) -> image point a @ ((cx, cy) - t), pixel-centred.
    corners = np.array([[-1.0, -1.0], [size, -1.0], [-1.0, size], [size, size]])
    src = (corners - t) @ a.T
    h, w = rgb.shape[:2]
    # The crop covers every sample's 2x2 neighbourhood with a margin, so its own edges are never
    # sampled unless they are the image's.
    x0 = int(np.clip(np.floor(src[:, 0].min()) - 2, 0, w))
    y0 = int(np.clip(np.floor(src[:, 1].min()) - 2, 0, h))
    x1 = int(np.clip(np.ceil(src[:, 0].max()) + 3, 0, w))
    y1 = int(np.clip(np.ceil(src[:, 1].max()) + 3, 0, h))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), dtype=np.uint8)
    crop = Image.fromarray(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
    # Pillow samples output pixel (i, j) at input point data @ (i + 0.5, j + 0.5, 1) in corner
    # coordinates (pixel (0, 0) covers [0, 1]); convert from pixel-centred and from the crop.
    offset = a @ (-t - 0.5) + 0.5 - np.array([x0, y0])
    data = (a[0, 0], a[0, 1], offset[0], a[1, 0], a[1, 1], offset[1])
    out = crop.transform((size, size), Image.Transform.AFFINE, data,
                         resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    return np.asarray(out, dtype=np.uint8)


def arcface_chip(rgb: np.ndarray, keypoints: Sequence[Sequence[float]] | np.ndarray,
                 size: int = CHIP_SIZE) -> np.ndarray:
    """The ArcFace chip from 5 keypoints in libfacedetection's order (image-left eye, image-right
    eye, nose tip, image-left mouth corner, image-right mouth corner)."""
    pts = np.asarray(keypoints, dtype=np.float64).reshape(5, 2)
    return warp_chip(rgb, similarity_transform(pts, ARCFACE_TEMPLATE * (size / CHIP_SIZE)), size)


def dlib5_chip(rgb: np.ndarray, dlib5: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """The ArcFace chip from dlib's 5-point landmarks (``Landmarks.dlib5``), for detectors without
    keypoints; see ``DLIB5_TEMPLATE`` for the approximation."""
    pts = np.asarray(dlib5, dtype=np.float64).reshape(5, 2)
    return warp_chip(rgb, similarity_transform(pts, DLIB5_TEMPLATE * (size / CHIP_SIZE)), size)

