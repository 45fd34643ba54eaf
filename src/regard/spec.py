"""Request validation driven by botocore's Rekognition service model.

The model that ships inside ``botocore`` is the contract (DESIGN.md): member names, required
members, types, length/value ranges, enums and patterns. Validating against it here, once, means
every door (Python, CLI, the JSON 1.1 adapter later) rejects the same requests with the same
``InvalidParameterException`` and nobody hand-writes per-operation checks that drift from AWS.

Deliberate departures: ``Image.Bytes``' 5 MB maximum is left to ``regard.imaging`` (configurable
limit, reported as ``ImageTooLargeException`` as AWS does), and blobs must already be ``bytes``
(the HTTP adapter decodes base64 before calling the service).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from botocore.model import OperationModel, ServiceModel, Shape

from regard.errors import InvalidParameterError

SERVICE = "rekognition"


@lru_cache(maxsize=1)
def service_model() -> ServiceModel:
    """Rekognition's service model as shipped in the installed botocore (loaded once)."""
    import botocore.session

    return botocore.session.get_session().get_service_model(SERVICE)


def operation(name: str) -> OperationModel:
    return service_model().operation_model(name)


# The model's patterns are Java regexes; Python's ``re`` lacks Unicode property classes, which
# appear only inside character classes (TagKey, TagValue). Letters and numbers are within ``\w``
# (whose extra ``_`` those classes allow anyway); separators are spelled out.
_UNICODE_CLASSES = {
    r"\p{L}": r"\w",
    r"\p{N}": r"\w",
    r"\p{Z}": " \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000",
}


@lru_cache(maxsize=None)
def _pattern(pattern: str) -> re.Pattern[str]:
    for java, python in _UNICODE_CLASSES.items():
        pattern = pattern.replace(java, python)
    return re.compile(pattern)


def validate_request(operation_name: str, params: dict[str, Any],
                     exempt: frozenset[str] = frozenset()) -> None:
    """Raise ``InvalidParameterError`` unless ``params`` satisfies the operation's input shape.

    ``exempt``: top-level members that need not be present (e.g. ``Image`` when a caller hands
    over faces it already detected)."""
    shape = operation(operation_name).input_shape
    if shape is None:
        if params:
            raise InvalidParameterError(f"{operation_name} takes no parameters")
        return
    _validate(params, shape, "", exempt)


def _validate(value: Any, shape: Shape, path: str, exempt: frozenset[str] = frozenset()) -> None:
    where = path or "request"
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            raise InvalidParameterError(f"{where} must be an object")
        unknown = sorted(set(value) - set(shape.members))
        if unknown:
            raise InvalidParameterError(f"Unknown parameter(s) in {where}: {', '.join(unknown)}")
        for name in shape.required_members:
            if value.get(name) is None and name not in exempt:
                raise InvalidParameterError(f"Missing required parameter {_join(path, name)}")
        for name, member in shape.members.items():
            if value.get(name) is not None:
                _validate(value[name], member, _join(path, name))
        return
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise InvalidParameterError(f"{where} must be a list")
        _check_length(len(value), meta, where, "items")
        for i, item in enumerate(value):
            _validate(item, shape.member, f"{where}[{i}]")
        return
    if kind == "map":
        if not isinstance(value, dict):
            raise InvalidParameterError(f"{where} must be a map")
        _check_length(len(value), meta, where, "entries")
        for k, v in value.items():
            _validate(k, shape.key, f"{where} key")
            _validate(v, shape.value, f"{where}[{k!r}]")
        return
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidParameterError(f"{where} must be a string")
        _check_length(len(value), meta, where, "characters")
        if shape.enum and value not in shape.enum:
            raise InvalidParameterError(f"{where} must be one of {', '.join(shape.enum)}")
        if "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
            raise InvalidParameterError(f"{where} {value!r} does not match {meta['pattern']}")
        return
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidParameterError(f"{where} must be an integer")
        _check_range(value, meta, where)
        return
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidParameterError(f"{where} must be a number")
        if value != value:  # NaN
            raise InvalidParameterError(f"{where} must be a number")
        _check_range(value, meta, where)
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidParameterError(f"{where} must be true or false")
        return
    if kind == "blob":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise InvalidParameterError(f"{where} must be bytes")
        if len(value) < meta.get("min", 0):
            raise InvalidParameterError(f"{where} must not be empty")
        return
    # timestamps and anything else are not used by the operations Regard implements


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_length(n: int, meta: dict[str, Any], where: str, unit: str) -> None:
    if "min" in meta and n < meta["min"]:
        raise InvalidParameterError(f"{where} must have at least {meta['min']} {unit}")
    if "max" in meta and n > meta["max"]:
        raise InvalidParameterError(f"{where} must have at most {meta['max']} {unit}")


def _check_range(value: float, meta: dict[str, Any], where: str) -> None:
    if "min" in meta and value < meta["min"]:
        raise InvalidParameterError(f"{where} must be >= {meta['min']}, got {value}")
    if "max" in meta and value > meta["max"]:
        raise InvalidParameterError(f"{where} must be <= {meta['max']}, got {value}")
