"""Bring your own face model: an ONNX file the operator holds, installed as a face-model pack.

Regard downloads nothing; an operator who holds a stronger model (OpenCV Zoo's SFace, a
commercially licensed ArcFace) installs it from a file (``regard models add FILE --recipe ...``).
A recipe says how to feed it: chip size and alignment, tensor layout, channel order,
normalisation, embedding size and metric. A recipe Regard knows may carry the file's SHA-256,
checked at installation. The pack lives under ``REGARD_HOME/models/packs/<version>/`` (owner
only): the model, ``pack.json`` (recipe, checksum, licence and provenance as the operator states
them) and, once ``regard models calibrate`` has measured it on the operator's data under the same
worst-group rule as the shipped packs, ``calibration.json``. Until then the pack is installed but
cannot bind a collection: an uncalibrated similarity would have no published meaning.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from regard.config import regard_home
from regard.errors import InvalidParameterError, ModelError
from regard.private_files import private_dir, private_file
from regard.vision.landmarks import Aligner, Landmarks
from regard.vision.models import file_sha256

PACKS_DIR = ("models", "packs")
ALIGNMENTS = ("arcface-112", "dlib-150")


@dataclass(frozen=True)
class Recipe:
    """How to run a face-recognition ONNX model (see the module docstring)."""

    name: str
    alignment: str = "arcface-112"  # "arcface-112": 5 points onto ArcFace's template;
    # "dlib-150": dlib's 5-point chip (dlib.get_face_chip, padding 0.25)
    layout: str = "NCHW"  # or "NHWC"
    dtype: str = "float32"  # or "uint8" (the graph normalises itself)
    channels: str = "RGB"  # or "BGR"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # subtracted, per channel, 0-255 scale
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # then divided by
    embedding_size: int = 128
    metric: str = "cosine"  # "cosine" (L2-normalised) or "euclidean" (as the model gives it)
    sha256: str | None = None  # known models only: the file must be exactly this one
    licence: str = ""
    provenance: str = ""

    def __post_init__(self) -> None:
        checks = [(self.alignment in ALIGNMENTS, f"alignment must be one of {ALIGNMENTS}"),
                  (self.layout in ("NCHW", "NHWC"), "layout must be NCHW or NHWC"),
                  (self.dtype in ("float32", "uint8"), "dtype must be float32 or uint8"),
                  (self.channels in ("RGB", "BGR"), "channels must be RGB or BGR"),
                  (self.metric in ("cosine", "euclidean"), "metric must be cosine or euclidean"),
                  (8 <= self.embedding_size <= 4096, "embedding_size must be 8-4096"),
                  (all(s > 0 for s in self.std), "std must be positive")]
        for ok, message in checks:
            if not ok:
                raise InvalidParameterError(f"Recipe {self.name}: {message}")

    @property
    def chip_size(self) -> int:
        return 112 if self.alignment == "arcface-112" else 150


# Recipes Regard knows. SFace's interface is OpenCV's FaceRecognizerSF (blobFromImage of the
# ArcFace-aligned chip, scale 1, swapRB: RGB float 0-255); no checksum is published that Regard
# could verify, so none is enforced. The dlib port is Regard's own ONNX conversion of dlib's
# ResNet (``vision/dlib_resnet_onnx.py``): a real model to test the whole path with.
KNOWN_RECIPES: dict[str, Recipe] = {
    "sface": Recipe("sface", "arcface-112", "NCHW", "float32", "RGB", embedding_size=128,
                    metric="cosine", licence="Apache-2.0 (OpenCV Zoo)",
                    provenance="OpenCV Zoo face_recognition_sface_2021dec.onnx"),
    "dlib-resnet-onnx": Recipe("dlib-resnet-onnx", "dlib-150", "NHWC", "uint8", "RGB",
                               embedding_size=128, metric="euclidean",
                               licence="public domain (dlib's weights)",
                               provenance="Regard's ONNX port of "
                                          "dlib_face_recognition_resnet_model_v1.dat"),
}


def recipe_from(name: str | None, custom: dict[str, Any] | None = None) -> Recipe:
    """A known recipe (optionally with fields overridden) or a custom one."""
    base = KNOWN_RECIPES.get(name or "") if name else None
    if name and base is None and not custom:
        raise InvalidParameterError(
            f"Unknown recipe {name!r}; known: {', '.join(KNOWN_RECIPES)}, or give a custom "
            "recipe (--input-size, --alignment, --layout, --channels, --mean, --std, "
            "--embedding-size, --metric)")
    fields = {**(dataclasses.asdict(base) if base else {"name": name or "custom"}),
              **(custom or {})}
    for key in ("mean", "std"):
        fields[key] = tuple(float(v) for v in fields.get(key, (0.0, 0.0, 0.0) if key == "mean"
                                                         else (1.0, 1.0, 1.0)))
    if custom and base is not None:
        fields["sha256"] = None  # a changed recipe is no longer the known file's
    return Recipe(**fields)


def packs_dir(home: Path | None = None) -> Path:
    return (home or regard_home()).joinpath(*PACKS_DIR)


class OnnxPackEmbedder:
    """Runs an installed model on its recipe's chips; thread-safe (ONNX Runtime's run is)."""

    def __init__(self, model: Path, recipe: Recipe, threads: int | None,
                 aligner: Aligner | None) -> None:
        from regard.vision.dlib_resnet_onnx import make_session

        self.recipe = recipe
        self._aligner = aligner
        try:
            self._session = make_session(model, threads)
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            raise ModelError(f"{model} is not a model ONNX Runtime can run: {exc}") from exc
        self._input = self._session.get_inputs()[0].name

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        r = self.recipe
        x = np.asarray(chips)
        if r.channels == "BGR":
            x = x[..., ::-1]
        if r.dtype == "float32":
            x = (x.astype(np.float32) - np.float32(r.mean)) / np.float32(r.std)
        if r.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        out = self._session.run(None, {self._input: np.ascontiguousarray(x)})[0]
        out = np.asarray(out, dtype=np.float32).reshape(len(chips), -1)
        if out.shape[1] != r.embedding_size:
            raise ModelError(f"The model gives {out.shape[1]} numbers per face; its recipe says "
                             f"{r.embedding_size}")
        if r.metric == "cosine":
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def embed_faces(self, rgb: np.ndarray, landmarks: Sequence[Landmarks]) -> np.ndarray:
        if not landmarks:
            return np.zeros((0, self.recipe.embedding_size), dtype=np.float32)
        return self.embed_chips(np.stack([self._chip(rgb, m) for m in landmarks]))

    def _chip(self, rgb: np.ndarray, marks: Landmarks) -> np.ndarray:
        if self.recipe.alignment == "dlib-150":
            if self._aligner is None:
                raise ModelError("dlib-150 alignment needs dlib's aligner")
            return self._aligner.chip(rgb, marks)
        from regard.vision.mobilefacenet import face_chip

        return face_chip(rgb, marks.keypoints, marks.dlib5)


@dataclass
class InstalledModel:
    """What ``pack.json`` holds."""

    version: str
    name: str
    recipe: Recipe
    sha256: str
    licence: str
    provenance: str
    training_data: str = "stated by the operator: " + "unknown"
    calibration: dict[str, Any] = field(default_factory=dict)  # how and on what it was measured

    def folder(self, home: Path | None = None) -> Path:
        return packs_dir(home) / self.version

    def to_json(self) -> str:
        body = dataclasses.asdict(self)
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "InstalledModel":
        body = json.loads(text)
        recipe = body.pop("recipe")
        recipe["mean"], recipe["std"] = tuple(recipe["mean"]), tuple(recipe["std"])
        return cls(recipe=Recipe(**recipe), **body)


def install(model_file: Path, version: str, recipe: Recipe, *, name: str | None = None,
            licence: str | None = None, provenance: str | None = None,
            training_data: str | None = None, home: Path | None = None) -> InstalledModel:
    """Check ``model_file`` (checksum when the recipe knows one, that ONNX Runtime runs it and
    that it gives ``embedding_size`` numbers per chip) and copy it under the home folder."""
    if not model_file.is_file():
        raise InvalidParameterError(f"{model_file} is not a file")
    digest = file_sha256(model_file)
    if recipe.sha256 and digest != recipe.sha256:
        raise InvalidParameterError(
            f"{model_file} is not the model recipe {recipe.name} describes: its SHA-256 is "
            f"{digest}, the recipe's {recipe.sha256}")
    folder = packs_dir(home) / version
    if folder.exists():
        raise InvalidParameterError(f"Face model {version} is already installed ({folder})")
    probe = OnnxPackEmbedder(model_file, recipe, 1, None)
    chip = np.full((1, recipe.chip_size, recipe.chip_size, 3), 128, dtype=np.uint8)
    probe.embed_chips(chip)  # runs, and gives the recipe's embedding size
    private_dir(folder)
    target = private_file(folder / "model.onnx")
    shutil.copyfile(model_file, target)
    installed = InstalledModel(version, name or f"{recipe.name} ({model_file.name})", recipe,
                               digest, licence or recipe.licence or "stated by the operator: "
                               "unknown", provenance or recipe.provenance or str(model_file),
                               training_data or "stated by the operator: unknown")
    private_file(folder / "pack.json").write_text(installed.to_json())
    return installed


def installed(home: Path | None = None) -> list[tuple[InstalledModel, Path]]:
    """Every pack installed under the home folder, with its folder (unreadable ones skipped)."""
    root = packs_dir(home)
    found = []
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            meta = folder / "pack.json"
            if meta.is_file():
                try:
                    found.append((InstalledModel.from_json(meta.read_text()), folder))
                except (ValueError, TypeError, KeyError):
                    continue
    return found
