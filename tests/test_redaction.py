"""Face redaction (``regard.video.redact``, ``regard redact``): faces hidden for good in images
and in every frame of videos made with known truth boxes (tests/video_clips.py), everything
else kept: pixels outside the masks, frame count, rate, size, rotation, container, timestamps
and the audio packets."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from regard.analysis import Engine
from regard.cli import app
from regard.errors import (
    AccessDeniedError,
    InvalidImageFormatError,
    InvalidParameterError,
    InvalidVideoError,
)
from regard.video.decode import VideoReader
from regard.video.redact import (
    MAX_IDENTIFY_PER_TRACK,
    RedactionOptions,
    _FrameMasker,
    _Schedule,
    _Tracker,
    mask_box,
    redact_image,
    redact_image_bytes,
    redact_image_file,
    redact_video,
)

import video_clips as vc
from conftest import encode

runner = CliRunner()
METHODS = ("blur", "mosaic", "box")


# -- helpers ---------------------------------------------------------------------------------
def detail(rgb: np.ndarray, box: tuple[float, ...]) -> float:
    """Mean absolute difference of neighbouring pixels in the central 70 % of a face box: the
    fine detail a face is recognised by (a hidden face has next to none)."""
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2
    hw, hh = (right - left) * 0.35, (bottom - top) * 0.35
    region = rgb[int(cy - hh):int(cy + hh), int(cx - hw):int(cx + hw)].astype(np.float32).mean(2)
    return float(np.abs(np.diff(region, axis=0)).mean() + np.abs(np.diff(region, axis=1)).mean())


def frames(path: Path) -> list[tuple[int, np.ndarray]]:
    with VideoReader(path) as reader:
        return [(ms, reader.upright(frame)) for _, ms, frame in reader.decoded()]


def probe(path: Path) -> dict[str, object]:
    with av.open(str(path)) as c:
        audio = [(s.codec_context.name, float(s.duration * s.time_base) if s.duration else None,
                  s.codec_context.sample_rate) for s in c.streams.audio]
        packets = sum(1 for p in c.demux(c.streams.audio) if p.dts is not None) \
            if c.streams.audio else 0
        return {"format": c.format.name, "audio": audio, "audio_packets": packets}


def assert_faces_hidden(clip: vc.Clip, out: Path, ratio: float = 0.3) -> None:
    """Every truth face of every frame lost its detail in ``out``."""
    original, redacted = frames(clip.path), frames(out)
    assert len(redacted) == len(original) == clip.frames
    for i, ((_, before), (_, after)) in enumerate(zip(original, redacted)):
        for who, box in clip.truth[i].items():
            assert detail(after, box) < ratio * detail(before, box), (i, who)


def no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part" in p.name)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, vc.Clip]:
    d = tmp_path_factory.mktemp("clips")
    return {
        # (the astronaut walks towards the cameraman and would overlap him at 4 s)
        "moving": vc.make_clip(d / "moving.mp4", vc.moving_and_scaling(4.0), seconds=3.0),
        "rotated": vc.make_clip(d / "rotated.mp4", vc.moving_and_scaling(4.0), seconds=2.0,
                                rotation=90),
        "leave": vc.make_clip(d / "leave.mp4", vc.leave_and_return(), seconds=5.0),
        "cut": vc.make_clip(d / "cut.mp4", vc.cut_between(), seconds=4.0, cuts=(2.0,)),
    }


# -- images ----------------------------------------------------------------------------------
def test_options_are_validated():
    for bad in ({"method": "smudge"}, {"shape": "star"}, {"scale": 0.5}, {"detect_every": 0},
                {"crf": 99}, {"keep_matched": True, "only_matched": True}, {"fill": (0, 0)}):
        with pytest.raises(InvalidParameterError):
            RedactionOptions(**bad)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", ("ellipse", "box"))
def test_image_masks_only_the_scaled_box(astronaut, engine, method, shape):
    face = engine.detect(astronaut).faces[0]
    before = astronaut.copy()
    out = redact_image(astronaut, [face], RedactionOptions(method=method, shape=shape))
    assert np.array_equal(astronaut, before)  # pure
    left, top, right, bottom = mask_box((face.left, face.top, face.right, face.bottom), 1.3)
    outside = np.ones(astronaut.shape[:2], bool)
    outside[max(0, int(top)):int(np.ceil(bottom)), max(0, int(left)):int(np.ceil(right))] = False
    assert np.array_equal(out[outside], astronaut[outside])
    box = (face.left, face.top, face.right, face.bottom)
    assert detail(out, box) < 0.25 * detail(astronaut, box)
    corner = out[int(top) + 1, int(left) + 1]  # inside the box, outside its ellipse
    assert np.array_equal(corner, astronaut[int(top) + 1, int(left) + 1]) == (shape == "ellipse")


@pytest.mark.parametrize("method", METHODS)
def test_redacted_astronaut_is_not_recognised(astronaut, engine, method):
    """The face recogniser, told exactly where the face was, no longer matches it; any face the
    detector still finds (a blurred head keeps a head's outline) is not the astronaut."""
    original = engine.detect(astronaut, embed=True).faces[0]
    out = redact_image(astronaut, [original], RedactionOptions(method=method))
    forced = copy.copy(original)
    engine.embed_faces(out, [forced])
    assert Engine.similarity(original.embedding, forced.embedding) < 50
    for face in engine.detect(out, embed=True).faces:
        assert Engine.similarity(original.embedding, face.embedding) < 50
    if method == "box":
        assert engine.detect(out).faces == []


def test_box_fill_colour_and_mosaic_blocks(astronaut, engine):
    face = engine.detect(astronaut).faces[0]
    cx, cy = int((face.left + face.right) / 2), int((face.top + face.bottom) / 2)
    out = redact_image(astronaut, [face], RedactionOptions(method="box", fill=(255, 0, 128)))
    assert tuple(out[cy, cx]) == (255, 0, 128)
    mosaic = redact_image(astronaut, [(100.0, 100.0, 180.0, 180.0)],
                          RedactionOptions(method="mosaic", shape="box", scale=1.0))
    block = mosaic[100:110, 100:110]  # 80 px face: 10 px blocks from the mask's corner
    assert (block == block[0, 0]).all()


def test_image_file_exif_orientation_applied_and_metadata_stripped(tmp_path, astronaut, engine):
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    exif[0x010F] = "Camera Maker"
    stored = np.ascontiguousarray(np.rot90(astronaut, 1))  # so the upright picture is astronaut
    src = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(src, quality=92, exif=exif.tobytes())
    report = redact_image_file(src, tmp_path / "photo.redacted.jpg")
    # the face, and perhaps an uncertain box of the shadow-lifted pass (hidden too)
    assert report.faces >= 1 and report.masked == report.faces and report.format == "JPEG"
    with Image.open(tmp_path / "photo.redacted.jpg") as result:
        assert result.format == "JPEG" and result.size == (512, 512)
        assert not result.getexif() and "exif" not in result.info
        rgb = np.asarray(result.convert("RGB"))
    face = engine.detect(astronaut).faces[0]
    box = (face.left, face.top, face.right, face.bottom)
    assert detail(rgb, box) < 0.3 * detail(astronaut, box)
    assert np.abs(rgb[400:, :200].astype(int) - astronaut[400:, :200]).mean() < 4  # upright
    data, png = redact_image_bytes(encode(astronaut, "PNG"), RedactionOptions(method="box"))
    assert png.format == "PNG" and Image.open(io.BytesIO(data)).format == "PNG"


def test_image_errors_leave_no_output(tmp_path, astronaut):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(encode(astronaut)[:3000])
    with pytest.raises(InvalidImageFormatError):
        redact_image_file(corrupt, tmp_path / "out.jpg")
    good = tmp_path / "good.jpg"
    good.write_bytes(encode(astronaut))
    with pytest.raises(InvalidParameterError, match="suffix"):
        redact_image_file(good, tmp_path / "out.gif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.jpg", "good.jpg"]


def test_upright_boxes_map_onto_stored_frames():
    """Masks are drawn on the stored (unrotated) frame: a box in the upright picture must land
    where np.rot90 puts it."""
    upright = np.zeros((60, 100), np.uint8)
    box = (10.0, 5.0, 40.0, 25.0)
    upright[5:25, 10:40] = 1
    for rotation in (0, 90, 180, 270):
        turns = rotation // 90
        stored = np.rot90(upright, -turns)
        masker = _FrameMasker(RedactionOptions(), rotation, "yuv420p")
        left, top, right, bottom = (int(v) for v in masker.stored_box(box, stored.shape[1],
                                                                        stored.shape[0]))
        painted = np.zeros_like(stored)
        painted[top:bottom, left:right] = 1
        assert np.array_equal(painted, stored), rotation


# -- videos ----------------------------------------------------------------------------------
def test_tracks_interpolate_between_detections_and_pad_both_ends():
    """Detections every 3rd frame: a face moving right, one that appears later; masks on the
    frames between, and ``pad`` frames before the first and after the last detection (held,
    and moved on at the last speed)."""
    tracker = _Tracker(max_gap=10)
    for index in range(0, 13, 3):
        boxes = [(10.0 + 3 * index, 10.0, 40.0 + 3 * index, 40.0)]
        if index >= 9:
            boxes.append((200.0, 50.0, 240.0, 90.0))
        tracker.update(index, boxes)
    assert [t.frames for t in tracker.tracks] == [[0, 3, 6, 9, 12], [9, 12]]
    schedule = _Schedule(tracker.tracks, pad=3)
    at = {i: schedule.boxes_at(i) for i in range(0, 17)}
    assert at[4] == [(22.0, 10.0, 52.0, 40.0)]  # interpolated
    assert (200.0, 50.0, 240.0, 90.0) in at[6] and (200.0, 50.0, 240.0, 90.0) not in at[5]
    # padding: held (46-76) and moved on (52-82); overlapping masks merge into the box
    # enclosing both
    assert (46.0, 10.0, 82.0, 40.0) in at[14] and len(at[14]) == 2
    assert at[15] and at[16] == []


def test_video_every_frame_hidden_and_everything_else_kept(clips, tmp_path):
    clip = clips["moving"]
    out = tmp_path / "moving.redacted.mp4"
    calls: list[tuple[int, int]] = []
    report = redact_video(clip.path, out, progress=lambda d, t: calls.append((d, t)))
    assert report.frames == report.frames_with_masks == clip.frames
    # the two faces, and perhaps a few low-confidence boxes (redaction errs on the side of hiding)
    assert report.tracks >= 2 and report.audio_copied and report.codec == "libx264"
    assert calls[-1] == (2 * clip.frames, 2 * clip.frames)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    assert_faces_hidden(clip, out)
    with VideoReader(clip.path) as a, VideoReader(out) as b:
        before, after = a.metadata, b.metadata
    for field in ("codec", "format", "frame_rate", "frame_width", "frame_height", "rotation",
                  "frame_count", "has_audio", "duration_millis"):
        assert getattr(after, field) == getattr(before, field), field
    assert [ms for ms, _ in frames(out)] == [ms for ms, _ in frames(clip.path)]
    assert probe(out) == probe(clip.path)  # audio: same codec, duration, every packet
    for i, ((_, before), (_, after)) in enumerate(zip(frames(clip.path), frames(out))):
        away = np.ones(before.shape[:2], bool)  # away from the faces: only re-encoding changed
        for box in clip.truth[i].values():
            left, top, right, bottom = mask_box(box, 2.0)
            away[max(0, int(top)):int(bottom) + 1, max(0, int(left)):int(right) + 1] = False
        assert np.abs(before.astype(int) - after)[away].mean() < 2, i


def test_rotated_video_keeps_rotation_and_is_hidden_upright(clips, tmp_path):
    clip = clips["rotated"]
    out = tmp_path / "rotated.redacted.mkv"  # container by suffix
    redact_video(clip.path, out, RedactionOptions(shape="box"))
    with VideoReader(out) as reader:
        meta = reader.metadata
    assert (meta.rotation, meta.frame_width, meta.frame_height) == (90, 640, 360)
    assert "Matroska" in meta.format
    assert_faces_hidden(clip, out)


@pytest.mark.slow
@pytest.mark.parametrize("scene", ("leave", "cut"))
def test_faces_leaving_returning_and_cuts_are_hidden(clips, tmp_path, scene, engine):
    """A face leaving and coming back elsewhere, and a hard cut to another person, between
    detections (every 3rd frame): covered in every frame; with solid boxes the detector finds
    no face anywhere."""
    clip = clips[scene]
    out = tmp_path / f"{scene}.mp4"
    report = redact_video(clip.path, out, RedactionOptions(method="box"))
    assert report.tracks >= (3 if scene == "leave" else 2)
    assert_faces_hidden(clip, out, ratio=0.1)
    for index, (_, rgb) in enumerate(frames(out)):
        assert engine.detector.detect(rgb) == [], index


@pytest.mark.slow
def test_webm_keeps_vp9_and_opus(tmp_path):
    clip = vc.make_clip(tmp_path / "in.webm", vc.moving_and_scaling(4.0), seconds=1.6,
                        codec="libvpx-vp9")
    out = tmp_path / "out.webm"
    report = redact_video(clip.path, out)
    assert report.codec == "libvpx-vp9"
    assert probe(out) == probe(clip.path)
    assert_faces_hidden(clip, out)


def test_identify_keeps_or_hides_only_matched_tracks(clips, tmp_path):
    """A stand-in for a collection: the cameraman (right half) 'matches'. keep_matched leaves
    him visible and hides the astronaut; only_matched the reverse. identify sees full-size
    upright pixels and Faces with landmarks, a bounded number per track."""
    clip = clips["cut"]
    asked: list[int] = []

    def identify(rgb, faces):
        assert rgb.shape == (360, 640, 3)
        assert all(f.landmarks is not None for f in faces)
        asked.extend(1 for _ in faces)
        return [f.left > rgb.shape[1] / 2 for f in faces]

    kept = tmp_path / "kept.mp4"
    # YuNet's own threshold, one pass: the test counts the two people's tracks exactly (the
    # defaults also hide a few low-confidence boxes, which this stand-in would "match")
    strict = {"min_confidence": 50.0, "lift_shadows": False}
    report = redact_video(clip.path, kept, RedactionOptions(keep_matched=True, **strict),
                          identify=identify)
    assert report.tracks_visible == 1
    assert len(asked) <= MAX_IDENTIFY_PER_TRACK * report.tracks
    only = tmp_path / "only.mp4"
    redact_video(clip.path, only, RedactionOptions(only_matched=True, **strict),
                 identify=identify)
    original = frames(clip.path)
    for path, hidden in ((kept, "astronaut"), (only, "cameraman")):
        for i, (_, rgb) in enumerate(frames(path)):
            for who, box in clip.truth[i].items():
                ratio = detail(rgb, box) / detail(original[i][1], box)
                assert (ratio < 0.3) if who == hidden else (ratio > 0.6), (path.name, i, who)
    with pytest.raises(InvalidParameterError):
        redact_video(clip.path, tmp_path / "x.mp4", RedactionOptions(keep_matched=True))


def test_bad_videos_are_refused_without_output(clips, tmp_path):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clips["moving"].path.read_bytes()[:20000])
    garbage = tmp_path / "notes.xyz"
    garbage.write_bytes(b"not a video at all " * 100)
    for bad in (truncated, garbage):
        with pytest.raises(InvalidVideoError):
            redact_video(bad, tmp_path / "out.mp4")
    with pytest.raises(InvalidParameterError, match="container"):
        redact_video(clips["moving"].path, tmp_path / "out.xyz")
    with pytest.raises(InvalidParameterError, match="image"):
        redact_video(clips["moving"].path, tmp_path / "out.png")

    class Cancelled(Exception):
        pass

    seen = []

    def check():
        seen.append(1)
        if len(seen) > clips["moving"].frames + 10:  # in the writing pass
            raise Cancelled

    with pytest.raises(Cancelled):
        redact_video(clips["moving"].path, tmp_path / "out.mp4", check=check)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.xyz", "truncated.mp4"]


