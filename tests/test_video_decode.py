"""Reading videos (``regard.video.decode``): containers and codecs FFmpeg reads, metadata as
Rekognition Video reports it, rotation, sampling, limits, corrupt and truncated files, and videos
streamed from the object stores (a local folder and an S3 protocol server)."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import numpy as np
import pytest

from live_server import free_port
from regard.errors import InvalidS3ObjectError, InvalidVideoError, VideoTooLargeError
from regard.object_store import LocalObjectStore, S3ObjectStore
from regard.video.decode import VideoReader
from video_clips import leave_and_return, make_clip, moving_and_scaling

FORMATS = [  # (file, encoder, codec as FFmpeg and AWS name it, Format)
    ("h264.mp4", "libx264", "h264", "QuickTime / MOV"),
    ("h265.mkv", "libx265", "hevc", "Matroska / WebM"),
    ("vp9.webm", "libvpx-vp9", "vp9", "Matroska / WebM"),
    ("av1.mkv", "libsvtav1", "av1", "Matroska / WebM"),
    ("mpeg4.avi", "mpeg4", "mpeg4", "AVI (Audio Video Interleaved)"),
    ("h264.mov", "libx264", "h264", "QuickTime / MOV"),
]


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize(("name", "encoder", "codec", "fmt"), FORMATS,
                         ids=[f[0] for f in FORMATS])
def test_containers_and_codecs(tmp_path: Path, engine, name: str, encoder: str, codec: str,
                               fmt: str) -> None:
    clip = make_clip(tmp_path / name, moving_and_scaling(2.0), seconds=2.0, codec=encoder,
                     audio=not name.endswith(".avi"))
    with VideoReader(clip.path) as reader:
        meta = reader.metadata
        assert (meta.codec, meta.format) == (codec, fmt)
        assert (meta.frame_width, meta.frame_height) == (640, 360)
        assert meta.frame_rate == pytest.approx(25.0, abs=0.01)
        assert 1900 <= meta.duration_millis <= 2100
        assert meta.has_audio == (not name.endswith(".avi"))
        assert set(meta.to_aws()) == {"Codec", "DurationMillis", "Format", "FrameRate",
                                      "FrameHeight", "FrameWidth", "ColorRange"}
        frames = list(reader.frames(every_ms=500))
    assert [f.timestamp_ms for f in frames] == [0, 520, 1000, 1520]
    found = engine.detect(frames[2].rgb).faces
    truth = clip.truth[frames[2].index]["astronaut"]
    assert max(_iou((f.left, f.top, f.right, f.bottom), truth) for f in found) > 0.6


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path: Path, engine, rotation: int) -> None:
    """The file stores the frames turned, with a display matrix: frames come out upright, the
    metadata gives the displayed size, and faces are where the viewer sees them."""
    clip = make_clip(tmp_path / "turned.mp4", leave_and_return(), seconds=1.0, rotation=rotation)
    with VideoReader(clip.path) as reader:
        assert reader.metadata.rotation == rotation
        assert (reader.metadata.frame_width, reader.metadata.frame_height) == (640, 360)
        frame = next(iter(reader.frames()))
    assert frame.rgb.shape == (360, 640, 3)
    faces = engine.detect(frame.rgb).faces
    for truth in clip.truth[0].values():
        assert max(_iou((f.left, f.top, f.right, f.bottom), truth) for f in faces) > 0.6


def test_every_frame_and_prefetch(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", leave_and_return(), seconds=2.0)
    with VideoReader(clip.path) as reader:
        plain = [(f.index, f.timestamp_ms) for f in reader.frames()]
    with VideoReader(clip.path) as reader:
        ahead = [(f.index, f.timestamp_ms, f.rgb.sum()) for f in reader.frames(prefetch=3)]
    assert plain == [(i, i * 40) for i in range(50)]
    assert [a[:2] for a in ahead] == plain
    with VideoReader(clip.path) as reader:
        later = [f.timestamp_ms for f in reader.frames(every_ms=200, start_ms=1000)]
    assert later == [1000, 1200, 1400, 1600, 1800]


def test_limits(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mp4", leave_and_return(), seconds=2.0)
    with pytest.raises(VideoTooLargeError, match="hours"):
        VideoReader(clip.path, max_millis=1000)
    with pytest.raises(VideoTooLargeError, match="GB"):
        VideoReader(clip.path, max_bytes=1000)
    huge = tmp_path / "huge.mp4"
    with open(huge, "wb") as fh:
        fh.truncate(10 * 1024 ** 3 + 1)
    with pytest.raises(VideoTooLargeError):
        VideoReader(huge)


def test_corrupt_truncated_and_empty_files(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "a.mkv", leave_and_return(), seconds=3.0)
    data = clip.path.read_bytes()
    cases = {"random.mp4": np.random.default_rng(7).bytes(40_000), "empty.mp4": b"",
             "head.mp4": make_clip(tmp_path / "b.mp4", leave_and_return(),
                                   seconds=1.0).path.read_bytes()[:3000],
             "text.mp4": b"this is not a video\n" * 100}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InvalidVideoError) as bad:
            with VideoReader(tmp_path / name) as reader:
                list(reader.frames())
        assert bad.value.code == "InvalidParameterException"
    # a Matroska file cut in the middle: the frames before the cut decode, then the reader
    # either stops at the cut or says where the data broke, never hangs or crashes
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 2 // 3])
    try:
        with VideoReader(tmp_path / "cut.mkv") as reader:
            got = list(reader.frames())
        assert 0 < len(got) < clip.frames
    except InvalidVideoError as exc:
        assert "corrupt or truncated" in exc.message


def test_local_object_store_streams_videos(tmp_path: Path) -> None:
    bucket = tmp_path / "root" / "clips"
    bucket.mkdir(parents=True)
    make_clip(bucket / "a.mp4", leave_and_return(), seconds=1.0)
    store = LocalObjectStore(tmp_path / "root")
    with store.open("clips", "a.mp4") as fh, VideoReader(fh) as reader:
        assert reader.metadata.frame_count == 25
        assert len(list(reader.frames())) == 25
    for name in ["../root/clips/a.mp4", "missing.mp4"]:
        with pytest.raises(InvalidS3ObjectError):
            store.open("clips", name)
    os.mkfifo(bucket / "fifo.mp4")
    with pytest.raises(InvalidS3ObjectError, match="not a regular file"):
        store.open("clips", "fifo.mp4")
    out = tmp_path / "copy.bin"
    out.write_bytes(b"redacted")
    store.put_file("clips", "out/redacted.mp4", out)
    assert (bucket / "out" / "redacted.mp4").read_bytes() == b"redacted"
    with pytest.raises(InvalidS3ObjectError):
        store.put_file("no-such-bucket", "x.mp4", out)


def test_s3_server_streams_videos_by_ranges(tmp_path: Path) -> None:
    """Through an S3 protocol server (moto on loopback): the reader seeks with ranged GETs
    (an MP4 written by FFmpeg keeps its index at the end), frames are identical to a local
    read, and a redacted output is uploaded."""
    from moto.server import ThreadedMotoServer

    clip = make_clip(tmp_path / "a.mp4", moving_and_scaling(1.0), seconds=1.0)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")
        s3.create_bucket(Bucket="archive")
        s3.put_object(Bucket="archive", Key="2026/a.mp4", Body=clip.path.read_bytes())
        store = S3ObjectStore(endpoint, access_key_id="k", secret_access_key="s")
        with store.open("archive", "2026/a.mp4") as fh, VideoReader(fh) as reader:
            remote = [f.rgb for f in reader.frames(every_ms=200)]
        with VideoReader(clip.path) as reader:
            local = [f.rgb for f in reader.frames(every_ms=200)]
        assert len(remote) == len(local) == 5
        assert all(np.array_equal(a, b) for a, b in zip(remote, local))
        with pytest.raises(InvalidS3ObjectError):
            store.open("archive", "missing.mp4")
        store.put_file("archive", "out/a.mp4", clip.path)
        assert s3.get_object(Bucket="archive", Key="out/a.mp4")["Body"].read() == \
            clip.path.read_bytes()
    finally:
        moto.stop()


@pytest.mark.data
def test_the_dev_clip(dev_data: Path) -> None:
    with VideoReader(dev_data / "video" / "short_hamilton_clip.mp4") as reader:
        meta = reader.metadata
        assert (meta.codec, meta.frame_width, meta.frame_height) == ("h264", 640, 360)
        assert meta.frame_rate == pytest.approx(29.97, abs=0.01)
        assert 9000 <= meta.duration_millis <= 9300
        frames = list(reader.frames(every_ms=1000))
    assert len(frames) == 10
