"""Known-answer tests of the literature baselines (issue 5) on small synthetic inputs; batched prediction
(issue 11) against per-sequence prediction, and knob sweeps against one prediction per value."""

from __future__ import annotations

import pytest
import torch

from sparsefinder.dataset import InMemoryDataset, Sequence
from sparsefinder.errors import NotFittedError, SparsefinderError
from sparsefinder.pattern import Pattern
from sparsefinder.inputs import AttentionInputs
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.predictors.breaking_bert import LexicalPredictor, NeighbourDegreePredictor
from sparsefinder.predictors.buckets import group_pattern
from sparsefinder.predictors.fixed import (
    AttendedGlobalPredictor,
    BigBirdPredictor,
    GlobalPredictor,
    LongformerPredictor,
    RandomPredictor,
    StridedPredictor,
    WindowPredictor,
)
from sparsefinder.predictors.lsh import LSHPredictor, lsh_buckets
from sparsefinder.predictors.oracle import OracleTopK
from sparsefinder.predictors.attention_pruning import AttentionPruningPredictor
from sparsefinder.predictors.routing import RoutingPredictor, balanced_members
from sparsefinder.predictors.sparsebert_dam import SparseBertDAMPredictor

HEADS, DIM = 2, 8


def inputs(n: int, layer: int = 0, seed: int = 0, ids: list[int] | None = None,
           queries: torch.Tensor | None = None, keys: torch.Tensor | None = None) -> AttentionInputs:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(HEADS, n, DIM, generator=g) if queries is None else queries
    k = torch.randn(HEADS, n, DIM, generator=g) if keys is None else keys
    input_ids = torch.arange(n) if ids is None else torch.tensor(ids)
    return AttentionInputs.single(layer, q, k, input_ids)


def dataset(golds: list[torch.Tensor], vectors: torch.Tensor | None = None) -> InMemoryDataset:
    """One-layer sequences with the given dense gold masks (H, n, n); random or given queries = keys."""
    seqs = []
    for s, gold in enumerate(golds):
        n = gold.shape[-1]
        x = torch.randn(1, HEADS, n, DIM, generator=torch.Generator().manual_seed(s)) if vectors is None else vectors
        seqs.append(Sequence(torch.arange(n), x.half(), x.half(), x.half(), [Pattern.from_dense(gold)]))
    return InMemoryDataset(seqs)


def offsets_mask(n: int, offsets_per_head: list[list[int]]) -> torch.Tensor:
    i = torch.arange(n)
    delta = i[None, :] - i[:, None]
    return torch.stack([torch.isin(delta, torch.tensor(o)) for o in offsets_per_head])


def fitted(predictor, data=None):
    return predictor.fit(data if data is not None else dataset([offsets_mask(8, [[0], [0]])]))


# ------------------------------------------------------------------ fixed patterns
def test_window_keeps_hand_counted_pairs():
    # n = 6, w = 2: rows keep 3, 4, 5, 5, 4, 3 keys.
    pattern = fitted(WindowPredictor(width=2)).predict(inputs(6))
    assert pattern.row_lengths().tolist() == [[3, 4, 5, 5, 4, 3]] * HEADS
    i = torch.arange(6)
    assert torch.equal(pattern.to_dense(), ((i[:, None] - i[None, :]).abs() <= 2).expand(1, HEADS, 6, 6))
    assert WindowPredictor(width=2).reach == 2 and RandomPredictor().reach is None  # a bound on |query − key|, or none


def test_random_keeps_budget_and_is_deterministic_per_seed():
    x = inputs(40)
    a = fitted(RandomPredictor(keys=7, seed=3)).predict(x)
    assert (a.row_lengths() == 7).all()
    a.validate()
    assert a == fitted(RandomPredictor(keys=7, seed=3)).predict(x)
    assert a != fitted(RandomPredictor(keys=7, seed=4)).predict(x)
    assert a != fitted(RandomPredictor(keys=7, seed=3)).predict(inputs(40, layer=1))
    assert fitted(RandomPredictor(keys=99)).predict(x) == Pattern.full(HEADS, 40)


