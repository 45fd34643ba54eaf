"""Collections and their tags (which hold the collection's policy): CreateCollection,
ListCollections, DescribeCollection, DeleteCollection, TagResource, UntagResource,
ListTagsForResource."""

from __future__ import annotations

from typing import TYPE_CHECKING

from regard.errors import InvalidParameterError, ResourceNotFoundError, ServiceQuotaExceededError
from regard.governance import policy as pol
from regard.governance.policy import CollectionPolicy
from regard.operations.common import (
    DEFAULT_MAX_RESULTS,
    collection_from_arn,
    decode_token,
    encode_token,
)
from regard.operations.registry import Call, Params, operation
from regard.store import CollectionInfo
from regard.vision.packs import default_pack, get_pack

if TYPE_CHECKING:
    from regard.service import RegardService


def _tags(params: Params, result: Params) -> Params:
    return {"Tags": dict(params.get("Tags") or {})}


@operation("CreateCollection", scope="collections:write", summary=_tags)
def create_collection(svc: RegardService, call: Call) -> Params:
    name = call.params["CollectionId"]
    tags = dict(call.params.get("Tags") or {})
    chosen = tags.pop(pol.FACE_MODEL, None)  # a choice made at creation, not a policy
    pack = get_pack(chosen) if chosen else default_pack()
    if not pack.calibrated:
        raise InvalidParameterError(
            f"Face model {pack.version} is not calibrated: run `regard models calibrate "
            f"{pack.version}` before a collection can use it")
    info = svc.store.catalog.create_collection(name, svc.collection_arn(name), pack.version,
                                               tags or None)
    return {"StatusCode": 200, "CollectionArn": info.arn,
            "FaceModelVersion": info.face_model_version}


@operation("ListCollections", scope="collections:read")
def list_collections(svc: RegardService, call: Call) -> Params:
    """Only the collections the caller's allow-list admits."""
    limit = call.params.get("MaxResults") or DEFAULT_MAX_RESULTS
    after = decode_token(call.params.get("NextToken"), "collections", int)
    rows = svc.store.catalog.list_collections(after or 0, limit + 1)
    page = rows[:limit]
    visible = [c for c in page if call.context.may_see(c.name)]
    body: Params = {"CollectionIds": [c.name for c in visible],
                    "FaceModelVersions": [c.face_model_version for c in visible]}
    if len(rows) > limit:
        body["NextToken"] = encode_token("collections", page[-1].id)
    return body


@operation("DescribeCollection", scope="collections:read")
def describe_collection(svc: RegardService, call: Call) -> Params:
    info = svc.store.catalog.get_collection(call.params["CollectionId"])
    return {
        "FaceCount": int(info.face_count),
        "UserCount": int(svc.store.catalog.user_count(info.name)),
        "FaceModelVersion": info.face_model_version,
        "CollectionARN": info.arn,
        "CreationTimestamp": info.created,
    }


@operation("DeleteCollection", scope="collections:write")
def delete_collection(svc: RegardService, call: Call) -> Params:
    svc.store.delete_collection(call.params["CollectionId"])
    svc.store.database.reclaim_space()  # its embeddings leave no bytes on disk either
    return {"StatusCode": 200}


@operation("TagResource", scope="collections:write", summary=_tags)
def tag_resource(svc: RegardService, call: Call) -> Params:
    processor = _processor_of(svc, call.params["ResourceArn"])
    if processor is not None:
        tags = {**processor["tags"], **call.params["Tags"]}
        if len(tags) > 50:
            raise ServiceQuotaExceededError("A stream processor holds at most 50 tags")
        svc.streams.registry.set_tags(processor["name"], tags)
        return {}
    coll = arn_collection(svc, call.params["ResourceArn"])
    tags = {**coll.tags, **call.params["Tags"]}
    if len(tags) > 50:
        raise ServiceQuotaExceededError("A collection holds at most 50 tags")
    CollectionPolicy.from_tags(tags)  # refuse an invalid policy before storing it
    svc.store.catalog.set_tags(coll.name, tags)
    return {}


def _untagged(params: Params, result: Params) -> Params:
    return {"TagKeys": list(params.get("TagKeys") or [])}


@operation("UntagResource", scope="collections:write", summary=_untagged)
def untag_resource(svc: RegardService, call: Call) -> Params:
    keys = set(call.params["TagKeys"])
    processor = _processor_of(svc, call.params["ResourceArn"])
    if processor is not None:
        svc.streams.registry.set_tags(processor["name"], {
            k: v for k, v in processor["tags"].items() if k not in keys})
        return {}
    coll = arn_collection(svc, call.params["ResourceArn"])
    if pol.PURPOSE in keys:
        raise InvalidParameterError(
            f"{pol.PURPOSE} cannot be removed: a collection must keep a declared purpose "
            "(change it with TagResource)")
    svc.store.catalog.set_tags(coll.name, {k: v for k, v in coll.tags.items() if k not in keys})
    return {}


@operation("ListTagsForResource", scope="collections:read")
def list_tags_for_resource(svc: RegardService, call: Call) -> Params:
    processor = _processor_of(svc, call.params["ResourceArn"])
    if processor is not None:
        return {"Tags": dict(processor["tags"])}
    return {"Tags": dict(arn_collection(svc, call.params["ResourceArn"]).tags)}


def _processor_of(svc: RegardService, arn: str) -> dict | None:
    """The stream processor an ARN names (None: not a stream processor ARN)."""
    name = svc.streams.registry.processor_name_of(arn)
    if name is None:
        return None
    try:
        return svc.streams.registry.processor(name)
    except ResourceNotFoundError:
        raise ResourceNotFoundError(f"The resource {arn} does not exist") from None


def arn_collection(svc: RegardService, arn: str) -> CollectionInfo:
    name = collection_from_arn(arn)
    try:
        coll = svc.store.catalog.get_collection(name or "")
    except ResourceNotFoundError:
        coll = None
    if coll is None or coll.arn != arn:
        raise ResourceNotFoundError(f"The resource {arn} does not exist")
    return coll


@operation("DescribeCollections", scope="collections:read", rekognition=False)
def describe_collections(svc: RegardService, call: Call) -> Params:
    """Regard's own: ListCollections with what DescribeCollection and the policy say of each
    (``MaxResults`` default 50, at most 100), so that an overview is one audited read rather
    than one per collection."""
    limit = int(call.params.get("MaxResults") or 50)
    if not 1 <= limit <= 100:
        raise InvalidParameterError("MaxResults must be between 1 and 100")
    after = decode_token(call.params.get("NextToken"), "collections", int)
    rows = svc.store.catalog.list_collections(after or 0, limit + 1)
    page = rows[:limit]
    body: Params = {"Collections": [
        {"CollectionId": c.name, "FaceCount": int(c.face_count),
         "UserCount": int(svc.store.catalog.user_count(c.name)),
         "FaceModelVersion": c.face_model_version, "CollectionARN": c.arn,
         "CreationTimestamp": c.created,
         "Policy": CollectionPolicy.from_tags(c.tags).to_dict(),
         "Tags": {k: v for k, v in c.tags.items() if not k.startswith(pol.PREFIX)}}
        for c in page if call.context.may_see(c.name)]}
    if len(rows) > limit:
        body["NextToken"] = encode_token("collections", page[-1].id)
    return body
