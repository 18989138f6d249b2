"""The attention pattern: which (query, key) pairs are computed (method.md §2).

A :class:`Pattern` covers the ``H`` heads of one attention layer for a padded batch of
``B`` sequences of ``n`` positions, sequence ``b`` having ``lengths[b]`` valid tokens at the
front (padding is never part of a pattern). It is stored the way the compute reads it,
after FlexAttention's ``BlockMask`` (``kv_num_blocks`` + ``kv_indices``): per-row counts and
padded key indices with a batch dimension,

- ``index`` ``(B, H, n, w)``: the keys kept for query ``i`` of head ``h`` in sequence ``b``
  are ``index[b, h, i, :counts[b, h, i]]`` (unique, any order); the other slots hold 0;
- ``counts`` ``(B, H, n)``: kept keys per query (0 for padded queries).

Sparse attention gathers the kept scores with ``index`` directly; no conversion runs
between a predictor and the compute. CSR (:meth:`Pattern.csr`, what datasets store) and a
dense boolean mask (:meth:`Pattern.to_dense`, for tests and small inputs) are derived views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import hit_counts
from .config import BAND_CHUNK_PAIRS, SPARSE_WIDTH_CLASSES

__all__ = ["Pattern", "band_keys", "band_mask", "band_rows", "compact", "pad_width", "query_chunks",
           "row_key_spans", "shift_rows", "sparsity_of", "width_classes"]

Device = torch.device | str | None

#: Largest ``B·H·n²`` for which :meth:`Pattern.union` ORs dense masks instead of sorting rows (64 MB of bools).
_DENSE_UNION_LIMIT = 1 << 26


def _lengths(lengths: Tensor | Sequence[int] | int | None, batch: int, n: int, device: Device) -> Tensor:
    if lengths is None:
        return torch.full((batch,), n, dtype=torch.long, device=device)
    out = torch.as_tensor(lengths, dtype=torch.long, device=device).reshape(-1)
    if out.numel() == 1 and batch != 1:
        out = out.expand(batch).clone()
    if out.numel() != batch or bool((out < 0).any()) or bool((out > n).any()):
        raise ValueError(f"lengths must be {batch} values in [0, {n}], got {out.tolist()}")
    return out


def compact(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Kept keys of each row of a boolean mask ``(…, n)``: ``index`` ``(…, w)`` and ``counts`` ``(…)``.

    ``w`` is the largest row count (at least 1); keys are in increasing order, unused slots
    hold 0. One pass over the mask (``nonzero``), then work in the kept entries only.
    """
    n = mask.shape[-1]
    counts = mask.sum(-1)
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    flat_counts = counts.reshape(-1)
    row, col = mask.reshape(-1, n).nonzero(as_tuple=True)
    slot = torch.arange(row.numel(), device=mask.device) - (torch.cumsum(flat_counts, 0) - flat_counts)[row]
    index = torch.zeros(flat_counts.numel() * width, dtype=torch.long, device=mask.device)
    index[row * width + slot] = col
    return index.view(*mask.shape[:-1], width), counts


def pad_width(index: Tensor, width: int) -> Tensor:
    """``index`` ``(…, w)`` padded with zeros to ``width`` slots."""
    return torch.nn.functional.pad(index, (0, width - index.shape[-1]))


def width_classes(counts: Tensor, widths: tuple[int, ...] = SPARSE_WIDTH_CLASSES) -> list[tuple[Tensor, int]]:
    """Rows grouped by how many keys they keep: ``[(row ids, padded width), …]`` over flat ``counts`` ``(R,)``.

    Each class pads its rows to its own width (the next bound in ``widths``, the largest count
    for the last class), so a few long rows do not make every row long. Empty rows are left out.
    """
    out, low = [], 0
    top = int(counts.max()) if counts.numel() else 0
    for high in (*[w for w in widths if w < top], top):
        rows = ((counts > low) & (counts <= high)).nonzero().squeeze(1)
        if rows.numel():
            out.append((rows, high))
        low = high
    return out


def sparsity_of(kept: Tensor, lengths: Tensor) -> Tensor:
    """Share of valid pairs not kept, ``(B, H)``, from kept pairs per sequence and head ``(B, H)`` and lengths ``(B,)``."""
    return 1.0 - kept.double() / lengths.double().square().clamp(min=1)[:, None]


