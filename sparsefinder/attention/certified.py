"""Certified-exact sparse α-entmax attention: recall 1.0 by construction (method.md §1).

The threshold computed on a subset ``S`` of a query's keys never exceeds the one on all
keys (``t_S ≤ t``), so a key with score ``z_j ≤ t_S`` is certainly outside the support. For
each chunk of queries the exact score rows are one matrix product (on a CPU this costs less
than the threshold search over full rows that dense α-entmax does), ``t_S`` is computed on
the predicted keys only (on the row's best :data:`~sparsefinder.config.THRESHOLD_SEED_KEYS`
keys where none is predicted), and the exact threshold ``t`` of the row is found from that
lower bound: in the torch path on the keys with ``z_j > t_S`` only (every support key is among
them), in the compiled CPU kernel by Newton's method starting at ``t_S`` in vectorised passes
over the row (no sort). Attention on the support ``z_j > t`` is dense α-entmax. The certified
pattern is the predicted keys plus the support keys they missed (``keys_added``: exactly the
gold pairs the predictor missed), so an empty pattern gives the exact support: the ``exact``
attention mode is this route with no predictor.

Memory is bounded by chunks of queries. Inference with α = 1.5 on a CPU runs the whole check and
the attention of a row in one compiled pass (:func:`sparsefinder.attention.cpu_rows.certified_rows`); with nothing
predicted and no pattern to keep (the ``exact`` mode), the compiled tasks of
:func:`sparsefinder.attention.cpu_rows.exact_attention` do the chunk's products too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..alpha_entmax import check_alpha, threshold
from ..config import DEFAULT_ALPHA, SPARSE_CHUNK_PAIRS, THRESHOLD_SEED_KEYS
from ..pattern import (Pattern, band_keys, band_mask, band_rows, compact, query_chunks, row_key_spans,
                       shift_rows)
from . import cpu_rows
from .sparse import as_batched, attend_chunk, needs_grad, row_kernels_apply

__all__ = ["CertifiedOutput", "certified_entmax_attention", "certified_entmax_rows"]


@dataclass(frozen=True)
class CertifiedOutput:
    """Result of :func:`certified_entmax_attention`."""

    output: Tensor
    """Attention output, same shape as the queries: dense α-entmax attention."""
    pattern: Pattern | None
    """The certified pattern: the given one plus the keys that had to be added (``None`` unless kept)."""
    keys_added: Tensor
    """Pairs added per sequence and head, int64 shape ``(B, H)``."""
    kept: Tensor
    """Pairs of the certified pattern per sequence and head, int64 shape ``(B, H)`` (also when it is not kept)."""


def _certify_chunk(rows: Tensor, index: Tensor, valid: Tensor, key_ok: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Keys of a chunk's certified rows: ``rows`` ``(B, H, c, n)`` exact scores, ``index``/``valid`` ``(B, H, c, w)``.

    Returns the certified rows (the predicted keys and the support keys they missed) as a boolean
    mask ``(B, H, c, n)`` and the pairs added per (B, H).
    """
    some = valid.any(-1, keepdim=True)
    kept = rows.gather(-1, index).masked_fill(~valid, float("-inf")).masked_fill(~some, 0.0)
    present = rows.masked_fill(~key_ok, float("-inf"))
    seeds = present.topk(min(THRESHOLD_SEED_KEYS, rows.shape[-1]), dim=-1).values
    best = seeds[..., :1].nan_to_num(neginf=0.0)  # a padded query's row has no key: any finite seed does
    seeded = threshold(torch.maximum(seeds, best - 1e4), alpha)  # absent keys stay far below any support
    t_s = torch.where(some, threshold(kept, alpha), seeded)  # a lower bound of each row's threshold
    candidates, counts = compact((rows > t_s) & key_ok)  # every support key is among them
    scores = rows.gather(-1, candidates).masked_fill(torch.arange(candidates.shape[-1], device=rows.device)
                                                     >= counts[..., None], float("-inf"))
    t = threshold(scores.masked_fill((counts[..., None] == 0) & (torch.arange(scores.shape[-1], device=rows.device)
                                                                  == 0), 0.0), alpha)  # the rows' exact thresholds
    n = rows.shape[-1]
    predicted = rows.new_zeros(*rows.shape[:-1], n + 1, dtype=torch.bool)
    predicted = predicted.scatter_(-1, torch.where(valid, index, n), True)[..., :n]
    certified = predicted | ((rows > t) & key_ok)
    return certified, (certified & ~predicted).sum((-1, -2))


def certified_entmax_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, alpha: float = DEFAULT_ALPHA,
    scaling: float | None = None, chunk_pairs: int = SPARSE_CHUNK_PAIRS, keep_pattern: bool = True, window: int = 0,
) -> CertifiedOutput:
    """Dense α-entmax attention computed on ``pattern`` plus the keys it provably misses.

    ``q, k, v`` have shape ``(B, H, n, d)`` (or ``(H, n, d)`` with a one-sequence pattern); the
    output equals dense α-entmax attention over each sequence's valid keys up to float
    rounding, whatever ``pattern`` is (empty, random or predicted). Gradients flow through
    the final sparse computation. ``keep_pattern=False`` skips assembling the certified pattern
    (it is padded to the widest row: hundreds of MB a layer at 4,096 tokens, more than 20 GB at 16k);
    its size per head (``kept``) is counted either way. Chunks of at most ``chunk_pairs`` scores.
    ``window`` ``W`` > 0: a banded model's attention, over the keys within ``±W`` of each query only
    (the pattern's keys outside the band are dropped; each chunk of queries scores its key range only). An empty
    pattern without ``keep_pattern`` (the ``exact`` mode) runs on a CPU by
    :func:`~sparsefinder.attention.cpu_rows.exact_attention`, whose tasks of a few queries keep their scores in cache.
    """
    q, k, v, single = as_batched(q, k, v, pattern)
    pattern = pattern.to(q.device)
    if not keep_pattern and not bool(pattern.counts.any()) and not needs_grad(q, k, v) \
            and row_kernels_apply(q, check_alpha(alpha)):
        out, support = cpu_rows.exact_attention(q, k, v, pattern.lengths, q.shape[-1] ** -0.5 if scaling is None
                                                else scaling, window)
        per_head = support.sum(-1)  # nothing predicted: every support key is added, and kept
        result = CertifiedOutput(out.to(q.dtype), None, per_head, per_head)
    else:
        result = certified_entmax_rows(q, k, v, [(0, pattern.index, pattern.counts)], pattern.lengths, alpha, scaling,
                                       keep_pattern, chunk_pairs, window)
    return CertifiedOutput(result.output[0], result.pattern, result.keys_added, result.kept) if single else result


