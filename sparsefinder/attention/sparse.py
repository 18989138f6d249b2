"""Exact α-entmax attention on the kept pairs of a :class:`~sparsefinder.pattern.Pattern` (method.md §5).

For each query only the kept scores ``z_ij = q_i·k_j·s`` (``j`` in the pattern row) enter
α-entmax (Peters, Niculae & Martins 2019), and the kept values are summed with those
weights. When the pattern contains the gold support the result is dense α-entmax
attention up to float rounding, because keys outside the support get exactly zero
probability (method.md §1).

The pattern's padded layout ``index (B, H, n, w)`` is read as is, a chunk of queries at a
time (at most :data:`~sparsefinder.config.SPARSE_CHUNK_PAIRS` scores or gathered pairs live
at once), with one of two score strategies chosen per call by
:data:`~sparsefinder.config.SPARSE_GATHER_RATIO`:

- *gathered keys* when rows are short next to ``n`` (``w · ratio < n``): the ``w`` kept keys
  and values of each query are gathered and scored; work and memory grow with the kept pairs;
- *score rows* otherwise: one matrix product gives the chunk's ``(c, n)`` scores, the kept
  ones are read with ``gather`` and the weights are scattered back for a second matrix
  product. On a CPU a dense product costs about a tenth of a gather per pair, so this is
  faster whenever more than ~1/16 of the keys are kept (L ≤ 1k at the sparsity we see).

α-entmax is taken over the ``w`` kept scores only (sorting ``w``, not ``n``, entries); α = 1.5
is exact by sorting, other α bisection (:func:`sparsefinder.alpha_entmax.entmax`). Autograd
flows through every step. Inference (no autograd) with α = 1.5 runs the compiled row kernel of
:mod:`sparsefinder.attention.cpu_rows` on a CPU and the Triton kernel on a GPU instead. Three layers as in ``entmax``: :func:`kept_scores` (the building
block the certified mode reuses), :func:`sparse_entmax_attention` (the function users call)
and :class:`SparseEntmaxAttention` (a thin ``nn.Module``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..alpha_entmax import check_alpha, entmax
from ..config import DEFAULT_ALPHA, SPARSE_CHUNK_PAIRS, SPARSE_GATHER_RATIO
from ..pattern import Pattern, query_chunks, width_classes
from . import cpu_rows
from .triton_entmax import triton_available, triton_sparse_entmax_attention

__all__ = ["SparseEntmaxAttention", "as_batched", "attend_chunk", "entmax_over_slots", "needs_grad", "row_kernels_apply",
           "sparse_entmax_attention", "sparse_entmax_rows"]


def as_batched(q: Tensor, k: Tensor, v: Tensor, pattern: Pattern) -> tuple[Tensor, Tensor, Tensor, bool]:
    """Accept ``(H, n, d)`` tensors for one sequence: return ``(B, H, n, d)`` views and whether they were added."""
    single = q.dim() == 3
    if single:
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
    if pattern.shape != (q.shape[0], q.shape[1], q.shape[2], q.shape[2]):
        raise ValueError(f"pattern shape {pattern.shape} does not match queries {tuple(q.shape)}")
    return q, k, v, single


def needs_grad(*tensors: Tensor) -> bool:
    """Whether autograd will differentiate through ``tensors`` (then only the torch path runs)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def row_kernels_apply(q: Tensor, alpha: float) -> bool:
    """Whether the compiled CPU row kernels serve this call: CPU tensors, α = 1.5, Numba present."""
    return not q.is_cuda and alpha == 1.5 and cpu_rows.available()


def entmax_over_slots(scores: Tensor, valid: Tensor, alpha: float) -> Tensor:
    """α-entmax over the valid slots of each row (``(…, w)``); rows without a valid slot get zeros."""
    scores = scores.masked_fill(~valid, float("-inf"))
    empty = ~valid.any(-1, keepdim=True)
    first = torch.arange(scores.shape[-1], device=scores.device) == 0
    return entmax(scores.masked_fill(empty & first, 0.0), alpha).masked_fill(empty, 0.0)


def gathers(n: int, width: int) -> bool:
    """Whether gathering kept keys beats reading them off score rows, for rows of ``width`` slots over ``n`` keys."""
    return width * SPARSE_GATHER_RATIO < n


def attend_chunk(q: Tensor, k: Tensor, v: Tensor, index: Tensor, counts: Tensor, alpha: float, scaling: float,
                  rows: Tensor | None = None) -> Tensor:
    """Attention of a chunk of queries ``q`` ``(B, H, c, d)`` over their kept keys ``index`` ``(B, H, c, w)``.

    ``rows`` (the chunk's exact score rows ``(B, H, c, n)``) may be given; otherwise they are one
    matrix product, unless gathering the kept keys is cheaper (:func:`gathers`). Rows are
    processed by :func:`width_classes`.
    """
    batch, heads, c, d = q.shape
    n = k.shape[2]
    flat_counts = counts.reshape(-1)
    flat_index = index.reshape(-1, index.shape[-1])
    owner = torch.div(torch.arange(batch * heads * c, device=q.device), c, rounding_mode="floor") * n
    gather = rows is None and gathers(n, index.shape[-1])
    if rows is None and not gather:
        rows = torch.matmul(q * scaling, k.transpose(-1, -2))
    if gather:
        out = q.new_zeros(batch * heads * c, v.shape[-1])
        keys, values, queries = k.reshape(-1, d), v.reshape(-1, v.shape[-1]), (q * scaling).reshape(-1, d)
    else:
        probs_dense = rows.new_zeros(batch * heads * c, n)
        flat_rows = rows.reshape(-1, n)
    for ids, width in width_classes(flat_counts):
        idx = flat_index[ids, :width]
        valid = torch.arange(width, device=q.device) < flat_counts[ids, None]
        if gather:
            at = (idx + owner[ids, None]).reshape(-1)
            kept = torch.matmul(keys.index_select(0, at).view(*idx.shape, d), queries[ids].unsqueeze(-1)).squeeze(-1)
            probs = entmax_over_slots(kept, valid, alpha)
            out = out.index_add(0, ids, torch.matmul(probs.unsqueeze(1),
                                                      values.index_select(0, at).view(*idx.shape, -1)).squeeze(1))
        else:
            probs = entmax_over_slots(flat_rows[ids].gather(-1, idx), valid, alpha)
            at = (ids[:, None] * n + idx).reshape(-1)
            probs_dense = probs_dense.reshape(-1).index_add(0, at, probs.reshape(-1)).view_as(probs_dense)
    if gather:
        return out.view(batch, heads, c, -1)
    return torch.matmul(probs_dense.view(batch, heads, c, n), v)


