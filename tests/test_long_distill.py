"""Long documents (issue 13): the windowed teacher's targets, the exact-support oracle the student trains
through, and ``distil-long`` (resume, model card, bad input)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from sparsefinder.alpha_entmax import entmax, support
from sparsefinder.attention import cpu_rows
from sparsefinder.attention.sparse import sparse_entmax_attention
from sparsefinder.cli import main
from sparsefinder.config import default_data_dir
from sparsefinder.corpus import iter_articles, long_article_ids
from sparsefinder.encoder import SparseEncoder
from sparsefinder.errors import ConflictError
from sparsefinder.hf.attention import CONFIG_WINDOW
from sparsefinder.inputs import AttentionInputs
from sparsefinder.model import load_encoder, packaged_model_path
from sparsefinder.predictors.oracle import OracleSupport
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.store import ArtifactStore
from sparsefinder.training.checkpoints import checkpoint_dir
from sparsefinder.training.long_distill import distil_long, long_loss, student_attention
from sparsefinder.training.windowed_teacher import (central_window, long_fidelity, window_starts,
                                                    windowed_targets)

# windows of 40 tokens (stride 20) over documents of 100: every document needs four teacher windows
RUN = dict(max_positions=1024, doc_tokens=100, window=40, stride=20, steps=3, lr=1e-4, checkpoint_every=2,
           progress=False)


class PositionTeacher(nn.Module):
    """A fake teacher whose state of the token at window position ``p`` is ``(token id, p, 1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        b, n = input_ids.shape
        pos = torch.arange(n).expand(b, n)
        return SimpleNamespace(last_hidden_state=torch.stack([input_ids.float(), pos.float(), torch.ones(b, n)], -1))


def test_long_article_ids_keep_the_long_articles_cut_in_order(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_path())
    path = tmp_path / "articles.txt"
    path.write_text(" = Short = \n a cat sat \n = Long = \n one two three four five six \n = = Part = = \n seven eight \n"
                    " = Also long = \n alpha beta gamma delta epsilon zeta eta \n")
    every = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in iter_articles(path)]
    assert [len(ids) for ids in every] == [3, 8, 7]
    assert list(long_article_ids(path, tokenizer, 5)) == [every[1][:5], every[2][:5]]
    assert list(long_article_ids(path, tokenizer, 8)) == [every[1]]
    assert list(long_article_ids(path, tokenizer, 9)) == []


def test_window_starts_cover_the_document_and_end_at_its_end():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(4, 4, 3) == window_starts(2, 4, 3) == [0]
    for m, room, stride in [(100, 38, 19), (37, 10, 10), (50, 7, 3)]:
        starts = window_starts(m, room, stride)
        covered = torch.zeros(m, dtype=torch.bool)
        for s in starts:
            covered[s:s + room] = True
        assert bool(covered.all()) and starts[-1] + room == m


@pytest.mark.parametrize("m,room,stride", [(100, 38, 19), (50, 7, 3), (23, 10, 4)])
def test_each_token_goes_to_the_window_where_it_is_most_central(m, room, stride):
    starts = window_starts(m, room, stride)
    owner = central_window(m, starts, room)
    for i in range(m):
        margins = [min(i - s, s + room - 1 - i) if s <= i < s + room else -1 for s in starts]
        assert int(owner[i]) == margins.index(max(margins))  # the earliest best window


def test_windowed_targets_on_a_synthetic_teacher():
    body = list(range(1000, 1050))  # 50 body tokens, windows of 12 (10 body tokens), stride 5
    t = windowed_targets(PositionTeacher(), body, cls_id=1, sep_id=2, window=12, stride=5)
    starts = window_starts(50, 10, 5)
    assert t.windows == len(starts) and t.tokens.shape == (50, 3)
    for i, token in enumerate(body):
        best = max(starts, key=lambda s: (min(i - s, s + 9 - i) if s <= i < s + 10 else -1, -s))
        assert t.tokens[i].tolist() == [token, i - best + 1, 1.0]  # its state at its place in that window
    windows = [torch.tensor([[1.0, 0, 1]] + [[tok, p + 1, 1] for p, tok in enumerate(body[s:s + 10])]
                            + [[2.0, 11, 1]]) for s in starts]
    expected = torch.stack([nn.functional.normalize(w.mean(0), dim=0) for w in windows]).mean(0)
    assert torch.allclose(t.embedding, nn.functional.normalize(expected, dim=0), atol=1e-6)