def test_collection_identifier_matches_indexed_faces(tmp_path, engine, astronaut, cameraman):
    from regard.context import CallContext
    from regard.service import RegardService
    from regard.store import Store
    from regard.video.redact import collection_identifier

    store = Store(f"sqlite:///{tmp_path / 'regard.db'}", checkpoint_dir=tmp_path / "index")
    try:
        svc = RegardService(engine, store, default_purpose="redaction tests")
        svc.create_collection(CollectionId="staff")
        svc.index_faces(CollectionId="staff", Image={"Bytes": encode(astronaut)})
        context = CallContext.operator("tester", client="test")
        identify = collection_identifier(svc, "staff", context)
        flipped = np.ascontiguousarray(astronaut[:, ::-1])
        for rgb, expected in ((flipped, True), (cameraman, False)):
            faces = engine.detect(rgb).faces
            assert identify(rgb, faces) == [expected]
            assert faces[0].embedding is None  # wiped after the search
        outsider = CallContext(principal="viewer", scopes=("detect",))
        with pytest.raises(AccessDeniedError):
            collection_identifier(svc, "staff", outsider)
    finally:
        store.close()


# -- the command -----------------------------------------------------------------------------
def test_cli_image_video_batch_and_errors(clips, tmp_path, astronaut):
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(encode(astronaut))
    result = runner.invoke(app, ["redact", str(photo), str(tmp_path / "a.png"), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["Kind"] == "image" and body["FacesMasked"] >= 1
    assert Image.open(tmp_path / "a.png").format == "PNG"

    result = runner.invoke(app, ["redact", str(clips["cut"].path), str(tmp_path / "v.mp4"),
                                 "--method", "box", "--detect-every", "2", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["Kind"], body["Frames"], body["DetectEvery"]) == ("video", 100, 2)

    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "astronaut.jpg").write_bytes(b"already done")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(encode(astronaut)[:3000])
    args = ["redact", str(photo), str(clips["cut"].path), str(corrupt), "--out-dir", str(batch),
            "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1  # the corrupt one
    lines = {Path(x["Input"]).name: x for x in map(json.loads, result.stdout.splitlines())}
    assert lines["astronaut.jpg"]["Skipped"] is True
    assert lines["cut.mp4"]["Frames"] == 100
    assert lines["corrupt.jpg"]["__type"] == "InvalidImageFormatException"
    assert sorted(p.name for p in batch.iterdir()) == ["astronaut.jpg", "cut.mp4"]
    assert (batch / "astronaut.jpg").read_bytes() == b"already done"

    result = runner.invoke(app, ["redact", str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4")])
    assert result.exit_code == 1 and "No such file" in result.output
    result = runner.invoke(app, ["redact", str(photo)])
    assert result.exit_code == 1 and "--out-dir" in result.output
    assert no_leftovers(tmp_path) == [] and no_leftovers(batch) == []