def query_chunks(n: int, per_query: int, budget: int, window: int = 0) -> range:
    """Starts of chunks of the ``n`` queries, each chunk at most ``budget`` entries at ``per_query`` entries a query
    (``per_query`` = rows × ``n``: a query seeing every key). Within a band of ``±window`` a chunk of ``c`` queries
    sees at most ``c + 2·window`` keys: its chunks are as long as ``rows · c · (c + 2·window)`` stays within
    ``BAND_CHUNK_PAIRS`` (or ``budget`` if smaller), when that is longer."""
    step = max(1, budget // max(per_query, 1))
    if window:
        rows = max(per_query // max(n, 1), 1)
        step = max(step, math.isqrt(window * window + min(budget, BAND_CHUNK_PAIRS) // rows) - window)
    return range(0, n, min(step, max(n, 1)))


def band_keys(start: int, count: int, n: int, window: int) -> tuple[int, int]:
    """Keys ``[lo, hi)`` that queries ``start … start + count − 1`` of ``n`` may see within ``±window``
    (``window`` 0: every key)."""
    if not window:
        return 0, n
    return max(0, start - window), min(n, start + count + window)


def band_mask(start: int, count: int, lo: int, hi: int, window: int, device: Device = None) -> Tensor:
    """Boolean ``(count, hi − lo)``: whether key ``lo + j`` lies within ``±window`` of query ``start + i``
    (all true for ``window`` 0)."""
    offset = torch.arange(lo, hi, device=device)[None, :] - torch.arange(start, start + count, device=device)[:, None]
    return offset.abs() <= window if window else torch.ones_like(offset, dtype=torch.bool)


def row_key_spans(start: int, count: int, lo: int, hi: int, window: int, lengths: Tensor, heads: int
                  ) -> tuple[Tensor | None, Tensor]:
    """The keys each row of queries ``start … start + count − 1`` sees, counted from key ``lo`` (a chunk's key range
    ``[lo, hi)``), as the row kernels read them: ``first`` and ``nvalid`` flat over ``(B, heads, count)`` rows
    (sequences of ``lengths`` ``(B,)``): its band within the range, cut at its sequence's length; ``nvalid`` 0 for
    padded queries; ``first`` ``None`` without a band (every row starts at ``lo``). Computed with numpy: the row
    kernels call it once per chunk of queries, where a dozen small torch operators cost more than the arithmetic."""
    query = np.arange(start, start + count)
    ends = lengths.cpu().numpy()[:, None]
    nvalid = np.minimum(ends - lo, hi - lo) * (query < ends)  # (B, count)
    first = None
    if window:
        first = torch.from_numpy(np.tile(np.maximum(query - window - lo, 0), len(ends) * heads))
        nvalid = np.minimum(nvalid, query + window + 1 - lo)
    return first, torch.from_numpy(np.repeat(nvalid, heads, axis=0).reshape(-1))


def band_rows(start: int, index: Tensor, counts: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Rows of queries ``start …`` (``index`` ``(B, H, c, w)``, ``counts`` ``(B, H, c)``) cut to their keys
    within ``±window`` (order kept, ``window`` 0: unchanged)."""
    if not window:
        return index, counts
    query = torch.arange(start, start + index.shape[2], device=index.device)[:, None]
    used = torch.arange(index.shape[-1], device=index.device) < counts[..., None]
    keep = used & ((index - query).abs() <= window)
    if torch.equal(keep, used):  # already within the band (a band-aware predictor, the window itself): one pass
        return index, counts
    slots, kept = compact(keep)
    return torch.where(torch.arange(slots.shape[-1], device=index.device) < kept[..., None],
                       index.gather(-1, slots), 0), kept


def shift_rows(index: Tensor, counts: Tensor, offset: int) -> Tensor:
    """Keys of rows ``(…, w)`` moved by ``offset``, unused slots left 0: a chunk's first key ``lo`` turns keys counted
    in its key range into keys of the sequence, ``−lo`` the reverse."""
    if not offset:
        return index
    return torch.where(torch.arange(index.shape[-1], device=index.device) < counts[..., None], index + offset, 0)


@dataclass(frozen=True)
class Pattern:
    """Kept (query, key) pairs of ``H`` heads for a padded batch of ``B`` sequences.

    Attributes
    ----------
    index : Tensor, int64, shape (B, H, n, w)
        Kept keys of each query in its first ``counts`` slots; other slots hold 0.
    counts : Tensor, int64, shape (B, H, n)
        Kept keys per query.
    lengths : Tensor, int64, shape (B,)
        Valid tokens of each sequence (queries and keys ``< lengths[b]``).
    """

    index: Tensor
    counts: Tensor
    lengths: Tensor

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_mask(cls, mask: Tensor, lengths: Tensor | Sequence[int] | None = None) -> Pattern:
        """Compact a boolean mask ``(B, H, n, n)`` (or ``(H, n, n)`` for one sequence).

        Pairs touching padding (beyond ``lengths``) are dropped. Costs two passes over the
        mask (a cumulative sum and a scatter), no sort.
        """
        if mask.dim() == 3:
            mask = mask.unsqueeze(0)
        if mask.dim() != 4 or mask.shape[-1] != mask.shape[-2]:
            raise ValueError(f"mask must have shape (B, H, n, n), got {tuple(mask.shape)}")
        batch, heads, n, _ = mask.shape
        lengths = _lengths(lengths, batch, n, mask.device)
        if bool((lengths < n).any()):
            valid = torch.arange(n, device=mask.device) < lengths[:, None]  # (B, n)
            mask = mask & valid[:, None, :, None] & valid[:, None, None, :]
        return cls(*compact(mask), lengths)

    @classmethod
    def from_index(cls, index: Tensor, valid: Tensor | None = None,
                   lengths: Tensor | Sequence[int] | None = None, unique: bool = False) -> Pattern:
        """Build from candidate keys per query, ``index`` ``(B, H, n, k)`` (or ``(H, n, k)``).

        ``valid`` (same shape, bool) marks the entries that count; entries at or beyond a
        sequence's length are dropped. Unless ``unique``, repeated keys of a row are merged
        (one sort of the ``k`` entries per row).
        """
        if index.dim() == 3:
            index = index.unsqueeze(0)
            valid = valid.unsqueeze(0) if valid is not None else None
        batch, heads, n, _ = index.shape
        lengths = _lengths(lengths, batch, n, index.device)
        index = index.long()
        keep = index < lengths[:, None, None, None]
        keep &= (torch.arange(n, device=index.device) < lengths[:, None])[:, None, :, None]
        if valid is not None:
            keep &= valid
        if not unique:
            index = torch.where(keep, index, n).sort(dim=-1).values
            keep = index < n
            keep[..., 1:] &= index[..., 1:] != index[..., :-1]
        if bool(keep.all()):
            return cls(index.contiguous(), keep.sum(-1), lengths)
        slots, counts = compact(keep)
        kept = torch.arange(slots.shape[-1], device=index.device) < counts.unsqueeze(-1)
        return cls(torch.where(kept, index.gather(-1, slots), 0), counts, lengths)

    @classmethod
    def from_csr(cls, row_lengths: Tensor, col: Tensor, num_heads: int, length: int) -> Pattern:
        """One sequence from CSR pieces: ``row_lengths`` ``(H·n,)`` and ``col`` ``(nnz,)`` (row-major)."""
        n = length
        counts = row_lengths.long().reshape(num_heads, n)
        width = max(int(counts.max()) if counts.numel() else 0, 1)
        rows = torch.repeat_interleave(torch.arange(num_heads * n, device=col.device), counts.reshape(-1))
        starts = torch.cumsum(counts.reshape(-1), 0) - counts.reshape(-1)
        slot = torch.arange(col.numel(), device=col.device) - starts[rows]
        index = torch.zeros(num_heads * n, width, dtype=torch.long, device=col.device)
        index[rows, slot] = col.long()
        return cls(index.view(1, num_heads, n, width), counts.unsqueeze(0),
                   torch.tensor([n], dtype=torch.long, device=col.device))

    @classmethod
    def from_pairs(cls, head: Tensor, query: Tensor, key: Tensor, num_heads: int, length: int) -> Pattern:
        """One sequence from parallel index tensors (each shape ``(m,)``); duplicates are merged."""
        n = length
        codes = torch.unique((head.long() * n + query.long()) * n + key.long())  # sorted
        rows = torch.div(codes, n, rounding_mode="floor")
        counts = torch.bincount(rows, minlength=num_heads * n)
        return cls.from_csr(counts, codes - rows * n, num_heads, n)

    @classmethod
    def from_dense(cls, mask: Tensor) -> Pattern:
        """One sequence from a boolean mask ``(H, n, n)`` (alias of :meth:`from_mask`)."""
        if mask.dim() != 3 or mask.shape[1] != mask.shape[2]:
            raise ValueError(f"mask must have shape (H, n, n), got {tuple(mask.shape)}")
        return cls.from_mask(mask)

    @classmethod
    def full(cls, num_heads: int, length: int, lengths: Tensor | Sequence[int] | None = None,
             device: Device = None) -> Pattern:
        """Every valid pair: sparsity 0."""
        n = length
        lengths = _lengths(lengths, 1 if lengths is None else len(torch.as_tensor(lengths).reshape(-1)), n, device)
        batch = lengths.numel()
        index = torch.arange(n, device=device).expand(batch, num_heads, n, n)
        valid = torch.arange(n, device=device) < lengths[:, None]
        return cls.from_index(index, (valid[:, None, :, None] & valid[:, None, None, :]).expand_as(index),
                              lengths, unique=True)

    @classmethod
    def empty(cls, num_heads: int, length: int, lengths: Tensor | Sequence[int] | None = None,
              device: Device = None) -> Pattern:
        """No pair: sparsity 1."""
        lengths = _lengths(lengths, 1 if lengths is None else len(torch.as_tensor(lengths).reshape(-1)),
                           length, device)
        batch = lengths.numel()
        return cls(torch.zeros(batch, num_heads, length, 1, dtype=torch.long, device=device),
                   torch.zeros(batch, num_heads, length, dtype=torch.long, device=device), lengths)

    @classmethod
    def window(cls, num_heads: int, length: int, width: int, lengths: Tensor | Sequence[int] | None = None,
               device: Device = None) -> Pattern:
        """Each query keeps the keys at distance at most ``width`` (a band of ``2·width + 1``); O(n·width) memory."""
        n = length
        lengths = _lengths(lengths, 1 if lengths is None else len(torch.as_tensor(lengths).reshape(-1)), n, device)
        offsets = torch.arange(-width, width + 1, device=device)
        index = (torch.arange(n, device=device)[:, None] + offsets).expand(lengths.numel(), num_heads, n, -1)
        return cls.from_index(index.clamp(min=0), index >= 0, lengths, unique=True)

    @classmethod
    def global_tokens(cls, num_heads: int, length: int, positions: Tensor | list[int],
                      lengths: Tensor | Sequence[int] | None = None, device: Device = None) -> Pattern:
        """Global tokens: every query keeps those keys and those queries keep every key.

        Negative positions count from the end of each sequence (``-1`` is its last token).
        """
        n = length
        lengths = _lengths(lengths, 1 if lengths is None else len(torch.as_tensor(lengths).reshape(-1)), n, device)
        pos = torch.as_tensor(positions, dtype=torch.long, device=device).reshape(-1)
        per_seq = torch.where(pos[None, :] < 0, pos[None, :] + lengths[:, None], pos[None, :]).clamp(0, n - 1)
        is_global = (torch.arange(n, device=device)[None, :, None] == per_seq[:, None, :]).any(-1)  # (B, n)
        return cls.from_global(is_global[:, None].expand(-1, num_heads, -1), lengths)

    @classmethod
    def from_global(cls, is_global: Tensor, lengths: Tensor | Sequence[int] | None = None) -> Pattern:
        """Global positions per sequence and head, ``is_global`` ``(B, H, n)``: they keep and are kept by every token."""
        return cls.from_mask(is_global[..., :, None] | is_global[..., None, :], lengths)

    @classmethod
    def cat_rows(cls, pieces: Sequence[tuple[Tensor, Tensor]], lengths: Tensor) -> Pattern:
        """Assemble chunks of query rows ``(index (B, H, c, w_c), counts (B, H, c))``, in order along the queries."""
        if len(pieces) == 1:
            return cls(*pieces[0], lengths)
        width = max(index.shape[-1] for index, _ in pieces)
        return cls(torch.cat([pad_width(index, width) for index, _ in pieces], 2),
                   torch.cat([counts for _, counts in pieces], 2), lengths)

    @classmethod
    def stack(cls, patterns: Sequence[Pattern], length: int | None = None) -> Pattern:
        """Concatenate patterns along the batch axis, padding ``n`` to ``length`` (default the largest) and ``w``."""
        n = max([p.length for p in patterns] + [length or 0])
        w = max(p.width for p in patterns)
        index = torch.cat([torch.nn.functional.pad(pad_width(p.index, w), (0, 0, 0, n - p.length)) for p in patterns])
        counts = torch.cat([torch.nn.functional.pad(p.counts, (0, n - p.length)) for p in patterns])
        return cls(index, counts, torch.cat([p.lengths for p in patterns]))

    # ------------------------------------------------------------------ views
    @property
    def batch_size(self) -> int:
        return int(self.index.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.index.shape[1])

    @property
    def length(self) -> int:
        """``n``, the padded number of positions."""
        return int(self.index.shape[2])

    @property
    def width(self) -> int:
        """``w``, slots per row."""
        return int(self.index.shape[3])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(B, H, n, n)``."""
        return (self.batch_size, self.num_heads, self.length, self.length)

    @property
    def device(self) -> torch.device:
        return self.index.device

    @property
    def nnz(self) -> int:
        """Kept pairs over the whole batch."""
        return int(self.counts.sum())

    def valid_slots(self) -> Tensor:
        """Boolean ``(B, H, n, w)``: slots that hold a kept key."""
        return torch.arange(self.width, device=self.device) < self.counts.unsqueeze(-1)

    def nnz_per_head(self) -> Tensor:
        """Kept pairs per sequence and head, shape ``(B, H)``."""
        return self.counts.sum(-1)

    def sparsity(self) -> Tensor:
        """Share of valid pairs not computed, per sequence and head, shape ``(B, H)``."""
        return sparsity_of(self.nnz_per_head(), self.lengths)

    def row_lengths(self) -> Tensor:
        """Kept keys per query of a one-sequence pattern, shape ``(H, n)``."""
        self._check_single()
        return self.counts[0]

    def to_dense(self) -> Tensor:
        """Boolean mask ``(B, H, n, n)`` (for tests and small inputs)."""
        mask = torch.zeros(*self.shape[:3], self.length + 1, dtype=torch.bool, device=self.device)
        mask.scatter_(-1, torch.where(self.valid_slots(), self.index, self.length), True)
        return mask[..., :self.length]

    def csr(self) -> tuple[Tensor, Tensor]:
        """CSR of a one-sequence pattern over its ``lengths[0]`` tokens, keys sorted per row.

        Returns ``row_lengths`` ``(H·n,)`` and ``col`` ``(nnz,)`` (what datasets store).
        """
        seq = self.sequence(0)
        index = torch.where(seq.valid_slots(), seq.index, seq.length).sort(-1).values
        return seq.counts[0].reshape(-1), index[0][index[0] < seq.length]

    def sequence(self, b: int) -> Pattern:
        """Sequence ``b`` alone, cut to its ``lengths[b]`` tokens."""
        n = int(self.lengths[b])
        counts = self.counts[b:b + 1, :, :n]
        width = max(int(counts.max()) if counts.numel() else 0, 1)
        return Pattern(self.index[b:b + 1, :, :n, :width], counts, self.lengths[b:b + 1])

    def head(self, h: int) -> Pattern:
        """The single-head pattern of head ``h``."""
        return Pattern(self.index[:, h:h + 1], self.counts[:, h:h + 1], self.lengths)

    def within(self, window: int) -> Pattern:
        """The pairs whose key lies within ``±window`` of its query (``window`` 0: this pattern)."""
        return Pattern(*band_rows(0, self.index, self.counts, window), self.lengths) if window else self

    def narrow(self, width: int) -> Pattern:
        """The first ``width`` slots of every row (a top-``width`` prefix when rows are ranked)."""
        return Pattern(self.index[..., :width], self.counts.clamp(max=width), self.lengths)

    # ------------------------------------------------------------------ algebra
    def union(self, *others: Pattern) -> Pattern:
        """Pairs kept by this pattern or any of ``others`` (same batch shape)."""
        for o in others:
            self._check_compatible(o)
        parts = (self, *others)
        if self.batch_size * self.num_heads * self.length**2 <= _DENSE_UNION_LIMIT:  # OR of masks beats a sort
            mask = self.to_dense()
            for o in others:
                mask |= o.to_dense()
            return Pattern.from_mask(mask, self.lengths)
        index = torch.cat([p.index for p in parts], -1)
        valid = torch.cat([p.valid_slots() for p in parts], -1)
        return Pattern.from_index(index, valid, self.lengths)

    def hits(self, gold_mask: Tensor) -> Tensor:
        """Kept pairs that ``gold_mask`` ``(B, H, n, n)`` also holds, per sequence and head ``(B, H)``.

        On a CPU the compiled kernel of :mod:`sparsefinder.hit_counts` reads only the used slots.
        """
        if not self.index.is_cuda and hit_counts.available():
            return hit_counts.pattern_hits(self.index, self.counts, gold_mask.to(torch.bool))
        return (gold_mask.gather(-1, self.index) & self.valid_slots()).sum(-1).sum(-1)

    def intersection_per_head(self, other: Pattern) -> Tensor:
        """``|self ∩ other|`` per sequence and head, shape ``(B, H)``."""
        self._check_compatible(other)
        return self.hits(other.to_dense())

    def contains(self, other: Pattern) -> bool:
        """Whether every pair of ``other`` is kept here."""
        return bool((other.intersection_per_head(self) == other.nnz_per_head()).all())

    def to(self, device: torch.device | str) -> Pattern:
        return Pattern(self.index.to(device), self.counts.to(device), self.lengths.to(device))

    def validate(self) -> Pattern:
        """Raise ``ValueError`` unless the invariants hold; return ``self``."""
        b, h, n, w = self.index.shape
        if self.counts.shape != (b, h, n) or self.lengths.shape != (b,):
            raise ValueError("counts must be (B, H, n) and lengths (B,)")
        if bool((self.counts < 0).any()) or bool((self.counts > w).any()):
            raise ValueError("counts must lie in [0, w]")
        beyond = torch.arange(n, device=self.device) >= self.lengths[:, None]
        if bool((self.counts * beyond[:, None, :]).any()):
            raise ValueError("padded queries must keep no key")
        valid = self.valid_slots()
        if bool(((self.index < 0) & valid).any()) or bool(((self.index >= self.lengths[:, None, None, None]) & valid).any()):
            raise ValueError("key indices must lie in [0, lengths[b])")
        ranked = torch.where(valid, self.index, n).sort(-1).values
        if bool(((ranked[..., 1:] == ranked[..., :-1]) & (ranked[..., 1:] < n)).any()):
            raise ValueError("keys must be unique within each row")
        return self

    def _check_single(self) -> None:
        if self.batch_size != 1:
            raise ValueError(f"this view needs a one-sequence pattern, got a batch of {self.batch_size}")

    def _check_compatible(self, other: Pattern) -> None:
        if self.shape != other.shape or not torch.equal(self.lengths.cpu(), other.lengths.cpu()):
            raise ValueError(f"pattern shapes differ: {self.shape} vs {other.shape}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pattern):
            return NotImplemented
        return (self.shape == other.shape and torch.equal(self.lengths.cpu(), other.lengths.cpu())
                and torch.equal(self.counts.cpu(), other.counts.cpu())
                and torch.equal(self.to_dense().cpu(), other.to_dense().cpu()))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        sp = float(self.sparsity().mean()) if self.length else 1.0
        return (f"Pattern(batch={self.batch_size}, heads={self.num_heads}, length={self.length}, "
                f"width={self.width}, nnz={self.nnz}, sparsity={sp:.4f})")
