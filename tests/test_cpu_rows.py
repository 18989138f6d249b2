"""The compiled CPU row kernels give what the torch path gives (issue 11's fast path)."""

from __future__ import annotations

import pytest
import torch
from synthetic import uneven_group_dataset

from sparsefinder.alpha_entmax import entmax, threshold
from sparsefinder.attention import certified, cpu_rows, sparse
from sparsefinder.attention.certified import certified_entmax_attention
from sparsefinder.attention.sparse import sparse_entmax_attention
from sparsefinder.pattern import Pattern
from sparsefinder.predictors import sparsefinder_family
from sparsefinder.predictors.registry import predictor_from_spec

pytestmark = pytest.mark.skipif(not cpu_rows.available(), reason="Numba is not installed")


def _no_kernel(*args):
    raise AssertionError("the torch path ran a compiled kernel")


@pytest.fixture
def torch_path(monkeypatch):
    """Run the torch path (the reference) inside the ``with`` block."""
    class Switch:
        def __enter__(self):
            monkeypatch.setattr(sparse, "row_kernels_apply", lambda *a: False)
            monkeypatch.setattr(sparsefinder_family, "row_kernels_apply", lambda *a: False)
            monkeypatch.setattr(certified, "row_kernels_apply", lambda *a: False)
            for kernel in ("sparse", "thresholds", "fill", "certified"):  # the reference never reaches a kernel
                monkeypatch.setattr(cpu_rows, kernel, _no_kernel)

        def __exit__(self, *exc):
            monkeypatch.undo()

    return Switch()


