"""Position extension by copying (issue 13, first step): short texts unchanged, long texts accepted."""

from __future__ import annotations

import pytest
import torch

from sparsefinder.cli import main
from sparsefinder.encoder import SparseEncoder
from sparsefinder.model import load_encoder, model_info, packaged_model_path
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.training.long_context import extend_positions


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    return extend_positions(packaged_model_path(), tmp_path_factory.mktemp("long") / "m1024", 1024)


def test_first_positions_are_kept_and_the_rest_copied(extended):
    old = load_encoder(packaged_model_path())[0].embeddings.position_embeddings.weight
    new = load_encoder(extended)[0].embeddings.position_embeddings.weight
    assert new.shape == (1024, old.shape[1]) and model_info(extended).max_positions == 1024
    assert torch.equal(new[:512], old) and torch.equal(new[512:], old)


def test_short_text_embeds_as_before_and_long_text_runs_sparse(extended):
    short = ["Sparse attention keeps only a few keys per query."]
    before = SparseEncoder(packaged_model_path()).encode(short, "dense").embeddings
    longer = SparseEncoder(extended)
    assert torch.equal(longer.encode(short, "dense").embeddings, before)
    text = " ".join(["the cat sat on the mat and looked at the dog ."] * 70)  # about 840 tokens
    window = predictor_from_spec("window16").fit(None)
    res = longer.encode([text], window)
    assert res.num_tokens[0] > 512 and 0.9 < min(res.sparsity) < 1.0
    certified = longer.encode([text], window, certified=True)  # past 512 tokens, still exact
    dense = longer.encode([text], "dense")
    assert float((certified.embeddings * dense.embeddings).sum()) > 0.99999


def test_bad_lengths_and_occupied_folders_are_refused(extended, tmp_path, capsys):
    assert main(["extend-positions", "--model", str(packaged_model_path()), "--out", str(tmp_path / "x"),
                 "--max-positions", "256"]) == 2
    assert "--max-positions must be an integer above the model's 512" in capsys.readouterr().err
    assert main(["extend-positions", "--model", str(packaged_model_path()), "--out", str(extended),
                 "--max-positions", "2048"]) == 2
    assert "not empty" in capsys.readouterr().err
