"""The attention pattern: which (query, key) pairs are computed (method.md §2).

A :class:`Pattern` covers the ``H`` heads of one attention layer for one sequence of ``n``
valid tokens (padding is never part of a pattern). It is stored in CSR form over the
``H·n`` rows ``r = h·n + i``: the keys kept for query ``i`` of head ``h`` are
``col[crow[r]:crow[r + 1]]``, sorted and unique. This is the layout sparse compute reads
(and the ``(lims, I)`` layout of FAISS range search); :meth:`Pattern.to_padded` gives the
padded ``(H, n, k_max)`` form and :meth:`Pattern.to_dense` a boolean view for tests and
small inputs. Every predictor produces a Pattern; metrics, sparse attention, reports and
the service consume it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Pattern"]

#: Largest ``H·n²`` for which membership tests use a dense boolean mask (64 MB).
_DENSE_LOOKUP_LIMIT = 1 << 26


@dataclass(frozen=True)
class Pattern:
    """Kept (query, key) pairs of ``num_heads`` heads over ``length`` valid tokens.

    Attributes
    ----------
    crow : Tensor, int64, shape (H·n + 1,)
        Row offsets; row ``h·n + i`` is query ``i`` of head ``h``.
    col : Tensor, int64, shape (nnz,)
        Key indices in ``[0, n)``, sorted and unique within each row.
    num_heads : int
        ``H``.
    length : int
        ``n``, the number of valid tokens (queries and keys).
    """

    crow: Tensor
    col: Tensor
    num_heads: int
    length: int

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_codes(cls, codes: Tensor, num_heads: int, length: int) -> Pattern:
        """Build from flat pair codes ``h·n² + i·n + j`` (any order, duplicates allowed)."""
        n = length
        codes = torch.unique(codes.reshape(-1).long())  # sorted
        rows = torch.div(codes, n, rounding_mode="floor")
        counts = torch.bincount(rows, minlength=num_heads * n)
        crow = torch.zeros(num_heads * n + 1, dtype=torch.long, device=codes.device)
        crow[1:] = torch.cumsum(counts, 0)
        return cls(crow, codes - rows * n, num_heads, n)

    @classmethod
    def from_pairs(cls, head: Tensor, query: Tensor, key: Tensor, num_heads: int, length: int) -> Pattern:
        """Build from parallel index tensors (each shape ``(m,)``); duplicates are merged."""
        n = length
        return cls.from_codes((head.long() * n + query.long()) * n + key.long(), num_heads, n)

    @classmethod
    def from_dense(cls, mask: Tensor) -> Pattern:
        """Build from a boolean mask of shape ``(H, n, n)``."""
        if mask.dim() != 3 or mask.shape[1] != mask.shape[2]:
            raise ValueError(f"mask must have shape (H, n, n), got {tuple(mask.shape)}")
        num_heads, n, _ = mask.shape
        counts = mask.reshape(num_heads * n, n).sum(-1)
        crow = torch.zeros(num_heads * n + 1, dtype=torch.long, device=mask.device)
        crow[1:] = torch.cumsum(counts, 0)
        col = mask.reshape(num_heads * n, n).nonzero()[:, 1]
        return cls(crow, col, num_heads, n)

    @classmethod
    def from_padded(cls, index: Tensor, valid: Tensor | None = None) -> Pattern:
        """Build from per-query key indices ``index`` of shape ``(H, n, k)``.

        ``valid`` (same shape, bool) marks which entries count; entries may repeat. Rows are
        sorted independently (O(nnz·log k)), with no global sort.
        """
        num_heads, n, k = index.shape
        index = index.long()
        if valid is not None:
            index = torch.where(valid, index, torch.full_like(index, n))
        index = index.sort(dim=-1).values
        keep = index < n
        keep[..., 1:] &= index[..., 1:] != index[..., :-1]
        counts = keep.sum(-1).reshape(-1)
        crow = torch.zeros(num_heads * n + 1, dtype=torch.long, device=index.device)
        crow[1:] = torch.cumsum(counts, 0)
        return cls(crow, index[keep], num_heads, n)

    @classmethod
    def full(cls, num_heads: int, length: int, device: torch.device | str | None = None) -> Pattern:
        """Every pair: sparsity 0."""
        n = length
        crow = torch.arange(num_heads * n + 1, device=device) * n
        col = torch.arange(n, device=device).repeat(num_heads * n)
        return cls(crow, col, num_heads, n)

    @classmethod
    def empty(cls, num_heads: int, length: int, device: torch.device | str | None = None) -> Pattern:
        """No pair: sparsity 1."""
        crow = torch.zeros(num_heads * length + 1, dtype=torch.long, device=device)
        return cls(crow, torch.zeros(0, dtype=torch.long, device=device), num_heads, length)

    @classmethod
    def window(cls, num_heads: int, length: int, width: int, device: torch.device | str | None = None) -> Pattern:
        """Each query keeps the keys at distance at most ``width`` (a band of ``2·width + 1``); O(n·width) memory."""
        n = length
        i = torch.arange(n, device=device)
        lo, hi = (i - width).clamp(min=0), (i + width).clamp(max=n - 1)
        lengths = (hi - lo + 1).repeat(num_heads)
        crow = torch.zeros(num_heads * n + 1, dtype=torch.long, device=device)
        crow[1:] = torch.cumsum(lengths, 0)
        starts = torch.repeat_interleave(crow[:-1], lengths)
        col = torch.repeat_interleave(lo.repeat(num_heads), lengths) + torch.arange(int(crow[-1]), device=device) - starts
        return cls(crow, col, num_heads, n)

    @classmethod
    def global_tokens(cls, num_heads: int, length: int, positions: Tensor | list[int],
                      device: torch.device | str | None = None) -> Pattern:
        """Global tokens: every query keeps those keys and those queries keep every key; O(n·g) memory.

        Negative positions count from the end (``-1`` is the last token).
        """
        n = length
        pos = torch.unique(torch.as_tensor(positions, dtype=torch.long, device=device) % n)
        every = torch.arange(n, device=device)
        heads = torch.arange(num_heads, device=device)
        q = torch.cat([every.repeat_interleave(pos.numel()), pos.repeat_interleave(n)])
        k = torch.cat([pos.repeat(n), every.repeat(pos.numel())])
        h = heads.repeat_interleave(q.numel())
        return cls.from_pairs(h, q.repeat(num_heads), k.repeat(num_heads), num_heads, n)

    @classmethod
    def stack_heads(cls, patterns: list[Pattern]) -> Pattern:
        """Concatenate single- or multi-head patterns of the same length along the head axis."""
        n = patterns[0].length
        if any(p.length != n for p in patterns):
            raise ValueError("patterns to stack must have the same length")
        crows, offset = [patterns[0].crow[:1]], 0
        for p in patterns:
            crows.append(p.crow[1:] + offset)
            offset += p.nnz
        return cls(torch.cat(crows), torch.cat([p.col for p in patterns]), sum(p.num_heads for p in patterns), n)

    # ------------------------------------------------------------------ views
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, n, n)``."""
        return (self.num_heads, self.length, self.length)

    @property
    def nnz(self) -> int:
        """Number of kept pairs over all heads."""
        return int(self.col.numel())

    @property
    def device(self) -> torch.device:
        return self.col.device

    def row_lengths(self) -> Tensor:
        """Kept keys per query, shape ``(H, n)``."""
        return (self.crow[1:] - self.crow[:-1]).reshape(self.num_heads, self.length)

    def rows(self) -> Tensor:
        """Row ``h·n + i`` of every kept pair, shape ``(nnz,)``."""
        counts = self.crow[1:] - self.crow[:-1]
        return torch.repeat_interleave(torch.arange(counts.numel(), device=self.device), counts)

    def codes(self) -> Tensor:
        """Sorted flat codes ``h·n² + i·n + j`` of the kept pairs, shape ``(nnz,)``."""
        return self.rows() * self.length + self.col

    def nnz_per_head(self) -> Tensor:
        """Kept pairs per head, shape ``(H,)``."""
        return self.row_lengths().sum(-1)

    def sparsity(self) -> Tensor:
        """Share of pairs not computed, per head, shape ``(H,)``."""
        return 1.0 - self.nnz_per_head().double() / float(self.length**2)

    def to_dense(self) -> Tensor:
        """Boolean mask of shape ``(H, n, n)`` (for tests and small inputs)."""
        mask = torch.zeros(self.num_heads * self.length * self.length, dtype=torch.bool, device=self.device)
        mask[self.codes()] = True
        return mask.reshape(self.shape)

    def to_padded(self, min_width: int = 1) -> tuple[Tensor, Tensor]:
        """Padded layout for sparse compute.

        Returns
        -------
        index : Tensor, int64, shape (H, n, k_max)
            Kept keys of each query, sorted; padding entries repeat key 0.
        lengths : Tensor, int64, shape (H, n)
            Number of real entries in each row.
        """
        lengths = self.row_lengths()
        width = max(int(lengths.max()) if lengths.numel() else 0, min_width)
        rows = self.rows()
        slot = torch.arange(self.nnz, device=self.device) - self.crow[rows]
        index = torch.zeros(self.num_heads * self.length, width, dtype=torch.long, device=self.device)
        index[rows, slot] = self.col
        return index.reshape(self.num_heads, self.length, width), lengths

    def head(self, h: int) -> Pattern:
        """The single-head pattern of head ``h``."""
        n = self.length
        lo, hi = int(self.crow[h * n]), int(self.crow[(h + 1) * n])
        return Pattern(self.crow[h * n:(h + 1) * n + 1] - lo, self.col[lo:hi], 1, n)

    # ------------------------------------------------------------------ algebra
    def union(self, *others: Pattern) -> Pattern:
        """Pairs kept by this pattern or any of ``others``."""
        for o in others:
            self._check_compatible(o)
        return Pattern.from_codes(torch.cat([self.codes()] + [o.codes() for o in others]), self.num_heads, self.length)

    def intersection_per_head(self, other: Pattern) -> Tensor:
        """``|self ∩ other|`` per head, shape ``(H,)``.

        Looks the pairs up in a dense mask of ``other`` when ``H·n²`` is small, else sorts.
        """
        self._check_compatible(other)
        mine = self.codes()
        if self.num_heads * self.length**2 <= _DENSE_LOOKUP_LIMIT:
            hit = other.to_dense().reshape(-1)[mine]
        else:
            hit = torch.isin(mine, other.codes(), assume_unique=True)
        heads = torch.div(mine[hit], self.length * self.length, rounding_mode="floor")
        return torch.bincount(heads, minlength=self.num_heads)

    def contains(self, other: Pattern) -> bool:
        """Whether every pair of ``other`` is kept here."""
        return bool((self.intersection_per_head(other) == other.nnz_per_head()).all())

    def to(self, device: torch.device | str) -> Pattern:
        return Pattern(self.crow.to(device), self.col.to(device), self.num_heads, self.length)

    def validate(self) -> Pattern:
        """Raise ``ValueError`` unless the CSR invariants hold; return ``self``."""
        rows = self.num_heads * self.length
        if self.crow.shape != (rows + 1,) or int(self.crow[0]) != 0 or int(self.crow[-1]) != self.nnz:
            raise ValueError("crow must have H·n + 1 entries from 0 to nnz")
        if (self.crow[1:] < self.crow[:-1]).any():
            raise ValueError("crow must be non-decreasing")
        if self.nnz and (int(self.col.min()) < 0 or int(self.col.max()) >= self.length):
            raise ValueError("key indices must lie in [0, n)")
        codes = self.codes()
        if self.nnz > 1 and not bool((codes[1:] > codes[:-1]).all()):
            raise ValueError("keys must be sorted and unique within each row")
        return self

    def _check_compatible(self, other: Pattern) -> None:
        if self.shape != other.shape:
            raise ValueError(f"pattern shapes differ: {self.shape} vs {other.shape}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pattern):
            return NotImplemented
        return self.shape == other.shape and torch.equal(self.crow.cpu(), other.crow.cpu()) and torch.equal(
            self.col.cpu(), other.col.cpu())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        sp = float(self.sparsity().mean()) if self.length else 1.0
        return f"Pattern(heads={self.num_heads}, length={self.length}, nnz={self.nnz}, sparsity={sp:.4f})"