def test_loss_and_fidelity_are_perfect_on_the_teachers_own_states():
    body = list(range(1000, 1030))
    t = windowed_targets(PositionTeacher(), body, cls_id=1, sep_id=2, window=12, stride=5)
    states = torch.cat([t.tokens[:1], t.tokens, t.tokens[-1:]])
    states = states - states.mean(0) + t.embedding * states.shape[0] ** 0.5  # mean pools to the target embedding
    loss, parts = long_loss(states, t)
    assert parts["embedding"] == pytest.approx(0.0, abs=1e-6)
    exact = torch.cat([t.tokens[:1], t.tokens, t.tokens[-1:]])
    fid = long_fidelity([exact], [t])
    assert fid["token_cosine_mean"] == pytest.approx(1.0, abs=1e-6) and fid["nearest_own"] == 1
    assert long_loss(exact, t)[1]["token"] == pytest.approx(0.0, abs=1e-6)


def test_the_token_term_is_the_mean_token_state_distance_to_the_teacher():
    body = list(range(1000, 1030))
    t = windowed_targets(PositionTeacher(), body, cls_id=1, sep_id=2, window=12, stride=5)
    states = torch.cat([t.tokens[:1], t.tokens, t.tokens[-1:]]).double()  # the MSE term is large: exact sums
    states[1:-1:2, 0] = -states[1:-1:2, 0]  # every other token state turned (almost) opposite to its target
    expected = 1 - nn.functional.cosine_similarity(states[1:-1], t.tokens, dim=-1).mean()
    assert 0.9 < float(expected) < 1.1
    plain, parts = long_loss(states, t, token_weight=0.0)
    weighted, weighted_parts = long_loss(states, t, token_weight=2.5)
    assert parts["token"] == weighted_parts["token"] == pytest.approx(float(expected), rel=1e-6)
    assert float(weighted - plain) == pytest.approx(2.5 * float(expected), rel=1e-5)


@pytest.mark.parametrize("kernels", [True, False])
def test_support_oracle_is_the_gold_graph_of_every_sequence(kernels, monkeypatch):
    monkeypatch.setattr(cpu_rows, "available", lambda: kernels)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 2, 40, 8, generator=g) * 2, torch.randn(3, 2, 40, 8, generator=g) * 2
    lengths = torch.tensor([40, 25, 1])
    inputs = AttentionInputs(0, q, k, torch.full((3, 40), -1), lengths)
    pattern = OracleSupport().fit(None).predict(inputs)
    for b, n in enumerate(lengths.tolist()):
        gold = torch.zeros(2, 40, 40, dtype=torch.bool)
        gold[:, :n, :n] = support(q[b, :, :n] @ k[b, :, :n].transpose(-1, -2) / 8**0.5, 1.5)
        assert torch.equal(pattern.to_dense()[b], gold)
    assert predictor_from_spec("oracle-support").spec == "oracle-support"


def test_training_through_the_support_is_dense_entmax_forward_and_backward():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 30, 8, generator=g, dtype=torch.float64) * 2 for _ in range(3))
    pattern = OracleSupport().fit(None).predict(AttentionInputs(0, q, k, torch.full((1, 30), -1), torch.tensor([30])))
    grads = []
    for sparse in (True, False):
        a, b, c = (x.clone().requires_grad_(True) for x in (q, k, v))
        out = sparse_entmax_attention(a, b, c, pattern, 1.5) if sparse else \
            entmax(a @ b.transpose(-1, -2) / 8**0.5, 1.5) @ c
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append([out.detach(), a.grad, b.grad, c.grad])
    for x, y in zip(*grads):
        assert torch.allclose(x, y, atol=1e-9)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    articles = list(iter_articles(default_data_dir() / "valid.txt"))[:2]
    path = tmp_path_factory.mktemp("long") / "articles.txt"
    path.write_text("".join(f" = Article {i} = \n {a[:2500]} \n" for i, a in enumerate(articles)))
    return path


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("straight") / "model"
    return out, distil_long(corpus, out, **RUN)


