"""Regard: self-hosted, accountable face detection and recognition.

>>> from regard import Engine
>>> Engine().detect("group.jpg").detect_faces_response()["FaceDetails"][0]["BoundingBox"]
"""

from regard.analysis import CompareResult, Engine, Face, ImageFaces
from regard.errors import RegardError

__all__ = ["Engine", "Face", "ImageFaces", "CompareResult", "RegardError"]
__version__ = "0.1.0"