def _batch(seed=0, batch=3, heads=2, n=40, d=8):
    """Right-padded batch: lengths 40, 23 and 1 (a one-token sequence)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, d, generator=g) * 2 for _ in range(3))
    return q, k, v, torch.tensor([n, 23, 1])[:batch]


def _random_pattern(lengths, heads, n, share, seed):
    g = torch.Generator().manual_seed(seed)
    ok = torch.arange(n)[None, :] < lengths[:, None]
    mask = (torch.rand(len(lengths), heads, n, n, generator=g) < share) & ok[:, None, :, None] & ok[:, None, None, :]
    mask[:, :, 5] = False  # an empty row
    return Pattern.from_mask(mask, lengths=lengths)


@pytest.mark.parametrize("share", [0.05, 0.3, 1.0])
def test_sparse_kernel_equals_torch_path(torch_path, share):
    q, k, v, lengths = _batch()
    pattern = _random_pattern(lengths, 2, 40, share, seed=1)
    out = sparse_entmax_attention(q, k, v, pattern)
    with torch_path:
        ref = sparse_entmax_attention(q, k, v, pattern)
    valid = torch.arange(40)[None, :] < lengths[:, None]
    torch.testing.assert_close(out[valid[:, None, :].expand(-1, 2, -1)], ref[valid[:, None, :].expand(-1, 2, -1)],
                               atol=2e-5, rtol=2e-5)
    assert torch.equal(out[:, :, 5], torch.zeros_like(out[:, :, 5]))  # the empty row gives zeros


def test_thresholds_equal_alpha_entmax_threshold():
    z = torch.randn(200, 64, generator=torch.Generator().manual_seed(3)) * 3
    z[0] = 1.0  # every key tied
    z[1, :13] = 5.0  # a tied support of 13 keys
    t = cpu_rows.row_thresholds(z, torch.full((200,), 64))
    torch.testing.assert_close(t.float(), threshold(z, 1.5).squeeze(-1), atol=1e-5, rtol=1e-6)
    half = cpu_rows.row_thresholds(z, torch.full((200,), 20))  # only the first 20 keys count
    torch.testing.assert_close(half.float(), threshold(z[:, :20], 1.5).squeeze(-1), atol=1e-5, rtol=1e-6)


@pytest.mark.parametrize("start", ["empty", "random", "gold"])
def test_certified_kernel_is_dense_entmax_and_adds_what_the_torch_path_adds(torch_path, start):
    q, k, v, lengths = _batch(seed=4)
    n = q.shape[2]
    ok = torch.arange(n)[None, :] < lengths[:, None]
    scores = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).masked_fill(~ok[:, None, None, :], float("-inf"))
    probs = entmax(scores, 1.5).masked_fill(~ok[:, None, :, None], 0.0)
    gold = Pattern.from_mask(probs > 0, lengths=lengths)
    pattern = {"empty": Pattern.from_mask(torch.zeros_like(probs, dtype=torch.bool), lengths=lengths),
               "random": _random_pattern(lengths, 2, n, 0.1, seed=2), "gold": gold}[start]
    result = certified_entmax_attention(q, k, v, pattern)
    with torch_path:
        ref = certified_entmax_attention(q, k, v, pattern)
    valid = ok[:, None, :, None].expand_as(result.output)
    torch.testing.assert_close(result.output[valid], (probs @ v)[valid], atol=2e-5, rtol=2e-5)
    assert result.pattern == ref.pattern and torch.equal(result.keys_added, ref.keys_added)
    assert result.pattern.contains(gold)
    if start == "gold":
        assert int(result.keys_added.sum()) == 0


def test_threshold_predictor_kernel_equals_torch_path(torch_path):
    data = uneven_group_dataset(sequences=2)
    predictor = predictor_from_spec("proj4-score-thr-ep0").fit(data)
    seq = next(data.sequences())
    values = [0.8, 0.95, 1.0]
    fast = predictor.predict_sweep(seq.inputs(1), values)
    with torch_path:
        ref = predictor.predict_sweep(seq.inputs(1), values)
    assert fast == ref


def test_shared_group_rows_equal_the_sorting_path(monkeypatch):
    from sparsefinder.pattern import Pattern
    from sparsefinder.predictors import buckets, group_rows

    g = torch.Generator().manual_seed(3)
    qg, kg = torch.randint(-1, 9, (3, 30, 2), generator=g), torch.randint(-1, 9, (3, 30, 3), generator=g)
    fast = buckets.group_pattern(qg, kg, 8)  # 8 groups: ids -1 and 8 mean "no group"
    index, counts = group_rows.shared_group_rows(qg, kg, 8, torch.tensor([30, 17, 0]))
    monkeypatch.setattr(group_rows, "available", lambda: False)
    slow = buckets.group_pattern(qg, kg, 8)
    assert fast.validate() == slow and fast.nnz > 0
    expected = slow.to_dense()[0].clone()
    expected[1, 17:] = False
    expected[1, :, 17:] = False
    expected[2] = False
    assert torch.equal(Pattern(index[None], counts[None], torch.tensor([30])).to_dense()[0], expected)


def test_quantization_and_kmeans_predict_the_same_pairs_with_and_without_the_kernel(monkeypatch):
    from synthetic import grouped_dataset

    from sparsefinder.predictors import group_rows
    from sparsefinder.predictors.sparsefinder_family import KMeansPredictor, QuantizationPredictor

    data = grouped_dataset(sequences=3, layers=1, heads=2, length=40, dim=8)
    seqs = list(data.sequences())
    from sparsefinder.dataset import batch_inputs
    inputs, _ = batch_inputs([seqs[0], seqs[1]], 0)
    for predictor in (QuantizationPredictor(rank=3, epochs=1, buckets=4), KMeansPredictor(rank=3, epochs=1, top=2)):
        predictor.fit(data)
        fast = predictor.predict_sweep(inputs, list(predictor.grid)[:4])
        monkeypatch.setattr(group_rows, "available", lambda: False)
        slow = predictor.predict_sweep(inputs, list(predictor.grid)[:4])
        monkeypatch.undo()
        assert fast == slow and fast[-1].nnz > 0


def test_entmax15_rows_matches_entmax15_forward_and_backward():
    from entmax import entmax15

    from sparsefinder.attention.cpu_rows import entmax15_rows

    g = torch.Generator().manual_seed(7)
    z = torch.randn(3, 4, 50, 50, generator=g) * 3
    z[..., 40:] = torch.finfo(torch.float32).min  # masked keys, as transformers' additive mask makes them
    z[0, 0, 0, 30:] = float("-inf")
    weights = torch.randn(z.shape, generator=g)
    grads = []
    for fn in (entmax15_rows, lambda x: entmax15(x, dim=-1)):
        x = z.clone().requires_grad_(True)
        p = fn(x)
        (p * weights).sum().backward()
        grads.append((p.detach(), x.grad))
    (p_fast, g_fast), (p_ref, g_ref) = grads
    assert torch.allclose(p_fast, p_ref, atol=1e-6) and torch.equal(p_fast > 0, p_ref > 0)
    assert torch.allclose(p_fast.sum(-1), torch.ones(3, 4, 50), atol=1e-5)
    assert torch.allclose(g_fast, g_ref, atol=1e-5)


def test_rows_that_start_later_read_only_their_keys():
    """``first``/``nvalid`` per row: the kernels see keys ``first ≤ j < nvalid`` only, as if the row were cut there."""
    g = torch.Generator().manual_seed(8)
    z = torch.randn(6, 40, generator=g) * 3
    first, nvalid = torch.tensor([0, 5, 12, 30, 39, 7]), torch.tensor([40, 25, 13, 40, 40, 7])  # the last row: none
    v = torch.randn(1, 40, 4, generator=g)
    (index, counts), = cpu_rows.select_rows(z, nvalid, [torch.zeros(6)], first)
    out, kept, kept_counts, _ = cpu_rows.certified_rows(z, torch.zeros(6, 1, dtype=torch.long),
                                                        torch.zeros(6, dtype=torch.long), nvalid, v, 6, first)
    for r in range(6):
        f, nv = int(first[r]), int(nvalid[r])
        if nv <= f:
            assert counts[r] == 0 and kept_counts[r] == 0 and not out[r].any()
            continue
        p = entmax(z[r, f:nv][None], 1.5)[0]
        support = (p > 0).nonzero().squeeze(1) + f
        assert index[r, :counts[r]].tolist() == support.tolist() == kept[r, :kept_counts[r]].tolist()
        torch.testing.assert_close(out[r], p @ v[0, f:nv], atol=1e-5, rtol=1e-5)


def test_probabilities_in_place_equal_dense_entmax_on_hard_rows():
    """``certified_probabilities`` turns score rows into α-entmax probabilities in place, with and without predicted
    keys: rows whose support is one key, every key (ties), two far-apart keys, a ramp, a row cut at unaligned
    ``first``/``nvalid`` (large scores outside, never read), a row with no key; the support counts and the keys added
    to the predicted ones are those of dense α-entmax, and so are the probabilities."""
    g = torch.Generator().manual_seed(12)
    n = 101
    z = torch.randn(7, n, generator=g) * 0.3
    z[0, 57] = 9.0  # one dominant key
    z[1] = 2.0  # every key tied
    z[2, 3], z[2, 98] = 4.0, 4.1  # two keys far apart
    z[3] = torch.linspace(-1.0, 1.5, n)  # a ramp: a wide support
    z[4, 40:44] = 3.0
    z[5] = torch.randn(n, generator=g) * 4
    first = torch.tensor([0, 0, 0, 0, 17, 3, 9])
    nvalid = torch.tensor([n, n, n, n, 63, 99, 9])  # the last row sees no key
    seen = (torch.arange(n) >= first[:, None]) & (torch.arange(n) < nvalid[:, None])
    scores = z.masked_fill(~seen, 50.0)  # never read: a row sees its keys only
    expected = torch.zeros(7, n)
    for r in range(6):
        expected[r, first[r]:nvalid[r]] = entmax(z[r, first[r]:nvalid[r]][None], 1.5)[0]
    support = (expected > 0).sum(-1)
    predicted = torch.tensor([[57, 0], [0, 1], [98, 50], [0, 0], [40, 20], [3, 7], [0, 0]])
    predicted_counts = torch.tensor([1, 2, 2, 0, 2, 1, 0])
    for index, counts in [(torch.zeros(7, 1, dtype=torch.long), torch.zeros(7, dtype=torch.long)),
                          (predicted, predicted_counts)]:
        p = scores.clone()
        kept, added = cpu_rows.certified_probabilities(p, index, counts, nvalid, first)
        torch.testing.assert_close(p, expected, atol=1e-6, rtol=1e-5)
        assert torch.equal(p > 0, expected > 0)
        hits = torch.tensor([int((expected[r, index[r, :counts[r]]] > 0).sum()) for r in range(7)])
        assert added.tolist() == (support - hits).tolist() and kept.tolist() == (support + counts - hits).tolist()
    assert support.tolist()[:3] == [1, n, 2] and int(support[3]) > 16 and int(support[6]) == 0


@pytest.mark.parametrize("window", [0, 3, 40])
def test_exact_attention_tasks_equal_dense_entmax_over_valid_keys_within_the_band(window):
    """``exact_attention``'s tasks (32 queries of one head, two BLAS products a task): dense α-entmax over each query's
    valid keys within ``±window`` (0: every key), a length that is no multiple of the task, a padded sequence (zeros at
    its padded queries, its padded keys never weighted), a tied row; the support sizes are dense α-entmax's."""
    g = torch.Generator().manual_seed(41)
    batch, heads, n, d = 2, 3, 70, 8
    q, k, v = (torch.randn(batch, heads, n, d, generator=g) for _ in range(3))
    q[0, 1, 5] = 0.0  # every key tied for this query
    lengths = torch.tensor([n, 45])
    scaling = 0.6
    scores = q @ k.transpose(-1, -2) * scaling
    offset = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    seen = (torch.arange(n) < lengths[:, None])[:, None, None, :] & ((offset.abs() <= window) if window else True)
    p = entmax(scores.masked_fill(~seen, -1e4), 1.5)  # a padded query's row has no valid key: any finite fill
    padded = torch.arange(n)[None, :] >= lengths[:, None]  # (B, n) queries
    expected = (p @ v).masked_fill(padded[:, None, :, None], 0.0)
    out, support = cpu_rows.exact_attention(q, k, v, lengths, scaling, window)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(support, (p > 0).sum(-1).masked_fill(padded[:, None, :], 0))
    assert int(support[0, 1, 5]) == (min(n, 5 + window + 1) - max(0, 5 - window) if window else n)  # the tie
    assert not out[1, :, 45:].any()


