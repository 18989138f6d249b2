"""The per-query threshold predictor (issue 12): adaptive budgets, calibrated recall, ``auto``."""

from __future__ import annotations

import pytest
import torch
from synthetic import uneven_group_dataset

from sparsefinder.alpha_entmax import support
from sparsefinder.choice import auto_choice, knob_for_recall, resolve_choice
from sparsefinder.dataset import InMemoryDataset, Sequence, batch_inputs
from sparsefinder.errors import SparsefinderError
from sparsefinder.evaluation import Candidate, evaluate
from sparsefinder.metrics import compare
from sparsefinder.pattern import Pattern
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.predictors.sparsefinder_family import approximate_threshold
from sparsefinder.store import ArtifactStore


def test_adaptive_budget_keeps_exactly_supports_of_varying_size():
    """Groups of 1, 2, 3, 5, 8 and 13 tokens: each query's support is its group, whatever its size."""
    data = uneven_group_dataset(sequences=4)
    predictor = predictor_from_spec("proj8-score-thr1-ep0").fit(data)  # full rank: the scores are exact
    for seq in data.sequences():
        for layer in range(2):
            assert predictor.predict(seq.inputs(layer)) == seq.gold[layer]
    seq = next(data.sequences())
    for k in range(1, 14):  # one budget for every query cannot follow supports of 1 to 13 keys
        fixed = predictor_from_spec(f"proj8-score-knn{k}-ep0").fit(data).predict(seq.inputs(0))
        m = compare(fixed, seq.gold[0])
        assert float(m["recall"].min()) < 1.0 or float(m["precision"].min()) < 1.0


def _gaussian_dataset(sequences: int, seed: int, n: int = 48, heads: int = 2, dim: int = 8) -> InMemoryDataset:
    gen = torch.Generator().manual_seed(seed)
    seqs = []
    for _ in range(sequences):
        q, k = (torch.randn(1, heads, n, dim, generator=gen) * 1.6 for _ in range(2))
        gold = [Pattern.from_dense(support(q[0] @ k[0].transpose(-1, -2) / dim**0.5, 1.5))]
        seqs.append(Sequence(torch.arange(n), q.half(), k.half(), k.half(), gold))
    return InMemoryDataset(seqs)


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_calibration_reaches_the_requested_recall_on_new_data(target):
    """Rank-3 maps of 8-dimensional heads: noisy scores whose slack the held-aside fit data calibrates."""
    fit, test = _gaussian_dataset(24, seed=0), _gaussian_dataset(24, seed=1)
    predictor = predictor_from_spec(f"proj3-score-thr{target}-ep0").fit(fit)
    report = evaluate(test, [Candidate(predictor)], progress=False)
    setting = report["predictors"][0]["settings"][0]
    assert setting["requested_recall"] == target
    # the calibration spends half the allowed misses (miss_share 0.5): on fit-like data recall lands near
    # 1 − (1 − target) / 2, never below the target
    assert target - 0.01 <= setting["recall"] <= 1 - (1 - target) * 0.5 + 0.03
    assert setting["sparsity"] > 0.3  # noisy, yet far from keeping everything
    pure = evaluate(test, [Candidate(predictor.set_params(miss_share=1.0))], progress=False)
    assert abs(pure["predictors"][0]["settings"][0]["recall"] - target) <= 0.03  # all misses spent: as asked


def test_approximate_threshold_is_the_entmax_threshold():
    scores = torch.randn(3, 5, 40, generator=torch.Generator().manual_seed(2)) * 3
    scores[0, 0, 10:] = float("-inf")  # absent keys
    t = approximate_threshold(scores, 1.5)
    assert torch.equal(scores > t, support(scores, 1.5))


def test_sweep_equals_one_prediction_per_target_and_batches_equal_sequences():
    data = _gaussian_dataset(8, seed=3)
    predictor = predictor_from_spec("proj4-score-thr-ep0").fit(data)
    seqs = list(data.sequences())[:2]
    inputs, _ = batch_inputs([seqs[0], Sequence(seqs[1].input_ids[:30], seqs[1].queries[:, :, :30],
                                                seqs[1].keys[:, :, :30], seqs[1].values[:, :, :30], seqs[1].gold)], 0)
    targets = [0.8, 0.95, 0.999]
    swept = predictor.predict_sweep(inputs, targets)
    for target, pattern in zip(targets, swept):
        predictor.set_params(recall=target)
        assert pattern == predictor.predict(inputs)
        assert pattern.sequence(1) == predictor.predict(batch_inputs([inputs_seq(seqs[1], 30)], 0)[0])
    assert [p.nnz for p in swept] == sorted(p.nnz for p in swept)  # a higher target keeps more


