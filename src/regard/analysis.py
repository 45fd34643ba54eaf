"""The Engine: image -> faces (box, landmarks, pose, quality, confidence, embedding).

Reads like face_recognition's API: each public verb is a few lines, with units in the docstring.
Every result serializes to Rekognition's JSON shapes with botocore's member names
(``FaceDetail``, ``ComparedFace``, ``CompareFacesResponse``), so the CLI, the HTTP doors and the
Python API all print the same thing.

Models load once, lazily, on first use, and an Engine is safe to share between threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from regard import config, imaging
from regard.errors import InvalidParameterError
from regard.imaging import ImageInput, ImageLimits
from regard.vision.detect import Detection, Detector, create_detector
from regard.vision.embed import Embedder, create_embedder
from regard.vision.landmarks import Aligner, Landmarks
from regard.vision.packs import FaceModelPack, PackEmbedder, default_pack
from regard.vision.quality import (
    QUALITY_FILTERS,
    Pose,
    Quality,
    estimate_pose,
    measure_quality,
    quality_reasons,
)

MAX_FACES = 100  # Rekognition returns at most the 100 largest faces per image
DEFAULT_SIMILARITY_THRESHOLD = config.DEFAULT_MATCH_THRESHOLD  # Rekognition's default, 80


@dataclass
class Face:
    """One face. Box and landmarks in pixels of the upright image; ratios via ``bounding_box``."""

    left: float
    top: float
    right: float
    bottom: float
    confidence: float
    landmarks: Landmarks
    pose: Pose
    quality: Quality
    image_width: int
    image_height: int
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def size(self) -> float:
        """Smaller side of the box in pixels (what minimum-face-size rules compare against)."""
        return min(self.right - self.left, self.bottom - self.top)

    @property
    def area(self) -> float:
        return (self.right - self.left) * (self.bottom - self.top)

    def bounding_box(self) -> dict[str, float]:
        """Rekognition ``BoundingBox``: ratios of the image size (may exceed [0, 1] at edges)."""
        w, h = self.image_width, self.image_height
        return {
            "Width": (self.right - self.left) / w,
            "Height": (self.bottom - self.top) / h,
            "Left": self.left / w,
            "Top": self.top / h,
        }

    def landmark_list(self) -> list[dict[str, Any]]:
        w, h = self.image_width, self.image_height
        return [
            {"Type": name, "X": x / w, "Y": y / h} for name, (x, y) in self.landmarks.points.items()
        ]

    def quality_reasons(self, level: str) -> list[str]:
        """Why this face fails Rekognition's QualityFilter ``level`` (empty: it passes)."""
        return quality_reasons(level, self.quality, self.pose, self.size, self.confidence)

    def face_detail(self) -> dict[str, Any]:
        """Rekognition ``FaceDetail``. Gender, age and emotion are not inferred, by design."""
        return {
            "BoundingBox": self.bounding_box(),
            "Landmarks": self.landmark_list(),
            "Pose": {"Roll": self.pose.roll, "Yaw": self.pose.yaw, "Pitch": self.pose.pitch},
            "Quality": {"Brightness": self.quality.brightness, "Sharpness": self.quality.sharpness},
            "Confidence": self.confidence,
        }

    def compared_face(self) -> dict[str, Any]:
        """Rekognition ``ComparedFace`` (same members as FaceDetail that CompareFaces returns)."""
        return self.face_detail()


@dataclass
class ImageFaces:
    """All faces found in one image, largest first."""

    faces: list[Face]
    width: int
    height: int
    face_model_version: str | None = None  # whose embeddings the faces carry, if any

    def detect_faces_response(self) -> dict[str, Any]:
        """Rekognition ``DetectFacesResponse`` body."""
        return {"FaceDetails": [f.face_detail() for f in self.faces]}


@dataclass
class FaceMatch:
    similarity: float
    face: Face
    distance: float


