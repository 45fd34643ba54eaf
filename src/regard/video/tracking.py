"""Following faces from one analysed frame to the next, and telling persons apart.

Stored-video analysis looks at a frame every ``sample_ms`` (200 ms by default), so a face may
move a fair way between two looks. Each live *track* predicts where its face is now (constant
velocity of the box centre and size, from its last two looks), and the faces of the new frame
are assigned to tracks by the overlap (IoU) of their boxes with those predictions, the assignment
that maximises the total overlap (``match``, a small Hungarian solver: scipy is no runtime
dependency). A face no track takes starts a new track; a track missing for more than
``max_missed`` looks in a row ends.

A track belongs to a *person* (Rekognition's ``Person.Index``, 0-based, in order of first
appearance). With embeddings (face search), a new track whose face matches an earlier track's
(calibrated similarity >= ``reid_similarity``) joins that track's person, so someone who leaves
the frame and comes back keeps one Index. Two tracks seen at the same time are never one person.
Without embeddings every track is its own person.

Embedding every face of every look would cost about 6 ms a face on a CPU core (detecting in a
720p frame costs about 30 ms) to learn the same thing again and again, so each track keeps at
most ``max_embeddings`` embeddings, from its best-quality faces (``face_quality``): a face is embedded only when it would enter the
track's top ``max_embeddings`` (by a margin), the first face of a track always (so re-
identification is tried at once), and never more than ``embedding_budget`` per track.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from regard.analysis import Face
from regard.vision.detect import iou_matrix
from regard.vision.packs import FaceModelPack

# Box as (centre x, centre y, width, height) in pixels.
_Box = np.ndarray


@dataclass
class Observation:
    """One face in one analysed frame. ``person``: its person's Index (set when the analysis
    ends, since re-identification can still join tracks until then; None without tracking).
    The face holds no pixels; its ``embedding`` is set only if it was embedded."""

    timestamp_ms: int
    frame_index: int
    person: int | None
    face: Face
    track: int | None = None  # the tracker's internal track id


@dataclass
class Person:
    """One person of a video: when seen, how often, and up to ``max_embeddings`` embeddings of
    their best-quality faces (for searching a collection)."""

    index: int
    first_ms: int
    last_ms: int
    embeddings: list[np.ndarray]
    embeddings_computed: int
    observations: int
    tracks: int = 1


def face_quality(face: Face, chip: float = 112.0) -> float:
    """How much an embedding of ``face`` is worth, 0-1: detector confidence x sharpness x
    frontalness (from yaw and pitch) x size, where size saturates at the embedder's chip size
    (a face larger than the chip it is resampled to gives no better embedding)."""
    confidence = max(0.0, min(1.0, face.confidence / 100.0))
    sharpness = 0.25 + 0.75 * max(0.0, min(1.0, face.quality.sharpness / 100.0))
    frontal = max(0.1, math.cos(math.radians(min(abs(face.pose.yaw), 90.0)))
                  * math.cos(math.radians(min(abs(face.pose.pitch), 90.0))))
    size = max(0.05, min(1.0, face.size / chip))
    return confidence * sharpness * frontal * size


def _hungarian(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment of every row of ``cost`` (n <= m) to a distinct column
    (Kuhn-Munkres with potentials, O(n^2 m), inner loops in numpy)."""
    n, m = cost.shape
    inf = np.inf
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # p[j]: row (1-based) assigned to column j; 0: none
    way = np.zeros(m + 1, dtype=np.int64)
    a = np.zeros((n + 1, m + 1))
    a[1:, 1:] = cost
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used
            free[0] = False
            cur = a[i0] - u[i0] - v
            better = free & (cur < minv)
            minv[better] = cur[better]
            way[better] = j0
            candidates = np.where(free, minv, inf)
            j1 = int(np.argmin(candidates))
            delta = candidates[j1]
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    return [(int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j]]


