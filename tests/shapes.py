"""Checks of response bodies against botocore's Rekognition model (shared by the tests of every
door)."""

from __future__ import annotations

import botocore.session
import numpy as np

from regard.service import EFFECTIVE_THRESHOLD, EXPECTED_FPIR, HUMAN_REVIEW, SEARCH_STATISTICS

MODEL = botocore.session.get_session().get_service_model("rekognition")


def assert_shape(value, shape_name: str) -> None:
    """Recursively check a response body against botocore's shape (names, types, enums). A
    search's answer may also carry Regard's own statistics (the expected false-positive
    identification rate and the threshold used; HumanReviewRequired when the policy asks for
    it), which the Rekognition door sends as headers."""
    shape = MODEL.shape_for(shape_name)
    if shape_name.startswith("Search") and isinstance(value, dict):
        extras = {k: value[k] for k in SEARCH_STATISTICS if k in value}
        assert set(extras) == set(SEARCH_STATISTICS), f"{shape_name}: {sorted(extras)}"
        assert 0 <= extras[EXPECTED_FPIR] <= 1 and 0 <= extras[EFFECTIVE_THRESHOLD] <= 100
        value = {k: v for k, v in value.items() if k not in (*SEARCH_STATISTICS, HUMAN_REVIEW)}
    _check(value, shape, shape_name)


def _check(value, shape, path):
    t = shape.type_name
    if t == "structure":
        assert isinstance(value, dict), path
        unknown = set(value) - set(shape.members)
        assert not unknown, f"{path}: members not in Rekognition's model: {unknown}"
        for name, member in shape.members.items():
            if name in value:
                _check(value[name], member, f"{path}.{name}")
    elif t == "list":
        assert isinstance(value, list), path
        for i, item in enumerate(value):
            _check(item, shape.member, f"{path}[{i}]")
    elif t == "string":
        assert isinstance(value, str), path
        if shape.enum:
            assert value in shape.enum, f"{path}: {value!r} not in enum"
    elif t in ("float", "double"):
        assert isinstance(value, float) and np.isfinite(value), path
        rng = shape.metadata
        if "min" in rng:
            assert value >= rng["min"], f"{path}: {value} < {rng['min']}"
        if "max" in rng:
            assert value <= rng["max"], f"{path}: {value} > {rng['max']}"
    elif t in ("integer", "long"):
        assert isinstance(value, int), path
    elif t == "boolean":
        assert isinstance(value, bool), path
