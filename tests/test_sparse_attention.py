"""Sparse α-entmax attention equals dense α-entmax whenever the pattern contains the gold support."""

from __future__ import annotations

import pytest
import torch

from sparsefinder.alpha_entmax import entmax
from sparsefinder.attention.sparse import SparseEntmaxAttention, sparse_entmax_attention
from sparsefinder.pattern import Pattern


def _qkv(heads=3, n=24, d=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(heads, n, d, generator=g, dtype=dtype) * 1.5 for _ in range(3)]


def _dense(q, k, v, alpha):
    return entmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5, alpha) @ v


def _gold(q, k, alpha):
    return entmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5, alpha) > 0


@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25])
def test_full_pattern_equals_dense_values_and_gradients(alpha):
    q, k, v = _qkv()
    for t in (q, k, v):
        t.requires_grad_(True)
    weights = torch.randn(q.shape)
    dense = _dense(q, k, v, alpha)
    grads_dense = torch.autograd.grad((dense * weights).sum(), (q, k, v))
    sparse = sparse_entmax_attention(q, k, v, Pattern.full(*q.shape[:2]), alpha)
    grads_sparse = torch.autograd.grad((sparse * weights).sum(), (q, k, v))
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    for gs, gd in zip(grads_sparse, grads_dense):
        torch.testing.assert_close(gs, gd, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernels", [True, False])
def test_attending_chunk_by_chunk_equals_the_whole_pattern(kernels, monkeypatch):
    """What the model's layer does with ``Predictor.predict_rows``: chunks of rows, each padded to its own width."""
    from sparsefinder.attention import sparse

    if not kernels:  # the torch path
        monkeypatch.setattr(sparse, "row_kernels_apply", lambda *a: False)
    q, k, v = (x.unsqueeze(0) for x in _qkv(n=33, seed=4))
    mask = torch.rand(1, 3, 33, 33, generator=torch.Generator().manual_seed(1)) < 0.2
    mask[..., 5, :] = True  # one query keeps every key: the whole pattern is 33 wide
    pattern = Pattern.from_mask(mask)
    pieces = [(s, *pattern_rows(pattern, s, s + 8)) for s in range(0, 33, 8)]
    out, kept = sparse.sparse_entmax_rows(q, k, v, pieces, 1.5)
    torch.testing.assert_close(out, sparse_entmax_attention(q, k, v, pattern), atol=1e-6, rtol=1e-5)
    assert torch.equal(kept, pattern.nnz_per_head())


def pattern_rows(pattern: Pattern, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``start:stop`` of a pattern, padded to their own widest row."""
    counts = pattern.counts[:, :, start:stop]
    return pattern.index[:, :, start:stop, :max(int(counts.max()), 1)], counts


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_superset_of_gold_equals_dense(alpha):
    q, k, v = _qkv(n=40, seed=1)
    gold = _gold(q, k, alpha)
    extra = torch.rand(gold.shape, generator=torch.Generator().manual_seed(2)) < 0.15
    pattern = Pattern.from_dense(gold | extra)
    assert pattern.nnz < q.shape[0] * 40 * 40  # a real subset of the pairs
    for t in (q, k, v):
        t.requires_grad_(True)
    dense = _dense(q, k, v, alpha)
    sparse = sparse_entmax_attention(q, k, v, pattern, alpha)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    gd = torch.autograd.grad(dense.sum(), (q, v))
    gs = torch.autograd.grad(sparse.sum(), (q, v))
    for a, b in zip(gs, gd):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_keys_outside_pattern_never_influence_output():
    q, k, v = _qkv(n=16)
    mask = torch.ones(3, 16, 16, dtype=torch.bool)
    mask[:, :, 5] = False  # key 5 is dropped for every query of every head
    mask[1, :, 9] = False  # key 9 only in head 1
    pattern = Pattern.from_dense(mask)
    before = sparse_entmax_attention(q, k, v, pattern)
    k2, v2 = k.clone(), v.clone()
    k2[:, 5] += 100.0
    v2[:, 5] -= 50.0
    k2[1, 9] = 1e3
    v2[1, 9] = 7.0
    after = sparse_entmax_attention(q, k2, v2, pattern)
    assert torch.equal(before[1], after[1])
    assert torch.equal(before, after)


def test_restricted_pattern_renormalises_over_kept_keys():
    # one query, keys with scores 2, 1, 0 (d = 1, scaling 1); keep keys 0 and 2 only.
    q = torch.ones(1, 3, 1)
    k = torch.tensor([[[2.0], [1.0], [0.0]]])
    v = torch.eye(3).unsqueeze(0)
    pattern = Pattern.from_pairs(torch.zeros(2), torch.zeros(2), torch.tensor([0, 2]), 1, 3)
    out = sparse_entmax_attention(q, k, v, pattern, scaling=1.0)
    # 1.5-entmax of [2, 0]: p = [z/2 - τ]_+², z/2 = [1, 0]; τ = 0 gives [1, 0] (sum 1, exact)
    torch.testing.assert_close(out[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(out[0, 1:], torch.zeros(2, 3))  # queries 1, 2 keep nothing: zeros


def test_chunking_does_not_change_the_result():
    q, k, v = _qkv(n=33)
    pattern = Pattern.window(3, 33, 4)
    whole = sparse_entmax_attention(q, k, v, pattern)
    chunked = sparse_entmax_attention(q, k, v, pattern, chunk_pairs=30)  # 1 query per chunk
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)  # score rows are products of different shapes
    torch.testing.assert_close(SparseEntmaxAttention()(q, k, v, pattern), whole)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_gradcheck_float64(alpha):
    q, k, v = (t.requires_grad_(True) for t in _qkv(heads=2, n=7, d=3, dtype=torch.float64, seed=3))
    pattern = Pattern.window(2, 7, 2)
    assert torch.autograd.gradcheck(lambda a, b, c: sparse_entmax_attention(a, b, c, pattern, alpha), (q, k, v))


def test_shape_mismatch_is_rejected():
    q, k, v = _qkv(n=8)
    with pytest.raises(ValueError, match="pattern shape"):
        sparse_entmax_attention(q, k, v, Pattern.full(3, 9))
