"""Certified mode returns dense α-entmax attention from any starting pattern."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsefinder.alpha_entmax import entmax, threshold
from sparsefinder.attention import cpu_rows
from sparsefinder.attention.certified import certified_entmax_attention
from sparsefinder.pattern import Pattern


def _qkv(heads=2, n=50, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(heads, n, d, generator=g) * 2 for _ in range(3)]


def _dense_probs(q, k, alpha):
    return entmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5, alpha)


@pytest.mark.parametrize("alpha", [1.5, 2.0, 1.25])
@pytest.mark.parametrize("start", ["empty", "random", "window"])
def test_certified_equals_dense(alpha, start):
    q, k, v = _qkv(seed=len(start))
    heads, n, _ = q.shape
    patterns = {
        "empty": Pattern.empty(heads, n),
        "random": Pattern.from_dense(torch.rand(heads, n, n, generator=torch.Generator().manual_seed(5)) < 0.1),
        "window": Pattern.window(heads, n, 2),
    }
    probs = _dense_probs(q, k, alpha)
    result = certified_entmax_attention(q, k, v, patterns[start], alpha)
    torch.testing.assert_close(result.output, probs @ v, atol=1e-5, rtol=1e-5)
    assert result.pattern.contains(Pattern.from_dense(probs > 0))  # recall 1.0
    assert torch.equal(result.keys_added, result.pattern.nnz_per_head() - patterns[start].nnz_per_head())


def test_gold_pattern_needs_no_keys():
    q, k, v = _qkv(n=64, seed=7)
    gold = Pattern.from_dense(_dense_probs(q, k, 1.5) > 0)
    result = certified_entmax_attention(q, k, v, gold)
    assert result.pattern == gold  # nothing outside the support scores above t_S = t
    assert int(result.keys_added.sum()) == 0


def test_planted_structure_adds_exactly_the_aligned_keys():
    # keys 0-7 align with the query, keys 8-15 point away: only the aligned ones can enter the support
    d = 4
    q = torch.zeros(1, 16, d)
    q[..., 0] = 4.0
    k = torch.zeros(1, 16, d)
    k[0, :8, 0] = 3.0
    k[0, 8:, 0] = -3.0
    v = torch.randn(1, 16, d)
    start = Pattern.from_pairs(torch.zeros(16), torch.arange(16), torch.zeros(16), 1, 16)  # key 0 only
    result = certified_entmax_attention(q, k, v, start)
    keys = result.pattern.to_dense()[0, 0]
    assert keys[:, :8].all()  # every query needs the 8 aligned keys
    assert not keys[:, 8:].any()
    assert torch.equal(result.keys_added, torch.tensor([[16 * 7]]))
    torch.testing.assert_close(result.output, _dense_probs(q, k, 1.5) @ v, atol=1e-5, rtol=1e-5)


def test_gradients_flow():
    q, k, v = (t.requires_grad_(True) for t in _qkv(n=20))
    result = certified_entmax_attention(q, k, v, Pattern.empty(2, 20))
    dense = _dense_probs(q, k, 1.5) @ v
    gd = torch.autograd.grad(dense.sum(), (q, k, v))
    gs = torch.autograd.grad(result.output.sum(), (q, k, v))
    for a, b in zip(gs, gd):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_padded_batch_equals_each_sequence_alone():
    """Two sequences of 30 and 18 tokens in one padded batch: each equals its own dense entmax."""
    q, k, v = (torch.stack([t, t.flip(1)]) for t in _qkv(n=30, seed=3))
    lengths = torch.tensor([30, 18])
    start = Pattern.window(2, 30, 1, lengths)
    result = certified_entmax_attention(q, k, v, start)
    for b, m in enumerate(lengths.tolist()):
        qb, kb, vb = q[b, :, :m], k[b, :, :m], v[b, :, :m]
        torch.testing.assert_close(result.output[b, :, :m], _dense_probs(qb, kb, 1.5) @ vb, atol=1e-5, rtol=1e-5)
        assert result.pattern.sequence(b).contains(Pattern.from_dense(_dense_probs(qb, kb, 1.5) > 0))
    assert int(result.pattern.counts[1, :, 18:].sum()) == 0


# ------------------------------------------------------------------ property tests (hypothesis)

_scores = st.lists(st.floats(-30, 30, allow_nan=False, width=32), min_size=1, max_size=48)


@settings(max_examples=300, deadline=None)
@given(_scores, st.data())
def test_the_bound_certification_rests_on_never_fails(values, data):
    """The threshold of any subset of a row's keys never exceeds the row's (method.md §1): no key the
    certified mode rules out (``z ≤ t_S``) can be in the support."""
    z = torch.tensor(values)
    keep = torch.tensor(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))))
    keep[data.draw(st.integers(0, len(values) - 1))] = True
    full = float(threshold(z[None], 1.5))
    assert float(threshold(z[keep][None], 1.5)) <= full + 1e-5 * (1 + abs(full))
    if cpu_rows.available():  # the compiled kernels find the same threshold
        nvalid = torch.tensor([len(values)])
        assert abs(float(cpu_rows.row_thresholds(z[None], nvalid)) - full) <= 1e-4 * (1 + abs(full))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 3), st.floats(0.0, 1.0), st.floats(0.1, 4.0), st.integers(0, 2**31 - 1))
def test_certified_output_is_dense_entmax_whatever_the_pattern(n, heads, share, scale, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(heads, n, 8, generator=g) * scale for _ in range(3))
    pattern = Pattern.from_dense(torch.rand(heads, n, n, generator=g) < share)
    probs = _dense_probs(q, k, 1.5)
    result = certified_entmax_attention(q, k, v, pattern)
    torch.testing.assert_close(result.output, probs @ v, atol=1e-4, rtol=1e-4)
    assert result.pattern.contains(Pattern.from_dense(probs > 0))


@pytest.mark.parametrize("kernels", [True, False])
def test_without_the_pattern_the_output_added_and_kept_keys_are_the_same(kernels, monkeypatch):
    from sparsefinder.attention import certified

    if not kernels:  # the torch path
        monkeypatch.setattr(certified, "row_kernels_apply", lambda *a: False)
    q, k, v = _qkv(n=40, seed=11)
    start = Pattern.window(2, 40, 1)
    kept = certified_entmax_attention(q, k, v, start, chunk_pairs=2 * 40 * 8)  # five chunks of queries
    lean = certified_entmax_attention(q, k, v, start, chunk_pairs=2 * 40 * 8, keep_pattern=False)
    assert lean.pattern is None and kept.pattern.contains(Pattern.from_dense(_dense_probs(q, k, 1.5) > 0))
    torch.testing.assert_close(lean.output, kept.output, atol=0, rtol=0)
    assert torch.equal(lean.keys_added, kept.keys_added) and int(kept.keys_added.sum()) > 0
    assert torch.equal(lean.kept, kept.pattern.nnz_per_head()) and torch.equal(kept.kept, lean.kept)


# ------------------------------------------------------------------ a banded model's attention (window > 0)

@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_banded_attention_is_dense_entmax_within_the_band_from_any_pattern(kernels, alpha, monkeypatch):
    """Two padded sequences (60 and 41 tokens), band ±7, chunks of 9 queries: the output is dense α-entmax over each
    query's keys within the band, the empty pattern's certified pattern is exactly that support, and a random
    pattern (most of it outside the band) gains only keys inside it."""
    from sparsefinder.attention import certified

    if not kernels:
        monkeypatch.setattr(certified, "row_kernels_apply", lambda *a: False)
    q, k, v = (torch.stack([t, t.flip(1)]) for t in _qkv(n=60, seed=21))
    lengths, window, n = torch.tensor([60, 41]), 7, 60
    offsets = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs()
    valid = torch.arange(n) < lengths[:, None]
    allowed = (offsets <= window) & valid[:, None, None, :] & valid[:, None, :, None]  # (B, 1, n, n)
    scores = (q @ k.transpose(-1, -2) * 8**-0.5).masked_fill(~allowed, -1e30)
    probs = entmax(scores, alpha) * valid[:, None, :, None]
    gold = Pattern.from_mask(probs > 0, lengths)
    assert gold.nnz < int(allowed.sum()) * 2  # a real support: not the whole band
    chunk = 2 * 2 * n * 9
    exact = certified_entmax_attention(q, k, v, Pattern.empty(2, n, lengths), alpha, chunk_pairs=chunk, window=window)
    torch.testing.assert_close(exact.output, probs @ v, atol=1e-5, rtol=1e-5)
    assert exact.pattern == gold and torch.equal(exact.keys_added, gold.nnz_per_head())
    noise = Pattern.from_mask(torch.rand(2, 2, n, n, generator=torch.Generator().manual_seed(3)) < 0.3, lengths)
    result = certified_entmax_attention(q, k, v, noise, alpha, chunk_pairs=chunk, window=window)
    torch.testing.assert_close(result.output, probs @ v, atol=1e-5, rtol=1e-5)
    assert result.pattern == noise.within(window).union(gold)
    assert torch.equal(result.keys_added, gold.nnz_per_head() - noise.within(window).intersection_per_head(gold))


def test_a_banded_models_softmax_by_chunks_equals_softmax_with_the_whole_band_mask(monkeypatch):
    """Softmax of a banded model (±5), chunks of 7 queries against their key ranges, on a padded batch: the same as
    SDPA with the whole additive mask (padding and band) at every real query (a padded query far past its sequence
    sees no real key in its band, so what it gets is arbitrary either way)."""
    from sparsefinder.hf import attention

    monkeypatch.setattr(attention, "SPARSE_CHUNK_PAIRS", 2 * 3 * 50 * 7)
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 3, 50, 8, generator=g) * 2 for _ in range(3))
    padding = torch.zeros(2, 1, 50, 50).masked_fill(torch.arange(50) >= torch.tensor([50, 37])[:, None, None, None],
                                                    torch.finfo(torch.float32).min)
    for mask in (None, padding):
        whole = attention.banded(mask, 50, 5, torch.float32, q.device)
        reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=whole).transpose(1, 2)
        out = attention.banded_softmax(q, k, v, mask, 8**-0.5, 5)
        torch.testing.assert_close(out[0], reference[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[1, :37], reference[1, :37], atol=1e-5, rtol=1e-5)
