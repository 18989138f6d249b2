"""The attention pattern: construction, views and algebra against dense references, batched and padded."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsefinder.pattern import Pattern, band_keys, band_mask

LENGTHS = [9, 6, 1]


def random_mask(h=3, n=9, p=0.3, seed=0, batch=None):
    g = torch.Generator().manual_seed(seed)
    shape = (h, n, n) if batch is None else (batch, h, n, n)
    return torch.rand(*shape, generator=g) < p


def valid_pairs(lengths, n):
    """(B, 1, n, n) bool: pairs inside each sequence."""
    valid = torch.arange(n) < torch.tensor(lengths)[:, None]
    return (valid[:, :, None] & valid[:, None, :])[:, None]


def test_dense_round_trip_and_invariants():
    m = random_mask()
    p = Pattern.from_dense(m).validate()
    assert p.shape == (1, 3, 9, 9)
    assert torch.equal(p.to_dense()[0], m)
    assert p.nnz == int(m.sum())
    assert torch.equal(p.row_lengths(), m.sum(-1))
    assert torch.allclose(p.sparsity()[0], 1 - m.sum((1, 2)).double() / 81)


def test_batched_mask_round_trip_drops_padding():
    m = random_mask(batch=3, seed=5)
    p = Pattern.from_mask(m, LENGTHS).validate()
    inside = m & valid_pairs(LENGTHS, 9)
    assert torch.equal(p.to_dense(), inside)
    assert torch.equal(p.counts, inside.sum(-1))
    assert torch.equal(p.nnz_per_head(), inside.sum((-1, -2)))
    total = torch.tensor(LENGTHS).double().square()[:, None]
    assert torch.allclose(p.sparsity(), 1 - inside.sum((-1, -2)).double() / total)
    for b, n in enumerate(LENGTHS):
        assert torch.equal(p.sequence(b).to_dense()[0], m[b, :, :n, :n])


def test_from_index_merges_repeats_and_drops_invalid_and_padded_entries():
    index = torch.tensor([[[[2, 0, 2, 3], [1, 1, 1, 1], [0, 3, 2, 1], [3, 0, 0, 0]]]]).expand(2, 2, 4, 4)
    valid = torch.ones(2, 2, 4, 4, dtype=torch.bool)
    valid[..., 3, 1:] = False
    p = Pattern.from_index(index, valid, lengths=[4, 3]).validate()
    assert p.counts[0, 0].tolist() == [3, 1, 4, 1]
    assert p.counts[1, 0].tolist() == [2, 1, 3, 0]  # key 3 and query 3 are padding in sequence 1
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0, [0, 2, 3]] = expected[1, 1] = expected[2] = expected[3, 3] = True
    assert torch.equal(p.to_dense()[0, 1], expected)
    assert torch.equal(p.to_dense()[1, 1], expected & valid_pairs([3], 4)[0, 0])
    one = Pattern.from_index(index[0], valid[0])  # (H, n, k): one sequence
    assert one.shape == (1, 2, 4, 4) and one == p.sequence(0)


def test_csr_round_trip_keys_sorted():
    m = random_mask(seed=1)
    p = Pattern.from_mask(torch.flip(m, [-1]).flip(-1))
    row_lengths, col = p.csr()
    assert torch.equal(row_lengths, m.sum(-1).reshape(-1))
    assert torch.equal(col, m.reshape(-1, 9).nonzero()[:, 1])  # row-major, keys increasing
    assert Pattern.from_csr(row_lengths, col, 3, 9) == p
    padded = Pattern.from_mask(random_mask(batch=3, seed=2), LENGTHS)
    for b in range(3):
        rl, c = padded.sequence(b).csr()
        assert Pattern.from_csr(rl, c, 3, LENGTHS[b]) == padded.sequence(b)


def test_from_pairs_merges_duplicates():
    p = Pattern.from_pairs(torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0]), torch.tensor([2, 2, 0]), 2, 3)
    assert p.nnz == 2
    assert p.to_dense()[0, 0, 1, 2] and p.to_dense()[0, 1, 0, 0]


def test_window_counts_by_hand():
    # n = 5, width 1: rows keep 2, 3, 3, 3, 2 keys = 13 pairs per head
    p = Pattern.window(2, 5, 1).validate()
    assert p.nnz_per_head().tolist() == [[13, 13]]
    assert p.row_lengths()[0].tolist() == [2, 3, 3, 3, 2]


@pytest.mark.parametrize("width", [0, 1, 3, 12])
def test_window_with_lengths_matches_dense_reference(width):
    i = torch.arange(9)
    band = (i[:, None] - i[None, :]).abs() <= width
    p = Pattern.window(2, 9, width, lengths=LENGTHS).validate()
    assert torch.equal(p.to_dense(), band & valid_pairs(LENGTHS, 9).expand(3, 2, 9, 9))


def test_global_tokens_keep_rows_and_columns():
    d = Pattern.global_tokens(1, 4, [0, -1]).to_dense()[0, 0]
    assert d[:, 0].all() and d[:, 3].all() and d[0].all() and d[3].all()
    assert not d[1, 1] and not d[1, 2] and not d[2, 1] and not d[2, 2]


def test_global_tokens_with_lengths_match_dense_reference():
    p = Pattern.global_tokens(2, 9, [0, 2, -1], lengths=LENGTHS).validate()
    for b, n in enumerate(LENGTHS):
        is_global = torch.zeros(n, dtype=torch.bool)
        is_global[[p_ for p_ in (0, 2, n - 1) if p_ < n]] = True
        expected = torch.zeros(9, 9, dtype=torch.bool)
        expected[:n, :n] = is_global[:, None] | is_global[None, :]
        assert torch.equal(p.to_dense()[b], expected.expand(2, 9, 9)), b


def test_union_and_intersection_match_dense():
    a, b = random_mask(seed=2), random_mask(seed=3)
    pa, pb = Pattern.from_dense(a), Pattern.from_dense(b)
    assert torch.equal(pa.union(pb).to_dense()[0], a | b)
    assert torch.equal(pa.intersection_per_head(pb)[0], (a & b).sum((1, 2)))
    assert pa.union(pb).contains(pa) and not pa.contains(pa.union(Pattern.full(3, 9)))


def test_batched_union_matches_dense():
    a, b = random_mask(batch=3, seed=6), random_mask(batch=3, seed=7)
    pa, pb = Pattern.from_mask(a, LENGTHS), Pattern.from_mask(b, LENGTHS)
    union = pa.union(pb).validate()
    assert torch.equal(union.to_dense(), (a | b) & valid_pairs(LENGTHS, 9))
    assert torch.equal(union.hits(pa.to_dense()), pa.nnz_per_head())


def test_stack_pads_sequences():
    short, long = Pattern.from_dense(random_mask(n=4, seed=8)), Pattern.from_dense(random_mask(n=7, seed=9))
    both = Pattern.stack([short, long]).validate()
    assert both.shape == (2, 3, 7, 7) and both.lengths.tolist() == [4, 7]
    assert both.sequence(0) == short and both.sequence(1) == long


def test_head_is_one_head_of_the_mask():
    p = Pattern.from_dense(random_mask(seed=4))
    for h in range(3):
        assert torch.equal(p.head(h).to_dense()[0, 0], p.to_dense()[0, h])


def test_narrow_keeps_row_prefixes():
    index = torch.tensor([[3, 1, 0], [2, 0, 1], [0, 2, 1], [1, 3, 2]]).expand(1, 1, 4, 3)
    p = Pattern.from_index(index, unique=True)
    assert p.narrow(1).to_dense()[0, 0].nonzero().tolist() == [[0, 3], [1, 2], [2, 0], [3, 1]]
    assert p.narrow(2).nnz == 8 and p.narrow(5) == p


def test_full_and_empty():
    assert Pattern.full(2, 4).validate().sparsity().tolist() == [[0.0, 0.0]]
    assert Pattern.empty(2, 4).validate().sparsity().tolist() == [[1.0, 1.0]]
    full = Pattern.full(2, 9, lengths=LENGTHS).validate()
    assert torch.equal(full.to_dense(), valid_pairs(LENGTHS, 9).expand(3, 2, 9, 9))


def test_validate_rejects_repeated_keys_and_padded_keys():
    repeated = Pattern(torch.tensor([[[[0, 0]]]]), torch.tensor([[[2]]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="unique"):
        repeated.validate()
    padded = Pattern(torch.tensor([[[[1], [0]]]]), torch.tensor([[[1, 0]]]), torch.tensor([1]))
    with pytest.raises(ValueError, match="lengths"):
        padded.validate()


def test_hits_kernel_equals_the_gather(monkeypatch):
    from sparsefinder import hit_counts

    g = torch.Generator().manual_seed(5)
    mask = torch.rand(2, 3, 20, 20, generator=g) < 0.3
    pattern = Pattern.from_mask(torch.rand(2, 3, 20, 20, generator=g) < 0.5, torch.tensor([20, 11]))
    fast = pattern.hits(mask)
    monkeypatch.setattr(hit_counts, "available", lambda: False)
    slow = pattern.hits(mask)
    assert torch.equal(fast, slow) and int(fast.sum()) > 0
    expected = (pattern.to_dense() & mask).sum((-1, -2))
    assert torch.equal(fast, expected)


def test_within_a_band_keeps_the_pairs_near_the_diagonal_in_row_order():
    mask = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(4)) < 0.5
    pattern = Pattern.from_mask(mask, [20, 13])
    offsets = (torch.arange(20)[:, None] - torch.arange(20)[None, :]).abs()
    near = pattern.within(2)
    assert torch.equal(near.to_dense(), pattern.to_dense() & (offsets <= 2)) and near.validate() is near
    assert pattern.within(0) is pattern and pattern.within(19) == pattern
    assert band_keys(10, 4, 20, 3) == (7, 17) and band_keys(0, 4, 20, 3) == (0, 7) and band_keys(5, 4, 20, 0) == (0, 20)
    assert torch.equal(band_mask(10, 4, 7, 17, 3), (offsets <= 3)[10:14, 7:17])


def test_query_chunks_of_a_banded_model_are_sized_by_the_keys_their_band_reaches():
    from sparsefinder.config import BAND_CHUNK_PAIRS
    from sparsefinder.pattern import query_chunks

    assert query_chunks(4096, 12 * 4096, 1 << 22).step == 85  # every key: 12 rows × 85 queries × 4,096 keys ≤ 2²²
    for n in (4096, 16384):  # within ±256: 12 × 135 × (135 + 512) ≤ 2²⁰ < 12 × 136 × 648, whatever n
        step = query_chunks(n, 12 * n, 1 << 22, 256).step
        assert step == 135 and 12 * step * (step + 512) <= BAND_CHUNK_PAIRS < 12 * (step + 1) * (step + 513)
    assert query_chunks(48, 4 * 48, 1344, 6).step == 13  # a smaller budget binds: 4 × 13 × 25 ≤ 1,344
    assert query_chunks(450, 12 * 450, 1 << 22, 256).step == 450  # never past the last query


@given(n=st.integers(1, 5000), rows=st.integers(1, 48), budget=st.integers(1, 1 << 23), window=st.integers(0, 600))
@settings(max_examples=300, deadline=None)
def test_query_chunks_cover_every_query_within_their_budget(n, rows, budget, window):
    """Chunks start at 0, step evenly and cover the n queries; a chunk holds at most the budget of scores unless a
    single query already exceeds it (then one query a chunk), counted over the keys it can reach: every key, or
    c + 2·window within a band (at most BAND_CHUNK_PAIRS, or the budget if smaller)."""
    from sparsefinder.config import BAND_CHUNK_PAIRS
    from sparsefinder.pattern import query_chunks

    starts = query_chunks(n, rows * n, budget, window)
    assert starts.start == 0 and list(starts)[-1] + starts.step >= n and 1 <= starts.step <= n
    c = starts.step
    every_key = rows * c * n <= budget
    banded = window and rows * c * min(n, c + 2 * window) <= min(budget, BAND_CHUNK_PAIRS)
    assert c == 1 or every_key or banded