def test_global_tokens_first_and_last():
    dense = fitted(GlobalPredictor(tokens=2)).predict(inputs(5)).to_dense()[0, 0]
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[[0, 4], :] = True
    expected[:, [0, 4]] = True
    assert torch.equal(dense, expected)


def test_attended_global_learns_most_attended_position():
    gold = offsets_mask(8, [[0], [0]])
    gold[:, :, 3] = True  # every query attends key 3
    predictor = fitted(AttendedGlobalPredictor(tokens=1), dataset([gold]))
    assert predictor.ranking_[0, :, 0].tolist() == [3, 3]
    assert predictor.predict(inputs(8)) == Pattern.global_tokens(HEADS, 8, [3])


def test_strided_hand_counted_rows():
    dense = fitted(StridedPredictor(stride=3)).predict(inputs(8)).to_dense()[0, 1]
    assert dense[4].nonzero().flatten().tolist() == [1, 2, 3, 4, 5, 6, 7]  # band 2..6, 1 mod 3
    assert dense[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 6]  # band 0..2, 0 mod 3


def test_longformer_and_bigbird_are_unions():
    n = 20
    longformer = fitted(LongformerPredictor(width=2, tokens=2)).predict(inputs(n))
    assert longformer == Pattern.window(HEADS, n, 2).union(Pattern.global_tokens(HEADS, n, [0, -1]))
    bigbird = fitted(BigBirdPredictor(block=2)).predict(inputs(n))
    assert bigbird.contains(Pattern.window(HEADS, n, 3))
    assert bigbird.contains(Pattern.global_tokens(HEADS, n, [0, 1, n - 2, n - 1]))
    assert (bigbird.row_lengths() >= 7 + 4).all()  # window of 7 (at least 4 at the edges) + ≥ 6 random


# ------------------------------------------------------------------ buckets, LSH, routing
def test_group_pattern_matches_dense_reference():
    g = torch.Generator().manual_seed(0)
    qg, kg = torch.randint(-1, 6, (HEADS, 11, 3), generator=g), torch.randint(-1, 6, (HEADS, 11, 2), generator=g)
    kg[0, 4] = 7  # out of range: no group
    shared = (qg[:, :, None, :, None] == kg[:, None, :, None, :]) & (qg >= 0)[:, :, None, :, None]
    pattern = group_pattern(qg, kg, 6).validate()
    assert pattern.nnz > 0
    assert torch.equal(pattern.to_dense()[0], shared.flatten(-2).any(-1))


def test_lsh_is_deterministic_and_hashes_a_vector_with_itself():
    x = inputs(30, seed=1)
    shared = inputs(30, queries=x.queries[0], keys=x.queries[0])
    predictor = fitted(LSHPredictor(buckets=8, rounds=2, seed=5))
    a = predictor.predict(shared)
    assert a == fitted(LSHPredictor(buckets=8, rounds=2, seed=5)).predict(shared)
    assert a.contains(Pattern.window(HEADS, 30, 0))  # each vector shares its own bucket
    assert a != fitted(LSHPredictor(buckets=8, rounds=2, seed=6)).predict(shared)
    rotations = torch.randn(1, HEADS, DIM, 4)
    assert torch.equal(lsh_buckets(x.queries[0], rotations), lsh_buckets(3.0 * x.queries[0], rotations))


def planted_directions(groups: int, size: int) -> torch.Tensor:
    """(1, H, groups·size, DIM) vectors near ``groups`` orthogonal axes, ``size`` per axis, in order."""
    noise = 0.05 * torch.randn(1, HEADS, groups * size, DIM, generator=torch.Generator().manual_seed(0))
    axes = torch.eye(DIM)[:groups].repeat_interleave(size, 0)
    return axes + noise


