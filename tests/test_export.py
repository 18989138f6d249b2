"""An exported model folder carries its predictor: sentence-transformers runs it with no forward keywords."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparsefinder.hf.attached import attached_certified, attached_predictor
from sparsefinder.cli import main
from sparsefinder.errors import SparsefinderError
from sparsefinder.choice import knob_for_recall
from sparsefinder.export import export_model
from sparsefinder.model import packaged_model_path
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.store import ArtifactStore, resolve_predictor

from conftest import TINY_TEXTS, hand_report

TEXTS = [*TINY_TEXTS, "Short.", "A somewhat longer sentence about attention patterns in small encoders, for padding."]


@pytest.fixture(scope="module")
def learned(tiny_dataset, tmp_path_factory) -> tuple[Path, str]:
    """A store with ``proj4-score-knn8-ep0`` fitted on the tiny real dataset; returns (store, artifact id)."""
    from sparsefinder.training.fit import fit

    store = tmp_path_factory.mktemp("export-store") / "store"
    return store, fit(str(tiny_dataset.folder), "proj4-score-knn8-ep0", str(store)).id


@pytest.fixture(scope="module")
def encoder():
    from sparsefinder.encoder import SparseEncoder

    return SparseEncoder(packaged_model_path(), device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("name, certified", [("window8", False), ("window8", True), ("learned", False)])
def test_sentence_transformers_matches_sparse_encoder(name, certified, learned, encoder, tmp_path):
    from sentence_transformers import SentenceTransformer

    store, artifact_id = learned
    predictor_name = artifact_id if name == "learned" else name
    out = tmp_path / "exported"
    entries = export_model(out, predictor_name, model=str(packaged_model_path()), store=str(store),
                           certified=certified)
    assert (out / entries["sparsefinder_predictor"] / "artifact.json").is_file()
    if name == "learned":  # the artifact travels unchanged: same content, same id
        assert entries["sparsefinder_predictor"] == f"predictor/{artifact_id}"

    st = SentenceTransformer(str(out), device="cpu", model_kwargs={"attn_implementation": "sparsefinder_sparse"})
    config = st[0].auto_model.config
    attached = attached_predictor(config)
    assert attached is not None and attached_certified(config) is certified
    assert attached_predictor(config) is attached  # loaded once per config
    seen: dict[int, list[float]] = {}
    predict = attached.predict

    def recording(inputs):
        pattern = predict(inputs)
        seen.setdefault(inputs.layer, []).extend(pattern.sparsity().mean(-1).tolist())  # one value per text
        return pattern

    attached.predict = recording
    got = st.encode(TEXTS, convert_to_tensor=True, batch_size=2)

    reference = resolve_predictor(predictor_name, ArtifactStore(store))
    ref = encoder.encode(TEXTS, reference, certified=certified)
    cosine = torch.nn.functional.cosine_similarity(got.float(), ref.embeddings, dim=-1)
    assert float(cosine.min()) >= 0.99999
    assert sorted(seen) == list(range(len(ref.sparsity)))
    if not certified:  # the certified mode adds keys after prediction: compare the predicted patterns only
        assert [sum(v) / len(v) for _, v in sorted(seen.items())] == pytest.approx(ref.sparsity, abs=1e-9)
    else:
        assert sum(ref.keys_added) > 0
        dense = encoder.encode(TEXTS, "dense")
        assert float((got.float() * dense.embeddings).sum(-1).min()) >= 0.99999  # certified is exact


def test_recall_target_picks_the_sparsest_setting_reaching_it():
    report, window = hand_report(), predictor_from_spec("window")
    assert knob_for_recall(report, window, 0.5) == 4
    assert knob_for_recall(report, window, 0.3) == 1
    with pytest.raises(SparsefinderError, match="reaches recall 0.9"):
        knob_for_recall(report, window, 0.9)


@pytest.mark.parametrize("args, message", [
    (["--predictor", "dense"], "carry none"),
    (["--predictor", "window8", "--recall", "1.5"], "--recall must be a share of the gold graph in (0, 1]"),
])
def test_export_bad_input_is_a_one_line_error(args, message, tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_export_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    assert main(["export", "--out", str(tmp_path / "x"), "--predictor", "window8"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_exported_config_entries(tmp_path):
    out = tmp_path / "m"
    export_model(out, "window8", model=str(packaged_model_path()), certified=True)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sparsefinder_certified"] is True and cfg["entmax_alpha"] == 1.5
    assert cfg["sparsefinder_predictor_spec"] == "window8"
    modules = json.loads((out / "modules.json").read_text())
    assert [m["path"] for m in modules] == ["", "1_Pooling", "2_Normalize"]
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True


@pytest.mark.slow
def test_export_with_a_recall_target_sets_the_knob(tmp_path, capsys):
    """``--recall 0.5`` on the hand report picks window4 (recall 0.5 at sparsity 0.85)."""
    (tmp_path / "reports" / "r1").mkdir(parents=True)
    (tmp_path / "reports" / "r1" / "report.json").write_text(json.dumps(hand_report()))
    out = tmp_path / "m"
    assert main(["export", "--predictor", "window16", "--model", str(packaged_model_path()), "--out", str(out),
                 "--recall", "0.5", "--report", str(tmp_path / "reports" / "r1")]) == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["sparsefinder_predictor_spec"] == "window4" and cfg["sparsefinder_recall_target"] == 0.5
    artifact = json.loads((out / cfg["sparsefinder_predictor"] / "artifact.json").read_text())
    assert artifact["info"]["params"]["width"] == 4
