"""One video or image file at a time, as the CLI and the Ray batch workers both run it.

``regard video detect|search`` and ``regard redact`` process files in the calling process; with
``--ray`` the same functions run in Ray worker processes (``regard.cluster.worker``). Either way
each file is one audited operation under the principal who asked: ``StartFaceDetection``, a
``VideoFaceSearch`` per searched video, ``RedactFaces`` (images) or ``StartFaceRedaction``
(videos), plus a ``VideoFaceSearch`` naming the faces a redaction that keeps or hides one
collection's people matched.

Outputs appear only complete (written beside the target, then renamed), so a batch that finds a
target in place skips its input, and an interrupted batch resumes where it stopped.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from regard.context import CallContext
from regard.errors import InvalidParameterError
from regard.video.redact import IMAGE_FORMATS, RedactionOptions, replacing

Progress = Callable[[int, int], None]


@dataclass
class VideoResult:
    """One video's answer, its items read back from the job-style spool (never all in
    memory): ``member`` is ``Faces`` (GetFaceDetection) or ``Persons`` (GetFaceSearch)."""

    metadata: dict[str, Any]
    member: str
    items: Callable[[], Iterator[dict[str, Any]]]
    people: dict[int, list[dict[str, Any]]] | None = None  # search: each person's matches

    def count(self) -> int:
        """Faces found (detection) or people tracked (search)."""
        if self.people is not None:
            return len(self.people)
        return sum(1 for _ in self.items())


def analyse(service: Any, video: Path, options: Any, progress: Progress | None,
            spool: Any) -> Any:
    """The analysis of one video into ``spool`` (``regard.video.analysis``)."""
    from regard.video.analysis import analyze_video
    from regard.video.decode import VideoReader

    with VideoReader(video) as reader:
        return analyze_video(reader, service.engine, options, progress=progress,
                             sink=spool.add)


def detect_video(service: Any, context: CallContext, video: Path, options: Any,
                 progress: Progress | None, spool: Any) -> VideoResult:
    """Faces in every analysed frame, in one audited ``StartFaceDetection``."""
    def run() -> dict[str, Any]:
        analysis = analyse(service, video, options, progress, spool)
        return {"VideoMetadata": analysis.metadata.to_aws()}

    done = service.run_audited("StartFaceDetection", {"File": video.name}, context, run)
    return VideoResult(done["VideoMetadata"], "Faces", lambda: (
        {"Timestamp": ts, "Face": face} for ts, _, face in spool.in_time_order()))


def search_options(service: Any, context: CallContext, collection: str,
                   threshold: float | None) -> tuple[Any, float]:
    """The collection and the threshold a video search runs at, checked by the gate first
    (scopes, the threshold floor) before minutes of analysis."""
    from regard import config

    asked: dict[str, Any] = {"CollectionId": collection}
    if threshold is not None:
        asked["FaceMatchThreshold"] = threshold
    coll = service.store.catalog.get_collection(collection)
    checked = service.preflight("VideoFaceSearch", asked, context)
    return coll, float(checked.get("FaceMatchThreshold", config.DEFAULT_MATCH_THRESHOLD))


def search_video(service: Any, context: CallContext, video: Path, collection: str,
                 threshold: float, options: Any, progress: Progress | None,
                 spool: Any) -> VideoResult:
    """Every person tracked in the video with their matches, searched in one audited
    ``VideoFaceSearch``."""
    from regard.video.jobs import identify_persons, persons_by_time

    analysis = analyse(service, video, options, progress, spool)
    found = identify_persons(service, context, f"cli:{uuid.uuid4()}", collection, threshold,
                             analysis)
    return VideoResult(analysis.metadata.to_aws(), "Persons",
                       lambda: persons_by_time(spool, analysis.person_of, found),
                       {i: found.get(i, []) for i in analysis.persons})


def write_result(out: IO[str], result: VideoResult, extra: dict[str, Any] | None = None) -> None:
    """The Get* body as JSON, its items streamed one by one."""
    head = json.dumps({**(extra or {}), "JobStatus": "SUCCEEDED",
                       "VideoMetadata": result.metadata})
    out.write(head[:-1] + f", {json.dumps(result.member)}: [")
    for i, item in enumerate(result.items()):
        out.write((", " if i else "") + json.dumps(item))
    out.write("]}")


def write_result_file(target: Path, result: VideoResult) -> None:
    """``write_result`` into ``target``, which appears only complete."""
    with replacing(target, target.suffix) as partial, open(partial, "w") as fh:
        write_result(fh, result)


# -- redaction -----------------------------------------------------------------------------------
class Redactor:
    """Redacts files one by one as ``context``, keeping or hiding the people of ``collection``
    (None: every face is hidden) at ``threshold``."""

    def __init__(self, service: Any, context: CallContext, options: RedactionOptions,
                 collection: str | None = None, threshold: float | None = None) -> None:
        self.service = service
        self.context = context
        self.options = options
        self.collection = collection
        self.threshold = threshold
        self.matched: dict[str, float] = {}
        self.identify: Any = None
        if collection:
            from regard.video.redact import collection_identifier

            self.identify = collection_identifier(service, collection, context,
                                                  threshold=threshold, matched=self.matched)

    def redact(self, src: Path, dst: Path, progress: Progress | None = None) -> dict[str, Any]:
        """One file, with its ledger entries (see the module docstring); the report's body
        (``Kind`` image or video, and the counts)."""
        from regard.video.jobs import as_matches, record_search

        operation = "RedactFaces" if src.suffix.lower() in IMAGE_FORMATS else \
            "StartFaceRedaction"
        self.matched.clear()
        # Written beside the target under another name, renamed once the ledger has its entries:
        # a process that dies in between leaves no output, so the file is redone (and recorded
        # again), never published unrecorded.
        with replacing(dst, dst.suffix) as partial:
            try:
                body = self.service.run_audited(operation, {"File": src.name}, self.context,
                                                lambda: self._redact(src, partial, progress))
            finally:
                if self.collection:  # the people it matched, success or failure
                    record_search(self.service, self.context, f"cli:{uuid.uuid4()}",
                                  self.collection,
                                  self.threshold if self.threshold is not None else 80.0,
                                  lambda: as_matches(self.matched))
        return body

    def _redact(self, src: Path, dst: Path, progress: Progress | None) -> dict[str, Any]:
        from regard.video.redact import redact_image_file, redact_video

        if not src.is_file():
            raise InvalidParameterError(f"No such file: {src}")
        if src.suffix.lower() in IMAGE_FORMATS:
            report = redact_image_file(src, dst, self.options, identify=self.identify)
            return {"Kind": "image", **report.to_dict()}
        report = redact_video(src, dst, self.options, identify=self.identify, progress=progress)
        return {"Kind": "video", **report.to_dict()}


__all__ = ["Redactor", "VideoResult", "analyse", "detect_video", "search_options",
           "search_video", "write_result", "write_result_file"]
