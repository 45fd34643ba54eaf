"""YuNet, libfacedetection's face detector, as the ONNX network of its training repository, run by
ONNX Runtime (so it installs on every Python that onnxruntime has wheels for).

The weights (``weights/yunet/yunet_n_dynamic.onnx``, Apache-2.0, see the PROVENANCE.md and LICENSE
beside them) are the same network family as the C++ model inside the ``yuface`` wheel. Input:
``input`` float32 [1, 3, H, W], BGR, 0-255, no mean or scale; H and W multiples of 32 (we pad the
image with zeros at the bottom and right, as the repository's ``tools/compare_inference.py`` does
in its ``AUTO`` mode). Outputs, per stride s in 8, 16, 32, one row per grid cell of the padded
input in row-major order (row r, column c; ``H/s * W/s`` rows): ``cls_s`` and ``obj_s`` (already
sigmoid), ``bbox_s`` (dx, dy, dw, dh) and ``kps_s`` (5 x (dx, dy)).

Decoding, as libfacedetection's C++ (``bbox_decode``, ``kps_decode``, ``detection_output``) and
OpenCV's ``FaceDetectorYN`` do it for this network:

* score = sqrt(clip(cls, 0, 1) * clip(obj, 0, 1)) (the training code's ``cls * obj``, whose
  classification target is the IoU, square-rooted: 0.5 here is 0.25 there);
* box centre ((c + dx) * s, (r + dy) * s), size (exp(dw) * s, exp(dh) * s) (anchor-free; the
  prior is the cell's corner, no 0.5 offset);
* keypoint k ((c + kx_k) * s, (r + ky_k) * s), in libfacedetection's order (image-left eye,
  image-right eye, nose tip, image-left mouth corner, image-right mouth corner), the order
  :class:`regard.vision.detect.Detection` documents;
* greedy non-maximum suppression by score at IoU ``nms_iou``.

Thread-safe: ``InferenceSession.run`` is, and nothing else is shared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from regard.vision import models

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "yunet"
MODEL_FILE = WEIGHTS_DIR / "yunet_n_dynamic.onnx"
# From PROVENANCE.md: libfacedetection.train commit 0047ac24afb1a50a0c6105001c89d1b5b805dbf1.
MODEL_SHA256 = "104ee26c71d5c270ce79a6b3dced91c91013260d29a6bf18f9296c5b8c4c2b12"

STRIDES = (8, 16, 32)
# Candidates kept for NMS, best first (OpenCV's FaceDetectorYN default top_k).
TOP_K = 5000

# Defaults chosen on WIDER FACE dev (bench/detection.py, README): see YuNetDetector.
DEFAULT_MIN_CONFIDENCE = 50.0
DEFAULT_NMS_IOU = 0.3


def file_sha256(path: Path = MODEL_FILE) -> str:
    return models.file_sha256(path)


def pad_input(rgb: np.ndarray) -> np.ndarray:
    """(1, 3, H', W') float32 BGR 0-255, zero-padded at the bottom/right to multiples of 32."""
    h, w = rgb.shape[:2]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
    blob[0, :, :h, :w] = rgb[:, :, ::-1].transpose(2, 0, 1)
    return blob


def decode(
    outputs: dict[str, np.ndarray], height: int, width: int, score_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates above ``score_threshold`` (0-1) from the network's outputs for a padded input of
    ``height`` x ``width``: boxes (k, 4) left, top, right, bottom; scores (k,); keypoints
    (k, 5, 2)."""
    boxes, scores, kps = [], [], []
    for s in STRIDES:
        cols = width // s
        cls = np.clip(outputs[f"cls_{s}"][0, :, 0], 0.0, 1.0)
        obj = np.clip(outputs[f"obj_{s}"][0, :, 0], 0.0, 1.0)
        score = np.sqrt(cls * obj)
        idx = np.flatnonzero(score >= score_threshold)
        if idx.size == 0:
            continue
        r, c = np.divmod(idx, cols)
        cell = np.stack([c, r], axis=1).astype(np.float32)  # (k, 2) x, y
        reg = outputs[f"bbox_{s}"][0, idx]
        centre = (cell + reg[:, :2]) * s
        size = np.exp(reg[:, 2:4]) * s
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        scores.append(score[idx])
        kps.append((cell[:, None, :] + outputs[f"kps_{s}"][0, idx].reshape(-1, 5, 2)) * s)
    if not boxes:
        empty = np.zeros((0, 4), np.float32)
        return empty, np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
    return np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, top_k: int = TOP_K) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    x1, y1, x2, y2 = (boxes[:, i].astype(np.float64) for i in range(4))
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        union = area[i] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[overlap <= iou]
    return np.array(keep, dtype=np.int64)


class YuNetOnnx:
    """The network and its decoding; ``detect`` gives raw arrays (see :class:`YuNetDetector`)."""

    def __init__(self, model: str | Path | None = None,
                 intra_op_threads: int | None = None) -> None:
        from regard.vision.dlib_resnet_onnx import make_session

        self._session = make_session(Path(model) if model else MODEL_FILE, intra_op_threads)
        self._names = [o.name for o in self._session.get_outputs()]

    def run(self, rgb: np.ndarray) -> tuple[dict[str, np.ndarray], int, int]:
        blob = pad_input(rgb)
        values = self._session.run(self._names, {"input": blob})
        return dict(zip(self._names, values)), blob.shape[2], blob.shape[3]

    def detect(self, rgb: np.ndarray, score_threshold: float, nms_iou: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes (k, 4), scores (k,) 0-1, keypoints (k, 5, 2)) after NMS, best score first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
        outputs, ph, pw = self.run(rgb)
        boxes, scores, kps = decode(outputs, ph, pw, score_threshold)
        keep = nms(boxes, scores, nms_iou)
        return boxes[keep], scores[keep], kps[keep]
