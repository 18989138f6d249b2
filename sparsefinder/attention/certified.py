"""Certified-exact sparse α-entmax attention: recall 1.0 by construction (method.md §1).

The threshold computed on a subset ``S`` of a query's keys never exceeds the one on all
keys (``t_S ≤ t``), so a key with score ``z_j ≤ t_S`` is certainly outside the support.
Keys outside ``S`` are ruled out in blocks of :data:`~sparsefinder.config.CERTIFY_BLOCK`
consecutive keys with the bound ``z_j ≤ s·(q·c_b + ‖q‖·r_b)`` (``c_b`` the block's mean
key, ``r_b`` its radius). Keys of blocks that fail are scored exactly; those with
``z_j > t_S`` are added to ``S``. One round suffices: every key left out has
``z_j ≤ t_S ≤ t_{S'}`` for the enlarged set ``S'``, so ``t_{S'}`` is the dense threshold
and attention on ``S'`` equals dense α-entmax. Empty rows are seeded with the query's own
position first, so the bound has a finite threshold to beat.

The work grows with the number of queries whose blocks cannot all be ruled out (the block
bounds cost ``n²·d / B`` multiply-adds), computed a chunk of queries at a time in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..alpha_entmax import check_alpha, threshold
from ..config import CERTIFY_BLOCK, CERTIFY_CHUNK_SCORES, DEFAULT_ALPHA
from ..pattern import Pattern
from .sparse import kept_scores, sparse_entmax_attention

__all__ = ["CertifiedOutput", "certified_entmax_attention", "certify_pattern"]


@dataclass(frozen=True)
class CertifiedOutput:
    """Result of :func:`certified_entmax_attention`."""

    output: Tensor
    """Attention output, shape ``(H, n, d)``: dense α-entmax attention."""
    pattern: Pattern
    """The certified pattern: the given one plus the keys that had to be added."""
    keys_added: Tensor
    """Pairs added per head, int64 shape ``(H,)``."""
    keys_scored: int
    """Pairs scored exactly because their block bound failed (added or not)."""


def _block_bounds(k: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Mean key ``(H, nb, d)`` and radius ``(H, nb)`` of each block of ``block`` consecutive keys."""
    heads, n, d = k.shape
    nb = -(-n // block)
    padded = torch.nn.functional.pad(k, (0, 0, 0, nb * block - n)).view(heads, nb, block, d)
    counts = torch.full((nb,), float(block), dtype=k.dtype, device=k.device)
    counts[-1] = n - (nb - 1) * block
    centers = padded.sum(2) / counts[:, None]
    inside = (torch.arange(nb * block, device=k.device) < n).view(nb, block)
    radius = ((padded - centers.unsqueeze(2)).norm(dim=-1) * inside).amax(-1)
    return centers, radius


def certify_pattern(
    q: Tensor, k: Tensor, pattern: Pattern, alpha: float = DEFAULT_ALPHA, scaling: float | None = None,
    block: int = CERTIFY_BLOCK, chunk_scores: int = CERTIFY_CHUNK_SCORES,
) -> tuple[Pattern, int]:
    """Enlarge ``pattern`` until it provably contains the dense α-entmax support.

    Parameters
    ----------
    q, k : Tensor, shape (H, n, d)
        Queries and keys of the valid tokens.
    pattern : Pattern
        Predicted pairs, shape ``(H, n, n)`` (may be empty).

    Returns
    -------
    Pattern
        ``pattern`` plus every excluded key that could not be ruled out and scored above ``t_S``.
    int
        Number of excluded-or-kept pairs in blocks whose bound failed: the pairs that needed an
        exact score (the code scores whole rows that have a failing block, a dense row product
        being faster on CPU than gathering blocks; at most ``chunk_scores`` scores live at once).
    """
    alpha = check_alpha(alpha)
    heads, n, d = q.shape
    scaling = d**-0.5 if scaling is None else scaling
    q, k = q.detach(), k.detach()
    empty = pattern.row_lengths() == 0
    if bool(empty.any()):
        h, i = empty.nonzero(as_tuple=True)
        pattern = pattern.union(Pattern.from_pairs(h, i, i, heads, n))
    index, lengths = pattern.to_padded()
    width = index.shape[-1]
    valid = torch.arange(width, device=q.device) < lengths.unsqueeze(-1)
    centers, radius = _block_bounds(k, block)
    sizes = torch.full((centers.shape[1],), block, device=q.device)
    sizes[-1] = n - (centers.shape[1] - 1) * block
    step = max(1, chunk_scores // n)
    found, scored = [], 0
    for s in range(0, n, step):
        qc = q[:, s:s + step]
        kept = kept_scores(qc, k, index[:, s:s + step], scaling).masked_fill(~valid[:, s:s + step], float("-inf"))
        t_s = threshold(kept, alpha)  # (H, c, 1)
        bound = (qc @ centers.transpose(1, 2) + qc.norm(dim=-1, keepdim=True) * radius.unsqueeze(1)) * scaling
        fail = bound > t_s  # (H, c, nb): blocks that may hold a key above t_S
        scored += int((fail * sizes).sum())
        for h in range(heads):
            rows = fail[h].any(-1).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            z = qc[h, rows] @ k[h].T * scaling  # (m, n): one product per row is faster than gathering blocks
            add = fail[h, rows].repeat_interleave(block, -1)[:, :n] & (z > t_s[h, rows])
            i, j = add.nonzero(as_tuple=True)
            found.append((torch.full_like(i, h), rows[i] + s, j))
    if found:
        h, i, j = (torch.cat(parts) for parts in zip(*found))
        pattern = pattern.union(Pattern.from_pairs(h, i, j, heads, n))
    return pattern, scored


def certified_entmax_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, alpha: float = DEFAULT_ALPHA,
    scaling: float | None = None, block: int = CERTIFY_BLOCK,
) -> CertifiedOutput:
    """Dense α-entmax attention computed on ``pattern`` plus the keys it provably misses.

    ``q, k, v`` have shape ``(H, n, d)``; the output equals dense α-entmax attention up to
    float rounding whatever ``pattern`` is (empty, random or predicted). Gradients flow
    through the final sparse computation.
    """
    certified, scored = certify_pattern(q, k, pattern, alpha, scaling, block)
    out = sparse_entmax_attention(q, k, v, certified, alpha, scaling)
    added = certified.nnz_per_head() - pattern.nnz_per_head()
    return CertifiedOutput(out, certified, added, scored)
