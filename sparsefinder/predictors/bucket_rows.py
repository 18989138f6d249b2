"""Pairs that share a bucket in at least one coordinate, row by row, compiled by Numba.

The quantization predictor (Treviso et al. 2022) keeps a query–key pair when the two fall into
the same quantile bucket of at least one projected coordinate. Listing each bucket's members
would enumerate most pairs once per coordinate, and comparing every (pair, coordinate) in torch
builds ``(B, H, c, n, r)`` tensors a chunk at a time; :func:`shared_bucket_rows` instead walks
each query's row once, stopping at the first shared coordinate of each key, parallel over rows,
and writes the :class:`~sparsefinder.pattern.Pattern` rows directly (a counting pass, then the
index at its final width). Hand-written for want of a library kernel for this set operation;
without Numba, or with ``SPARSEFINDER_CPU_KERNELS=0``, the caller keeps its torch path.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from ..attention import cpu_rows

__all__ = ["available", "shared_bucket_rows"]

try:  # Numba is a dependency, but the torch path must keep working without it
    import numba as _nb
except ImportError:  # pragma: no cover - exercised only where Numba is missing
    _nb = None

available = cpu_rows.available

if _nb is not None:
    _jit = functools.partial(_nb.njit, cache=True, nogil=True, parallel=True)

    @_jit
    def _count(qb, kb, nvalid, counts):  # qb (G, n, r), kb (G, n, r), nvalid (G,) → counts (G, n)
        groups, n, r = qb.shape
        for row in _nb.prange(groups * n):
            g, i = row // n, row % n
            m = 0
            if i < nvalid[g]:
                for j in range(nvalid[g]):
                    for d in range(r):
                        if qb[g, i, d] == kb[g, j, d]:
                            m += 1
                            break
            counts[g, i] = m

    @_jit
    def _fill(qb, kb, nvalid, index):  # the keys counted by _count, increasing → index (G, n, w)
        groups, n, r = qb.shape
        for row in _nb.prange(groups * n):
            g, i = row // n, row % n
            m = 0
            if i < nvalid[g]:
                for j in range(nvalid[g]):
                    for d in range(r):
                        if qb[g, i, d] == kb[g, j, d]:
                            index[g, i, m] = j
                            m += 1
                            break
            index[g, i, m:] = 0


def shared_bucket_rows(query_buckets: Tensor, key_buckets: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Keys sharing a bucket with each query in some coordinate, as pattern rows.

    ``query_buckets``/``key_buckets`` ``(B, H, n, r)`` are integer bucket ids and ``lengths``
    ``(B,)`` the valid tokens per sequence. Returns ``index`` ``(B, H, n, w)`` (increasing keys,
    zero padded, ``w`` the widest row, at least 1) and ``counts`` ``(B, H, n)``; padded queries
    and keys take no part.
    """
    cpu_rows.set_threads()
    batch, heads, n, r = query_buckets.shape
    qb = query_buckets.to(torch.int32).reshape(batch * heads, n, r).contiguous().numpy()
    kb = key_buckets.to(torch.int32).reshape(batch * heads, n, r).contiguous().numpy()
    nvalid = lengths.to(torch.int64).repeat_interleave(heads).contiguous().numpy()
    counts = np.empty((batch * heads, n), np.int64)
    _count(qb, kb, nvalid, counts)
    index = np.empty((batch * heads, n, max(int(counts.max()) if counts.size else 0, 1)), np.int64)
    _fill(qb, kb, nvalid, index)
    return (torch.from_numpy(index).view(batch, heads, n, -1), torch.from_numpy(counts).view(batch, heads, n))
