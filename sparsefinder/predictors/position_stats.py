"""Position statistics of gold graphs, and patterns from position masks.

Shared by the data-informed position masks (Attention Pruning, Rugina et al. 2020; SparseBERT's
DAM, Shi et al. 2021; Brahma et al. 2022's learned neighbour degree). For every (layer, head)
we count, over the fit corpus, how many gold edges fall at each relative offset ``δ = j − i``
(or each absolute pair ``(i, j)``) and how many pairs exist there; their ratio is the
frequency with which that position is in the gold graph (the average of the binary gold
attention, since our gold graphs are supports).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..pattern import Pattern

__all__ = ["PositionCounts", "gold_pairs", "offset_pattern", "pair_pattern", "position_counts"]


@dataclass
class PositionCounts:
    """Gold and total counts per position.

    Attributes
    ----------
    gold : Tensor, float64, shape (layers, H, P)
        Gold edges at each position; ``P = 2L − 1`` offsets ``δ + L − 1`` (relative) or
        ``L²`` pairs ``i·L + j`` (absolute).
    total : Tensor, float64, shape (P,)
        Valid (query, key) pairs at each position over the corpus.
    length : int
        ``L``, the longest sequence length covered.
    absolute : bool
    """

    gold: Tensor
    total: Tensor
    length: int
    absolute: bool

    def frequency(self) -> Tensor:
        """Share of the pairs at each position that are gold, shape (layers, H, P); 0 where none exist."""
        return self.gold / self.total.clamp(min=1)


def gold_pairs(pattern: Pattern) -> tuple[Tensor, Tensor]:
    """Kept pairs of a one-sequence pattern as flat rows ``h·n + i`` and keys ``j``, each shape ``(nnz,)``."""
    row_lengths, col = pattern.csr()
    return torch.repeat_interleave(torch.arange(row_lengths.numel(), device=col.device), row_lengths), col


def _positions(rows: Tensor, col: Tensor, n: int, length: int, absolute: bool) -> Tensor:
    i = rows % n
    return i * length + col if absolute else col - i + (length - 1)


def position_counts(data, absolute: bool = False) -> PositionCounts:
    """Count gold edges and valid pairs per relative offset (or absolute pair) over ``data``.

    Parameters
    ----------
    data : GoldDataset
        Fit data; sequences longer than ``data.max_length`` are not expected.
    absolute : bool
        Count absolute pairs ``(i, j)`` (``L²`` positions) instead of offsets (``2L − 1``).
    """
    length, heads = data.max_length, data.num_heads
    size = length * length if absolute else 2 * length - 1
    gold = torch.zeros(data.num_layers, heads * size, dtype=torch.float64)
    total = torch.zeros(size, dtype=torch.float64)
    for seq in data.sequences():
        n = seq.length
        every = torch.arange(n)
        total += torch.bincount(_positions(every.repeat_interleave(n), every.repeat(n), n, length, absolute),
                                minlength=size).double()
        for layer, pattern in enumerate(seq.gold):
            rows, col = gold_pairs(pattern)
            pos = torch.div(rows, n, rounding_mode="floor") * size + _positions(rows, col, n, length, absolute)
            gold[layer] += torch.bincount(pos, minlength=heads * size).double()
    return PositionCounts(gold.reshape(data.num_layers, heads, size), total, length, absolute)


def offset_pattern(keep: Tensor, length: int, lengths: Tensor) -> Pattern:
    """Pattern keeping, per head, the pairs whose offset ``j − i`` is kept, shape ``(B, H, n, n)``.

    Parameters
    ----------
    keep : Tensor, bool, shape (H, 2L − 1)
        Kept offsets ``δ`` at index ``δ + L − 1``; offsets beyond ``±(L − 1)`` are never kept.
    length : int
        ``n``, the padded length.
    lengths : Tensor, int64, shape (B,)
        Valid tokens of each sequence.
    """
    heads, size = keep.shape
    fit_length = (size + 1) // 2
    reach = min(fit_length, length)
    keep = keep[:, fit_length - reach:fit_length + reach - 1]  # offsets -(reach-1) .. reach-1
    counts = keep.sum(-1)
    width = max(int(counts.max()), 1)
    order = keep.to(torch.int8).argsort(dim=-1, descending=True, stable=True)[:, :width]  # kept offsets first
    offsets = order - (reach - 1)  # (H, width)
    index = torch.arange(length, device=keep.device)[None, :, None] + offsets[:, None, :]
    valid = (index >= 0) & (index < length) & (torch.arange(width, device=keep.device) < counts[:, None])[:, None, :]
    shape = (lengths.numel(), *index.shape)
    return Pattern.from_index(index.clamp(0, length - 1).expand(shape), valid.expand(shape), lengths.to(keep.device),
                              unique=True)


def pair_pattern(keep: Tensor, length: int, lengths: Tensor) -> Pattern:
    """Pattern ``(B, H, n, n)`` from an absolute mask ``keep`` (H, L, L) bool; positions beyond ``L`` are not kept."""
    heads, fit_length, _ = keep.shape
    reach = min(fit_length, length)
    grown = torch.zeros(heads, length, length, dtype=torch.bool, device=keep.device)
    grown[:, :reach, :reach] = keep[:, :reach, :reach]
    return Pattern.from_mask(grown.expand(lengths.numel(), -1, -1, -1), lengths.to(keep.device))
