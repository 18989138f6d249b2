"""The encoder run through ``sparsefinder_sparse`` against dense entmax and the original model."""

from __future__ import annotations

import pytest
import torch

from sparsefinder.encoder import SparseEncoder
from sparsefinder.errors import SparsefinderError
from sparsefinder.hf.attention import CONFIG_WINDOW
from sparsefinder.model import load_encoder, mean_pool
from sparsefinder.predictors.registry import predictor_from_spec

pytestmark = pytest.mark.slow

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello world",
         "Sparse attention equals dense entmax whenever the pattern contains the gold support."]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return SparseEncoder(device="cpu")


def _reference(attn: str, tokenizer) -> torch.Tensor:
    model, _, _ = load_encoder(attn_implementation=attn)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])


def test_full_pattern_equals_dense_entmax_model(encoder):
    full = predictor_from_spec("window512").fit(None)  # every pair of every (padded) sequence
    result = encoder.encode(TEXTS, full)
    dense = _reference("sparsefinder_entmax", encoder.tokenizer)
    torch.testing.assert_close(result.embeddings, dense, atol=1e-5, rtol=0)
    assert result.sparsity == [0.0] * 6 and result.keys_added == [0] * 6
    torch.testing.assert_close(encoder.encode(TEXTS, "dense").embeddings, dense, atol=1e-6, rtol=0)


def test_exact_mode_equals_dense_entmax_and_records_its_support(encoder):
    dense = encoder.encode(TEXTS, "dense")
    exact = encoder.encode(TEXTS, "exact")
    torch.testing.assert_close(exact.embeddings, dense.embeddings, atol=1e-5, rtol=0)
    assert exact.sparsity == [0.0] * 6 and exact.keys_added == [0] * 6  # every score computed, nothing predicted
    with pytest.raises(SparsefinderError, match="'exact' computes every pair"):
        encoder.encode(TEXTS, "exact", certified=True)
    supports = {}
    batch = encoder.tokenize(TEXTS[:1], False)
    for mode in ("dense", "exact"):
        with torch.inference_mode():
            encoder.model(**batch, attention_predictor=mode, attention_recorder=lambda layer, q, k, v, support:
                          supports.setdefault(mode, []).append(support))
    assert supports["exact"] == supports["dense"]  # the exact route's pattern is the gold graph


def test_softmax_mode_is_the_original_model(encoder):
    torch.testing.assert_close(encoder.encode(TEXTS, "softmax").embeddings, _reference("eager", encoder.tokenizer),
                               atol=1e-5, rtol=0)


def test_certified_window_equals_dense_and_window_sparsity_is_hand_counted(encoder):
    dense = encoder.encode(TEXTS, "dense").embeddings
    window = predictor_from_spec("window1").fit(None)
    certified = encoder.encode(TEXTS, window, certified=True)
    torch.testing.assert_close(certified.embeddings, dense, atol=1e-5, rtol=0)
    assert all(k > 0 for k in certified.keys_added)
    plain = encoder.encode(TEXTS, window)
    assert all(c < p for c, p in zip(certified.sparsity, plain.sparsity))  # its pattern plus the keys added
    # a band of width 1 over n tokens keeps 3n − 2 pairs of n²
    expected = sum(1 - (3 * n - 2) / n**2 for n in plain.num_tokens) / len(TEXTS)
    assert plain.sparsity == pytest.approx([expected] * 6)
    assert float((plain.embeddings * dense).sum(-1).min()) < 0.999  # a real approximation


