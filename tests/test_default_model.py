"""One default model everywhere: $SPARSEFINDER_MODEL, else the adapted encoder once complete, else the packaged one."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sparsefinder.cli import main
from sparsefinder.config import ADAPTED_MODEL_NAME
from sparsefinder.model import model_info, packaged_model_path, resolve_model
from sparsefinder.store import ArtifactInfo, ArtifactStore


def _fake_adapted(work_dir: Path) -> Path:
    """``<work_dir>/models/minilm-entmax15`` holding links to the packaged model's files (same weights)."""
    folder = work_dir / "models" / ADAPTED_MODEL_NAME
    folder.mkdir(parents=True)
    for f in packaged_model_path().iterdir():
        (folder / f.name).symlink_to(f)
    return folder


@pytest.fixture
def work_dir(tmp_path, monkeypatch) -> Path:
    """An empty work dir as the settings' ``work_dir``, with ``$SPARSEFINDER_MODEL`` unset."""
    monkeypatch.delenv("SPARSEFINDER_MODEL", raising=False)
    monkeypatch.setenv("SPARSEFINDER_WORK_DIR", str(tmp_path / "work"))
    return tmp_path / "work"


def test_without_adapted_model_the_packaged_one_with_a_notice(work_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="sparsefinder.model"):
        assert resolve_model() == packaged_model_path()
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1
    assert "does not exist yet" in notices[0] and "make run" in notices[0]
    assert str(work_dir / "models" / ADAPTED_MODEL_NAME) in notices[0]
    assert model_info().id.startswith("all-MiniLM-L6-v2@")


def test_adapted_model_is_the_default_once_complete(work_dir, caplog):
    folder = _fake_adapted(work_dir)
    with caplog.at_level(logging.WARNING, logger="sparsefinder.model"):
        assert resolve_model() == folder.resolve()
    assert not caplog.records
    info = model_info()
    assert info.id.startswith(f"{ADAPTED_MODEL_NAME}@") and Path(info.path).is_absolute()
    # the packaged folder keeps its id whatever path names it
    assert model_info(packaged_model_path()).id.split("@")[0] == "all-MiniLM-L6-v2"


def test_incomplete_adapted_folder_is_not_used(work_dir):
    folder = work_dir / "models" / ADAPTED_MODEL_NAME
    folder.mkdir(parents=True)
    (folder / "config.json").write_text((packaged_model_path() / "config.json").read_text())  # no weights yet
    assert resolve_model() == packaged_model_path()


def test_setting_wins_over_the_adapted_model(work_dir, monkeypatch, tmp_path):
    _fake_adapted(work_dir)
    monkeypatch.setenv("SPARSEFINDER_MODEL", str(packaged_model_path()))
    assert resolve_model() == packaged_model_path()


def test_relative_model_path_is_recorded_absolute(tmp_path, monkeypatch):
    folder = _fake_adapted(tmp_path)
    monkeypatch.chdir(tmp_path)
    info = model_info(Path("models") / ADAPTED_MODEL_NAME)
    assert info.path == str(folder.resolve())


def test_artifact_without_model_path_still_loads():
    """Artifacts stored before the model path was recorded keep loading."""
    old = {"id": "window-0", "spec": "window", "name": "window", "params": {}, "knob": None, "grid": [],
           "model_id": "m@0", "alpha": 1.5, "max_length": 8, "fit_corpus_sha256": "", "fit_sequences": 1,
           "fit_metrics": {}, "fit_seconds": 0.0, "sparsefinder_version": "0.1.0", "created": "2026-01-01"}
    assert ArtifactInfo.from_dict(old).model_path == ""


@pytest.mark.slow
def test_encode_with_a_stored_predictor_needs_no_model_flag(work_dir, tiny_corpus, tmp_path, capsys, monkeypatch):
    """The predictor fitted on the default (adapted) model is usable by `encode` without --model."""
    from sparsefinder.training.extract import extract
    from sparsefinder.training.fit import fit

    folder = _fake_adapted(work_dir)
    data = extract(tiny_corpus, tmp_path / "data", max_length=32, progress=False)
    assert data.manifest["model"]["path"] == str(folder.resolve())
    store = tmp_path / "store"
    info = fit(str(data.folder), "proj4-score-knn8-ep0", str(store))
    assert info.model_id.startswith(f"{ADAPTED_MODEL_NAME}@")
    assert ArtifactStore(store).info(info.id).model_path == str(folder.resolve())
    out = tmp_path / "x.jsonl"
    code = main(["encode", "--text", "A short text to embed.", "--predictor", info.id, "--store", str(store),
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    row = json.loads(out.read_text())
    assert len(row["embedding"]) == 384 and len(row["sparsity"]) == 6
    # with another default model the error names the predictor's own model folder
    monkeypatch.setenv("SPARSEFINDER_MODEL", str(packaged_model_path()))
    capsys.readouterr()
    assert main(["encode", "--text", "x", "--predictor", info.id, "--store", str(store), "--out", str(out)]) == 2
    assert f"its model is {folder.resolve()} (pass --model)" in capsys.readouterr().err
