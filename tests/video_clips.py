"""Video clips made for the tests and benchmarks from pictures PyPI packages carry: scikit-image's
astronaut (Eileen Collins) and cameraman, two different people, pasted on a textured background
and moved, scaled, cut between and taken out of view, with a sine tone as the audio track. The
truth is known exactly: ``Clip.truth[i]`` lists each person's box in frame ``i``.

Used by tests/test_video*.py and bench/video.py (which puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

# Where each picture's face is, with head-and-shoulders margin (rows, columns), and the face
# box inside that crop as the detector finds it (left, top, right, bottom in crop pixels).
_CROPS = {"astronaut": ((20, 260), (140, 310)), "cameraman": ((60, 260), (150, 310))}
_FACES = {"astronaut": (38, 45, 129, 156), "cameraman": (48, 54, 108, 136)}

# Placement of a person at time t (seconds): centre x, centre y (fractions of the frame) and the
# crop's height in pixels; None when the person is out of view.
Path_ = Callable[[float], "tuple[float, float, float] | None"]


def picture(name: str) -> np.ndarray:
    from skimage import data

    if name == "astronaut":
        rgb = data.astronaut()
    elif name == "cameraman":
        rgb = np.stack([data.camera()] * 3, axis=-1)
    else:
        raise KeyError(name)
    (r0, r1), (c0, c1) = _CROPS[name]
    return np.ascontiguousarray(rgb[r0:r1, c0:c1])


@dataclass
class Actor:
    name: str  # "astronaut" | "cameraman"
    path: Path_


@dataclass
class Clip:
    path: Path
    fps: int
    size: tuple[int, int]  # width, height
    frames: int
    truth: list[dict[str, tuple[float, float, float, float]]] = field(default_factory=list)

    def people_in(self, index: int) -> set[str]:
        return set(self.truth[index])

    def timestamp_ms(self, index: int) -> int:
        return round(index * 1000 / self.fps)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A soft colour gradient with a little texture (a flat field compresses unrealistically)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([90 + 60 * x / width, 110 + 40 * y / height,
                     140 - 50 * x / width], axis=-1)
    noise = rng.normal(0, 6, (height // 8 + 1, width // 8 + 1, 1)).astype(np.float32)
    noise = np.kron(noise, np.ones((8, 8, 1), np.float32))[:height, :width]
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def render(actors: list[Actor], t: float, width: int, height: int, bg: np.ndarray,
           crops: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, tuple[float, ...]]]:
    frame = bg.copy()
    boxes: dict[str, tuple[float, ...]] = {}
    for actor in actors:
        where = actor.path(t)
        if where is None:
            continue
        cx, cy, h = where
        crop = crops[actor.name]
        scale = h / crop.shape[0]
        w = max(2, round(crop.shape[1] * scale))
        hh = max(2, round(h))
        tile = np.asarray(Image.fromarray(crop).resize((w, hh), Image.BILINEAR))
        x0, y0 = round(cx * width - w / 2), round(cy * height - hh / 2)
        xs, ys = max(0, x0), max(0, y0)
        xe, ye = min(width, x0 + w), min(height, y0 + hh)
        if xe <= xs or ye <= ys:
            continue
        frame[ys:ye, xs:xe] = tile[ys - y0:ye - y0, xs - x0:xe - x0]
        fl, ft, fr, fb = _FACES[actor.name]
        box = (x0 + fl * scale, y0 + ft * scale, x0 + fr * scale, y0 + fb * scale)
        if box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height:
            boxes[actor.name] = box
    return frame, boxes


def make_clip(path: Path, actors: list[Actor], *, seconds: float = 4.0, fps: int = 25,
              size: tuple[int, int] = (640, 360), codec: str = "libx264",
              audio: bool = True, rotation: int = 0, crf: int = 23,
              cuts: tuple[float, ...] = ()) -> Clip:
    """Write the clip (container from the suffix: .mp4, .mkv, .webm, .mov, .avi) and return it
    with its truth. ``rotation``: display rotation stored in the file (degrees counter-clockwise;
    the frames are stored turned the other way, so that the displayed video is upright).
    ``cuts``: times where the background changes (a hard cut)."""
    import av

    width, height = size
    crops = {name: picture(name) for name in _CROPS}
    backgrounds = [background(width, height, seed) for seed in range(len(cuts) + 1)]
    turns = (rotation // 90) % 4
    stored_w, stored_h = (height, width) if turns % 2 else (width, height)
    n = round(seconds * fps)
    clip = Clip(path=path, fps=fps, size=size, frames=n)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = stored_w, stored_h
        stream.pix_fmt = "yuv420p"
        if codec in ("libx264", "libx265"):
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        elif codec == "libvpx-vp9":
            stream.options = {"crf": "34", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        if rotation:
            stream.set_display_rotation(rotation)
        sound = None
        if audio:
            audio_codec = "libopus" if path.suffix == ".webm" else "aac"
            sound = out.add_stream(audio_codec, rate=48000)
            sound.layout = "mono"
        for i in range(n):
            t = i / fps
            bg = backgrounds[sum(1 for c in cuts if t >= c)]
            rgb, boxes = render(actors, t, width, height, bg, crops)
            clip.truth.append(boxes)
            stored = np.ascontiguousarray(np.rot90(rgb, -turns)) if turns else rgb
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if sound is not None:
            _write_tone(out, sound, seconds)
    return clip


def _write_tone(out: object, stream: object, seconds: float, hz: float = 440.0) -> None:
    import av

    rate = 48000
    chunk = 1024
    total = int(seconds * rate)
    for start in range(0, total, chunk):
        t = (np.arange(start, min(total, start + chunk)) / rate).astype(np.float32)
        samples = (0.2 * np.sin(2 * math.pi * hz * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        for packet in stream.encode(frame):  # type: ignore[attr-defined]
            out.mux(packet)  # type: ignore[attr-defined]
    for packet in stream.encode():  # type: ignore[attr-defined]
        out.mux(packet)  # type: ignore[attr-defined]


# -- scenes the tests use -----------------------------------------------------------------------
def moving_and_scaling(seconds: float = 4.0) -> list[Actor]:
    """The astronaut walks left to right growing from 120 to 260 px; the cameraman stays."""
    return [Actor("astronaut", lambda t: (0.2 + 0.6 * t / seconds, 0.5,
                                          120 + 140 * t / seconds)),
            Actor("cameraman", lambda t: (0.85, 0.45, 150))]


def leave_and_return(seconds: float = 5.0) -> list[Actor]:
    """The astronaut is in view, leaves for a second (2.0-3.0 s) and returns elsewhere; the
    cameraman is in view throughout."""
    def astronaut(t: float) -> tuple[float, float, float] | None:
        if t < 2.0:
            return (0.3, 0.5, 180)
        if t < 3.0:
            return None
        return (0.55, 0.45, 170)

    return [Actor("astronaut", astronaut), Actor("cameraman", lambda t: (0.85, 0.5, 150))]


def cut_between(seconds: float = 4.0, cut: float = 2.0) -> list[Actor]:
    """Before the cut the astronaut at the left; after it the cameraman at the right (use with
    ``cuts=(cut,)``)."""
    return [Actor("astronaut", lambda t: (0.3, 0.5, 180) if t < cut else None),
            Actor("cameraman", lambda t: None if t < cut else (0.7, 0.5, 170))]