def certified_entmax_rows(
    q: Tensor, k: Tensor, v: Tensor, rows: Iterable[tuple[int, Tensor, Tensor]], lengths: Tensor,
    alpha: float = DEFAULT_ALPHA, scaling: float | None = None, keep_pattern: bool = True,
    chunk_pairs: int = SPARSE_CHUNK_PAIRS, window: int = 0,
) -> CertifiedOutput:
    """:func:`certified_entmax_attention` of a predicted pattern given by chunks of queries, as
    :meth:`~sparsefinder.predictors.base.Predictor.predict_rows` yields it.

    ``q, k, v`` ``(B, H, n, d)``; ``rows`` yields ``(start, index (B, H, c, w), counts (B, H, c))``
    covering the ``n`` queries in order, split further so that each matrix product of exact score rows
    holds at most ``chunk_pairs`` scores; ``lengths`` ``(B,)`` are the sequences' valid tokens.
    Each chunk scores the keys it may see (:func:`~sparsefinder.pattern.band_keys`: every key, or
    the band of a ``window``); the kernels and the torch path work in that key range.
    """
    alpha = check_alpha(alpha)
    batch, heads, n, d = q.shape
    scaling = d**-0.5 if scaling is None else scaling
    outs, pieces = [], []
    added = torch.zeros(batch, heads, dtype=torch.long, device=q.device)
    kept = torch.zeros(batch, heads, dtype=torch.long, device=q.device)
    kernel = not needs_grad(q, k, v) and row_kernels_apply(q, alpha)
    scaled = q * scaling  # once, not per chunk
    if kernel:  # once, not per chunk: the model's heads are strided views (copies per chunk were O(n²) at 16k)
        k, v = k.contiguous(), v.contiguous()
        values = v.view(batch * heads, n, -1)  # each chunk's kernel reads its key range from key lo on
    for s, index, counts in _split(rows, query_chunks(n, batch * heads * n, chunk_pairs, window).step):
        c = counts.shape[2]
        lo, hi = band_keys(s, c, n, window)
        if window and bool(counts.any()):  # the predicted keys within the band, counted from the chunk's first key
            index, counts = band_rows(s, index, counts, window)
            index = shift_rows(index, counts, -lo)
        scores = torch.matmul(scaled[:, :, s:s + c], k[:, :, lo:hi].transpose(-1, -2))
        if kernel:
            first, nvalid = row_key_spans(s, c, lo, hi, window, lengths, heads)
            rows_index, rows_counts = index.reshape(-1, index.shape[-1]), counts.reshape(-1)
            if keep_pattern:
                out, index, counts, more = cpu_rows.certified_rows(
                    scores.reshape(-1, hi - lo), rows_index, rows_counts, nvalid, values, c, first, lo)
                out = out.view(batch, heads, c, -1)
                counts = counts.view(batch, heads, c)
                pieces.append((shift_rows(index.view(batch, heads, c, -1), counts, lo), counts))
            else:  # probabilities in place of the scores (vectorised passes), then one matrix product with the values
                counts, more = cpu_rows.certified_probabilities(scores.view(-1, hi - lo), rows_index, rows_counts,
                                                                nvalid, first)
                out = torch.matmul(scores, v[:, :, lo:hi])
                counts = counts.view(batch, heads, c)
            outs.append(out.to(q.dtype))
            added += more.view(batch, heads, c).sum(-1)
            kept += counts.sum(-1)
            continue
        slot_ok = torch.arange(index.shape[-1], device=q.device) < counts[..., None]
        query_ok = (torch.arange(s, s + c, device=q.device) < lengths[:, None])[:, None, :, None]  # (B, 1, c, 1)
        reach = (torch.arange(lo, hi, device=q.device) < lengths[:, None])[:, None, None, :] & query_ok \
            & band_mask(s, c, lo, hi, window, q.device)
        mask, more = _certify_chunk(scores.detach(), index, slot_ok, reach, alpha)
        added += more
        index, counts = compact(mask)
        kept += counts.sum(-1)
        outs.append(attend_chunk(q[:, :, s:s + c], k[:, :, lo:hi], v[:, :, lo:hi], index, counts, alpha, scaling,
                                 rows=scores))
        if keep_pattern:
            pieces.append((shift_rows(index, counts, lo), counts))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, 2)
    certified = Pattern.cat_rows(pieces, lengths) if keep_pattern else None
    return CertifiedOutput(out, certified, added, kept)


def _split(rows: Iterable[tuple[int, Tensor, Tensor]], most: int) -> Iterator[tuple[int, Tensor, Tensor]]:
    """The chunks of ``rows``, each cut into chunks of at most ``most`` queries."""
    for start, index, counts in rows:
        for s in range(0, counts.shape[2], most):
            yield start + s, index[:, :, s:s + most], counts[:, :, s:s + most]