def sparse_entmax_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, alpha: float = DEFAULT_ALPHA,
    scaling: float | None = None, chunk_pairs: int = SPARSE_CHUNK_PAIRS,
) -> Tensor:
    """α-entmax attention restricted to the pairs kept by ``pattern``.

    Parameters
    ----------
    q, k, v : Tensor, shape (B, H, n, d) or (H, n, d)
        Queries, keys and values (padded positions hold anything).
    pattern : Pattern
        Kept pairs, shape ``(B, H, n, n)`` (``B = 1`` for unbatched tensors).
    alpha : float
        α > 1 (1.5 exact by sorting, 2 sparsemax, others by bisection).
    scaling : float, optional
        Score scale; default ``d ** -0.5``.
    chunk_pairs : int
        At most this many scores (or gathered pairs) per chunk of queries (memory bound).

    Returns
    -------
    Tensor, same shape as ``q``
        ``out_i = Σ_j p_ij v_j`` over the kept keys; a query with no kept key gets zeros.
    """
    alpha = check_alpha(alpha)
    q, k, v, single = as_batched(q, k, v, pattern)
    pattern = pattern.to(q.device)
    if q.is_cuda and triton_available() and not needs_grad(q, k, v):
        out = triton_sparse_entmax_attention(q, k, v, pattern, alpha, q.shape[-1] ** -0.5 if scaling is None else scaling)
    else:
        out, _ = sparse_entmax_rows(q, k, v, [(0, pattern.index, pattern.counts)], alpha, scaling, chunk_pairs)
    return out[0] if single else out


def sparse_entmax_rows(
    q: Tensor, k: Tensor, v: Tensor, rows: Iterable[tuple[int, Tensor, Tensor]], alpha: float = DEFAULT_ALPHA,
    scaling: float | None = None, chunk_pairs: int = SPARSE_CHUNK_PAIRS,
) -> tuple[Tensor, Tensor]:
    """:func:`sparse_entmax_attention` of a pattern given by chunks of queries, as
    :meth:`~sparsefinder.predictors.base.Predictor.predict_rows` yields it, attended chunk by chunk.

    ``q, k, v`` ``(B, H, n, d)``; ``rows`` yields ``(start, index (B, H, c, w), counts (B, H, c))``
    covering the ``n`` queries in order. Returns the output ``(B, H, n, dv)`` and the kept pairs per
    sequence and head ``(B, H)``. Only one chunk's index is held at a time, padded to that chunk's
    widest row rather than the layer's. The compiled CPU kernel takes a chunk at once; the torch path
    splits it further into chunks of at most ``chunk_pairs`` scores (or gathered pairs).
    """
    alpha = check_alpha(alpha)
    batch, heads, n, d = q.shape
    scaling = d**-0.5 if scaling is None else scaling
    kernel = not needs_grad(q, k, v) and row_kernels_apply(q, alpha)
    if kernel:  # once, not per chunk (the model's heads are strided views)
        k, v = k.contiguous(), v.contiguous()
    outs, kept = [], torch.zeros(batch, heads, dtype=torch.long, device=q.device)
    for start, index, counts in rows:
        c, width = counts.shape[2], index.shape[-1]
        if kernel:
            outs.append(cpu_rows.sparse_rows(q[:, :, start:start + c], k, v, index, counts, scaling))
        else:
            sub = query_chunks(c, batch * heads * (width * d if gathers(n, width) else n), chunk_pairs)
            outs += [attend_chunk(q[:, :, start + s:start + min(s + sub.step, c)], k, v, index[:, :, s:s + sub.step],
                                  counts[:, :, s:s + sub.step], alpha, scaling) for s in sub]
        kept += counts.sum(-1)
    return (outs[0] if len(outs) == 1 else torch.cat(outs, 2)), kept


class SparseEntmaxAttention(nn.Module):
    """``nn.Module`` form of :func:`sparse_entmax_attention`; stores ``alpha`` and ``scaling`` only."""

    def __init__(self, alpha: float = DEFAULT_ALPHA, scaling: float | None = None) -> None:
        super().__init__()
        self.alpha = check_alpha(alpha)
        self.scaling = scaling

    def forward(self, q: Tensor, k: Tensor, v: Tensor, pattern: Pattern) -> Tensor:
        """``(B, H, n, d)`` inputs and a ``(B, H, n, n)`` pattern → ``(B, H, n, d)``."""
        return sparse_entmax_attention(q, k, v, pattern, self.alpha, self.scaling)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, scaling={self.scaling}"