@dataclass
class CompareResult:
    """CompareFaces: the largest source face against every target face."""

    source_face: Face
    matches: list[FaceMatch]
    unmatched: list[Face]
    threshold: float

    def compare_faces_response(self) -> dict[str, Any]:
        """Rekognition ``CompareFacesResponse`` body."""
        return {
            "SourceImageFace": {
                "BoundingBox": self.source_face.bounding_box(),
                "Confidence": self.source_face.confidence,
            },
            "FaceMatches": [
                {"Similarity": m.similarity, "Face": m.face.compared_face()} for m in self.matches
            ],
            "UnmatchedFaces": [f.compared_face() for f in self.unmatched],
        }


class Engine:
    """Face detection, alignment and embedding behind four verbs.

    ``detector``: ``yunet`` | ``yuface`` | ``mmod`` | ``hog`` (default: ``yunet``, see
    ``vision.detect``). Embeddings are a face-model pack's (``vision.packs``; default: the
    default pack); ``embedder``: ``onnx`` (default) | ``dlib`` (reference) runs dlib v1's.
    ``min_face_size``: faces whose smaller box side is below this many pixels are dropped.
    ``max_faces``: at most this many faces per image, the largest (Rekognition: 100).
    ``threads``: CPU threads for model inference (default: the runtime's choice, all cores).
    """

    def __init__(
        self,
        detector: str | None = None,
        embedder: str | None = None,
        *,
        min_face_size: int = 0,
        max_faces: int = MAX_FACES,
        limits: ImageLimits | None = None,
        detector_options: dict[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        if not 1 <= max_faces <= MAX_FACES:
            raise InvalidParameterError(f"max_faces must be 1-{MAX_FACES}, got {max_faces}")
        if min_face_size < 0:
            raise InvalidParameterError("min_face_size must be >= 0")
        self.detector_name = detector
        self.embedder_name = embedder or "onnx"
        self.min_face_size = min_face_size
        self.max_faces = max_faces
        self.limits = limits
        self._detector_options = detector_options or {}
        self.threads = threads
        self._lock = threading.Lock()
        self._detector: Detector | None = None
        self._aligner: Aligner | None = None
        self._embedder: Embedder | None = None
        self._pack_embedders: dict[str, PackEmbedder] = {}

    # -- lazily loaded models -------------------------------------------------------------
    @property
    def detector(self) -> Detector:
        if self._detector is None:
            with self._lock:
                if self._detector is None:
                    self._detector = create_detector(self.detector_name, self.threads,
                                                     **self._detector_options)
        return self._detector

    @property
    def aligner(self) -> Aligner:
        if self._aligner is None:
            with self._lock:
                if self._aligner is None:
                    self._aligner = Aligner()
        return self._aligner

    @property
    def embedder(self) -> Embedder:
        """dlib v1's chip embedder (benchmarks that work on chips directly)."""
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder = create_embedder(self.embedder_name, self.threads)
        return self._embedder

    def embedder_for(self, pack: FaceModelPack) -> PackEmbedder:
        """The pack's embedder, created on first use and shared by threads."""
        found = self._pack_embedders.get(pack.version)
        if found is None:
            aligner = self.aligner  # before the lock: the property takes it too
            with self._lock:
                found = self._pack_embedders.get(pack.version)
                if found is None:
                    found = self._new_pack_embedder(pack, aligner)
                    self._pack_embedders[pack.version] = found
        return found

    def _new_pack_embedder(self, pack: FaceModelPack, aligner: Aligner) -> PackEmbedder:
        if self.embedder_name != "onnx":
            from regard.vision.packs import DLIB_V1, DlibPackEmbedder

            if pack is not DLIB_V1:
                raise InvalidParameterError(
                    f"embedder={self.embedder_name!r} runs face model 1.0 only, not "
                    f"{pack.version}")
            return DlibPackEmbedder(self.threads, aligner, backend=self.embedder_name)
        return pack.create_embedder(self.threads, aligner)

    # -- verbs -----------------------------------------------------------------------------
    def load(self, image: ImageInput) -> np.ndarray:
        """Decode and validate any accepted input to upright (H, W, 3) uint8 RGB."""
        return imaging.load(image, self.limits).pixels

    def detect(self, image: ImageInput, *, embed: bool = False,
               pack: FaceModelPack | None = None) -> ImageFaces:
        """Faces in an image (bytes, path, PIL image or RGB array), largest first, at most
        ``max_faces``. With ``embed=True`` each face also gets its ``embedding`` from ``pack``
        (default: the default pack)."""
        rgb = self.load(image)
        faces: list[Face] = []
        for det in self._detections(rgb):
            marks = self.aligner.landmarks(rgb, det)
            box = (det.left, det.top, det.right, det.bottom)
            faces.append(
                Face(
                    *box,
                    confidence=round(float(det.confidence), 4),
                    landmarks=marks,
                    pose=estimate_pose(marks.dlib5),
                    quality=measure_quality(rgb, box),
                    image_width=rgb.shape[1],
                    image_height=rgb.shape[0],
                )
            )
        if embed:
            pack = pack or default_pack()
            self.embed_faces(rgb, faces, pack)
        return ImageFaces(faces, rgb.shape[1], rgb.shape[0],
                          pack.version if embed and pack else None)

    def embed_faces(self, rgb: np.ndarray, faces: list[Face],
                    pack: FaceModelPack | None = None) -> None:
        """Fill in ``embedding`` (``pack``'s, default: the default pack) for the given faces of
        ``rgb`` (the upright pixels they were detected in), in one batch. Lets callers embed
        only the faces they keep."""
        if not faces:
            return
        vectors = self.embedder_for(pack or default_pack()).embed_faces(
            rgb, [f.landmarks for f in faces])
        for face, vector in zip(faces, vectors):
            face.embedding = vector

    def embed(self, image: ImageInput, pack: FaceModelPack | None = None) -> list[Face]:
        """Faces with float32 embeddings of ``pack`` (default: the default pack); compare them
        with ``similarity`` for calibrated 0-100 scores."""
        return self.detect(image, embed=True, pack=pack).faces

    def compare(
        self,
        source: ImageInput,
        target: ImageInput,
        threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
        quality_filter: str = "NONE",
        pack: FaceModelPack | None = None,
    ) -> CompareResult:
        """Rekognition CompareFaces: the largest face of ``source`` against each face in
        ``target``. Matches are target faces with similarity >= ``threshold`` (0-100), best first.
        """
        if not 0 <= threshold <= 100:
            raise InvalidParameterError(f"SimilarityThreshold must be 0-100, got {threshold}")
        if quality_filter not in QUALITY_FILTERS:
            raise InvalidParameterError(
                f"QualityFilter must be one of {', '.join(QUALITY_FILTERS)}, got {quality_filter!r}"
            )
        pack = pack or default_pack()
        source_faces = self._filtered(self.embed(source, pack), quality_filter)
        if not source_faces:
            raise InvalidParameterError("There are no faces in the source image")
        src = source_faces[0]
        target_faces = self._filtered(self.embed(target, pack), quality_filter)
        matches: list[FaceMatch] = []
        unmatched: list[Face] = []
        if target_faces:
            vectors = np.stack([f.embedding for f in target_faces])
            dists = np.linalg.norm(vectors - src.embedding, axis=1)
            sims = pack.similarities(dists)
            for face, d, s in zip(target_faces, dists, sims):
                if s >= threshold:
                    matches.append(FaceMatch(round(float(s), 5), face, float(d)))
                else:
                    unmatched.append(face)
        matches.sort(key=lambda m: m.similarity, reverse=True)
        return CompareResult(src, matches, unmatched, threshold)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray, pack: FaceModelPack | None = None) -> float:
        """Calibrated similarity (0-100) of two embeddings of ``pack`` (default: the default
        pack)."""
        distance = float(np.linalg.norm(np.asarray(a) - np.asarray(b)))
        return float((pack or default_pack()).similarities(distance))

    # -- internals -------------------------------------------------------------------------
    def _detections(self, rgb: np.ndarray) -> list[Detection]:
        found = [d for d in self.detector.detect(rgb) if min(d.width, d.height) >= self.min_face_size]
        found.sort(key=lambda d: d.width * d.height, reverse=True)
        return found[: self.max_faces]

    @staticmethod
    def _filtered(faces: Iterable[Face], level: str) -> list[Face]:
        return [f for f in faces if not f.quality_reasons(level)]
