"""`regard streams`: cameras (sources), where records go (sinks), stream processors, and a live
tail of a sink's records.

Every command is an audited operation, as through the APIs. Starting and stopping a processor
here records it in the catalog; the `regard serve` that shares the catalog runs it within
seconds (it watches for processors started or stopped elsewhere) and resumes it after a restart.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from regard.cli.collection_commands import JsonOpt, _call
from regard.cli.common import CaseOpt, PurposeOpt, _fail, app, err
from regard.errors import InvalidParameterError, RegardError
from regard.streams.model import ROLE_ARN

streams_app = typer.Typer(help="Live stream processors: sources, sinks, processors, tail",
                          no_args_is_help=True)
sources_app = typer.Typer(help="Cameras and streams a processor can read", no_args_is_help=True)
sinks_app = typer.Typer(help="Where processors' records go", no_args_is_help=True)
processors_app = typer.Typer(help="Stream processors (Rekognition's operations)",
                             no_args_is_help=True)
streams_app.add_typer(sources_app, name="sources")
streams_app.add_typer(sinks_app, name="sinks")
streams_app.add_typer(processors_app, name="processors")
app.add_typer(streams_app, name="streams")



def _out(body: dict[str, Any], as_json: bool, rows: list[dict[str, Any]] | None = None,
         columns: tuple[str, ...] = ()) -> None:
    if as_json or rows is None:
        print(json.dumps(body, indent=2, default=str))
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    from rich.console import Console

    Console().print(table)


# -- sources ------------------------------------------------------------------------------------------
@sources_app.command("add")
def source_add(name: str, url: str = typer.Argument(..., help="rtsp://, http(s)://, a file, ..."),
               as_json: bool = JsonOpt) -> None:
    """Register a camera; prints the ARN to use as Input.KinesisVideoStream.Arn."""
    body = _call("CreateStreamSource", {"Name": name, "Url": url})
    _out(body, as_json) if as_json else print(body["Arn"])


@sources_app.command("list")
def source_list(as_json: bool = JsonOpt) -> None:
    """The registered cameras (passwords masked) and their ARNs."""
    body = _call("ListStreamSources", {})
    _out(body, as_json, body["Sources"], ("Name", "Url", "Arn"))


@sources_app.command("remove")
def source_remove(name: str) -> None:
    """Remove a camera no stream processor reads."""
    _call("DeleteStreamSource", {"Name": name})


# -- sinks --------------------------------------------------------------------------------------------
@sinks_app.command("add")
def sink_add(name: str,
             kind: str = typer.Argument(..., help="webhook, jsonl, sse or mqtt"),
             target: str = typer.Argument("", help="webhook URL, file path, or "
                                                   "mqtt://HOST[:PORT]/TOPIC; none for sse"),
             as_json: bool = JsonOpt) -> None:
    """Register a sink; prints the ARN to use as Output.KinesisDataStream.Arn."""
    body = _call("CreateStreamSink", {"Name": name, "Kind": kind, "Target": target})
    _out(body, as_json) if as_json else print(body["Arn"])


@sinks_app.command("list")
def sink_list(as_json: bool = JsonOpt) -> None:
    """The registered sinks and their ARNs."""
    body = _call("ListStreamSinks", {})
    _out(body, as_json, body["Sinks"], ("Name", "Kind", "Target", "Arn"))


@sinks_app.command("remove")
def sink_remove(name: str) -> None:
    """Remove a sink no stream processor writes to."""
    _call("DeleteStreamSink", {"Name": name})


# -- processors ---------------------------------------------------------------------------------------
@processors_app.command("create")
def processor_create(
    name: str,
    source: str = typer.Option(..., "--source", help="A registered source's name"),
    collection: str = typer.Option(..., "--collection",
                                   help="Its policy must allow live identification"),
    sink: Optional[str] = typer.Option(None, "--sink", help="A registered sink's name"),
    s3_bucket: Optional[str] = typer.Option(None, "--s3-bucket",
                                            help="Also write records to the object store"),
    s3_prefix: Optional[str] = typer.Option(None, "--s3-prefix"),
    threshold: Optional[float] = typer.Option(None, "--threshold",
                                              help="Default 80; lower is raised to 80"),
    purpose: Optional[str] = PurposeOpt,
    case: Optional[str] = CaseOpt,
    as_json: bool = JsonOpt,
) -> None:
    """CreateStreamProcessor: face search of COLLECTION on SOURCE's frames."""
    from regard.service import RegardService

    service = RegardService()
    registry = service.streams.registry
    try:
        output: dict[str, Any] = {}
        if sink:
            output["KinesisDataStream"] = {"Arn": registry.sink(name=sink).arn}
        if s3_bucket:
            output["S3Destination"] = {"Bucket": s3_bucket,
                                       **({"KeyPrefix": s3_prefix} if s3_prefix else {})}
        if not output:
            raise InvalidParameterError("Name a --sink or an --s3-bucket")
        input_arn = registry.source(name=source).arn
    except RegardError as exc:
        _fail(exc)
        return
    face_search: dict[str, Any] = {"CollectionId": collection}
    if threshold is not None:
        face_search["FaceMatchThreshold"] = threshold
    body = _call("CreateStreamProcessor", {
        "Name": name, "Input": {"KinesisVideoStream": {"Arn": input_arn}}, "Output": output,
        "RoleArn": ROLE_ARN, "Settings": {"FaceSearch": face_search}}, service, purpose, case)
    _out(body, as_json) if as_json else print(body["StreamProcessorArn"])