def test_resume_continues_on_the_same_trajectory_and_the_folder_loads(corpus, straight, tmp_path):
    straight_out, record = straight
    out = tmp_path / "model"
    first = distil_long(corpus, out, stop_after=2, **RUN)
    assert first["status"] == "interrupted" and not out.exists() and checkpoint_dir(out).is_dir()
    with pytest.raises(ConflictError, match="--resume"):
        distil_long(corpus, out, **RUN)
    final = distil_long(corpus, out, resume=True, **RUN)
    assert final["losses"] == record["losses"] and len(record["losses"]) == 3
    a, b = load_file(straight_out / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[x], b[x]) for x in a)
    assert not checkpoint_dir(out).exists()
    model, tokenizer, info = load_encoder(out, "sparsefinder_sparse")
    assert info.max_positions == 1024 and tokenizer.model_max_length == 1024
    held = record["holdout_fidelity"]
    assert held["after"]["documents"] == record["corpus"]["holdout_documents"] >= 1
    assert "nearest is own" in (out / "README.md").read_text()
    assert json.loads((out / "long.json").read_text())["training"]["window"] == 40


def test_student_attention_is_the_exact_support_or_the_band():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 2, 30, 8, generator=g) * 2, torch.randn(1, 2, 30, 8, generator=g) * 2
    inputs = AttentionInputs(0, q, k, torch.full((1, 30), -1), torch.tensor([30]))
    exact, reading = student_attention(1.5, 0)
    assert torch.equal(exact.predict(inputs).to_dense()[0], support(q[0] @ k[0].transpose(-1, -2) / 8**0.5, 1.5))
    assert reading.startswith("exact support")
    band, reading = student_attention(1.5, 3)
    offsets = (torch.arange(30)[:, None] - torch.arange(30)[None, :]).abs()
    assert torch.equal(band.predict(inputs).to_dense()[0], (offsets <= 3).expand(2, 30, 30))
    assert reading.startswith("±3 window (window3)")


def test_a_banded_student_trains_and_is_read_through_its_band(corpus, straight, tmp_path):
    out = tmp_path / "banded"
    record = distil_long(corpus, out, **{**RUN, "attention_window": 8})
    assert record["training"]["attention_window"] == 8 and record["training"]["attention"].startswith("±8 window")
    # the same starting model read through the band (before) is not the exact reading of the straight run
    before, exact_before = record["holdout_fidelity"]["before"], straight[1]["holdout_fidelity"]["before"]
    assert before["token_cosine_mean"] != pytest.approx(exact_before["token_cosine_mean"], abs=1e-4)
    assert record["losses"] != straight[1]["losses"]
    assert "`sparsefinder_attention_window: 8`" in (out / "README.md").read_text()
    # the model declares its band: every mode reads it through the band, as it was trained
    encoder = SparseEncoder(model=out, device="cpu")
    assert encoder.info.attention_window == 8 and encoder.info.id.endswith("-band8")
    text = [" ".join(["the long river flows past the old mill"] * 6)]  # 50 tokens, well past the band
    dense = encoder.encode(text, "dense").embeddings
    for mode in ("exact", predictor_from_spec("window8").fit(None), predictor_from_spec("window30").fit(None)):
        torch.testing.assert_close(encoder.encode(text, mode).embeddings, dense, atol=1e-5, rtol=0)
    assert encoder.encode(text, predictor_from_spec("window30").fit(None)).sparsity == \
        encoder.encode(text, predictor_from_spec("window8").fit(None)).sparsity  # the wider band is cut to 8
    setattr(encoder.model.config, CONFIG_WINDOW, 0)
    assert float((encoder.encode(text, "dense").embeddings * dense).sum()) < 0.9999  # the band changes the model


