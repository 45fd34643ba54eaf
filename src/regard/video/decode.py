"""Reading videos: metadata as Rekognition Video reports it, and upright RGB frames, streamed.

Decoding is PyAV's (``av`` on PyPI, BSD-3-Clause), whose wheels bundle FFmpeg's libraries, so
every container and codec FFmpeg reads is read here (MP4/MOV, MKV, WebM, AVI, ...; H.264, H.265,
VP8/9, AV1 through dav1d, MPEG-4, ...) on every platform with wheels and no system package. It was
chosen over OpenCV (``cv2.VideoCapture`` cannot carry an audio track into a redacted copy and
reports less metadata) and over an ``ffmpeg`` subprocess (a system binary to install and pipes to
parse). The FFmpeg inside PyAV's wheels is built with x264 and x265, so that build is GPL-2.0 or
later; it is a separately installed dependency, used as a library.

A video is never loaded whole: the container reads from a path or a seekable file object (a
local file, or a ranged reader over an S3-compatible object, ``regard.object_store``), frames are
decoded one at a time and only the sampled ones are converted to RGB. Rekognition's limits for
stored video apply: at most 10 GB and 6 hours (``VideoTooLargeError``). A file FFmpeg cannot
open, or whose data is corrupt or truncated, raises ``InvalidVideoError`` with what went wrong
and where; a job reading it ends ``FAILED`` with that message.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from regard.errors import InvalidVideoError, VideoTooLargeError

MAX_VIDEO_BYTES = 10 * 1024 ** 3  # Rekognition Video: 10 GB
MAX_VIDEO_MILLIS = 6 * 3600 * 1000  # and 6 hours
VideoSource = str | Path | IO[bytes]


@dataclass(frozen=True)
class VideoMetadata:
    """What Rekognition Video's ``VideoMetadata`` holds, with FFmpeg's names as AWS reports them
    (``Codec: "h264"``, ``Format: "QuickTime / MOV"``). Width and height are the displayed
    frame's, after the rotation the file asks for (boxes are relative to that frame)."""

    codec: str
    duration_millis: int
    format: str
    frame_rate: float
    frame_width: int
    frame_height: int
    color_range: str  # FULL | LIMITED
    rotation: int  # degrees counter-clockwise applied to decoded frames (0, 90, 180, 270)
    frame_count: int | None  # as the container states it (None when it does not)
    has_audio: bool

    def to_aws(self) -> dict[str, Any]:
        return {"Codec": self.codec, "DurationMillis": self.duration_millis,
                "Format": self.format, "FrameRate": round(self.frame_rate, 3),
                "FrameHeight": self.frame_height, "FrameWidth": self.frame_width,
                "ColorRange": self.color_range}


@dataclass
class VideoFrame:
    """One decoded frame: its position in the stream (0-based), its presentation time in
    milliseconds from the start, and its upright pixels (H, W, 3) uint8 RGB."""

    index: int
    timestamp_ms: int
    rgb: np.ndarray


def _av() -> Any:
    import av  # imported on first use: the image-only paths never load FFmpeg

    return av


def source_size(source: VideoSource) -> int | None:
    if isinstance(source, (str, Path)):
        return os.stat(source).st_size
    try:
        here = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(here)
        return int(end)
    except (OSError, AttributeError, ValueError):
        return None


def check_size(source: VideoSource, max_bytes: int = MAX_VIDEO_BYTES) -> int | None:
    """The source's size in bytes (None when it cannot tell); ``VideoTooLargeError`` past
    ``max_bytes``."""
    size = source_size(source)
    if size is not None and size > max_bytes:
        raise VideoTooLargeError(f"The video is {size / 1024 ** 3:.2f} GB; the limit is "
                                 f"{max_bytes / 1024 ** 3:g} GB")
    return size


