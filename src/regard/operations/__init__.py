"""Every operation Regard runs, one decorated handler each (``registry.operation``), grouped by
what they touch: faces in images and collections, searches, collections and their policy tags,
users, and Regard's own accountability operations. Importing this package fills the registry.
"""

from regard.operations import registry
from regard.operations import (  # noqa: F401
    accountability,
    collections,
    faces,
    searches,
    streams,
    users,
    video,
)
from regard.operations.registry import REGISTRY, Call, Operation, operation

__all__ = ["REGISTRY", "Call", "Operation", "operation", "registry"]
