"""The attention pattern: construction, views and algebra against dense references."""

import pytest
import torch

from sparsefinder.pattern import Pattern


def random_mask(h=3, n=9, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(h, n, n, generator=g) < p


def test_dense_round_trip_and_invariants():
    m = random_mask()
    p = Pattern.from_dense(m).validate()
    assert torch.equal(p.to_dense(), m)
    assert p.nnz == int(m.sum())
    assert torch.equal(p.row_lengths(), m.sum(-1))
    assert torch.allclose(p.sparsity(), 1 - m.sum((1, 2)).double() / 81)


def test_padded_round_trip():
    m = random_mask(seed=1)
    p = Pattern.from_dense(m)
    index, lengths = p.to_padded()
    valid = torch.arange(index.shape[-1]) < lengths[..., None]
    assert Pattern.from_padded(index, valid) == p


def test_from_pairs_merges_duplicates():
    p = Pattern.from_pairs(torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0]), torch.tensor([2, 2, 0]), 2, 3)
    assert p.nnz == 2
    assert p.to_dense()[0, 1, 2] and p.to_dense()[1, 0, 0]


def test_window_counts_by_hand():
    # n = 5, width 1: rows keep 2, 3, 3, 3, 2 keys = 13 pairs per head
    p = Pattern.window(2, 5, 1).validate()
    assert p.nnz_per_head().tolist() == [13, 13]
    assert p.row_lengths()[0].tolist() == [2, 3, 3, 3, 2]


def test_global_tokens_keep_rows_and_columns():
    d = Pattern.global_tokens(1, 4, [0, -1]).to_dense()[0]
    assert d[:, 0].all() and d[:, 3].all() and d[0].all() and d[3].all()
    assert not d[1, 1] and not d[1, 2] and not d[2, 1] and not d[2, 2]


def test_union_and_intersection_match_dense():
    a, b = random_mask(seed=2), random_mask(seed=3)
    pa, pb = Pattern.from_dense(a), Pattern.from_dense(b)
    assert torch.equal(pa.union(pb).to_dense(), a | b)
    assert torch.equal(pa.intersection_per_head(pb), (a & b).sum((1, 2)))
    assert pa.union(pb).contains(pa) and not pa.contains(pa.union(Pattern.full(3, 9)))


def test_heads_split_and_stack():
    p = Pattern.from_dense(random_mask(seed=4))
    assert Pattern.stack_heads([p.head(h) for h in range(3)]) == p
    assert torch.equal(p.head(1).to_dense()[0], p.to_dense()[1])


def test_full_and_empty():
    assert Pattern.full(2, 4).validate().sparsity().tolist() == [0.0, 0.0]
    assert Pattern.empty(2, 4).validate().sparsity().tolist() == [1.0, 1.0]


def test_validate_rejects_unsorted_rows():
    bad = Pattern(torch.tensor([0, 2, 2]), torch.tensor([1, 0]), 1, 2)
    with pytest.raises(ValueError, match="sorted"):
        bad.validate()
