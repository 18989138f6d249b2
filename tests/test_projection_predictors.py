"""The Sparsefinder family on synthetic heads with a known answer, and its building blocks."""

from __future__ import annotations

import pytest
import torch
from synthetic import group_of, grouped_dataset

from sparsefinder import faiss_backend
from sparsefinder.errors import SparsefinderError
from sparsefinder.metrics import compare
from sparsefinder.pattern import Pattern
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.predictors.projection import collect_samples, train_layer

GROUPS = 4


@pytest.fixture(scope="module")
def data():
    return grouped_dataset(sequences=2, layers=2, heads=2, length=32, dim=8, groups=GROUPS)


# Each spec keeps exactly the query's own group on the synthetic heads: recall 1.0 at sparsity
# 1 − 1/groups = 0.75 (hand count: 8 of 32 keys per query). top2 keeps two groups: 0.5.
EXACT = [
    ("proj4-shared-knn8-ep1", 0.75),           # margin projections; shared map sends a group to one point
    ("proj4-score-knn8-ep0", 0.75),        # closed-form score approximation alone
    ("proj4-score-knn8-ep2", 0.75),            # ... refined by the score objective
    ("proj4-shared-radius100-ep1", 0.75),      # radius covering 100% of fit gold pairs = 0
    ("proj1-shared-quant4-ep1", 0.75),         # 4 distinct projected values, one per quantile bucket
    ("proj4-shared-kmeans4-top1-ep1", 0.75),   # k-means++ puts one centroid on each group
    ("proj4-shared-kmeans4-top2-ep1", 0.5),
]


@pytest.mark.parametrize("spec,sparsity", EXACT)
def test_recall_one_at_hand_counted_sparsity(data, spec, sparsity):
    predictor = predictor_from_spec(spec).fit(data)
    seq = next(data.sequences())
    for layer in range(2):
        metrics = compare(predictor.predict(seq.inputs(layer)).validate(), seq.gold[layer])
        assert metrics["recall"].tolist() == [[1.0, 1.0]]
        assert metrics["sparsity"].tolist() == [[sparsity, sparsity]]


def test_window_and_global_tokens_are_added(data):
    seq = next(data.sequences())
    n = seq.length
    pattern = predictor_from_spec("proj4-shared-knn8-win1-glob-ep1").fit(data).predict(seq.inputs(0))
    i = torch.arange(n)
    expected = []
    for h in range(2):
        g = group_of(h, n, GROUPS)
        mask = (g[:, None] == g[None, :]) | ((i[:, None] - i[None, :]).abs() <= 1)
        mask[[0, -1], :] = True
        mask[:, [0, -1]] = True
        expected.append(mask)
    assert pattern == Pattern.from_dense(torch.stack(expected))


def test_knn_spec_sets_sparsity_exactly(data):
    seq = next(data.sequences())
    pattern = predictor_from_spec("proj2-knn4-ep1").fit(data).predict(seq.inputs(1))
    assert pattern.row_lengths().eq(4).all()


def test_margin_training_lowers_the_loss(data):
    sample = collect_samples(data, None, torch.Generator().manual_seed(0))[0]
    _, _, losses = train_layer(sample, rank=4, score=False, shared=False, epochs=15,
                               generator=torch.Generator().manual_seed(0))
    assert losses[-1] < 0.5 * losses[0]


def test_score_closed_form_reproduces_low_rank_scores(data):
    sample = collect_samples(data, None, torch.Generator().manual_seed(0))[0]
    wq, wk, _ = train_layer(sample, rank=GROUPS, score=True, shared=False, epochs=0,
                            generator=torch.Generator().manual_seed(0))
    q, k = sample.queries[0], sample.keys[0]  # scores have rank 4: reproduced up to a per-query shift
    true = q @ k.transpose(-1, -2) / 8**0.5
    approx = (q @ wq) @ (k @ wk).transpose(-1, -2)
    diff = approx - true
    torch.testing.assert_close(diff - diff.mean(-1, keepdim=True), torch.zeros_like(diff), atol=1e-3, rtol=0)