@processors_app.command("list")
def processor_list(as_json: bool = JsonOpt) -> None:
    """ListStreamProcessors: every processor and its status."""
    body = _call("ListStreamProcessors", {})
    _out(body, as_json, body["StreamProcessors"], ("Name", "Status"))


@processors_app.command("describe")
def processor_describe(name: str) -> None:
    """DescribeStreamProcessor, as JSON (with the running processor's statistics)."""
    _out(_call("DescribeStreamProcessor", {"Name": name}), True)


@processors_app.command("start")
def processor_start(name: str, max_duration: Optional[int] = typer.Option(
        None, "--max-duration", min=1, help="Stop after this many seconds"),
        purpose: Optional[str] = PurposeOpt, case: Optional[str] = CaseOpt) -> None:
    """StartStreamProcessor (the running `regard serve` runs it); prints the SessionId."""
    params: dict[str, Any] = {"Name": name}
    if max_duration:
        params["StopSelector"] = {"MaxDurationInSeconds": max_duration}
    print(_call("StartStreamProcessor", params, purpose=purpose, case=case)["SessionId"])


@processors_app.command("stop")
def processor_stop(name: str) -> None:
    """StopStreamProcessor (the running `regard serve` stops it within seconds)."""
    _call("StopStreamProcessor", {"Name": name})


@processors_app.command("delete")
def processor_delete(name: str) -> None:
    """DeleteStreamProcessor (a stopped or failed one)."""
    _call("DeleteStreamProcessor", {"Name": name})


# -- tail ---------------------------------------------------------------------------------------------
@streams_app.command("tail")
def tail(sink: str = typer.Argument(..., help="A jsonl or sse sink"),
         server: str = typer.Option("http://127.0.0.1:8000", "--server",
                                    help="The regard serve of an sse sink"),
         key: Optional[str] = typer.Option(None, "--key",
                                           help="ACCESS_KEY_ID:SECRET for the server "
                                                "(default: the admin credentials file)"),
         count: Optional[int] = typer.Option(None, "--count", min=1,
                                             help="Stop after this many records")) -> None:
    """Print a sink's records as they come, one JSON object a line: a JSON Lines sink's file
    is followed; a Server-Sent Events sink is read from the server."""
    body = _call("ListStreamSinks", {})
    found = next((s for s in body["Sinks"] if s["Name"] == sink), None)
    if found is None or found["Kind"] not in ("jsonl", "sse"):
        err.print(f"[red]{sink} is not a registered jsonl or sse sink[/red]")
        raise typer.Exit(code=2)
    seen = 0
    try:
        lines = (_follow(Path(found["Target"])) if found["Kind"] == "jsonl"
                 else _events(server, found["Name"], key))
        for line in lines:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            seen += 1
            if count is not None and seen >= count:
                return
    except KeyboardInterrupt:
        return


def _follow(path: Path) -> Any:
    while not path.exists():
        time.sleep(0.2)
    with open(path, encoding="utf-8") as fh:
        while True:
            line = fh.readline()
            if line:
                yield line.rstrip("\n")
            else:
                time.sleep(0.1)


def _events(server: str, name: str, key: Optional[str]) -> Any:
    import httpx

    if key is None:
        key = _admin_key()
    with httpx.stream("GET", f"{server.rstrip('/')}/v1/streams/sinks/{name}/events",
                      headers={"Authorization": f"Bearer {key}"}, timeout=None) as events:
        if events.status_code != 200:
            events.read()
            err.print(f"[red]{events.status_code}: {events.text[:300]}[/red]")
            raise typer.Exit(code=1)
        for line in events.iter_lines():
            if line.startswith("data: "):
                yield line[6:]


def _admin_key() -> str:
    import configparser

    from regard import config
    from regard.governance.keys import CREDENTIALS_FILE

    parser = configparser.ConfigParser()
    parser.read(config.regard_home() / CREDENTIALS_FILE)
    try:
        section = parser["regard"]
        return f"{section['aws_access_key_id']}:{section['aws_secret_access_key']}"
    except KeyError:
        err.print("[red]No --key and no admin credentials file: pass --key ID:SECRET[/red]")
        raise typer.Exit(code=2) from None