@pytest.mark.parametrize("flags,message", [
    (["--doc-tokens", "30"], "above the window"),
    (["--window", "600"], "longer than the teacher"),
    (["--steps", "0"], "steps must be at least 1"),
    (["--token-weight", "-1"], "token weight must be at least 0"),
    (["--attention-window", "-1"], "attention window must be at least 0"),
])
def test_bad_options_exit_2_with_one_line(flags, message, corpus, tmp_path, capsys):
    code = main(["distil-long", "--corpus", str(corpus), "--out", str(tmp_path / "m"), "--window", "40", *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and not (tmp_path / "m").exists()


def test_pipeline_long_adds_a_report_at_the_long_models_length(tmp_path, monkeypatch, capsys):
    import sparsefinder.cli.pipeline_command as cli_pipeline

    articles = list(iter_articles(default_data_dir() / "valid.txt"))[:6]
    corpus = tmp_path / "articles.txt"
    corpus.write_text("".join(f" = Article {i} = \n {a[:2500]} \n" for i, a in enumerate(articles)))
    small = dict(LONG_MAX_POSITIONS=1024, LONG_DOC_TOKENS=100, LONG_STEPS=2, LONG_WINDOW=40, LONG_STRIDE=20,
                 PIPELINE_LONG_FIT_SEQUENCES=2, PIPELINE_LONG_EVAL_SEQUENCES=1)
    for name, value in small.items():
        monkeypatch.setattr(cli_pipeline, name, value)
    monkeypatch.setenv("SPARSEFINDER_WORK_DIR", str(tmp_path / "work"))
    args = ["pipeline", "--no-adapt", "--long", "--fit-corpus", str(corpus), "--eval-corpus", str(corpus),
            "--predictors", "proj4-score-thr-ep0", "--max-length", "64", "--fit-sequences", "4",
            "--eval-sequences", "2", "--store", str(tmp_path / "store"), "--reports", str(tmp_path / "reports")]
    assert main(args) == 0
    reports = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert reports == ["articles-all-MiniLM-L6-v2-L64-n2", "articles-all-MiniLM-L6-v2-long1k-L1024-n1"]
    long = json.loads((tmp_path / "reports" / reports[1] / "report.json").read_text())
    assert long["dataset"]["max_length"] == 1024 and long["dataset"]["model_id"].startswith("all-MiniLM-L6-v2-long1k@")
    assert [p["spec"] for p in long["predictors"]] == ["proj24-thr", "window"]
    assert (tmp_path / "work" / "models" / "all-MiniLM-L6-v2-long1k" / "long.json").is_file()
    written = {r: (tmp_path / "reports" / r / "report.json").stat().st_mtime_ns for r in reports}
    capsys.readouterr()
    assert main(args) == 0  # every step cached: the same two reports, not evaluated again
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == reports
    assert {r: (tmp_path / "reports" / r / "report.json").stat().st_mtime_ns for r in reports} == written
    assert capsys.readouterr().out.count("already written for this dataset and these predictors") == 2
    fitted = [i for i in ArtifactStore(tmp_path / "store").list() if "long1k" in i.model_id]
    assert [i.fit_sequences for i in fitted] == [2]  # fitted once
    monkeypatch.setattr(cli_pipeline, "PIPELINE_LONG_FIT_SEQUENCES", 3)  # other fit data: fitted again
    assert main(args) == 0
    fitted = [i for i in ArtifactStore(tmp_path / "store").list() if "long1k" in i.model_id]
    assert sorted(i.fit_sequences for i in fitted) == [2, 3]
    rewritten = {r: (tmp_path / "reports" / r / "report.json").stat().st_mtime_ns for r in reports}
    assert rewritten[reports[0]] == written[reports[0]] and rewritten[reports[1]] != written[reports[1]]
    monkeypatch.setattr(cli_pipeline, "LONG_STEPS", 3)  # other settings: the encoder already trained is kept
    assert main(args) == 0
    assert "using the encoder already trained in" in capsys.readouterr().err
