"""Person tracking and the stored-video analysis pipeline, on clips whose truth is known
(tests/video_clips.py) and, when present, on a real clip from the research data."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import video_clips
from video_clips import Clip, make_clip

from regard.analysis import Face
from regard.datasets import data_root
from regard.video.analysis import AnalysisOptions, VideoAnalysis, analyze_video
from regard.video.decode import VideoReader
from regard.video.tracking import Tracker, iou_matrix, match
from regard.vision.landmarks import Landmarks
from regard.vision.packs import default_pack
from regard.vision.quality import Pose, Quality


# -- helpers: the truth against what was found (bench/video.py uses the same measures) -----------
def truth_assignments(clip: Clip, analysis: VideoAnalysis, min_iou: float = 0.5
                      ) -> list[tuple[int, str, int, float]]:
    """(frame index, truth name, person Index, IoU) for each truth face that an observation of
    its frame covers with IoU >= ``min_iou`` (each observation used once, best IoU first)."""
    by_frame: dict[int, list] = {}
    for obs in analysis.observations:
        by_frame.setdefault(obs.frame_index, []).append(obs)
    out = []
    for index, observations in sorted(by_frame.items()):
        truth = clip.truth[index]
        if not truth:
            continue
        names = sorted(truth)
        ious = iou_matrix(np.array([truth[n] for n in names]),
                          np.array([[o.face.left, o.face.top, o.face.right, o.face.bottom]
                                    for o in observations]))
        for i, j in match(ious, min_iou):
            out.append((index, names[i], observations[j].person, float(ious[i, j])))
    return out


def identity_switches(clip: Clip, analysis: VideoAnalysis, min_iou: float = 0.5) -> int:
    """How often a truth person's Index changes from one analysed frame where they are found
    to the next (0: everyone kept one Index throughout)."""
    last: dict[str, int] = {}
    switches = 0
    for _, name, person, _ in truth_assignments(clip, analysis, min_iou):
        if name in last and last[name] != person:
            switches += 1
        last[name] = person
    return switches


def indexes_by_truth(clip: Clip, analysis: VideoAnalysis) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for _, name, person, _ in truth_assignments(clip, analysis):
        found.setdefault(name, set()).add(person)
    return found


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    folder = tmp_path_factory.mktemp("tracking")
    return {
        "moving": make_clip(folder / "moving.mp4", video_clips.moving_and_scaling()),
        "leave": make_clip(folder / "leave.mp4", video_clips.leave_and_return(), seconds=5.0),
        "cut": make_clip(folder / "cut.mp4", video_clips.cut_between(), cuts=(2.0,)),
    }


def analyse(path: Path, engine, **options) -> VideoAnalysis:
    with VideoReader(path) as reader:
        return analyze_video(reader, engine, AnalysisOptions(**options))


def searching(**more) -> dict:
    return {"embed": True, "pack": default_pack(), **more}


# -- the matcher ---------------------------------------------------------------------------------
def test_match_maximises_total_score_where_greedy_does_not() -> None:
    # greedy takes (0, 0) = 0.9 and leaves row 1 with 0.1; the best total pairs across
    scores = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert match(scores, 0.2) == [(0, 1), (1, 0)]
    # a pair under the gate is never made, even if it would complete an assignment
    assert match(np.array([[0.9, 0.0], [0.5, 0.15]]), 0.2) == [(0, 0)]
    assert match(np.zeros((0, 3)), 0.2) == []
    assert match(np.array([[0.1]]), 0.2) == []


def test_match_is_optimal_on_random_matrices() -> None:
    rng = np.random.default_rng(1)
    for _ in range(150):
        n, m = rng.integers(1, 6, size=2)
        scores = rng.random((n, m)) * (rng.random((n, m)) < 0.7)
        pairs = match(scores, 0.3)
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
        assert all(scores[i, j] >= 0.3 for i, j in pairs)
        best = 0.0  # brute force over every assignment of rows to distinct columns or none
        for cols in itertools.product(range(-1, m), repeat=n):
            used = [c for c in cols if c >= 0]
            if len(used) != len(set(used)):
                continue
            total = sum(scores[i, c] for i, c in enumerate(cols) if c >= 0 and scores[i, c] >= 0.3)
            best = max(best, total)
        assert sum(scores[i, j] for i, j in pairs) == pytest.approx(best)


# -- the tracker on made-up faces ----------------------------------------------------------------
def fake_face(left: float, top: float, size: float, embedding: np.ndarray | None = None) -> Face:
    marks = Landmarks(points={}, dlib5=np.zeros((5, 2)), rect=(0, 0, 0, 0))
    face = Face(left, top, left + size, top + size, confidence=99.0, landmarks=marks,
                pose=Pose(0.0, 0.0, 0.0), quality=Quality(50.0, 90.0),
                image_width=1280, image_height=720)
    face.embedding = embedding
    return face


def test_motion_prediction_keeps_a_fast_face_on_its_track() -> None:
    # 60 px per look for a 100 px face: consecutive boxes overlap with IoU 0.25 at first and
    # the face then speeds up to 80 px (IoU 0.11); the constant-velocity prediction follows
    tracker = Tracker()
    x = 0.0
    for i in range(12):
        step = tracker.update(i, i * 200, [fake_face(x, 300, 100)])
        assert step.observations[0].track == 0
        x += 60 if i < 4 else 80
    assert len(tracker.persons()) == 1


def test_a_small_face_moving_further_than_its_width_keeps_its_track() -> None:
    """A 45 px face crossing a 720p frame moves ~36 px between looks from its first look (IoU
    0.11, and no velocity yet to predict with): nearness takes it; a face of very different
    size at that distance, or one farther than 1.5 widths, starts a track of its own."""
    tracker = Tracker()
    for i in range(6):
        step = tracker.update(i, i * 200, [fake_face(200 + 36 * i, 300, 45)])
        assert step.observations[0].track == 0
    assert len(tracker.persons()) == 1
    other = Tracker()
    other.update(0, 0, [fake_face(200, 300, 45)])
    assert other.update(1, 200, [fake_face(236, 300, 100)]).observations[0].track == 1
    assert other.update(2, 400, [fake_face(400, 300, 45)]).observations[0].track == 2


def test_a_track_ends_after_max_missed_looks() -> None:
    tracker = Tracker(max_missed=2)
    tracker.update(0, 0, [fake_face(100, 100, 80)])
    tracker.update(1, 200, [])
    tracker.update(2, 400, [])
    assert tracker.update(3, 600, [fake_face(100, 100, 80)]).observations[0].track == 0
    for i in range(4, 7):
        tracker.update(i, i * 200, [])
    assert tracker.update(7, 1400, [fake_face(100, 100, 80)]).observations[0].track == 1
    assert len(tracker.persons()) == 2  # no embeddings: no re-identification


def test_reidentification_joins_only_tracks_never_seen_together() -> None:
    rng = np.random.default_rng(0)
    a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 128)).astype(np.float32))
    tracker = Tracker(pack=default_pack(), max_missed=1)

    def look(i: int, faces: list[Face]) -> None:
        step = tracker.update(i, i * 200, faces)  # the faces carry their embeddings already
        tracker.embedded(step)

    look(0, [fake_face(100, 100, 100, a), fake_face(600, 100, 100, a)])  # twins: same vector
    look(1, [fake_face(100, 100, 100, a), fake_face(600, 100, 100, a)])
    look(2, [])
    look(3, [])
    look(4, [fake_face(900, 300, 100, a)])  # back elsewhere: joins the first of the twins
    look(5, [fake_face(200, 400, 100, b)])  # someone else: a new person
    persons = tracker.persons()
    assert len(tracker.tracks) == 4
    assert len(persons) == 3
    assert [p.tracks for p in persons.values()] == [2, 1, 1]
    assert [(p.first_ms, p.last_ms) for p in persons.values()] == [(0, 800), (0, 200),
                                                                    (1000, 1000)]


def test_the_reidentification_gallery_stays_right_when_compacted() -> None:
    """A long video replaces many embeddings; the gallery drops them and must still point each
    kept embedding at its track."""
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(30, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tracker = Tracker(pack=default_pack(), max_missed=1, embedding_budget=100,
                      embed_margin=1.05)
    look = 0
    for person, vector in enumerate(vectors):
        for k in range(20):  # growing from 20 px: each look better than the last until 112 px
            face = fake_face(300, 200, min(20 * 1.1 ** k, 150), vector)
            tracker.embedded(tracker.update(look, look * 200, [face]))
            look += 1
        for _ in range(3):  # gone: the track ends
            tracker.update(look, look * 200, [])
            look += 1
    computed = sum(t.embeddings_computed for t in tracker.tracks)
    assert computed > 400 and tracker._rows < computed  # compacted
    for track in tracker.tracks:
        assert len(track.embeddings) == 3
        for _, vector, row in track.embeddings:
            assert tracker._owner[row] == track.id and tracker._active[row]
            assert np.array_equal(tracker._vectors[row], vector)
    assert len(tracker.persons()) == 30
    step = tracker.update(look, look * 200, [fake_face(300, 200, 120, vectors[0])])
    tracker.embedded(step)
    persons = tracker.persons()
    assert len(persons) == 30 and persons[0].tracks == 2


# -- the pipeline on made clips ------------------------------------------------------------------
def test_moving_and_scaling_keeps_two_persons_without_switches(clips, engine) -> None:
    clip = clips["moving"]
    analysis = analyse(clip.path, engine)
    assert len(analysis.persons) == 2
    assert identity_switches(clip, analysis) == 0
    found = indexes_by_truth(clip, analysis)
    assert {name: len(ixs) for name, ixs in found.items()} == {"astronaut": 1, "cameraman": 1}
    assert found["astronaut"] != found["cameraman"]
    matched = truth_assignments(clip, analysis)
    # every truth face of every analysed frame is found, within IoU 0.5, but the last: there
    # the astronaut's face is half behind the cameraman's picture (IoU 0.4 with the truth,
    # which ignores occlusion), and still keeps its Index
    truth_faces = sum(len(clip.truth[i]) for i in {o.frame_index for o in analysis.observations})
    assert len(matched) >= truth_faces - 1
    assert len(analysis.observations) == 2 * analysis.frames_analysed
    assert identity_switches(clip, analysis, min_iou=0.3) == 0
    # within a frame the largest face comes first; persons are numbered by first appearance
    for _, group in itertools.groupby(analysis.observations, key=lambda o: o.frame_index):
        areas = [o.face.area for o in group]
        assert areas == sorted(areas, reverse=True)
    assert [p.first_ms for p in analysis.persons.values()] == [0, 0]
    assert analysis.observations[0].person == 0


def test_leaving_and_returning_keeps_the_index_with_embeddings(clips, engine) -> None:
    clip = clips["leave"]
    analysis = analyse(clip.path, engine, **searching())
    assert identity_switches(clip, analysis) == 0
    found = indexes_by_truth(clip, analysis)
    assert len(found["astronaut"]) == 1 and len(found["cameraman"]) == 1
    assert len(analysis.persons) == 2
    astronaut = analysis.persons[next(iter(found["astronaut"]))]
    assert astronaut.tracks == 2  # two tracks (before and after the absence), one person
    assert (astronaut.first_ms, astronaut.last_ms) == (0, 4800)


def test_leaving_and_returning_without_embeddings_is_a_new_index(clips, engine) -> None:
    """Documented behaviour: without embeddings (face detection, or face search turned off)
    nothing can tell that the returning face is the same person, so it gets a new Index."""
    clip = clips["leave"]
    analysis = analyse(clip.path, engine)
    found = indexes_by_truth(clip, analysis)
    assert len(found["astronaut"]) == 2 and len(found["cameraman"]) == 1
    assert len(analysis.persons) == 3
    assert analysis.persons[2].first_ms == 3000  # the return, after 1 s away


def test_a_cut_between_two_people_gives_two_persons(clips, engine) -> None:
    clip = clips["cut"]
    for options in ({}, searching()):
        analysis = analyse(clip.path, engine, **options)
        assert len(analysis.persons) == 2
        found = indexes_by_truth(clip, analysis)
        assert found == {"astronaut": {0}, "cameraman": {1}}
        assert analysis.persons[0].last_ms < 2000 <= analysis.persons[1].first_ms


def test_embeddings_per_track_are_bounded(clips, engine, monkeypatch) -> None:
    embedded: list[int] = []
    original = type(engine).embed_faces

    def counting(self, rgb, faces, pack=None):
        embedded.append(len(faces))
        return original(self, rgb, faces, pack)

    monkeypatch.setattr(type(engine), "embed_faces", counting)
    clip = clips["moving"]  # the astronaut grows all along: each look is better than the last
    for k in (1, 3):
        embedded.clear()
        analysis = analyse(clip.path, engine, **searching(max_embeddings_per_track=k))
        assert len(analysis.persons) == 2
        for person in analysis.persons.values():
            assert person.tracks == 1
            assert 1 <= len(person.embeddings) <= k
            assert k <= person.embeddings_computed <= 3 * k  # the first k, then by margin, capped
            assert person.embeddings_computed < person.observations
        carrying = [o for o in analysis.observations if o.face.embedding is not None]
        assert len(carrying) == sum(embedded) == sum(
            p.embeddings_computed for p in analysis.persons.values())
        assert all(o.timestamp_ms == 0 for o in carrying[:2])  # each track's first face


def test_frames_are_sampled_every_sample_ms(clips, engine) -> None:
    clip = clips["moving"]  # 25 fps: frames every 40 ms
    analysis = analyse(clip.path, engine, track=False)
    assert analysis.analysed_ms == list(range(0, 4000, 200))
    assert analysis.frames_analysed == 20
    assert analysis.persons == {}
    assert all(o.person is None for o in analysis.observations)
    assert {o.timestamp_ms for o in analysis.observations} <= set(analysis.analysed_ms)
    assert all(clip.timestamp_ms(o.frame_index) == o.timestamp_ms for o in analysis.observations)
    # 500 ms: the first frame at or after each multiple (520 = 13 x 40)
    analysis = analyse(clip.path, engine, sample_ms=500.0, track=False)
    assert analysis.analysed_ms == [0, 520, 1000, 1520, 2000, 2520, 3000, 3520]


def test_check_cancels_and_progress_reports(clips, engine, monkeypatch) -> None:
    calls = {"check": 0}
    detected: list[int] = []
    original = type(engine).detect

    def detect(self, image, **kw):
        detected.append(1)
        return original(self, image, **kw)

    monkeypatch.setattr(type(engine), "detect", detect)

    class Cancelled(Exception):
        pass

    def check() -> None:
        calls["check"] += 1
        if calls["check"] == 4:
            raise Cancelled

    with VideoReader(clips["moving"].path) as reader, pytest.raises(Cancelled):
        analyze_video(reader, engine, AnalysisOptions(), check=check)
    assert calls["check"] == 4 and len(detected) == 3

    reports: list[tuple[int, int]] = []
    with VideoReader(clips["moving"].path) as reader:
        analyze_video(reader, engine, AnalysisOptions(),
                      progress=lambda done, total: reports.append((done, total)))
    assert reports[-1] == (4000, 4000)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)
    assert len(reports) <= 1 + 2 * 10  # at most about twice a second (analysis well under 10 s)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        AnalysisOptions(embed=True)
    with pytest.raises(ValueError):
        AnalysisOptions(sample_ms=0)
    assert AnalysisOptions().max_missed == 5  # 1 s of 200 ms looks
    assert AnalysisOptions(sample_ms=1000, max_missed_ms=500).max_missed == 1


@pytest.mark.data
def test_a_real_clip_gives_a_sane_number_of_persons(engine) -> None:
    root = data_root()
    path = root / "video" / "short_hamilton_clip.mp4" if root else None
    if path is None or not path.exists():
        pytest.skip("research data not present (set REGARD_DATA)")
    for options in ({}, searching()):
        analysis = analyse(path, engine, **options)
        assert 40 <= analysis.frames_analysed <= 50  # 9.2 s at 200 ms
        assert analysis.observations
        # a stage, close-ups and an audience across four shots: a handful to a dozen or so
        # people, not a new person per detection
        assert 4 <= len(analysis.persons) < 40
        assert len(analysis.persons) < len(analysis.observations) / 2
        assert sum(p.observations for p in analysis.persons.values()) == \
            len(analysis.observations)
        if options:
            for person in analysis.persons.values():
                assert len(person.embeddings) <= 3
                assert person.embeddings_computed <= 9 * person.tracks