def test_rows_by_chunk_are_the_pattern_and_each_chunk_is_only_as_wide_as_its_rows(monkeypatch):
    from sparsefinder import config

    data = _gaussian_dataset(8, seed=5)
    predictor = predictor_from_spec("proj4-score-thr0.6-ep0").fit(data)
    inputs, _ = batch_inputs(list(data.sequences())[:2], 0)
    whole = predictor.predict(inputs)
    monkeypatch.setattr(config, "PREDICT_CHUNK_SCORES", 7 * inputs.batch_size * inputs.num_heads * inputs.length)
    rows = list(predictor.predict_rows(inputs))
    assert [start for start, _, _ in rows] == list(range(0, inputs.length, 7))
    assert Pattern.cat_rows([(index, counts) for _, index, counts in rows], inputs.lengths) == whole
    assert all(index.shape[-1] == max(int(counts.max()), 1) for _, index, counts in rows)
    assert min(index.shape[-1] for _, index, _ in rows) < whole.width


@pytest.mark.parametrize("band", [0, 6])
def test_fused_route_equals_its_pattern_attended_chunk_by_chunk_in_a_padded_batch(band, monkeypatch):
    """``attend_rows`` (prediction and attention in one pass a row) on a padded batch, in chunks of 7 queries, with and
    without a band: the output and kept pairs of :meth:`predict`'s pattern attended by ``sparse_entmax_attention``;
    certified, the output, certified pairs and keys added of ``certified_entmax_attention`` on that pattern."""
    from sparsefinder import config
    from sparsefinder.attention.certified import certified_entmax_attention
    from sparsefinder.attention.sparse import sparse_entmax_attention

    data = _banded_dataset(8, seed=6, band=band) if band else _gaussian_dataset(8, seed=6)
    predictor = predictor_from_spec("proj4-score-thr0.9-ep0").fit(data)
    seqs = list(data.sequences())
    inputs, _ = batch_inputs([seqs[0], inputs_seq(seqs[1], 30)], 0, band=band)
    values = torch.randn(2, 2, 48, 5, generator=torch.Generator().manual_seed(2))
    pattern = predictor.predict(inputs)
    monkeypatch.setattr(config, "PREDICT_CHUNK_SCORES", 2 * 2 * 48 * 7)
    out, kept, added = predictor.attend_rows(inputs, values, 1.5, 0.3)
    expected = sparse_entmax_attention(inputs.queries, inputs.keys, values, pattern, 1.5, 0.3)
    torch.testing.assert_close(out[0], expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :, :30], expected[1, :, :30], atol=1e-5, rtol=1e-5)
    assert torch.equal(kept, pattern.counts.sum(-1)) and 0 < int(kept.min()) and not added.any()
    out, kept, added = predictor.attend_rows(inputs, values, 1.5, 0.3, certified=True)
    reference = certified_entmax_attention(inputs.queries, inputs.keys, values, pattern, 1.5, 0.3, window=band)
    torch.testing.assert_close(out[0], reference.output[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :, :30], reference.output[1, :, :30], atol=1e-5, rtol=1e-5)
    assert torch.equal(kept, reference.kept) and torch.equal(added, reference.keys_added) and int(added.sum()) > 0
    assert predictor.attend_rows(inputs, values, 2.0, 0.3) is None  # the row kernels are α = 1.5 only
    predictor.set_params(window=2)
    assert predictor.attend_rows(inputs, values, 1.5, 0.3) is None  # extras are joined to whole patterns


def inputs_seq(seq: Sequence, n: int) -> Sequence:
    return Sequence(seq.input_ids[:n], seq.queries[:, :, :n], seq.keys[:, :, :n], seq.values[:, :, :n], seq.gold)


def test_auto_and_recall_resolve_to_the_setting_the_report_says(tmp_path):
    data = _gaussian_dataset(8, seed=4)
    store = ArtifactStore(str(tmp_path / "store"))
    knn = predictor_from_spec("proj4-score-knn4-ep0").fit(data)
    thr = predictor_from_spec("proj4-score-thr-ep0").fit(data)
    ids = {name: store.save(p, dataset=data, fit_seconds=0.0).id for name, p in (("knn", knn), ("thr", thr))}
    report = {"id": "r", "predictors": [
        {"spec": "oracle-topk", "artifact_id": None, "reference": True, "settings": [
            {"knob_value": 4, "recall": 1.0, "sparsity": 0.99}]},
        {"spec": knn.family_spec, "artifact_id": ids["knn"], "settings": [
            {"knob_value": 8, "recall": 0.96, "sparsity": 0.80}, {"knob_value": 16, "recall": 0.995, "sparsity": 0.6}]},
        {"spec": thr.family_spec, "artifact_id": ids["thr"], "settings": [
            {"knob_value": 0.95, "recall": 0.951, "sparsity": 0.85}, {"knob_value": 0.99, "recall": 0.991, "sparsity": 0.7}]},
    ]}
    assert auto_choice(report, 0.99) == (ids["thr"], 0.99)
    assert auto_choice(report, 0.95) == (ids["thr"], 0.95)
    chosen = resolve_choice("auto", store, model_id="in-memory", recall=0.95, report=report)
    assert chosen.artifact_.id == ids["thr"] and chosen.recall == 0.95
    assert knob_for_recall(report, store.load(ids["knn"]), 0.99) == 16
    assert resolve_choice(ids["knn"], store, model_id="in-memory", recall=0.95, report=report).k == 8
    assert resolve_choice(ids["thr"], store, model_id="in-memory", recall=0.9).recall == 0.9  # calibrated: as asked
    with pytest.raises(SparsefinderError, match="in \\(0, 1\\]"):
        resolve_choice("auto", store, model_id="in-memory", recall=1.5, report=report)
    with pytest.raises(SparsefinderError, match="no stored predictor reaches recall 0.999"):
        resolve_choice("auto", store, model_id="in-memory", recall=0.999, report=report)


