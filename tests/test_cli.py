"""The CLI prints exactly Rekognition's response bodies with --json, draws, and survives bad
files in a batch (one error line each, exit code 1, the good images still processed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from regard.cli import app

from conftest import encode, face_crop, paste_faces
from shapes import assert_shape

runner = CliRunner()


@pytest.fixture()
def images(tmp_path: Path, astronaut, cameraman) -> dict[str, Path]:
    paths = {
        "astronaut": tmp_path / "astronaut.jpg",
        "cameraman": tmp_path / "cameraman.png",
        "group": tmp_path / "group.png",
        "corrupt": tmp_path / "corrupt.jpg",
        "tiny": tmp_path / "tiny.png",
    }
    paths["astronaut"].write_bytes(encode(astronaut))
    paths["cameraman"].write_bytes(encode(cameraman, "PNG"))
    group, _ = paste_faces(face_crop(astronaut), [300, 200, 150])
    paths["group"].write_bytes(encode(group, "PNG"))
    paths["corrupt"].write_bytes(encode(astronaut)[:5000])
    paths["tiny"].write_bytes(encode(np.ascontiguousarray(astronaut[:60, :60]), "PNG"))
    return paths


def test_detect_json_one_image_is_the_detectfaces_body(images):
    result = runner.invoke(app, ["detect", str(images["astronaut"]), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body) == {"FaceDetails"}
    assert_shape(body, "DetectFacesResponse")
    assert len(body["FaceDetails"]) == 1


def test_detect_many_images_one_line_each_with_errors(images):
    order = ["astronaut", "corrupt", "group", "tiny", "cameraman"]
    result = runner.invoke(app, ["detect", *(str(images[k]) for k in order), "--json",
                                 "--workers", "2"])
    assert result.exit_code == 1  # some images failed
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(line["Image"]).stem for line in lines] == order
    by_name = {Path(line["Image"]).stem: line for line in lines}
    assert by_name["corrupt"]["__type"] == "InvalidImageFormatException"
    assert by_name["tiny"]["__type"] == "InvalidParameterException"
    assert len(by_name["group"]["FaceDetails"]) == 3
    for key in ("astronaut", "group", "cameraman"):
        body = dict(by_name[key])
        body.pop("Image")
        assert_shape(body, "DetectFacesResponse")


def test_detect_single_bad_image_is_a_clear_error(images):
    result = runner.invoke(app, ["detect", str(images["corrupt"])])
    assert result.exit_code == 1
    assert "InvalidImageFormatException" in result.output


def test_draw(images, tmp_path):
    out = tmp_path / "drawn.png"
    result = runner.invoke(app, ["detect", str(images["astronaut"]), "--draw", str(out)])
    assert result.exit_code == 0, result.output
    drawn = np.asarray(Image.open(out).convert("RGB")).astype(int)
    original = np.asarray(Image.open(images["astronaut"]).convert("RGB")).astype(int)
    changed = np.abs(drawn - original).sum(axis=2) > 60
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 300  # a box outline and landmark dots were drawn ...
    assert 150 < xs.min() and xs.max() < 300 and 40 < ys.min() and ys.max() < 210  # ... on the face
    folder = tmp_path / "many"
    result = runner.invoke(app, ["detect", str(images["astronaut"]), str(images["group"]),
                                 "--draw", str(folder)])
    assert result.exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["astronaut.faces.png", "group.faces.png"]


def test_compare_json(images):
    result = runner.invoke(app, ["compare", str(images["astronaut"]), str(images["group"]),
                                 "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert_shape(body, "CompareFacesResponse")
    assert len(body["FaceMatches"]) == 3 and body["UnmatchedFaces"] == []
    result = runner.invoke(app, ["compare", str(images["astronaut"]), str(images["cameraman"]),
                                 "--json"])
    body = json.loads(result.stdout)
    assert body["FaceMatches"] == [] and len(body["UnmatchedFaces"]) == 1


def test_compare_table_and_errors(images):
    result = runner.invoke(app, ["compare", str(images["astronaut"]), str(images["group"])])
    assert result.exit_code == 0 and "yes" in result.stdout
    result = runner.invoke(app, ["compare", str(images["astronaut"]), str(images["group"]),
                                 "--threshold", "120"])
    assert result.exit_code == 1 and "InvalidParameterException" in result.output


def test_console_script_runs(images):
    """The installed ``regard`` entry point, as a user runs it."""
    exe = Path(sys.executable).with_name("regard")
    proc = subprocess.run([str(exe), "detect", str(images["group"]), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["FaceDetails"]) == 3