def test_threshold_predictor_fused_route_by_chunks_equals_predicting_then_attending_and_certified_equals_dense(
        encoder, tiny_dataset, monkeypatch):
    """The layer runs the threshold predictor's fused route (prediction and attention in one pass a row, by tasks of a
    few queries, one call a layer; certified: the exact probabilities seeded by the kept keys in the same pass): the
    same output, pairs and keys added as its pattern predicted chunk of queries by chunk and attended afterwards,
    certified equal to dense; in a banded model too."""
    from sparsefinder import config
    from sparsefinder.attention import cpu_rows

    predictor = predictor_from_spec("proj8-score-thr0.9-ep0").fit(tiny_dataset)
    dense = encoder.encode(TEXTS, "dense").embeddings
    whole, certified = encoder.encode(TEXTS, predictor), encoder.encode(TEXTS, predictor, certified=True)
    calls = {"fused": 0, "certified": 0, "select": 0}

    def counted(name: str, fn):
        return lambda *a: calls.update({name: calls[name] + 1}) or fn(*a)

    monkeypatch.setattr(cpu_rows, "thresholded_attention", counted("fused", cpu_rows.thresholded_attention))
    monkeypatch.setattr(cpu_rows, "certified_thresholded_attention",
                        counted("certified", cpu_rows.certified_thresholded_attention))
    monkeypatch.setattr(cpu_rows, "select_rows", counted("select", cpu_rows.select_rows))
    monkeypatch.setattr(config, "PREDICT_CHUNK_SCORES", 3 * 12 * 32)  # three queries of a 32-token batch per chunk
    chunked, chunked_certified = encoder.encode(TEXTS, predictor), encoder.encode(TEXTS, predictor, certified=True)
    assert calls["fused"] == calls["certified"] == 6 and calls["select"] == 0  # a call a layer, no index built
    torch.testing.assert_close(chunked.embeddings, whole.embeddings, atol=1e-6, rtol=0)
    assert chunked.sparsity == pytest.approx(whole.sparsity) and 0 < min(whole.sparsity)
    torch.testing.assert_close(chunked_certified.embeddings, dense, atol=1e-5, rtol=0)
    assert chunked_certified.keys_added == certified.keys_added and chunked_certified.sparsity == pytest.approx(
        certified.sparsity) and sum(certified.keys_added) > 0
    monkeypatch.setattr(predictor, "attend_rows", lambda *a: None)  # predict the rows, then attend over them
    unfused, unfused_certified = encoder.encode(TEXTS, predictor), encoder.encode(TEXTS, predictor, certified=True)
    assert calls["select"] > 2 * 6 * 3  # predicted by chunks (several a layer), for each mode
    torch.testing.assert_close(unfused.embeddings, whole.embeddings, atol=1e-6, rtol=0)
    assert unfused.sparsity == pytest.approx(whole.sparsity, abs=0)
    torch.testing.assert_close(unfused_certified.embeddings, dense, atol=1e-5, rtol=0)
    assert unfused_certified.keys_added == certified.keys_added and unfused_certified.sparsity == pytest.approx(
        certified.sparsity, abs=0)
    monkeypatch.setattr(encoder.model.config, CONFIG_WINDOW, 3, raising=False)  # banded: the route scores the band
    banded_unfused = encoder.encode(TEXTS, predictor)
    monkeypatch.delattr(predictor, "attend_rows")  # the fused route again
    fused_calls = calls["fused"]
    banded = encoder.encode(TEXTS, predictor)
    assert calls["fused"] > fused_calls
    torch.testing.assert_close(banded.embeddings, banded_unfused.embeddings, atol=1e-6, rtol=0)
    assert banded.sparsity == pytest.approx(banded_unfused.sparsity, abs=0)
    assert all(b > w for b, w in zip(banded.sparsity, whole.sparsity))  # within ±3 of each query: fewer pairs
    torch.testing.assert_close(encoder.encode(TEXTS, predictor, certified=True).embeddings,
                               encoder.encode(TEXTS, "dense").embeddings, atol=1e-5, rtol=0)


def test_too_long_text_needs_truncate(encoder):
    long = " ".join(["word"] * 600)
    with pytest.raises(SparsefinderError, match="more than the model's 512"):
        encoder.encode([long], "dense")
    assert encoder.encode([long], "dense", truncate=True).num_tokens == [512]