def match(scores: np.ndarray, min_score: float) -> list[tuple[int, int]]:
    """Pairs (row, column) of ``scores`` (N, M, higher is better), each row and column at most
    once, every pair scoring at least ``min_score``, with the largest total score. The gated
    pairs split into independent groups (faces apart from each other rarely compete), each
    solved exactly, so a crowd costs little more than a few faces."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.size == 0:
        return []
    allowed = scores >= min_score
    rows_left = set(np.flatnonzero(allowed.any(axis=1)).tolist())
    pairs: list[tuple[int, int]] = []
    while rows_left:
        # one connected group of the bipartite graph of allowed pairs
        rows, cols = {rows_left.pop()}, set()
        frontier_rows = set(rows)
        while frontier_rows:
            new_cols = set(np.flatnonzero(allowed[sorted(frontier_rows)].any(axis=0)).tolist())
            new_cols -= cols
            cols |= new_cols
            new_rows = set(np.flatnonzero(allowed[:, sorted(new_cols)].any(axis=1)).tolist()) \
                if new_cols else set()
            frontier_rows = new_rows - rows
            rows |= frontier_rows
        rows_left -= rows
        r, c = sorted(rows), sorted(cols)
        sub = np.where(allowed[np.ix_(r, c)], scores[np.ix_(r, c)], 0.0)
        if len(r) == 1 or len(c) == 1:  # the common case: a face and its track
            i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
            if allowed[r[int(i)], c[int(j)]]:
                pairs.append((r[int(i)], c[int(j)]))
            continue
        # maximise the total score: minimise (max - score); disallowed pairs score 0, so they
        # are never preferred to an allowed one and are dropped afterwards
        top = float(sub.max())
        transpose = len(r) > len(c)
        cost = (top - sub).T if transpose else top - sub
        for i, j in _hungarian(cost):
            ri, cj = (r[j], c[i]) if transpose else (r[i], c[j])
            if allowed[ri, cj]:
                pairs.append((ri, cj))
    pairs.sort()
    return pairs


NEAR_WIDTHS = 1.5
NEAR_WEIGHT = 0.6  # a near face scores at most this, below a well-overlapping one


def nearness(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A score in [0, ``NEAR_WEIGHT``] for each pair of boxes (left, top, right, bottom): 1 -
    centre distance / (``NEAR_WIDTHS`` x their mean width), 0 when their sizes differ by more
    than 1.5x."""
    ca = np.stack([(a[:, 0] + a[:, 2]) / 2, (a[:, 1] + a[:, 3]) / 2], axis=1)
    cb = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    wa, wb = a[:, 2] - a[:, 0], b[:, 2] - b[:, 0]
    distance = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2)
    width = (wa[:, None] + wb[None, :]) / 2
    ratio = np.maximum(wa[:, None], wb[None, :]) / np.maximum(np.minimum(wa[:, None],
                                                                           wb[None, :]), 1e-6)
    score = np.clip(1.0 - distance / (NEAR_WIDTHS * np.maximum(width, 1e-6)), 0.0, 1.0)
    return np.where(ratio <= 1.5, NEAR_WEIGHT * score, 0.0)


def _box(face: Face) -> _Box:
    return np.array([(face.left + face.right) / 2, (face.top + face.bottom) / 2,
                     face.right - face.left, face.bottom - face.top], dtype=np.float64)