class VideoReader:
    """One video opened for reading. ``source``: a path or a seekable binary file object.
    Raises ``VideoTooLargeError`` past ``max_bytes`` or ``max_millis`` and ``InvalidVideoError``
    when FFmpeg cannot read it. Close it (or use ``with``)."""

    def __init__(self, source: VideoSource, *, max_bytes: int = MAX_VIDEO_BYTES,
                 max_millis: int = MAX_VIDEO_MILLIS, threads: int = 0) -> None:
        av = _av()
        size = check_size(source, max_bytes)
        if size == 0:
            raise InvalidVideoError("The video file is empty")
        name = str(source) if isinstance(source, (str, Path)) else "the video"
        try:
            self.container = av.open(source if not isinstance(source, Path) else str(source),
                                     mode="r", metadata_errors="ignore")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidVideoError(
                f"Unsupported or corrupt video: FFmpeg cannot open {name} ({_reason(exc)})"
            ) from None
        try:
            if not self.container.streams.video:
                raise InvalidVideoError("The file holds no video stream")
            self.stream = self.container.streams.video[0]
            self.stream.thread_type = "AUTO"  # frame and slice threads: decoding uses the cores
            if threads:
                self.stream.codec_context.thread_count = threads
            self._decoder = self.container.decode(self.stream)
            self._first = self._peek()
            self.metadata = self._metadata()
        except BaseException:
            self.container.close()
            raise
        if self.metadata.duration_millis > max_millis:
            self.container.close()
            raise VideoTooLargeError(
                f"The video lasts {self.metadata.duration_millis / 3_600_000:.2f} hours; the "
                f"limit is {max_millis / 3_600_000:g} hours")

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    # -- metadata ------------------------------------------------------------------------------
    def _metadata(self) -> VideoMetadata:
        stream, ctx = self.stream, self.stream.codec_context
        if ctx is None or not ctx.name:
            raise InvalidVideoError("Unsupported video codec")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        duration = self._duration_seconds()
        # The display matrix reaches PyAV on the frames, not the stream: the first one says.
        rotation = int(round(float(self._first.rotation or 0) / 90.0)) * 90 % 360
        width, height = ctx.width, ctx.height
        if not width or not height:
            raise InvalidVideoError("The video stream has no frame size (corrupt header)")
        if rotation in (90, 270):
            width, height = height, width
        color = getattr(ctx, "color_range", 0)
        return VideoMetadata(
            codec=ctx.codec.canonical_name or ctx.name, duration_millis=int(round(duration * 1000)),
            format=self.container.format.long_name or self.container.format.name,
            frame_rate=fps, frame_width=int(width), frame_height=int(height),
            color_range="FULL" if int(color or 0) == 2 else "LIMITED", rotation=rotation,
            frame_count=int(stream.frames) or None,
            has_audio=bool(self.container.streams.audio))

    def _duration_seconds(self) -> float:
        stream = self.stream
        if stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
        if self.container.duration:
            return self.container.duration / 1_000_000  # AV_TIME_BASE
        return 0.0

    # -- frames --------------------------------------------------------------------------------
    def frames(self, every_ms: float | None = None, *, start_ms: float = 0.0,
               prefetch: int = 0) -> Iterator[VideoFrame]:
        """Upright RGB frames in order. ``every_ms``: only the first frame at or after each
        multiple of it (the others are decoded, as inter-frame codecs need, but not converted);
        None: every frame. ``start_ms``: skip frames before it (resuming). ``prefetch``: decode
        that many frames ahead in a thread, so decoding overlaps the caller's work."""
        frames = self._frames(every_ms, start_ms)
        if prefetch > 0:
            return _prefetched(frames, prefetch)
        return frames

    def _peek(self) -> Any:
        av = _av()
        try:
            return next(self._decoder)
        except StopIteration:
            raise InvalidVideoError(
                "The video holds no decodable frame (corrupt or truncated)") from None
        except av.FFmpegError as exc:
            raise InvalidVideoError(
                f"The video is corrupt: its first frame cannot be decoded ({_reason(exc)})"
            ) from None

    def _all_frames(self) -> Iterator[Any]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._decoder

    def decoded(self) -> Iterator[tuple[int, int, Any]]:
        """Every frame once, as ``(index, timestamp_ms, av.VideoFrame)``, not converted to RGB
        (the redaction writer converts what it needs). A reader is read once. Corrupt data
        raises ``InvalidVideoError``."""
        av = _av()
        stream = self.stream
        start = stream.start_time or 0
        base = stream.time_base or Fraction(1, 1000)
        index = 0
        last_ms = 0
        try:
            for frame in self._all_frames():
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is None:
                    ms = last_ms + (round(1000 / self.metadata.frame_rate)
                                    if self.metadata.frame_rate else 0)
                else:
                    ms = int(round(float((pts - start) * base) * 1000))
                last_ms = max(0, ms)
                yield index, last_ms, frame
                index += 1
        except av.FFmpegError as exc:
            raise InvalidVideoError(
                f"The video is corrupt or truncated after frame {index} "
                f"({last_ms / 1000:.2f} s): {_reason(exc)}") from None
        if index == 0:
            raise InvalidVideoError("The video holds no decodable frame (corrupt or truncated)")

    def _frames(self, every_ms: float | None, start_ms: float) -> Iterator[VideoFrame]:
        if every_ms is not None and every_ms <= 0:
            raise ValueError("every_ms must be positive")
        next_ms = start_ms
        for index, ms, frame in self.decoded():
            if ms < next_ms:
                continue
            if every_ms is not None:
                next_ms = (ms // every_ms + 1) * every_ms
            yield VideoFrame(index, ms, self.upright(frame))

    def upright(self, frame: Any) -> np.ndarray:
        """The frame's pixels as displayed: RGB, rotated as the file says."""
        rgb = frame.to_ndarray(format="rgb24")
        turns = (self.metadata.rotation // 90) % 4
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip() or type(exc).__name__


class _End:
    pass


def _prefetched(frames: Iterator[VideoFrame], depth: int) -> Iterator[VideoFrame]:
    """``frames`` decoded in a thread, ``depth`` ahead; errors re-raised in the consumer."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_End())
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, name="regard-video-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


__all__ = ["MAX_VIDEO_BYTES", "check_size", "MAX_VIDEO_MILLIS", "VideoFrame", "VideoMetadata", "VideoReader",
           "VideoSource"]
