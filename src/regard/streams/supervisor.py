"""Runs the stream processors that should be running: one thread each, started by
StartStreamProcessor (after its unit of work commits), stopped by StopStreamProcessor, resumed
when the server starts again (a processor whose session was never stopped).

The processor's row is the truth: a session (SessionId, the starting caller's context, its stop
selector) is kept while it should run and cleared when it stops or fails, so a restart resumes
exactly the processors that were RUNNING. Every status change names its session, so a thread of
an old session cannot overwrite a newer one's status.

One server runs the processors of its catalog (``--stream-processors``, default 4 at once; 0 on
replicas that should not run any), and watches the catalog so that a processor started or
stopped by another process (the CLI) is started or stopped within seconds. Several servers on one PostgreSQL would each resume them: run
processors on one of them (a lease, as background jobs have, is not built yet).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from regard.context import CallContext
from regard.streams.model import (
    FAILED,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPING,
    ProcessorRun,
    ProcessorStats,
)
from regard.streams.registry import StreamRegistry

log = logging.getLogger("regard.streams")

DEFAULT_MAX_PROCESSORS = 4


class _Running:
    def __init__(self, name: str, session_id: str) -> None:
        self.name = name
        self.session_id = session_id
        self.stop = threading.Event()
        self.stopped_by_user = False
        self.failure: str | None = None  # why the supervisor stopped it (FAILED)
        self.stats = ProcessorStats()
        self.thread: threading.Thread | None = None


class StreamSupervisor:
    def __init__(self, service: Any, *, hub: Any = None,
                 max_processors: int = DEFAULT_MAX_PROCESSORS, runs_here: bool = True) -> None:
        """``runs_here`` False (the CLI, a program using the service): Start and Stop only
        change the processor's row; the server watching the catalog (``watch``) runs it."""
        self.service = service
        self.registry = StreamRegistry(service.store.database, service.region,
                                       service.account_id)
        self.max_processors = max_processors
        self.runs_here = runs_here
        self._hub = hub
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._batcher: Any = None
        self._watching = threading.Event()
        self._watch_thread: threading.Thread | None = None
        # Faces erased while processors run (read from the ledger's Erase entries, whoever
        # erased them): a running track's matches are not searched again, so its records are
        # filtered instead; ``_erase_seq`` is the last ledger entry read.
        self._erased: set[str] = set()
        self._erase_seq: int | None = None

    @property
    def hub(self) -> Any:
        """Where Server-Sent Events sinks publish (the REST door's /v1/streams/sinks/NAME/events
        reads it)."""
        if self._hub is None:
            from regard.streams.sinks import SseHub

            self._hub = SseHub()
        return self._hub

    @property
    def batcher(self) -> Any:
        if self._batcher is None:
            from regard.streams.sinks import LedgerBatcher

            self._batcher = LedgerBatcher(self.service)
        return self._batcher

    # -- control ----------------------------------------------------------------------------------
    def start(self, name: str) -> None:
        """Run ``name``'s current session in a thread here (it was set STARTING)."""
        if not self.runs_here:
            return
        row = self.registry.processor(name)
        session = row.get("session")
        if not session:
            return
        with self._lock:
            current = self._running.get(name)
            if current is not None and current.thread is not None and current.thread.is_alive():
                if current.session_id == session["SessionId"]:
                    return
                current.stop.set()
            if self.max_processors <= 0:
                self.registry.set_status(name, FAILED, "This server runs no stream processors "
                                         "(--stream-processors 0)", clear_session=True,
                                         session_id=session["SessionId"])
                return
            alive = sum(1 for r in self._running.values()
                        if r.thread is not None and r.thread.is_alive())
            if alive >= self.max_processors:
                self.registry.set_status(
                    name, FAILED, f"This server already runs {alive} stream processors, its "
                    "limit (--stream-processors)", clear_session=True,
                    session_id=session["SessionId"])
                return
            running = _Running(name, session["SessionId"])
            running.thread = threading.Thread(target=self._run, args=(running, row),
                                              name=f"regard-stream-{name}", daemon=True)
            self._running[name] = running
            running.thread.start()

    def stop(self, name: str, timeout: float = 10.0) -> None:
        """Stop ``name`` (set STOPPING): its thread ends and sets it STOPPED."""
        if not self.runs_here:
            return  # STOPPING is set: the server running it sees that (``watch``)
        with self._lock:
            running = self._running.get(name)
        if running is None or running.thread is None or not running.thread.is_alive():
            # not running here (any more): just stop it
            self.registry.set_status(name, STOPPED, None, expect=(STOPPING, STARTING),
                                     clear_session=True)
            return
        running.stopped_by_user = True
        running.stop.set()
        running.thread.join(timeout)

    def resume(self) -> int:
        """Start every processor whose session was not stopped (after a restart); how many."""
        resumed = 0
        for row in self.registry.with_sessions():
            if row["status"] == STOPPING:  # stopped while no server ran it
                self.registry.set_status(row["name"], STOPPED, None, clear_session=True,
                                         session_id=row["session_id"])
                continue
            self.registry.set_status(row["name"], STARTING, "Resuming after a server restart",
                                     session_id=row["session_id"])
            self.start(row["name"])
            resumed += 1
        return resumed

    def watch(self, interval: float = 2.0) -> None:
        """Follow the catalog in a thread: start what another process (the CLI) started, stop
        what it stopped."""
        if self._watch_thread is not None or not self.runs_here:
            return
        self._watching.set()

        def loop() -> None:
            while self._watching.is_set():
                try:
                    self.sync()
                except Exception:  # the database away for a moment: next turn
                    log.warning("stream processors: could not read the catalog", exc_info=True)
                time.sleep(interval)

        self._watch_thread = threading.Thread(target=loop, name="regard-streams-watch",
                                              daemon=True)
        self._watch_thread.start()

    def forget_erased(self) -> None:
        """Read the Erase entries since the last look; their faces leave running records."""
        ledger = self.service.gate.ledger
        if self._erase_seq is None:
            self._erase_seq = ledger.head()["seq"]
            return
        for entry in ledger.entries(operations=["Erase"], after=self._erase_seq):
            self._erased.update(str(f) for f in entry.result.get("FaceIds") or ())
            self._erase_seq = entry.seq

    def forget(self, face_ids: list[str]) -> None:
        """Faces erased by this process: out of running records at once."""
        self._erased.update(face_ids)

    def without_erased(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record`` without matches of faces erased since the processor started."""
        if not self._erased:
            return record
        for face in record.get("FaceSearchResponse") or ():
            face["MatchedFaces"] = [m for m in face.get("MatchedFaces") or ()
                                    if m.get("Face", {}).get("FaceId") not in self._erased]
        return record

    def sync(self) -> None:
        """One look at the catalog (see ``watch``)."""
        self.forget_erased()
        wanted = {row["name"]: row for row in self.registry.with_sessions()}
        with self._lock:
            here = {n: r for n, r in self._running.items()
                    if r.thread is not None and r.thread.is_alive()}
        for name, running in here.items():
            row = wanted.get(name)
            if row is None or row["session_id"] != running.session_id or \
                    row["status"] == STOPPING:
                running.stopped_by_user = True
                running.stop.set()
            elif (refusal := self._policy_refusal(row)) is not None:
                running.failure = refusal
                running.stop.set()
        for name, row in wanted.items():
            if name not in here and row["status"] in (STARTING, RUNNING):
                self.start(name)
            elif name not in here and row["status"] == STOPPING:
                self.registry.set_status(name, STOPPED, None, expect=(STOPPING,),
                                         session_id=row["session_id"], clear_session=True)

    def _policy_refusal(self, row: dict[str, Any]) -> str | None:
        """Why the collection's policy, as it is now, no longer allows this processor (live
        identification withdrawn, or a threshold floor raised above its threshold)."""
        from regard.errors import RegardError
        from regard.governance.policy import CollectionPolicy

        face_search = row["settings"]["FaceSearch"]
        try:
            info = self.service.store.catalog.get_collection(face_search["CollectionId"])
            policy = CollectionPolicy.from_tags(info.tags)
        except RegardError as exc:
            return f"Its collection can no longer be searched: {exc.message}"
        if not policy.live_identification or not policy.legal_basis:
            return ("Stopped: the collection's policy no longer allows live identification "
                    "(with a legal basis)")
        if policy.threshold_floor is not None and \
                float(face_search["FaceMatchThreshold"]) < policy.threshold_floor:
            return (f"Stopped: the collection's threshold floor is now "
                    f"{policy.threshold_floor:g}, above this processor's "
                    f"{float(face_search['FaceMatchThreshold']):g}")
        return None

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the threads but keep the sessions: the processors resume when a server starts
        again."""
        self._watching.clear()
        with self._lock:
            running = list(self._running.values())
        for each in running:
            each.stop.set()
        for each in running:
            if each.thread is not None:
                each.thread.join(timeout)
        if self._batcher is not None:
            self._batcher.close()
        if self._hub is not None:  # Server-Sent Events followers: their streams end
            self._hub.close()

    def statistics(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            running = self._running.get(name)
        if running is None or running.thread is None or not running.thread.is_alive():
            return None
        return running.stats.snapshot()

    def running(self) -> dict[str, dict[str, Any]]:
        """Counters of every processor running here (``/metrics``)."""
        with self._lock:
            names = list(self._running)
        return {n: s for n in names if (s := self.statistics(n)) is not None}

    # -- a processor's thread ------------------------------------------------------------------------
    def _run(self, running: _Running, row: dict[str, Any]) -> None:
        from regard.streams.runtime import run_processor

        session = row["session"]
        name, sid = row["name"], session["SessionId"]
        sinks: list[Any] = []
        final: tuple[str, str | None] | None = None
        try:
            source = self.registry.source(arn=row["input_arn"])
            face_search = row["settings"]["FaceSearch"]
            run = ProcessorRun(name=name, arn=row["arn"], session_id=sid, source_url=source.url,
                               source_arn=source.arn, collection=face_search["CollectionId"],
                               threshold=float(face_search["FaceMatchThreshold"]),
                               max_duration_seconds=session.get("MaxDurationInSeconds"))
            context = CallContext.from_json(session["Context"])
            sinks = self._open_sinks(row, run)

            def emit(record: dict[str, Any]) -> None:
                record = self.without_erased(record)
                for sink in sinks:
                    try:
                        sink.send(record)
                    except Exception:  # a sink's fault is its own, never the processor's
                        log.exception("stream processor %s: a sink failed", name)

            def on_status(status: str, message: str | None) -> None:
                nonlocal final
                if status == FAILED:
                    final = (FAILED, message)
                    return
                self.registry.set_status(name, status, message, session_id=sid,
                                         expect=(STARTING, RUNNING))

            self.registry.set_status(name, RUNNING, None, session_id=sid,
                                     expect=(STARTING, RUNNING))
            if self._erase_seq is None:
                self.forget_erased()
            from regard import config

            run_processor(run, service=self.service, context=context, emit=emit,
                          on_matches=lambda r, matched: self.batcher.add(r, context, matched),
                          on_status=on_status, stop=running.stop, stats=running.stats,
                          fail_after=float(config.current().stream_fail_seconds))
        except Exception as exc:
            log.exception("stream processor %s failed", name)
            final = (FAILED, f"The processor stopped on an internal error: "
                             f"{type(exc).__name__}: {exc}"[:1000])
        finally:
            for sink in sinks:
                try:
                    sink.close()
                except Exception:
                    log.exception("stream processor %s: closing a sink failed", name)
            if self._batcher is not None:
                self._batcher.flush()
            if final is None and running.failure is not None:
                final = (FAILED, running.failure)
            if final is not None:
                self.registry.set_status(name, final[0], final[1], session_id=sid,
                                         clear_session=True)
            elif running.stopped_by_user or not running.stop.is_set():
                # stopped, or its StopSelector's duration ran out
                self.registry.set_status(name, STOPPED, None, session_id=sid,
                                         clear_session=True)
            # else: the server is shutting down; the session stays, to be resumed

    def _open_sinks(self, row: dict[str, Any], run: ProcessorRun) -> list[Any]:
        from regard.streams.sinks import S3Sink, open_sink

        sinks: list[Any] = []
        output = row["output"]
        arn = (output.get("KinesisDataStream") or {}).get("Arn")
        if arn:
            sinks.append(open_sink(self.registry.sink(arn=arn), hub=self.hub,
                                   objects=self.service.objects))
        s3 = output.get("S3Destination")
        if s3:
            sinks.append(S3Sink(self.service.objects, s3["Bucket"], s3.get("KeyPrefix") or "",
                                processor=run.name, session=run.session_id))
        return sinks


__all__ = ["StreamSupervisor", "STOPPING", "STARTING"]
