"""Request validation driven by botocore's Rekognition service model.

The model that ships inside ``botocore`` is the contract (DESIGN.md): member names, required
members, types, length/value ranges, enums and patterns. Validating against it here, once, means
every door (Python, CLI, the JSON 1.1 adapter) rejects the same requests with the same
``ValidationException`` (AWS's answer to a constraint violation; a subclass of
``InvalidParameterError``) and nobody hand-writes per-operation checks that drift from AWS.

The same model drives the wire format (``from_wire``: base64 blobs and epoch timestamps of the
JSON 1.1 protocol, wrong JSON types as ``SerializationException``; ``to_wire``) and the JSON Schema
of the native REST API's responses (``json_schema``).

Deliberate departures: ``Image.Bytes``' 5 MB maximum is left to ``regard.imaging`` (configurable
limit, reported as ``ImageTooLargeException`` as AWS does), and blobs must already be ``bytes``
(the HTTP adapter decodes base64 before calling the service).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import numpy as np
from botocore.model import OperationModel, ServiceModel, Shape

from regard.errors import SerializationError, ValidationError

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
    """Raise ``ValidationError`` unless ``params`` satisfies the operation's input shape.

    ``exempt``: top-level members that need not be present (e.g. ``Image`` when a caller hands
    over faces it already detected)."""
    shape = operation(operation_name).input_shape
    if shape is None:
        if params:
            raise ValidationError(f"{operation_name} takes no parameters")
        return
    _validate(params, shape, "", exempt)


def _validate(value: Any, shape: Shape, path: str, exempt: frozenset[str] = frozenset()) -> None:
    where = path or "request"
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            raise ValidationError(f"{where} must be an object")
        unknown = sorted(set(value) - set(shape.members))
        if unknown:
            raise ValidationError(f"Unknown parameter(s) in {where}: {', '.join(unknown)}")
        for name in shape.required_members:
            if value.get(name) is None and name not in exempt:
                raise ValidationError(f"Missing required parameter {_join(path, name)}")
        for name, member in shape.members.items():
            if value.get(name) is not None:
                _validate(value[name], member, _join(path, name))
        return
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise ValidationError(f"{where} must be a list")
        _check_length(len(value), meta, where, "items")
        for i, item in enumerate(value):
            _validate(item, shape.member, f"{where}[{i}]")
        return
    if kind == "map":
        if not isinstance(value, dict):
            raise ValidationError(f"{where} must be a map")
        _check_length(len(value), meta, where, "entries")
        for k, v in value.items():
            _validate(k, shape.key, f"{where} key")
            _validate(v, shape.value, f"{where}[{k!r}]")
        return
    if kind == "string":
        if not isinstance(value, str):
            raise ValidationError(f"{where} must be a string")
        _check_length(len(value), meta, where, "characters")
        if shape.enum and value not in shape.enum:
            raise ValidationError(f"{where} must be one of {', '.join(shape.enum)}")
        if "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
            raise ValidationError(f"{where} {value!r} does not match {meta['pattern']}")
        return
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"{where} must be an integer")
        _check_range(value, meta, where)
        return
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValidationError(f"{where} must be a number")
        if value != value:  # NaN
            raise ValidationError(f"{where} must be a number")
        _check_range(value, meta, where)
        return
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValidationError(f"{where} must be true or false")
        return
    if kind == "blob":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise ValidationError(f"{where} must be bytes")
        if len(value) < meta.get("min", 0):
            raise ValidationError(f"{where} must not be empty")
        return
    # timestamps and anything else are not used by the operations Regard implements


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_length(n: int, meta: dict[str, Any], where: str, unit: str) -> None:
    if "min" in meta and n < meta["min"]:
        raise ValidationError(f"{where} must have at least {meta['min']} {unit}")
    if "max" in meta and n > meta["max"]:
        raise ValidationError(f"{where} must have at most {meta['max']} {unit}")


def _check_range(value: float, meta: dict[str, Any], where: str) -> None:
    if "min" in meta and value < meta["min"]:
        raise ValidationError(f"{where} must be >= {meta['min']}, got {value}")
    if "max" in meta and value > meta["max"]:
        raise ValidationError(f"{where} must be <= {meta['max']}, got {value}")


# -- the JSON 1.1 wire format -------------------------------------------------------------------
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "structure": (dict,), "map": (dict,), "list": (list,), "string": (str,),
    "integer": (int,), "long": (int,), "float": (int, float), "double": (int, float),
    "boolean": (bool,), "blob": (str,), "timestamp": (int, float, str),
}


def from_wire(operation_name: str, body: Any) -> dict[str, Any]:
    """A decoded JSON 1.1 request body -> service params: base64 blobs become ``bytes``,
    epoch timestamps ``datetime``; a member of the wrong JSON type is a ``SerializationError``
    (AWS's answer) and constraint checks are left to ``validate_request``."""
    shape = operation(operation_name).input_shape
    if body is None:
        body = {}
    if shape is None:
        if not isinstance(body, dict):
            raise SerializationError("The request body must be a JSON object")
        return body
    return _from_wire(body, shape, "")


def _from_wire(value: Any, shape: Shape, path: str) -> Any:
    if value is None:
        return None
    kind = shape.type_name
    expected = _JSON_TYPES.get(kind)
    if expected is not None and (not isinstance(value, expected)
                                 or (kind != "boolean" and isinstance(value, bool))):
        raise SerializationError(
            f"{path or 'request'}: expected a JSON {_json_name(kind)}, got {type(value).__name__}")
    if kind == "structure":
        return {name: (_from_wire(v, shape.members[name], _join(path, name))
                       if name in shape.members else v)
                for name, v in value.items()}
    if kind == "list":
        return [_from_wire(v, shape.member, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        return {k: _from_wire(v, shape.value, f"{path}[{k!r}]") for k, v in value.items()}
    if kind == "blob":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SerializationError(f"{path}: not valid base64") from exc
    if kind == "timestamp" and isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    return value


def _json_name(kind: str) -> str:
    return {"structure": "object", "map": "object", "list": "array", "blob": "string (base64)",
            "integer": "integer", "long": "integer", "float": "number", "double": "number",
            "timestamp": "number"}.get(kind, kind)


def _wire_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return round(value.timestamp(), 3)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not serializable")


def to_wire(response: dict[str, Any]) -> bytes:
    """A service response -> JSON 1.1 body (blobs base64, timestamps epoch seconds)."""
    return json.dumps(response, default=_wire_default, separators=(",", ":"),
                      allow_nan=False).encode()


# -- JSON Schema (the native REST API documents and checks its responses with it) ---------------
def json_schema(shape: Shape) -> dict[str, Any]:
    """JSON Schema of a botocore shape as ``to_wire`` serializes it; structures admit only the
    model's members."""
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        return {"type": "object", "additionalProperties": False,
                "properties": {n: json_schema(m) for n, m in shape.members.items()}}
    if kind == "list":
        return {"type": "array", "items": json_schema(shape.member)}
    if kind == "map":
        return {"type": "object", "additionalProperties": json_schema(shape.value)}
    if kind == "string":
        out: dict[str, Any] = {"type": "string"}
        if shape.enum:
            out["enum"] = list(shape.enum)
        return out
    if kind in ("integer", "long"):
        return {"type": "integer"}
    if kind in ("float", "double"):
        out = {"type": "number"}
        for key, name in (("min", "minimum"), ("max", "maximum")):
            if key in meta:
                out[name] = meta[key]
        return out
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "timestamp":
        return {"type": "number"}
    if kind == "blob":
        return {"type": "string", "format": "byte"}
    return {}


def output_schema(operation_name: str) -> dict[str, Any]:
    shape = operation(operation_name).output_shape
    return json_schema(shape) if shape is not None else {"type": "object"}