def _corners(box: _Box) -> np.ndarray:
    cx, cy, w, h = box
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class Track:
    """One face followed over consecutive analysed frames."""

    def __init__(self, track_id: int, obs: Observation) -> None:
        self.id = track_id
        self.first_ms = self.last_ms = obs.timestamp_ms
        # a count, not the observations: a long video's faces are not all kept in memory (the
        # caller keeps or spools them, and maps tracks to persons with ``Tracker.person_of``)
        self.observations = 1
        self.box = _box(obs.face)
        self.velocity: np.ndarray | None = None  # (cx, cy, w, h) per millisecond
        self.missed = 0
        self.ended = False
        # top-K embeddings by face quality: (quality, embedding, gallery row or -1)
        self.embeddings: list[tuple[float, np.ndarray, int]] = []
        self.embeddings_computed = 0

    def predict(self, timestamp_ms: int, horizon_ms: float) -> np.ndarray:
        """The box (left, top, right, bottom) expected at ``timestamp_ms``."""
        if self.velocity is None:
            return _corners(self.box)
        dt = min(float(timestamp_ms - self.last_ms), horizon_ms)
        box = self.box + self.velocity * dt
        box[2:] = np.maximum(box[2:], self.box[2:] * 0.5)
        return _corners(box)

    def update(self, obs: Observation) -> None:
        box = _box(obs.face)
        dt = obs.timestamp_ms - self.last_ms
        if dt > 0:
            measured = (box - self.box) / dt
            self.velocity = measured if self.velocity is None \
                else 0.5 * measured + 0.5 * self.velocity
        self.box = box
        self.last_ms = obs.timestamp_ms
        self.missed = 0
        self.observations += 1


@dataclass
class FrameStep:
    """What ``Tracker.update`` made of one frame: an Observation per face (in the faces'
    order) and those whose faces the tracker wants embedded (then call ``Tracker.embedded``)."""

    observations: list[Observation]
    embed: list[Observation] = field(default_factory=list)


