"""Bring your own model: a real ONNX face model (Regard's port of dlib's ResNet, written to a file
as an operator would hold one) installed with `regard models add`, refused for collections until
`regard models calibrate` has measured it, then calibrated on identity-labelled data and used;
its table equals the one the same rule gives the shipped pack on the same data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from regard.cli import app
from regard.errors import InvalidParameterError
from regard.service import RegardService
from regard.store import Store
from regard.vision import packs
from regard.vision.custom_models import KNOWN_RECIPES, Recipe, recipe_from

from conftest import encode

runner = CliRunner()


@pytest.fixture()
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("REGARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    yield tmp_path / "home"
    packs._SCANNED.clear()


@pytest.fixture(scope="module")
def port_file(tmp_path_factory) -> Path:
    """The ONNX graph of dlib's ResNet, as a file an operator could hand to `models add`."""
    from regard.vision.dlib_resnet_onnx import OnnxFaceEmbedder

    cache = tmp_path_factory.mktemp("port")
    path = OnnxFaceEmbedder(cache_dir=cache).model_path
    assert path is not None and path.suffix == ".onnx"
    return path


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_recipes_are_checked():
    assert KNOWN_RECIPES["sface"].chip_size == 112
    with pytest.raises(InvalidParameterError, match="layout"):
        Recipe("x", layout="CHWN")
    with pytest.raises(InvalidParameterError, match="Unknown recipe"):
        recipe_from("arcface-r200")
    changed = recipe_from("sface", {"embedding_size": 512})
    assert changed.embedding_size == 512 and changed.sha256 is None


def test_a_model_is_installed_checked_and_refused_until_calibrated(home, port_file, engine,
                                                                   astronaut, tmp_path):
    code, output = _run("models", "add", str(port_file), "--version", "5.0",
                        "--recipe", "dlib-resnet-onnx", "--licence", "public domain")
    assert code == 0, output
    assert "calibrate it before use" in output
    folder = home / "models" / "packs" / "5.0"
    assert (folder / "model.onnx").read_bytes() == port_file.read_bytes()
    assert oct((folder / "model.onnx").stat().st_mode & 0o777) == "0o600"
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)["Models"]
    assert "5.0" in {m["FaceModelVersion"] for m in listed}
    shown = json.loads(runner.invoke(app, ["models", "show", "5.0", "--json"]).stdout)
    assert shown["Calibrated"] is False and shown["EmbeddingSize"] == 128
    # the same version twice, a wrong embedding size, a file that is no model: refused
    assert _run("models", "add", str(port_file), "--version", "5.0",
                "--recipe", "dlib-resnet-onnx")[0] == 1
    code, output = _run("models", "add", str(port_file), "--version", "6.0",
                        "--recipe", "dlib-resnet-onnx", "--embedding-size", "512")
    assert code == 1 and "gives 128 numbers per face" in output
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    code, output = _run("models", "add", str(junk), "--version", "6.0", "--recipe", "sface")
    assert code == 1 and "ONNX Runtime" in output
    # a known recipe with a checksum refuses another file
    pinned = Recipe("pinned", "dlib-150", "NHWC", "uint8", sha256="0" * 64)
    from regard.vision.custom_models import install

    with pytest.raises(InvalidParameterError, match="SHA-256"):
        install(port_file, "7.0", pinned)
    # installed but not calibrated: no collection may use it
    store = Store(f"sqlite:///{tmp_path / 'r.db'}", checkpoint_dir=False)
    svc = RegardService(engine, store, default_purpose="byom")
    with pytest.raises(InvalidParameterError, match="not calibrated"):
        svc.create_collection(CollectionId="c", Tags={"regard:face-model": "5.0"})
    store.close()
    # its embeddings are dlib's: the port runs through the pack like any model
    pack = packs.get_pack("5.0")
    faces = engine.detect(encode(astronaut), embed=True, pack=pack).faces
    reference = engine.detect(encode(astronaut), embed=True, pack=packs.get_pack("1.0")).faces
    assert np.abs(faces[0].embedding - reference[0].embedding).max() < 1e-4


@pytest.mark.data
@pytest.mark.slow
def test_calibration_reproduces_the_shipped_rule_and_serves(home, port_file, dev_data, engine,
                                                            tmp_path):
    """Calibrated on the London set (identity-labelled, self-reported ethnicity), the operator's
    copy of dlib's model gets the table the shipped rule gives dlib's own pack on the same
    images; then it binds a collection and searches with it."""
    from regard.evaluation.calibration_fit import fit_table, identity_labelled_distances
    from regard.evaluation.layouts import read_labels

    london = dev_data / "demographics" / "london_face_set"
    assert _run("models", "add", str(port_file), "--version", "5.0",
                "--recipe", "dlib-resnet-onnx")[0] == 0
    code, output = _run("models", "calibrate", "5.0", "--labels", str(london), "--workers", "1")
    assert code == 0, output
    assert "calibrated on" in output and "set by" in output
    table = json.loads((home / "models" / "packs" / "5.0" / "calibration.json").read_text())

    # the same rule on the built-in pack's embeddings of the same images
    labelled = read_labels(london)
    builtin = packs.get_pack("1.0")
    rows, ids, cells = [], [], []
    for image in labelled.images:
        found = engine.detect(image.path, embed=True, pack=builtin)
        from regard.evaluation.embeddings import central_face

        face = central_face(found.faces, found.width, found.height)
        rows.append(face.embedding if face is not None else np.full(128, np.nan, np.float32))
        ids.append(f"{london.name}/{image.identity}")
        cells.append(f"{london.name} " + ", ".join(f"{k}={v}"
                                                   for k, v in sorted(image.groups.items())))
    impostors, genuine = identity_labelled_distances(np.stack(rows), ids, cells)
    expected = fit_table(impostors, genuine, data="", description="", zero_distance=1.5)
    for mine, theirs in zip(table["anchors"][1:-1], expected["anchors"][1:-1]):
        assert mine["similarity"] == theirs["similarity"] and mine["set_by"] == theirs["set_by"]
        assert mine["distance"] == pytest.approx(theirs["distance"], abs=1e-4)

    store = Store(f"sqlite:///{tmp_path / 'r.db'}", checkpoint_dir=False)
    svc = RegardService(engine, store, default_purpose="byom")
    made = svc.create_collection(CollectionId="c", Tags={"regard:face-model": "5.0"})
    assert made["FaceModelVersion"] == "5.0"
    first, second = sorted((london / "images").iterdir())[0].iterdir()
    svc.index_faces(CollectionId="c", Image={"Bytes": first.read_bytes()})
    found = svc.search_faces_by_image(CollectionId="c", Image={"Bytes": second.read_bytes()},
                                      FaceMatchThreshold=0)
    assert found["FaceModelVersion"] == "5.0" and found["FaceMatches"]
    store.close()
