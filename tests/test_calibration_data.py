"""The data the calibration tables are measured on (bench/calibrate.py), and the shipped tables.

Identity-labelled groups set the anchors: LFW joined to its race labels, and the London set (63
people x 2 photos); UTKFace, without identities, is a bound, cleaned of pairs collected under an
hour apart. Tests that read the research data skip without REGARD_DATA.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from regard.datasets import (
    UTKFACE_SAME_SESSION,
    LabelledFace,
    lfw_identity,
    lfw_images,
    lfw_race_labels,
    london_face_set,
    utkface,
    utkface_close_pairs,
    utkface_datetime,
)
from regard.vision.packs import packs

pytestmark = pytest.mark.data


def test_london_set_is_63_people_with_2_photos_each(dev_data):
    faces = london_face_set(dev_data)
    per_person = Counter(f.identity for f in faces)
    assert len(per_person) == 63
    assert set(per_person.values()) == {2}
    assert all(f.image.is_file() for f in faces)
    for identity in per_person:
        mine = [f for f in faces if f.identity == identity]
        assert len({(f.group, f.gender) for f in mine}) == 1  # one person, one label
        assert sorted(f.expression for f in mine) == ["neutral", "smiling"]
    groups = Counter(f.group for f in faces if f.expression == "neutral")
    assert groups["black"] == 13 and groups["east_asian"] == 9 and groups["west_asian"] == 10
    assert groups["white"] == 30


def test_lfw_race_labels_join_dev_identities(dev_data):
    single = lfw_race_labels(dev_data)
    everything = lfw_race_labels(dev_data, single_only=False)
    assert set(single) < set(everything)  # multi-label identities are left out
    assert not any("," in g for g in single.values())
    dev_ids = {lfw_identity(p) for p in lfw_images(dev_data)}
    labelled = Counter(single[i] for i in dev_ids if i in single)
    assert sum(labelled.values()) >= 150
    assert labelled["Caucasian"] >= 150 and labelled["African"] >= 10
    assert single.get("Sidney_Poitier", "African") == "African"


def _face(name: str) -> LabelledFace:
    return LabelledFace(Path("images") / name, "female", "Asian", 30)


def test_utkface_cleaning_rule():
    faces = [_face("30_1_2_20170116174525125.jpg.chip.jpg"),
             _face("31_1_2_20170116174559001.jpg.chip.jpg"),   # same minute as 0
             _face("32_1_2_20170116184459999.jpg.chip.jpg"),   # 59:35 after 0: under an hour
             _face("33_1_2_20170116194600000.jpg.chip.jpg"),   # 1 h 0 min 01 s after 2
             _face("34_1_2.jpg.chip.jpg")]                      # no datetime: never dropped
    assert utkface_datetime(faces[0].image).isoformat() == "2017-01-16T17:45:25.125000"
    assert utkface_datetime(faces[4].image) is None
    assert UTKFACE_SAME_SESSION == timedelta(hours=1)
    assert utkface_close_pairs(faces) == {(0, 1), (0, 2), (1, 2)}


def test_utkface_cleaning_drops_the_same_minute_pairs(dev_data):
    faces = utkface(dev_data)
    times = [utkface_datetime(f.image) for f in faces]
    assert all(t is not None for t in times)
    close = utkface_close_pairs(faces)
    same_minute = {(i, j) for i in range(len(faces)) for j in range(i + 1, len(faces))
                   if times[i].replace(second=0, microsecond=0)
                   == times[j].replace(second=0, microsecond=0)}
    assert same_minute and same_minute <= close
    assert all(abs(times[i] - times[j]) < UTKFACE_SAME_SESSION for i, j in close)
    apart = [(i, j) for i in range(len(faces)) for j in range(i + 1, len(faces))
             if (i, j) not in close]
    assert all(abs(times[i] - times[j]) >= UTKFACE_SAME_SESSION for i, j in apart)


@pytest.mark.parametrize("pack", [p for p in packs() if p.calibrated], ids=lambda p: p.version)
def test_shipped_table_anchors(pack):
    """Every calibrated pack's table (an uncalibrated pack has none to check)."""
    meta = pack.calibration.meta
    anchors = sorted(meta["anchors"], key=lambda a: -a["similarity"])
    distances = [a["distance"] for a in anchors]
    assert all(a < b for a, b in zip(distances, distances[1:]))  # strictly monotone
    rated = [a for a in anchors if "target_fmr" in a]
    assert rated
    fmrs = [a["target_fmr"] for a in rated]
    assert all(a < b for a, b in zip(fmrs, fmrs[1:]))  # a higher similarity promises less
    groups = meta.get("measurements", {}).get("group_data")
    for a in rated:
        assert a["set_by"] and a["method"] in ("empirical", "tail fit")
        if "ci95" in a:  # tables written by bench/calibrate.py since identity-labelled groups
            low, high = a["ci95"]
            assert 0 < low <= a["distance"] <= high
            assert a["data"]
            assert groups[a["set_by"]]["sets_anchors"]