class Tracker:
    """Tracks over analysed frames, fed in time order with ``update``; ``persons`` at the end.

    ``pack``: the face-model pack whose embeddings re-identify (None: no embeddings, no re-id).
    ``max_missed``: looks a track may miss before it ends. ``min_iou``: the least overlap of a
    face with a track's predicted box for the track to take it. ``max_embeddings``: embeddings
    kept per track; ``embedding_budget``: most computed per track (default 3 x max_embeddings);
    ``embed_margin``: how much better (ratio) than the track's worst kept face a face must be
    to be embedded once the track holds ``max_embeddings``. ``reid_similarity``: calibrated
    similarity (0-100) at which a new track joins an earlier one's person; only faces that
    pass the QualityFilter ``reid_quality`` (default LOW) take part in that.
    """

    def __init__(self, *, pack: FaceModelPack | None = None, max_missed: int = 5,
                 min_iou: float = 0.2, max_embeddings: int = 3,
                 embedding_budget: int | None = None, embed_margin: float = 1.1,
                 reid_similarity: float = 80.0, reid_quality: str = "LOW",
                 horizon_ms: float = 1000.0) -> None:
        if max_missed < 0:
            raise ValueError("max_missed must be >= 0")
        if max_embeddings < 1:
            raise ValueError("max_embeddings must be >= 1")
        self.pack = pack
        self.max_missed = max_missed
        self.min_iou = min_iou
        self.max_embeddings = max_embeddings
        self.embedding_budget = max(embedding_budget if embedding_budget is not None
                                    else 3 * max_embeddings, 1)
        self.embed_margin = embed_margin
        self.reid_similarity = reid_similarity
        self.reid_quality = reid_quality
        self.horizon_ms = horizon_ms
        self.tracks: list[Track] = []  # every track, by id
        self.live: list[Track] = []
        # persons while tracking: each track's label (the lowest track id of its person) and
        # each label's tracks
        self._label: list[int] = []
        self._groups: dict[int, list[Track]] = {}
        # the gallery: every embedding kept or once kept, its track, and whether still kept
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._owner = np.zeros(0, dtype=np.int64)
        self._active = np.zeros(0, dtype=bool)
        self._rows = 0
        self._dropped = 0  # rows no longer kept (compacted away once they are many)

    # -- per frame -------------------------------------------------------------------------
    def update(self, frame_index: int, timestamp_ms: int, faces: Sequence[Face], *,
               new_shot: bool = False) -> FrameStep:
        """Assign the faces of one analysed frame to tracks (new ones for the rest), end the
        tracks missing too long, and say which faces to embed. ``new_shot``: the frame starts
        a new shot (a hard cut), so no track continues into it: a face at the place of another
        across a cut is someone else as often as not (re-identification still joins the same
        person's tracks)."""
        if new_shot:
            self.end_all()
        observations = [Observation(timestamp_ms, frame_index, None, f) for f in faces]
        step = FrameStep(observations)
        taken: set[int] = set()
        if self.live and faces:
            predicted = np.stack([t.predict(timestamp_ms, self.horizon_ms) for t in self.live])
            last = np.stack([_corners(t.box) for t in self.live])
            boxes = np.array([[f.left, f.top, f.right, f.bottom] for f in faces])
            # the better of the prediction and the last box: a face that stopped moving is
            # still found where it was; and a track seen once (no velocity yet) may take a
            # face of about its size that moved up to ``NEAR_WIDTHS`` face widths (a small face
            # walking past moves further than its own width between looks)
            scores = np.maximum(iou_matrix(predicted, boxes), iou_matrix(last, boxes))
            fresh = np.array([t.velocity is None for t in self.live])
            if fresh.any():
                scores = np.where(fresh[:, None],
                                  np.maximum(scores, nearness(last, boxes)), scores)
            for ti, fi in match(scores, self.min_iou):
                track, obs = self.live[ti], observations[fi]
                track.update(obs)
                obs.track = track.id
                taken.add(fi)
                self._want(track, obs, step)
        for fi, obs in enumerate(observations):
            if fi not in taken:
                track = Track(len(self.tracks), obs)
                self.tracks.append(track)
                self._label.append(track.id)
                self._groups[track.id] = [track]
                self.live.append(track)
                obs.track = track.id
                self._want(track, obs, step)
        still: list[Track] = []
        for track in self.live:
            if track.last_ms != timestamp_ms:
                track.missed += 1
                if track.missed > self.max_missed:
                    track.ended = True
                    continue
            still.append(track)
        self.live = still
        return step

    def end_all(self) -> None:
        """End every live track."""
        for track in self.live:
            track.ended = True
        self.live = []

    def _want(self, track: Track, obs: Observation, step: FrameStep) -> None:
        if self.pack is None or track.embeddings_computed >= self.embedding_budget:
            return
        if len(track.embeddings) < self.max_embeddings:  # the first face always: early re-id
            step.embed.append(obs)
            return
        worst = min(q for q, _, _ in track.embeddings)
        if face_quality(obs.face) > worst * self.embed_margin:
            step.embed.append(obs)

    def embedded(self, step: FrameStep) -> None:
        """Take in the embeddings of ``step.embed`` (their faces' ``embedding``, now set): keep
        each track's best ``max_embeddings`` and try to re-identify the tracks that got one."""
        for obs in step.embed:
            if obs.face.embedding is None or obs.track is None:
                continue
            track = self.tracks[obs.track]
            track.embeddings_computed += 1
            quality = face_quality(obs.face)
            vector = np.asarray(obs.face.embedding, dtype=np.float32).ravel()
            if len(track.embeddings) >= self.max_embeddings:
                worst = min(range(len(track.embeddings)), key=lambda k: track.embeddings[k][0])
                if track.embeddings[worst][0] >= quality:
                    continue
                if track.embeddings[worst][2] >= 0:
                    self._active[track.embeddings[worst][2]] = False
                    self._dropped += 1
                del track.embeddings[worst]
            # blurred, tiny or turned-away faces give embeddings that resemble each other
            # more than their owners (bokeh audiences all look alike): kept for the person,
            # never used to join persons
            if obs.face.quality_reasons(self.reid_quality):
                track.embeddings.append((quality, vector, -1))
                continue
            track.embeddings.append((quality, vector, self._add(vector, track.id)))
            self._reidentify(track, vector)

    # -- re-identification -----------------------------------------------------------------
    def _add(self, vector: np.ndarray, track_id: int) -> int:
        if self._rows and self._vectors.shape[1] != vector.size:
            raise ValueError("embeddings of different sizes in one tracker")
        if self._dropped > max(256, self._rows // 2):
            self._compact()
        if self._rows == len(self._vectors):
            size = max(16, 2 * len(self._vectors))
            grown = np.zeros((size, vector.size), dtype=np.float32)
            if self._rows:
                grown[: self._rows] = self._vectors[: self._rows]
            self._vectors = grown
            self._owner = np.resize(self._owner, size)
            self._active = np.resize(self._active, size)
        row = self._rows
        self._vectors[row] = vector
        self._owner[row] = track_id
        self._active[row] = True
        self._rows += 1
        return row

    def _compact(self) -> None:
        """Drop the rows of embeddings no longer kept (a long video replaces many)."""
        keep = np.flatnonzero(self._active[: self._rows])
        new_row = np.full(self._rows, -1, dtype=np.int64)
        new_row[keep] = np.arange(keep.size)
        for track_id in set(self._owner[keep].tolist()):
            track = self.tracks[track_id]
            track.embeddings = [(q, v, int(new_row[r]) if r >= 0 else -1)
                                for q, v, r in track.embeddings]
        self._vectors[: keep.size] = self._vectors[keep]
        self._owner[: keep.size] = self._owner[keep]
        self._active[: keep.size] = True
        self._rows = keep.size
        self._dropped = 0

    def _reidentify(self, track: Track, vector: np.ndarray) -> None:
        """Join ``track``'s person to the most similar other person whose tracks were never
        seen at the same time as this person's."""
        if self.pack is None or self._rows <= 1:
            return
        mine = self._label[track.id]
        n = self._rows
        labels = np.asarray(self._label, dtype=np.int64)[self._owner[:n]]
        rows = np.flatnonzero(self._active[:n] & (labels != mine))
        if not rows.size:
            return
        distances = np.linalg.norm(self._vectors[rows] - vector, axis=1)
        similarities = np.atleast_1d(self.pack.similarities(distances))
        best: dict[int, float] = {}
        for label, sim in zip(labels[rows].tolist(), similarities.tolist()):
            if sim >= self.reid_similarity and sim > best.get(label, -1.0):
                best[label] = sim
        ours = self._groups[mine]
        for label in sorted(best, key=best.__getitem__, reverse=True):
            theirs = self._groups[label]
            if any(_overlap(a, b) for a in ours for b in theirs):
                continue  # seen together: two people, however alike
            keep, gone = min(label, mine), max(label, mine)
            for other in self._groups[gone]:
                self._label[other.id] = keep
            self._groups[keep] = self._groups[keep] + self._groups.pop(gone)
            # this track now carries the person: an earlier track of theirs still waiting to
            # be matched would otherwise give the person two simultaneous tracks
            for other in theirs:
                if not other.ended:
                    other.ended = True
                    self.live = [t for t in self.live if t is not other]
            return

    # -- results ---------------------------------------------------------------------------
    def persons(self) -> dict[int, Person]:
        """Persons indexed 0, 1, 2... in order of first appearance; ``person_of`` maps each
        track id to its person's Index (what an Observation's ``track`` becomes)."""
        ordered = sorted(self._groups.values(), key=lambda ts: (min(t.first_ms for t in ts),
                                                          min(t.id for t in ts)))
        out: dict[int, Person] = {}
        self.person_of: dict[int, int] = {}
        for index, tracks in enumerate(ordered):
            kept = sorted((e for t in tracks for e in t.embeddings), key=lambda e: -e[0])
            for t in tracks:
                self.person_of[t.id] = index
            out[index] = Person(
                index=index, first_ms=min(t.first_ms for t in tracks),
                last_ms=max(t.last_ms for t in tracks),
                embeddings=[e[1] for e in kept[: self.max_embeddings]],
                embeddings_computed=sum(t.embeddings_computed for t in tracks),
                observations=sum(t.observations for t in tracks), tracks=len(tracks))
        return out


def _overlap(a: Track, b: Track) -> bool:
    return max(a.first_ms, b.first_ms) <= min(a.last_ms, b.last_ms)


__all__ = ["FrameStep", "Observation", "Person", "Track", "Tracker", "face_quality",
           "iou_matrix", "match"]
