"""The operation registry: every operation declared once, and everything derived from it."""

from __future__ import annotations

import inspect

from regard.governance import scopes
from regard.operations import registry
from regard.service import ActingAs, RegardService
from regard.spec import service_model


def test_every_rekognition_operation_is_in_botocores_model_and_has_a_method():
    model = set(service_model().operation_names)
    for op in registry.all_operations():
        assert op.scope in registry.SCOPES, op.name
        assert (op.name in model) == op.rekognition, op.name
        for cls in (RegardService, ActingAs):
            method = getattr(cls, op.python_name)
            assert callable(method) and op.name in inspect.getdoc(method), op.name


def test_the_scopes_table_and_the_search_list_are_derived():
    table = scopes.operation_scopes()
    assert table["IndexFaces"] == "faces:write" and table["AuditVerify"] == "audit:read"
    assert table["CreateAccessKey"] == "admin" and table["CompareFaces"] == "compare"
    assert scopes.required_scope("NoSuchOperation") == "admin"
    assert set(registry.search_operations()) == {
        "SearchFaces", "SearchFacesByImage", "SearchUsers", "SearchUsersByImage",
        "VideoFaceSearch", "LiveFaceSearch"}  # a video job's and a stream processor's
    # identifications, recorded when the job ends and in batches while the processor runs
    for name in registry.search_operations():
        op = registry.get(name)
        assert op is not None and op.threshold_member
        assert op.max_member or name in ("VideoFaceSearch", "LiveFaceSearch")  # records


def test_declaring_an_operation_twice_is_refused():
    import pytest

    with pytest.raises(ValueError, match="twice"):
        registry.operation("IndexFaces", scope="faces:write")(lambda svc, call: {})
    with pytest.raises(ValueError, match="unknown scope"):
        registry.operation("Nothing", scope="everything")