def test_max_tokens_setting_caps_texts_below_the_model(encoder, monkeypatch):
    monkeypatch.setattr(encoder, "max_tokens", 16)
    text = " ".join(["word"] * 20)
    with pytest.raises(SparsefinderError, match="more than the limit of 16"):
        encoder.encode([text], "dense")
    assert encoder.encode([text], "dense", truncate=True).num_tokens == [16]
    assert encoder.encode(["a short text"], "dense").num_tokens == [5]
    monkeypatch.setattr(encoder, "max_tokens", 4096)  # above the model's positions: the model's 512 stays
    assert encoder.max_length == 512


def test_bad_modes_are_user_errors(encoder):
    with pytest.raises(SparsefinderError):
        encoder.encode(TEXTS, "window4")
    with pytest.raises(SparsefinderError):
        encoder.encode(TEXTS, "dense", certified=True)


def test_encode_cli_writes_one_line_per_text(tmp_path):
    import json

    from sparsefinder.cli import main

    out = tmp_path / "emb.jsonl"
    assert main(["encode", "--text", TEXTS[0], "--text", TEXTS[1], "--predictor", "window2", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["index"] for x in lines] == [0, 1]
    assert len(lines[0]["embedding"]) == 384 and len(lines[0]["sparsity"]) == 6
    n = lines[1]["tokens"]  # "[CLS] hello world [SEP]": 4 tokens, a band of ±2 keeps 14 of 16 pairs
    assert n == 4 and lines[1]["sparsity"] == pytest.approx([2 / 16] * 6)
    assert main(["encode", "--text", "x", "--predictor", "nosuchpredictor", "--out", str(out)]) == 2


def test_fidelity_report_shows_both_gaps(encoder, tmp_path):
    import json

    from sparsefinder.training.fidelity import fidelity_report

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    report = fidelity_report(corpus, ["window512"], tmp_path / "fid", limit=3, certified=True, encoder=encoder)
    rows = {r["mode"]: r for r in report["rows"]}
    assert rows["window512"]["cosine_min"] > 0.99999 and max(rows["window512"]["rel_error"]) < 1e-5
    assert rows["window512+certified"]["keys_added_per_text"] == [0.0] * 6
    assert rows["dense"]["reference"] == "softmax" and rows["dense"]["cosine_mean"] < 0.9999  # entmax ≠ softmax
    assert json.loads((tmp_path / "fid" / "fidelity.json").read_text())["texts"] == 3
    assert (tmp_path / "fid" / "fidelity.csv").read_text().count("\n") == 4
    assert (tmp_path / "fid" / "fidelity.png").stat().st_size > 0


def test_token_budget_groups_texts_by_length_and_keeps_their_order(encoder):
    window = predictor_from_spec("window2").fit(None)
    texts = TEXTS + ["Short.", " ".join(["Sparse attention on a longer text"] * 6)]
    lengths = [len(ids) for ids in encoder.tokenizer(texts)["input_ids"]]
    joined_budget = encoder.batch_tokens
    try:
        encoder.batch_tokens = max(lengths) * len(texts)  # one forward pass, padded to the longest text
        joined = encoder.encode(texts, window)
        encoder.batch_tokens = 2 * sorted(lengths)[1]  # the two shortest texts share a pass, the others run alone
        assert encoder.groups(lengths) == [sorted(range(5), key=lengths.__getitem__)[:2]] + \
            [[i] for i in sorted(range(5), key=lengths.__getitem__)[2:]]
        grouped = encoder.encode(texts, window)
    finally:
        encoder.batch_tokens = joined_budget
    torch.testing.assert_close(grouped.embeddings, joined.embeddings, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(grouped.text_sparsity), torch.tensor(joined.text_sparsity))
    assert grouped.num_tokens == lengths
    assert grouped.sparsity == pytest.approx(joined.sparsity)
    # a window of 2 over n tokens keeps 5n − 6 pairs of n²: each text's own sparsity, whatever it was padded to
    assert [row[0] for row in grouped.text_sparsity] == pytest.approx([1 - (5 * n - 6) / n**2 for n in lengths])
