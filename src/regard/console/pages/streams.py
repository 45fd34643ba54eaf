"""Live streams: the stream processors with their status, start and stop, a processor's
statistics and its records as they arrive, and the cameras and sinks they use.

Starting, stopping, creating and deleting are the same audited operations as through the APIs.
A processor writing to a Server-Sent Events sink has its records shown live on its page: the
page's script follows ``/console/streams/sinks/NAME/events`` (the same hub as the REST API's
``/v1/streams/sinks/NAME/events``, authenticated by the console session instead of a key);
without scripts the page shows the statistics, reloaded by hand."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from regard.api.rest import status_of
from regard.console.web import Console, form_text
from regard.errors import RegardError, ResourceNotFoundError, ValidationError
from regard.streams.model import ROLE_ARN



def routes(console: Console, router: APIRouter) -> None:
    async def listing(request: Request, *, status: int = 200, error: RegardError | None = None,
                      notice: str | None = None, values: dict[str, Any] | None = None
                      ) -> Response:
        processors = await console.call(request, "ListStreamProcessors", {"MaxResults": 100})
        sources = (await console.call(request, "ListStreamSources"))["Sources"]
        sinks = (await console.call(request, "ListStreamSinks"))["Sinks"]
        collections: list[str] = []
        if request.state.visitor.may("ListCollections"):
            collections = (await console.call(request, "ListCollections",
                                              {"MaxResults": 1000}))["CollectionIds"]
        return console.render(request, "streams.html", status=status, error=error,
                              notice=notice, processors=processors["StreamProcessors"],
                              more="NextToken" in processors, sources=sources, sinks=sinks,
                              collections=collections, values=values or {})

    @router.get("/streams")
    async def streams(request: Request) -> Response:
        return await listing(request)

    @router.post("/streams")
    async def create(request: Request) -> Response:
        values = {k: v for k, v in request.state.form.items() if isinstance(v, str)}
        try:
            name = form_text(request, "name", max_length=128)
            source = form_text(request, "source", max_length=128)
            sink = form_text(request, "sink", max_length=128)
            collection = form_text(request, "collection", max_length=255)
            if not (name and source and sink and collection):
                raise ValidationError("A processor needs a name, a source, a sink and a "
                                      "collection")
            registry = console.server.streams.registry
            face_search: dict[str, Any] = {"CollectionId": collection}
            threshold = form_text(request, "threshold", max_length=16)
            if threshold:
                try:
                    face_search["FaceMatchThreshold"] = float(threshold)
                except ValueError:
                    raise ValidationError("The threshold is a number from 0 to 100") from None
            await console.call(request, "CreateStreamProcessor", {
                "Name": name, "RoleArn": ROLE_ARN,
                "Input": {"KinesisVideoStream": {"Arn": registry.source(name=source).arn}},
                "Output": {"KinesisDataStream": {"Arn": registry.sink(name=sink).arn}},
                "Settings": {"FaceSearch": face_search}},
                audit={"purpose": form_text(request, "purpose", max_length=512)})
        except RegardError as exc:
            return await listing(request, status=status_of(exc), error=exc, values=values)
        return console.redirect(f"/streams/{name}")

    async def page(request: Request, name: str, *, status: int = 200,
                   error: RegardError | None = None) -> Response:
        described = await console.call(request, "DescribeStreamProcessor", {"Name": name})
        registry = console.server.streams.registry
        sink_arn = (described["Output"].get("KinesisDataStream") or {}).get("Arn")
        sink = next((s for s in registry.sinks() if s.arn == sink_arn), None)
        source = next((s for s in registry.sources()
                       if s.arn == described["Input"]["KinesisVideoStream"]["Arn"]), None)
        return console.render(request, "stream.html", status=status, error=error,
                              processor=described, stats=described.get("RegardStatistics"),
                              sink=sink, source=source)

    @router.get("/streams/{name}")
    async def processor(request: Request, name: str) -> Response:
        return await page(request, name)

    @router.post("/streams/{name}/{action}")
    async def act(request: Request, name: str, action: str) -> Response:
        operation = {"start": "StartStreamProcessor", "stop": "StopStreamProcessor",
                     "delete": "DeleteStreamProcessor"}.get(action)
        if operation is None:
            raise ResourceNotFoundError(f"There is no action {action}")
        try:
            await console.call(request, operation, {"Name": name},
                               audit={"purpose": form_text(request, "purpose", max_length=512),
                                      "case": form_text(request, "case", max_length=256)})
        except RegardError as exc:
            if action == "delete":
                return await listing(request, status=status_of(exc), error=exc)
            return await page(request, name, status=status_of(exc), error=exc)
        if action == "delete":
            return console.redirect("/streams")
        return console.redirect(f"/streams/{name}")

    @router.get("/streams/sinks/{name}/events")
    async def events(request: Request, name: str) -> Response:
        from regard.streams.sinks import sse_events

        sinks = await console.call(request, "ListStreamSinks")
        if not any(s["Name"] == name and s["Kind"] == "sse" for s in sinks["Sinks"]):
            raise ResourceNotFoundError(f"No Server-Sent Events sink named {name}")
        return StreamingResponse(
            sse_events(console.server.streams.hub, name,
                       last_event_id=request.headers.get("last-event-id")),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