def test_routing_recovers_planted_balanced_clusters():
    x = planted_directions(4, 5)
    gold = torch.zeros(HEADS, 20, 20, dtype=torch.bool)
    predictor = RoutingPredictor(clusters=4).fit(dataset([gold, gold], vectors=x))
    vectors = x[0].float()
    members = balanced_members(vectors, predictor.centroids_[4][0, 0][None].expand(HEADS, -1, -1), 5)
    assert members.shape == (HEADS, 4, 5)  # each cluster takes exactly ⌈n/c⌉ tokens
    group = torch.arange(20) // 5
    pattern = predictor.predict(inputs(20, queries=vectors, keys=vectors))
    assert torch.equal(pattern.to_dense(), (group[:, None] == group[None, :]).expand(1, HEADS, 20, 20))


# ------------------------------------------------------------------ data-informed position masks
def test_attention_pruning_keeps_the_always_present_diagonal():
    g = torch.Generator().manual_seed(0)
    golds = [(torch.rand(HEADS, 12, 12, generator=g) < 0.3) | torch.eye(12, dtype=torch.bool) for _ in range(10)]
    for absolute in (False, True):
        predictor = AttentionPruningPredictor(threshold=0.95, absolute=absolute).fit(dataset(golds))
        assert predictor.predict(inputs(12)) == Pattern.window(HEADS, 12, 0)
        predictor.set_params(threshold=0.0)
        assert predictor.predict(inputs(12)).contains(Pattern.window(HEADS, 12, 0))
    shorter = AttentionPruningPredictor(threshold=0.95).fit(dataset(golds)).predict(inputs(7))
    assert shorter == Pattern.window(HEADS, 7, 0)


def test_dam_recovers_a_planted_mask():
    planted = [[0, 1], [-2]]
    golds = [offsets_mask(10, planted), offsets_mask(10, planted)]
    predictor = SparseBertDAMPredictor(threshold=0.5).fit(dataset(golds))
    assert predictor.predict(inputs(10)) == Pattern.from_dense(offsets_mask(10, planted))
    assert predictor.predict(inputs(6)) == Pattern.from_dense(offsets_mask(6, planted))
    absolute = SparseBertDAMPredictor(threshold=0.5, absolute=True).fit(dataset(golds))
    assert absolute.predict(inputs(10)) == Pattern.from_dense(offsets_mask(10, planted))


def test_lexical_mask_links_repeated_tokens():
    ids = [5, 7, 5, 9, 7, 5]
    dense = fitted(LexicalPredictor(width=0)).predict(inputs(6, ids=ids)).to_dense()
    t = torch.tensor(ids)
    assert torch.equal(dense, (t[:, None] == t[None, :]).expand(1, HEADS, 6, 6))
    assert dense[0, 0, 0].nonzero().flatten().tolist() == [0, 2, 5]


def test_neighbour_degree_picks_smallest_window_reaching_target():
    # Per sequence and head of n = 10: 10 diagonal, 18 at |δ| = 1, 14 at |δ| = 3 gold edges (42 in all).
    predictor = NeighbourDegreePredictor().fit(dataset([offsets_mask(10, [[0, 1, -1, 3, -3]] * HEADS)]))
    for target, degree in ((0.2, 0), (0.6, 1), (0.7, 3), (1.0, 3)):
        assert predictor.set_params(target=target).degree(0) == degree
    assert predictor.predict(inputs(10)) == Pattern.window(HEADS, 10, 3)


# ------------------------------------------------------------------ interface
SPECS = ("window4", "random8", "global2", "attended-global2", "strided4", "bigbird2", "longformer4", "lsh8",
         "routing4", "pruning0.1", "pruning0.1-abs", "dam0.5", "lexical1", "degree0.9")


@pytest.mark.parametrize("spec", SPECS)
def test_interface_round_trips(spec):
    data = dataset([offsets_mask(8, [[0, 1], [0, -1]]), offsets_mask(8, [[0], [2]])])
    predictor = predictor_from_spec(spec)
    with pytest.raises(NotFittedError):
        predictor.predict(inputs(8))
    assert predictor.fit(data) is predictor
    assert predictor_from_spec(predictor.spec).get_params() == predictor.get_params()
    pattern = predictor.predict(inputs(8)).validate()
    restored = predictor_from_spec(spec).load_state_dict(predictor.state_dict())
    assert restored.predict(inputs(8)) == pattern