@pytest.mark.parametrize("window", [0, 5])
def test_threshold_predictor_tasks_keep_the_selected_keys_and_certified_tasks_equal_dense_entmax(window):
    """``thresholded_attention``: each valid query keeps the keys of its band whose approximate score clears its
    threshold (over those keys) by its head's margin, and attends over them; ``certified_thresholded_attention``:
    dense α-entmax over the band, the certified keys (kept plus support) and the support keys not kept; padded
    queries get zeros and keep nothing."""
    g = torch.Generator().manual_seed(43)
    batch, heads, n, d, rank = 2, 2, 70, 8, 4
    q, k, v = (torch.randn(batch, heads, n, d, generator=g) for _ in range(3))
    qp, kp = (torch.randn(batch, heads, n, rank, generator=g) * 2 for _ in range(2))
    lengths, margins, scaling = torch.tensor([n, 40]), torch.tensor([-0.5, 0.2]), 0.5
    out, counts = cpu_rows.thresholded_attention(qp, kp, q, k, v, lengths, margins, scaling, window)
    exact_out, certified, added = cpu_rows.certified_thresholded_attention(qp, kp, q, k, v, lengths, margins, scaling,
                                                                           window)
    approximate, scores = qp @ kp.transpose(-1, -2), q @ k.transpose(-1, -2) * scaling
    for b in range(batch):
        for h in range(heads):
            for i in range(n):
                if i >= lengths[b]:
                    assert counts[b, h, i] == certified[b, h, i] == 0
                    assert not out[b, h, i].any() and not exact_out[b, h, i].any()
                    continue
                seen = torch.arange(int(lengths[b]))
                seen = seen[(seen - i).abs() <= window] if window else seen
                t = threshold(approximate[b, h, i, seen][None], 1.5)[0]
                keep = seen[approximate[b, h, i, seen] - t >= margins[h]]
                assert int(counts[b, h, i]) == len(keep)
                p = entmax(scores[b, h, i, keep][None], 1.5)[0] if len(keep) else torch.zeros(0)
                torch.testing.assert_close(out[b, h, i], p @ v[b, h, keep], atol=1e-5, rtol=1e-5)
                dense = entmax(scores[b, h, i, seen][None], 1.5)[0]
                torch.testing.assert_close(exact_out[b, h, i], dense @ v[b, h, seen], atol=1e-5, rtol=1e-5)
                support = set(seen[dense > 0].tolist())
                assert int(certified[b, h, i]) == len(support | set(keep.tolist()))
                assert int(added[b, h, i]) == len(support - set(keep.tolist()))
    assert 0 < int(added.sum()) and torch.equal(certified - added, counts)  # the kept keys, then the support missed