def test_fit_and_evaluate_take_a_recall_target(tmp_path, capsys):
    """``fit --recall`` stores the target; ``evaluate --recall`` reports requested and measured side by side."""
    import json

    from synthetic import write_dataset

    from sparsefinder.cli import main

    folder = write_dataset(tmp_path / "data", _gaussian_dataset(8, seed=5)).folder
    store = str(tmp_path / "store")
    assert main(["fit", "--data", str(folder), "--predictor", "proj4-score-thr-ep0", "--store", store,
                 "--recall", "0.9", "--quiet"]) == 0
    artifact = json.loads(capsys.readouterr().out.splitlines()[-1])["id"]
    assert ArtifactStore(store).load(artifact).recall == 0.9
    assert main(["fit", "--data", str(folder), "--predictor", "window4", "--store", store, "--recall", "0.9"]) == 2
    assert "not calibrated to a recall target" in capsys.readouterr().err
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(folder), "--predictors", artifact, "window", "--store", store,
                 "--recall", "0.95", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    thr = next(p for p in report["predictors"] if p["knob"] == "recall")
    assert [s["requested_recall"] for s in thr["settings"]] == [0.95]
    assert abs(thr["settings"][0]["recall"] - 0.95) <= 0.1
    window = next(p for p in report["predictors"] if p["name"] == "window")
    assert len(window["settings"]) > 1 and window["settings"][0]["requested_recall"] is None  # still swept


def _banded_dataset(sequences: int, seed: int, band: int, n: int = 48, heads: int = 2, dim: int = 8) -> InMemoryDataset:
    """Gaussian heads of a model that attends within ``±band``: gold graphs are the supports within the band."""
    gen = torch.Generator().manual_seed(seed)
    near = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs() <= band
    seqs = []
    for _ in range(sequences):
        q, k = ((torch.randn(1, heads, n, dim, generator=gen) * 1.6).half().float() for _ in range(2))  # as stored
        scores = (q[0] @ k[0].transpose(-1, -2) / dim**0.5).masked_fill(~near, float("-inf"))
        seqs.append(Sequence(torch.arange(n), q.half(), k.half(), k.half(), [Pattern.from_dense(support(scores, 1.5))]))
    data = InMemoryDataset(seqs)
    data.manifest["model"]["attention_window"] = band
    return data


@pytest.mark.parametrize("kernels", [True, False])
def test_a_banded_models_threshold_is_taken_within_its_band(kernels, monkeypatch):
    """Full rank, so the approximate scores are exact, and a margin of 0: within a ±6 band the predicted pattern is
    each query's support within the band, exactly — chunk by chunk, in a padded batch; read as if the model saw every key
    (the threshold of all 48 keys, higher) it keeps fewer of the band's keys."""
    from sparsefinder import config
    from sparsefinder.predictors import sparsefinder_family

    if not kernels:
        monkeypatch.setattr(sparsefinder_family, "row_kernels_apply", lambda *a: False)
    data = _banded_dataset(8, seed=4, band=6)
    predictor = predictor_from_spec("proj8-score-thr1-ep0").fit(data)
    predictor.slack_quantiles_.zero_()  # margin 0: keep the keys at or above each query's threshold
    seqs = list(data.sequences())
    short = Sequence(seqs[1].input_ids[:30], seqs[1].queries[:, :, :30], seqs[1].keys[:, :, :30],
                     seqs[1].values[:, :, :30], [Pattern.from_dense(support(
                         (seqs[1].queries[0, :, :30].float() @ seqs[1].keys[0, :, :30].float().transpose(-1, -2)
                          / 8**0.5).masked_fill((torch.arange(30)[:, None] - torch.arange(30)).abs() > 6,
                                                 float("-inf")), 1.5))])
    inputs, gold = batch_inputs([seqs[0], short], 0, band=6)
    # 1,344 scores a chunk: 13 queries, whose band spans at most 13 + 12 keys (4 rows × 13 × 25 ≤ 1,344)
    monkeypatch.setattr(config, "PREDICT_CHUNK_SCORES", 2 * 2 * 48 * 7)
    assert predictor.predict(inputs) == gold
    rows = list(predictor.predict_rows(inputs))
    assert [s for s, _, _ in rows] == [0, 13, 26, 39] and Pattern.cat_rows([(i, c) for _, i, c in rows], inputs.lengths) == gold
    every_key = predictor.predict(batch_inputs([seqs[0], short], 0)[0])
    assert every_key.within(6).nnz < gold.nnz and gold.contains(every_key.within(6))