# ------------------------------------------------------------------ batches and sweeps (issue 11)
BATCH_SPECS = (*SPECS, "oracle-topk3", "random2", "random99", "bigbird1", "global9", "lexical0", "dam0.5-abs")


def padded_batch(lengths: list[int], layer: int = 0) -> AttentionInputs:
    """Sequences padded to ``max(lengths)``; the padding holds random vectors and token ids that occur in the text."""
    n = max(lengths)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, (len(lengths), n), generator=g)  # few ids: repeated tokens, and padding ids that match
    return AttentionInputs(layer, torch.randn(len(lengths), HEADS, n, DIM, generator=g),
                           torch.randn(len(lengths), HEADS, n, DIM, generator=g), ids, torch.tensor(lengths))


@pytest.mark.parametrize("spec", BATCH_SPECS)
def test_batched_predict_equals_per_sequence_and_keeps_no_padding(spec):
    data = dataset([offsets_mask(8, [[0, 1], [0, -1]]), offsets_mask(8, [[0], [2]])])
    predictor = predictor_from_spec(spec).fit(data)
    batch = padded_batch([6, 13, 3], layer=0)
    pattern = predictor.predict(batch).validate()  # padded queries keep nothing, keys lie inside each sequence
    assert pattern.shape == (3, HEADS, 13, 13) and pattern.lengths.tolist() == [6, 13, 3]
    inside = torch.arange(13) < batch.lengths[:, None]
    assert not (pattern.to_dense() & ~(inside[:, None, :, None] & inside[:, None, None, :])).any()
    for b in range(3):
        alone = predictor.predict(batch.sequence(b))
        assert alone.shape == (1, HEADS, batch.lengths[b], batch.lengths[b])
        assert alone == pattern.sequence(b), b


SWEEPS = (("oracle-topk", (1, 3, 2, 20)), ("random", (0, 1, 4, 2, 99)), ("window", (0, 3, 1, 20)),
          ("longformer", (0, 2, 1)), ("lexical", (0, 1, 3)))


@pytest.mark.parametrize(("spec", "values"), SWEEPS)
def test_sweep_equals_one_prediction_per_value(spec, values):
    predictor = fitted(predictor_from_spec(spec))
    batch = padded_batch([6, 13, 3], layer=1)
    swept = predictor.predict_sweep(batch, list(values))
    assert getattr(predictor, predictor.knob) == values[-1]
    for value, pattern in zip(values, swept):
        assert pattern.validate() == predictor.set_params(**{predictor.knob: value}).predict(batch), value


def test_sweep_rejects_a_bad_knob_value():
    with pytest.raises(SparsefinderError):
        fitted(RandomPredictor()).predict_sweep(padded_batch([4, 3]), [2, -1])


def test_oracle_keeps_the_top_scores_of_valid_keys():
    batch = padded_batch([6, 9, 3])
    pattern = fitted(OracleTopK(k=2)).predict(batch)
    for b, n in enumerate(batch.lengths.tolist()):
        scores = batch.queries[b, :, :n] @ batch.keys[b, :, :n].transpose(-1, -2)
        expected = torch.zeros(HEADS, n, n, dtype=torch.bool).scatter_(-1, scores.topk(min(2, n), -1).indices, True)
        assert torch.equal(pattern.sequence(b).to_dense()[0], expected)


def test_random_keys_spread_evenly_over_positions():
    pattern = fitted(RandomPredictor(keys=16, seed=1)).predict(inputs(64))
    per_key = pattern.to_dense()[0].sum((0, 1)).double()  # mean 2·64·16/64 = 32 picks per key
    assert per_key.min() >= 16 and per_key.max() <= 48
    assert not torch.equal(pattern.to_dense()[0, 0], pattern.to_dense()[0, 1])  # heads differ