def test_certified_attention_with_nothing_predicted_runs_the_exact_tasks(monkeypatch):
    """An empty pattern without a pattern to keep (the ``exact`` mode) takes ``exact_attention``: the output, keys
    added and kept pairs of the chunked route that keeps its pattern."""
    g = torch.Generator().manual_seed(42)
    q, k, v = (torch.randn(2, 2, 50, 8, generator=g) for _ in range(3))
    lengths = torch.tensor([50, 31])
    empty = Pattern.empty(2, 50, lengths)
    calls = []
    exact = cpu_rows.exact_attention
    monkeypatch.setattr(cpu_rows, "exact_attention", lambda *a: calls.append(a) or exact(*a))
    fast = certified_entmax_attention(q, k, v, empty, keep_pattern=False, window=7)
    kept = certified_entmax_attention(q, k, v, empty, keep_pattern=True, window=7)
    assert len(calls) == 1 and fast.pattern is None and kept.pattern is not None
    valid = (torch.arange(50) < lengths[:, None])[:, None, :, None]
    torch.testing.assert_close(fast.output * valid, kept.output * valid, atol=1e-6, rtol=1e-6)
    assert torch.equal(fast.keys_added, kept.keys_added) and torch.equal(fast.kept, kept.kept)


def test_thresholded_rows_attend_exactly_the_keys_select_rows_keeps():
    """The fused route (threshold, selection and attention in one pass a row) keeps the keys ``select_rows`` keeps,
    rows cut at unaligned ``first``/``nvalid`` (one with no key), ties, keys read from ``lo`` on, two row groups; its
    output is α-entmax over the kept keys' exact scores times their values."""
    g = torch.Generator().manual_seed(31)
    rows, m, lo, d = 10, 77, 5, 6
    z = torch.randn(rows, m, generator=g) * 3
    z[1] = 0.5  # every key tied
    first = torch.tensor([0, 0, 3, 17, 40, 0, 9, 60, 0, 76])
    nvalid = torch.tensor([m, m, 70, 33, 77, 1, 9, 77, 50, 77])  # row 6 sees no key, row 5 and 9 one each
    seen = (torch.arange(m) >= first[:, None]) & (torch.arange(m) < nvalid[:, None])
    z = z.masked_fill(~seen, 50.0)  # never read: a row sees its keys only
    margins = torch.linspace(-2.0, 0.5, rows)
    q = torch.randn(rows, d, generator=g)
    k, v = torch.randn(2, lo + m + 3, d, generator=g), torch.randn(2, lo + m + 3, 4, generator=g)
    out, counts = cpu_rows.thresholded_rows(z, first, nvalid, margins, q, k, v, lo, rows // 2, 0.4)
    (index, expected_counts), = cpu_rows.select_rows(z, nvalid, [margins], first)
    assert torch.equal(counts, expected_counts) and int(counts[6]) == 0 and int(counts[1]) == m
    for r in range(rows):
        keys = index[r, :counts[r]] + lo
        if not len(keys):
            assert not out[r].any()
            continue
        p = entmax((q[r] @ k[r // 5, keys].T * 0.4)[None], 1.5)[0]
        torch.testing.assert_close(out[r], p @ v[r // 5, keys], atol=1e-5, rtol=1e-5)


def test_certified_thresholded_rows_equal_certified_probabilities_of_the_selected_keys():
    """The certified mode's fused route: probabilities, certified keys and keys added are those of
    ``certified_probabilities`` seeded by the keys ``select_rows`` keeps, rows cut at unaligned ``first``/``nvalid``
    (one with no key), scores outside a row never read."""
    g = torch.Generator().manual_seed(33)
    rows, m = 9, 70
    zt = torch.randn(rows, m, generator=g) * 2
    z = zt + torch.randn(rows, m, generator=g) * 0.7  # exact scores near the approximate ones
    first = torch.tensor([0, 3, 11, 40, 0, 9, 0, 25, 69])
    nvalid = torch.tensor([m, 60, 12, 70, 33, 9, m, 64, 70])  # row 5 sees no key, row 8 one
    outside = (torch.arange(m) < first[:, None]) | (torch.arange(m) >= nvalid[:, None])
    z, zt = z.masked_fill(outside, 50.0), zt.masked_fill(outside, 50.0)  # never read
    margins = torch.linspace(-1.5, 0.3, rows)
    (index, counts), = cpu_rows.select_rows(zt, nvalid, [margins], first)
    expected = z.clone()
    kept, added = cpu_rows.certified_probabilities(expected, index, counts, nvalid, first)
    fused = z.clone()
    fused_kept, fused_added = cpu_rows.certified_thresholded_rows(fused, zt, first, nvalid, margins)
    assert torch.equal(fused, expected) and torch.equal(fused_kept, kept) and torch.equal(fused_added, added)
    assert int(added.sum()) > 0 and int(kept[5]) == 0 and not fused[5].any()


def test_blas_runs_one_thread_inside_the_kernels_that_call_it_and_is_restored():
    """``single_threaded_blas``: the BLAS libraries loaded when it is first used (scipy's, the one Numba's ``np.dot``
    calls, loaded first) run one thread inside the context, as many as before after it."""
    from threadpoolctl import threadpool_info

    from sparsefinder import kernels

    def blas_threads() -> dict[str, int]:
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    kernels._blas.cache_clear()  # first use now: every BLAS library this process has loaded
    with kernels.single_threaded_blas():
        pass
    before = blas_threads()
    with kernels.single_threaded_blas():
        inside = blas_threads()
    assert inside.keys() == before.keys() and set(inside.values()) == {1} and blas_threads() == before
