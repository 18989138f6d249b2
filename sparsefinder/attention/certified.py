"""Certified-exact sparse α-entmax attention: recall 1.0 by construction (method.md §1).

The threshold computed on a subset ``S`` of a query's keys never exceeds the one on all
keys (``t_S ≤ t``), so a key with score ``z_j ≤ t_S`` is certainly outside the support. For
each chunk of queries the exact score rows are one matrix product (on a CPU this costs less
than the threshold search over full rows that dense α-entmax does), ``t_S`` is computed on
the predicted keys only, and every key with ``z_j > t_S`` that the pattern missed is added.
One round suffices: every key left out has ``z_j ≤ t_S ≤ t_{S'}`` for the enlarged set
``S'``, so ``t_{S'}`` is the dense threshold and attention on ``S'`` equals dense α-entmax.
A query whose predicted row is empty keeps its exact support (``t_S = t``), so an empty
pattern gives exact dense α-entmax by the same route: on a CPU the compiled kernel finds each
row's threshold by Newton's method in vectorised passes, without the sort of full rows that
the ``entmax`` package does (the ``exact`` attention mode).

So the predictor decides how many entries the threshold search sorts (``w`` instead of
``n``); the check itself is a comparison per pair. Memory is bounded by chunks of queries.
Inference with α = 1.5 on a CPU runs the whole check and the attention of a row in one
compiled pass (:func:`sparsefinder.attention.cpu_rows.certified_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..alpha_entmax import check_alpha, threshold
from ..config import DEFAULT_ALPHA, SPARSE_CHUNK_PAIRS
from ..pattern import Pattern, compact, query_chunks
from . import cpu_rows
from .sparse import as_batched, attend_chunk, needs_grad, row_kernels_apply

__all__ = ["CertifiedOutput", "certified_entmax_attention"]


@dataclass(frozen=True)
class CertifiedOutput:
    """Result of :func:`certified_entmax_attention`."""

    output: Tensor
    """Attention output, same shape as the queries: dense α-entmax attention."""
    pattern: Pattern
    """The certified pattern: the given one plus the keys that had to be added."""
    keys_added: Tensor
    """Pairs added per sequence and head, int64 shape ``(B, H)``."""


def _certify_chunk(rows: Tensor, index: Tensor, valid: Tensor, key_ok: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Keys of a chunk's certified rows: ``rows`` ``(B, H, c, n)`` exact scores, ``index``/``valid`` ``(B, H, c, w)``.

    Returns the certified rows as a boolean mask ``(B, H, c, n)`` and the pairs added per (B, H).
    """
    some = valid.any(-1, keepdim=True)
    kept = rows.gather(-1, index).masked_fill(~valid, float("-inf")).masked_fill(~some, 0.0)
    present = rows.masked_fill(~key_ok, float("-inf"))
    best = present.amax(-1, keepdim=True).nan_to_num(neginf=0.0)  # a padded query's row has no key: any finite value
    exact = threshold(torch.maximum(present, best - 1e4), alpha)  # absent keys stay far below any support
    t_s = torch.where(some, threshold(kept, alpha), exact)
    n = rows.shape[-1]
    predicted = rows.new_zeros(*rows.shape[:-1], n + 1, dtype=torch.bool)
    predicted = predicted.scatter_(-1, torch.where(valid, index, n), True)[..., :n]
    certified = predicted | ((rows > t_s) & key_ok)
    return certified, (certified & ~predicted).sum((-1, -2))


def certified_entmax_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, alpha: float = DEFAULT_ALPHA,
    scaling: float | None = None, chunk_pairs: int = SPARSE_CHUNK_PAIRS,
) -> CertifiedOutput:
    """Dense α-entmax attention computed on ``pattern`` plus the keys it provably misses.

    ``q, k, v`` have shape ``(B, H, n, d)`` (or ``(H, n, d)`` with a one-sequence pattern); the
    output equals dense α-entmax attention over each sequence's valid keys up to float
    rounding, whatever ``pattern`` is (empty, random or predicted). Gradients flow through
    the final sparse computation.
    """
    alpha = check_alpha(alpha)
    q, k, v, single = as_batched(q, k, v, pattern)
    batch, heads, n, d = q.shape
    scaling = d**-0.5 if scaling is None else scaling
    pattern = pattern.to(q.device)
    valid = pattern.valid_slots()
    key_ok = (torch.arange(n, device=q.device) < pattern.lengths[:, None])[:, None, None, :]  # (B, 1, 1, n)
    starts = query_chunks(n, batch * heads * n, chunk_pairs)
    step = starts.step
    outs, pieces = [], []
    added = torch.zeros(batch, heads, dtype=torch.long, device=q.device)
    kernel = not needs_grad(q, k, v) and row_kernels_apply(q, alpha)
    # keys each query row may see: its sequence's length (0 for padded queries), (B, H, n)
    rows_valid = ((torch.arange(n, device=q.device) < pattern.lengths[:, None]) * pattern.lengths[:, None])[:, None, :]
    rows_valid = rows_valid.expand(batch, heads, n)
    for s in starts:
        rows = torch.matmul(q[:, :, s:s + step] * scaling, k.transpose(-1, -2))
        if kernel:
            out, index, counts, more = cpu_rows.certified_rows(
                rows.reshape(-1, n), pattern.index[:, :, s:s + step].reshape(-1, pattern.width),
                pattern.counts[:, :, s:s + step].reshape(-1), rows_valid[:, :, s:s + step].reshape(-1),
                v.reshape(batch * heads, n, -1), rows.shape[2])
            c = rows.shape[2]
            outs.append(out.view(batch, heads, c, -1).to(q.dtype))
            pieces.append((index.view(batch, heads, c, -1), counts.view(batch, heads, c)))
            added += more.view(batch, heads, c).sum(-1)
            continue
        query_ok = (torch.arange(s, min(s + step, n), device=q.device) < pattern.lengths[:, None])[:, None, :, None]
        mask, more = _certify_chunk(rows.detach(), pattern.index[:, :, s:s + step], valid[:, :, s:s + step],
                                    key_ok & query_ok, alpha)
        added += more
        index, counts = compact(mask)
        outs.append(attend_chunk(q[:, :, s:s + step], k, v, index, counts, alpha, scaling, rows=rows))
        pieces.append((index, counts))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, 2)
    certified = Pattern.cat_rows(pieces, pattern.lengths)
    return CertifiedOutput(out[0] if single else out, certified, added)
