"""Distillation of the entmax encoder (issue 8): loss goes down, folder loads, resume is exact, bad inputs exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from sparsefinder.cli import main
from sparsefinder.config import default_data_dir
from sparsefinder.errors import ConflictError, SparsefinderError
from sparsefinder.model import load_encoder
from sparsefinder.training.adapt import adapt, batch_indices, distillation_loss
from sparsefinder.training.checkpoints import checkpoint_dir
from sparsefinder.training.adapt_eval import embedding_fidelity, evaluate_adapted, retrieval_agreement

# 10 texts: 8 train (one batch of 8, so every step sees the same texts), 2 held out
RUN = dict(steps=3, max_length=24, batch_size=8, lr=1e-4, checkpoint_every=2, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    lines = [ln.strip() for ln in (default_data_dir() / "valid.txt").read_text().splitlines() if ln.strip()]
    path = tmp_path_factory.mktemp("adapt") / "tiny.txt"
    path.write_text("\n".join(lines[:10]) + "\n")
    return path


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("straight") / "model"
    return out, adapt(corpus, out, **RUN)


@pytest.fixture(scope="module")
def resumed(corpus, tmp_path_factory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("resumed") / "model"
    first = adapt(corpus, out, stop_after=2, **RUN)
    assert not out.exists() and (checkpoint_dir(out) / "state.pt").is_file()
    with pytest.raises(ConflictError, match="--resume"):
        adapt(corpus, out, **RUN)
    return out, first, adapt(corpus, out, resume=True, **RUN)


def test_distillation_loss_is_zero_on_identical_states_and_ignores_padding():
    h = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    loss, parts = distillation_loss(h, h.clone(), mask)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    other = h.clone()
    other[0, 3:] += 100.0  # padding positions only
    assert float(distillation_loss(h, other, mask)[0]) == pytest.approx(0.0, abs=1e-6)
    shifted = h + 1.0
    assert distillation_loss(shifted, h, mask)[1]["hidden_mse"] == pytest.approx(1.0, rel=1e-5)


def test_batches_cover_each_epoch_once_and_depend_only_on_the_step():
    epoch = [i for s in range(5) for i in batch_indices(s, 10, 2, seed=3)]
    assert sorted(epoch) == list(range(10))
    assert batch_indices(7, 10, 2, seed=3) == batch_indices(7, 10, 2, seed=3)
    assert batch_indices(0, 10, 10, seed=3) != batch_indices(0, 10, 10, seed=4)


def test_a_few_steps_lower_the_loss(straight):
    _, record = straight
    losses = record["losses"]
    assert len(losses) == 3 and record["status"] == "complete"
    assert losses[-1] < losses[0]
    assert all(b < a for a, b in zip(losses, losses[1:]))  # same 8 texts every step


def test_resume_continues_on_the_same_trajectory(straight, resumed):
    straight_out, straight_record = straight
    out, first, final = resumed
    assert first["status"] == "interrupted" and first["step"] == 2
    assert final["losses"][:2] == first["losses"]
    assert final["losses"] == straight_record["losses"]
    a, b = load_file(straight_out / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not checkpoint_dir(out).exists()
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    again = adapt(straight_record["corpus"]["path"], out, **RUN)  # a finished run is reused, not repeated
    assert again["key"] == final["key"] and (out / "model.safetensors").stat().st_mtime_ns == mtime


def test_saved_folder_loads_with_automodel_and_with_our_attention(straight):
    out, record = straight
    plain = AutoModel.from_pretrained(out)
    assert plain.config.entmax_alpha == 1.5
    model, tokenizer, info = load_encoder(out, attn_implementation="sparsefinder_entmax")
    base, _, _ = load_encoder(None, attn_implementation="sparsefinder_entmax")
    enc = tokenizer(["The entmax encoder."], return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
        h_base = base(**enc).last_hidden_state
        h_plain = plain.eval()(**enc).last_hidden_state
    assert not torch.allclose(h, h_base)  # the weights were trained
    assert not torch.allclose(h, h_plain)  # our attention is not softmax
    assert info.id.startswith("model@")
    meta = json.loads((out / "adapt.json").read_text())
    assert meta["alpha"] == 1.5 and meta["training"]["steps"] == 3
    card = (out / "README.md").read_text()
    assert "α = 1.5" in card and "3 steps" in card and "adapted entmax" in card


def test_adapt_eval_writes_fidelity_into_the_model_card(straight, corpus, tmp_path):
    out, _ = straight
    result_file = tmp_path / "fid.json"
    assert main(["adapt-eval", "--corpus", str(corpus), "--model", str(out), "--texts", "8", "--max-length", "24",
                 "--sparsity-sequences", "1", "--out", str(result_file)]) == 0
    result = json.loads(result_file.read_text())
    assert result["texts"] == 8 and result["alpha"] == 1.5
    for name in ("unadapted", "adapted"):
        assert -1 <= result[name]["cosine_worst"] <= result[name]["cosine_mean"] <= 1
        assert 0 <= result[name]["retrieval"]["top1"] <= 1
    sparsity = result["gold_sparsity"]
    assert len(sparsity["per_layer"]) == 6 and all(0 < s < 1 for s in sparsity["per_layer"])
    assert json.loads((out / "adapt.json").read_text())["test_fidelity"] == result
    assert "tiny.txt" in (out / "README.md").read_text()


def test_fidelity_and_retrieval_on_planted_embeddings():
    ref = torch.nn.functional.normalize(torch.randn(20, 16), dim=-1)
    assert embedding_fidelity(ref, ref)["cosine_worst"] == pytest.approx(1.0)
    assert retrieval_agreement(ref, ref) == {"top1": 1.0, "top5": 1.0}
    flipped = ref.clone()
    flipped[0] = -flipped[0]
    f = embedding_fidelity(flipped, ref)
    assert f["cosine_worst"] == pytest.approx(-1.0) and f["cosine_mean"] == pytest.approx(18 / 20)
    # a rotation keeps every neighbour
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    assert retrieval_agreement(ref @ q, ref) == {"top1": 1.0, "top5": 1.0}


@pytest.mark.parametrize("argv, message", [
    (["--corpus", "/nonexistent/corpus.txt"], "does not exist"),
    (["--alpha", "1.0"], "alpha must be greater than 1"),
    (["--alpha", "0.5"], "alpha must be greater than 1"),
    (["--out", "FILE/model"], "cannot write the output"),
    (["--steps", "0"], "steps must be at least 1"),
])
def test_bad_inputs_exit_2_with_one_line(argv, message, corpus, tmp_path, capsys):
    args = {"--corpus": str(corpus), "--out": str(tmp_path / "m")}
    (tmp_path / "FILE").write_text("a file, not a folder")
    for flag, value in zip(argv[::2], argv[1::2]):
        args[flag] = str(tmp_path / value) if value.startswith("FILE") else value
    code = main(["adapt", *[x for kv in args.items() for x in kv]])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1


def test_evaluate_needs_enough_texts(corpus, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("one\ntwo\nthree\n")
    with pytest.raises(SparsefinderError, match="at least 6"):
        evaluate_adapted(small, model=None, texts=3, sparsity_sequences=0)