def test_batched_prediction_equals_per_sequence_prediction(data):
    """A padded batch of two sequences of different lengths gives each sequence's own pairs."""
    from sparsefinder.dataset import batch_inputs

    gen = torch.Generator().manual_seed(0)
    seqs = [type(s)(s.input_ids, s.queries + 0.1 * torch.randn(s.queries.shape, generator=gen),
                    s.keys + 0.1 * torch.randn(s.keys.shape, generator=gen), s.values, s.gold)
            for s in data.sequences()]  # noise breaks distance ties, so top-k is unique
    short = type(seqs[1])(seqs[1].input_ids[:20], seqs[1].queries[:, :, :20], seqs[1].keys[:, :, :20],
                          seqs[1].values[:, :, :20], seqs[1].gold)
    for spec in ("proj4-score-knn8-ep0", "proj4-shared-radius100-ep1", "proj1-shared-quant4-ep1",
                 "proj4-shared-kmeans4-top2-ep1", "proj4-score-knn8-win1-glob-ep0"):
        predictor = predictor_from_spec(spec).fit(data)
        inputs, _ = batch_inputs([seqs[0], short], 1)
        batched = predictor.predict(inputs).validate()
        assert batched.sequence(0) == predictor.predict(seqs[0].inputs(1)), spec
        assert batched.sequence(1) == predictor.predict(short.inputs(1)), spec
        assert int(batched.counts[1, :, 20:].sum()) == 0


def test_quantization_buckets_split_fit_data_evenly(data):
    predictor = predictor_from_spec("proj2-quant4-ep2").fit(data)
    grid = predictor.value_quantiles_
    assert grid.shape[:3] == (2, 2, 2)
    assert (grid[..., 1:] >= grid[..., :-1]).all()


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_kmeans_backends_find_planted_centres(backend):
    if backend == "faiss" and not faiss_backend.faiss_available():
        pytest.fail("faiss-cpu is a dependency and must be importable")
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    points = (centres.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 2, generator=gen))
    found = faiss_backend.kmeans(points, 4, seed=3, backend=backend)
    def by_position(c):
        return c[torch.argsort(c.round()[:, 0] * 100 + c.round()[:, 1])]

    torch.testing.assert_close(by_position(found), by_position(centres), atol=0.1, rtol=0)


def test_torch_fallback_used_without_faiss(data, monkeypatch):
    seq = next(data.sequences())
    with_faiss = predictor_from_spec("proj4-shared-kmeans4-top1-ep1").fit(data).predict(seq.inputs(0))
    monkeypatch.setattr(faiss_backend, "faiss_available", lambda: False)
    without = predictor_from_spec("proj4-shared-kmeans4-top1-ep1").fit(data).predict(seq.inputs(0))
    assert with_faiss == without


@pytest.mark.parametrize("spec", ["proj0-knn8", "proj4-knn0", "proj4-radius0", "proj4-radius101",
                                  "proj4-quant0", "proj4-kmeans4-top0", "proj4-kmeans0", "proj4-knn8-win-1"])
def test_out_of_range_parameters_are_user_errors(spec):
    with pytest.raises(SparsefinderError):
        predictor_from_spec(spec)


def test_predict_checks_layer_and_shape(data):
    predictor = predictor_from_spec("proj2-score-knn4-ep0").fit(data)
    seq = next(data.sequences())
    inputs = seq.inputs(0)
    bad = type(inputs)(5, inputs.queries, inputs.keys, inputs.input_ids, inputs.lengths)
    with pytest.raises(SparsefinderError, match="fitted on 2 layers"):
        predictor.predict(bad)


def test_allocate_budget_follows_recall_gains():
    from sparsefinder.predictors.sparsefinder_family import allocate_budget

    recall_at = torch.tensor([[0.5, 1.0, 1.0, 1.0], [0.25, 0.5, 0.75, 1.0]], dtype=torch.float64)
    # 6 keys to share: one each, then head 0's +0.5, then head 1's three +0.25 steps
    assert allocate_budget(recall_at, 3).tolist() == [2, 4]
    assert allocate_budget(recall_at, 4).tolist() == [4, 4]


def test_adaptive_knn_keeps_the_mean_budget(data):
    seq = next(data.sequences())
    pattern = predictor_from_spec("proj4-score-knn8-adapt-ep0").fit(data).predict(seq.inputs(0)).validate()
    lengths = pattern.row_lengths()
    assert (lengths == lengths[:, :1]).all() and float(lengths[:, 0].float().mean()) == 8.0
