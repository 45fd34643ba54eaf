"""Aligned 150x150 chips -> 128-d embeddings from dlib's ResNet (LFW 99.38 %, public domain).

Two backends compute the same function:

- ``onnx`` (default): the network ported to ONNX Runtime from the ``.dat`` weights
  (``dlib_resnet_onnx.py``), batched across faces, 10-25x faster than dlib-bin here;
- ``dlib``: dlib's own implementation, kept as the reference the port is tested against.
"""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np

from regard.errors import InvalidParameterError
from regard.vision.models import model_path

EMBEDDING_DIM = 128
RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"


class Embedder(Protocol):
    name: str

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips -> (N, 128) float32."""
        ...


class DlibEmbedder:
    """dlib-bin's ResNet: the reference (about 75 ms per face on this 2-core CPU)."""

    name = "dlib"

    def __init__(self) -> None:
        import dlib

        self._model = dlib.face_recognition_model_v1(model_path(RESNET_FILE))
        self._lock = threading.Lock()

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        with self._lock:
            vectors = [np.asarray(self._model.compute_face_descriptor(c)) for c in chips]
        return np.stack(vectors).astype(np.float32)


class OnnxEmbedder:
    """The same network in ONNX Runtime; thread-safe (InferenceSession.run is)."""

    name = "onnx"

    def __init__(self, threads: int | None = None) -> None:
        from regard.vision.dlib_resnet_onnx import OnnxFaceEmbedder

        self._impl = OnnxFaceEmbedder(model_path(RESNET_FILE), intra_op_threads=threads)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        return np.asarray(self._impl.embed(np.ascontiguousarray(chips)), dtype=np.float32)


def create_embedder(name: str | None = None, threads: int | None = None) -> Embedder:
    """``onnx`` (default) or ``dlib`` (which always uses one thread here: dlib-bin has no BLAS)."""
    name = name or "onnx"
    if name == "onnx":
        return OnnxEmbedder(threads)
    if name == "dlib":
        return DlibEmbedder()
    raise InvalidParameterError(f"Unknown embedder {name!r}; choose 'onnx' or 'dlib'")
