"""Live stream processors: Rekognition's CreateStreamProcessor, DescribeStreamProcessor,
ListStreamProcessors, StartStreamProcessor, StopStreamProcessor, UpdateStreamProcessor and
DeleteStreamProcessor, for face search on registered cameras (``regard.streams``), and
``LiveFaceSearch``, the ledger record of a processor's identifications.

As AWS: a name is unique (``ResourceInUseException``); the status goes STOPPED -> STARTING ->
RUNNING -> STOPPING -> STOPPED, or FAILED with a ``StatusMessage``; only a stopped (or failed)
processor starts, only a starting or running one stops, and a running one cannot be deleted;
``FaceMatchThreshold`` defaults to 80 and lower values are raised to 80. What serves only
Rekognition's connected-home label detection (``ConnectedHome``, ``RegionsOfInterest``,
``DataSharingPreference`` opt-in, ``NotificationChannel``, ``KmsKeyId``) is refused with an
``InvalidParameterException`` that says so; a Kinesis start selector (a fragment or producer
time to start from) has no meaning for a live camera and is refused too.

Stricter than AWS, because live identification is the most invasive use of face recognition: the
collection's policy must allow it (``regard:live-identification: allowed``, with a legal basis),
its threshold floor applies, the key's collection allow-list applies, and every match is in the
ledger (``LiveFaceSearch`` entries, batched by ``streams.sinks.LedgerBatcher``).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from regard.errors import AccessDeniedError, InvalidParameterError, ResourceInUseError
from regard.governance import scopes
from regard.governance.policy import CollectionPolicy
from regard.operations.common import collection
from regard.operations.registry import Call, Params, operation
from regard.streams.model import FAILED, RUNNING, STARTING, STOPPED, STOPPING

if TYPE_CHECKING:
    from regard.service import RegardService

LIVE_THRESHOLD_MINIMUM = 80.0  # AWS: "values lower than 80 are set to 80"
CONNECTED_HOME = ("ConnectedHome, RegionsOfInterest, DataSharingPreference and "
                  "NotificationChannel serve Rekognition's connected-home label detection; "
                  "Regard's stream processors do face search only")


def _name(params: Params, result: Params) -> Params:
    out: Params = {"StreamProcessor": params.get("Name")}
    if result.get("SessionId"):
        out["SessionId"] = result["SessionId"]
    return out


def _created(params: Params, result: Params) -> Params:
    face_search = (params.get("Settings") or {}).get("FaceSearch") or {}
    return {"StreamProcessor": params.get("Name"),
            "Input": ((params.get("Input") or {}).get("KinesisVideoStream") or {}).get("Arn"),
            "Threshold": face_search.get("FaceMatchThreshold")}


def live_threshold(asked: float | None, policy: CollectionPolicy, name: str) -> float:
    """AWS's rule (default 80, lower raised to 80), then the collection's floor: a threshold
    asked below the floor is refused, as for every search."""
    if asked is not None and policy.threshold_floor is not None and \
            asked < policy.threshold_floor:
        raise InvalidParameterError(
            f"FaceMatchThreshold {asked:g} is below the threshold floor "
            f"{policy.threshold_floor:g} of collection {name}")
    return max(LIVE_THRESHOLD_MINIMUM, asked if asked is not None else 0.0,
               policy.threshold_floor or 0.0)


def allow_live(svc: RegardService, call: Call, name: str) -> CollectionPolicy:
    """The collection, if this key may use it and its policy allows live identification."""
    context = call.context  # the allow-list, as the gate checks it for a top-level CollectionId
    scopes.check(call.name, call.operation.scope, context.scopes, context.collections, name)
    coll = collection(svc, name)
    call.collection = coll.name
    policy = CollectionPolicy.from_tags(coll.tags)
    if not policy.live_identification:
        raise AccessDeniedError(
            f"Collection {name}'s policy does not allow live identification: tag it "
            "regard:live-identification=allowed (with its regard:legal-basis) to let stream "
            "processors search it")
    if not policy.legal_basis:
        raise AccessDeniedError(
            f"Collection {name} allows live identification but states no legal basis "
            "(regard:legal-basis): stream processors are refused until it does")
    return policy


@operation("CreateStreamProcessor", scope="search", summary=_created)
def create_stream_processor(svc: RegardService, call: Call) -> Params:
    p = call.params
    for member in ("KmsKeyId", "RegionsOfInterest", "NotificationChannel"):
        if p.get(member):
            raise InvalidParameterError(f"{member} is not supported: {CONNECTED_HOME}")
    if (p.get("DataSharingPreference") or {}).get("OptIn"):
        raise InvalidParameterError(
            "DataSharingPreference.OptIn: Regard shares nothing with anyone; it is false")
    settings = p.get("Settings") or {}
    if settings.get("ConnectedHome") or not settings.get("FaceSearch"):
        raise InvalidParameterError(f"Settings.FaceSearch is required: {CONNECTED_HOME}")
    face_search = dict(settings["FaceSearch"])
    if not face_search.get("CollectionId"):
        raise InvalidParameterError("Settings.FaceSearch.CollectionId is required")
    policy = allow_live(svc, call, face_search["CollectionId"])
    face_search["FaceMatchThreshold"] = live_threshold(face_search.get("FaceMatchThreshold"),
                                                       policy, face_search["CollectionId"])
    source_arn = ((p.get("Input") or {}).get("KinesisVideoStream") or {}).get("Arn")
    if not source_arn:
        raise InvalidParameterError("Input.KinesisVideoStream.Arn is required: the ARN of a "
                                    "registered source (`regard streams sources list`)")
    registry = svc.streams.registry
    try:
        registry.source(arn=source_arn)
    except Exception:
        raise InvalidParameterError(f"Input.KinesisVideoStream.Arn {source_arn} names no "
                                    "registered source (`regard streams sources add`)") from None
    output = p.get("Output") or {}
    sink_arn = (output.get("KinesisDataStream") or {}).get("Arn")
    if not sink_arn and not output.get("S3Destination"):
        raise InvalidParameterError("Output needs KinesisDataStream.Arn (a registered sink) "
                                    "or S3Destination")
    if sink_arn:
        try:
            registry.sink(arn=sink_arn)
        except Exception:
            raise InvalidParameterError(f"Output.KinesisDataStream.Arn {sink_arn} names no "
                                        "registered sink (`regard streams sinks add`)") from None
    row = registry.create_processor(
        p["Name"], input_arn=source_arn, output=output, settings={"FaceSearch": face_search},
        role_arn=p["RoleArn"], tags=dict(p.get("Tags") or {}), owner=call.context.principal)
    return {"StreamProcessorArn": row["arn"]}


@operation("DescribeStreamProcessor", scope="collections:read")
def describe_stream_processor(svc: RegardService, call: Call) -> Params:
    row = svc.streams.registry.processor(call.params["Name"])
    body = describe(row)
    statistics = svc.streams.statistics(row["name"])
    if statistics is not None:
        body["RegardStatistics"] = statistics  # not in Rekognition's model: SDKs ignore it
    return body


def describe(row: dict[str, Any]) -> Params:
    body: Params = {"Name": row["name"], "StreamProcessorArn": row["arn"],
                    "Status": row["status"], "CreationTimestamp": row["created"],
                    "LastUpdateTimestamp": row["updated"],
                    "Input": {"KinesisVideoStream": {"Arn": row["input_arn"]}},
                    "Output": row["output"], "RoleArn": row["role_arn"],
                    "Settings": row["settings"],
                    "DataSharingPreference": {"OptIn": False}}
    if row["status_message"]:
        body["StatusMessage"] = row["status_message"]
    return body


@operation("ListStreamProcessors", scope="collections:read")
def list_stream_processors(svc: RegardService, call: Call) -> Params:
    limit = min(int(call.params.get("MaxResults") or 1000), 1000)
    after = call.params.get("NextToken")
    if after is not None:
        from regard.operations.common import decode_token

        after = decode_token(after, "streamprocessors", str)
    rows, more = svc.streams.registry.processors(after, limit)
    body: Params = {"StreamProcessors": [{"Name": r["name"], "Status": r["status"]}
                                         for r in rows]}
    if more and rows:
        from regard.operations.common import encode_token

        body["NextToken"] = encode_token("streamprocessors", rows[-1]["name"])
    return body


@operation("StartStreamProcessor", scope="search", summary=_name)
def start_stream_processor(svc: RegardService, call: Call) -> Params:
    p = call.params
    row = svc.streams.registry.processor(p["Name"])
    if (p.get("StartSelector") or {}).get("KVSStreamStartSelector"):
        raise InvalidParameterError(
            "StartSelector.KVSStreamStartSelector names a point in a Kinesis Video stream's "
            "archive; a registered camera is live: start without it")
    face_search = row["settings"]["FaceSearch"]
    allow_live(svc, call, face_search["CollectionId"])  # the policy or the key may have changed
    session_id = str(uuid.uuid4())
    session = {"SessionId": session_id, "Context": call.context.to_json(),
               "MaxDurationInSeconds": (p.get("StopSelector") or {}).get("MaxDurationInSeconds")}
    if not svc.streams.registry.set_status(row["name"], STARTING, None,
                                           expect=(STOPPED, FAILED), session=session):
        raise ResourceInUseError(f"Stream processor {row['name']} is "
                                 f"{svc.streams.registry.processor(row['name'])['status']}: "
                                 "only a stopped or failed processor starts")
    svc.store.database.after_commit(lambda: svc.streams.start(row["name"]))
    return {"SessionId": session_id}


@operation("StopStreamProcessor", scope="search", summary=_name)
def stop_stream_processor(svc: RegardService, call: Call) -> Params:
    name = call.params["Name"]
    registry = svc.streams.registry
    row = registry.processor(name)
    if not registry.set_status(name, STOPPING, None, expect=(STARTING, RUNNING)):
        raise ResourceInUseError(f"Stream processor {name} is {row['status']}: only a "
                                 "starting or running processor stops")
    svc.store.database.after_commit(lambda: svc.streams.stop(name))
    return {}


@operation("UpdateStreamProcessor", scope="search", summary=_name)
def update_stream_processor(svc: RegardService, call: Call) -> Params:
    p = call.params
    registry = svc.streams.registry
    registry.processor(p["Name"])
    if p.get("SettingsForUpdate") or p.get("RegionsOfInterestForUpdate"):
        raise InvalidParameterError(f"Nothing of face search is updatable: {CONNECTED_HOME}")
    if (p.get("DataSharingPreferenceForUpdate") or {}).get("OptIn"):
        raise InvalidParameterError(
            "DataSharingPreference.OptIn: Regard shares nothing with anyone; it is false")
    if p.get("ParametersToDelete"):
        raise InvalidParameterError(f"ParametersToDelete: {CONNECTED_HOME}")
    registry.touch(p["Name"])
    return {}


@operation("DeleteStreamProcessor", scope="search", summary=_name)
def delete_stream_processor(svc: RegardService, call: Call) -> Params:
    name = call.params["Name"]
    registry = svc.streams.registry
    row = registry.processor(name)
    if not registry.delete_processor(name, expect=(STOPPED, FAILED)):
        raise ResourceInUseError(f"Stream processor {name} is {row['status']}: stop it first")
    return {}


def _live(params: Params, result: Params) -> Params:
    return {"StreamProcessor": params.get("StreamProcessor"),
            "SessionId": params.get("SessionId"),
            "Threshold": params.get("FaceMatchThreshold"),
            "FaceIds": [m["FaceId"] for m in params.get("Matches") or []],
            "TopSimilarity": max((float(m["Similarity"]) for m in params.get("Matches") or []),
                                 default=None)}


@operation("LiveFaceSearch", scope="search", summary=_live, rekognition=False, identifies=True,
           threshold_member="FaceMatchThreshold")
def live_face_search(svc: RegardService, call: Call) -> Params:
    """The ledger record of a stream processor's identifications (written in batches by the
    processor itself, under the principal who started it): who-searched and the transparency
    report read these entries."""
    p = call.params
    call.collection = p.get("CollectionId")
    matches = p.get("Matches") or []
    if not isinstance(matches, list) or not all(
            isinstance(m, dict) and m.get("FaceId") for m in matches):
        raise InvalidParameterError("Matches is a list of {FaceId, Similarity}")
    return {"Recorded": len(matches)}


# -- the cameras and sinks the operator registers (Regard's own; admin) ---------------------------
def _registered(params: Params, result: Params) -> Params:
    return {k: v for k, v in result.items() if k in ("Name", "Arn", "Url", "Kind", "Target")}


def _source_body(source: Any) -> Params:
    from regard.streams.registry import masked_url

    return {"Name": source.name, "Arn": source.arn, "Url": masked_url(source.url),
            "Created": source.created.isoformat()}


def _sink_body(sink: Any) -> Params:
    body: Params = {"Name": sink.name, "Arn": sink.arn, "Kind": sink.kind,
                    "Target": sink.target, "Created": sink.created.isoformat()}
    if sink.kind == "sse":
        body["Events"] = f"/v1/streams/sinks/{sink.name}/events"
    return body


@operation("CreateStreamSource", scope="admin", summary=_registered, rekognition=False)
def create_stream_source(svc: RegardService, call: Call) -> Params:
    """Register a camera (``Name``, ``Url``: rtsp://, http(s)://, a file, ...): its ARN is what
    CreateStreamProcessor's ``Input.KinesisVideoStream.Arn`` names. The URL's password is never
    shown or recorded."""
    p = call.params
    return _source_body(svc.streams.registry.add_source(str(p.get("Name") or ""),
                                                        str(p.get("Url") or "")))


@operation("ListStreamSources", scope="collections:read", rekognition=False)
def list_stream_sources(svc: RegardService, call: Call) -> Params:
    return {"Sources": [_source_body(s) for s in svc.streams.registry.sources()]}


@operation("DeleteStreamSource", scope="admin", summary=_name, rekognition=False)
def delete_stream_source(svc: RegardService, call: Call) -> Params:
    svc.streams.registry.remove_source(str(call.params.get("Name") or ""))
    return {}


@operation("CreateStreamSink", scope="admin", summary=_registered, rekognition=False)
def create_stream_sink(svc: RegardService, call: Call) -> Params:
    """Register where records go (``Name``, ``Kind``: webhook, jsonl, sse or mqtt, ``Target``):
    its ARN is what ``Output.KinesisDataStream.Arn`` names."""
    p = call.params
    return _sink_body(svc.streams.registry.add_sink(
        str(p.get("Name") or ""), str(p.get("Kind") or ""), str(p.get("Target") or "")))


@operation("ListStreamSinks", scope="collections:read", rekognition=False)
def list_stream_sinks(svc: RegardService, call: Call) -> Params:
    return {"Sinks": [_sink_body(s) for s in svc.streams.registry.sinks()]}


@operation("DeleteStreamSink", scope="admin", summary=_name, rekognition=False)
def delete_stream_sink(svc: RegardService, call: Call) -> Params:
    name = str(call.params.get("Name") or "")
    sink = svc.streams.registry.sink(name=name)
    svc.streams.registry.remove_sink(name)
    if sink.kind == "sse":  # its followers' streams end
        svc.store.database.after_commit(lambda: svc.streams.hub.close(name))
    return {}


__all__ = ["RUNNING", "STOPPING", "describe", "live_threshold"]
