"""Pairs whose query and key share a group, row by row, compiled by Numba.

Hashing and clustering predictors keep a query–key pair when the two share a group: a (round,
bucket) of Reformer LSH, a Routing or k-means cluster, a token id, or a (coordinate, quantile
bucket) of the Sparsefinder quantization predictor. Listing each group's members and merging the
duplicates (:func:`~sparsefinder.predictors.buckets.group_pattern`'s torch path) sorts every kept
pair; :func:`shared_group_rows` instead walks each query's row once: it marks the query's groups,
keeps each key that has a marked group (stopping at the first), parallel over rows, and writes the
:class:`~sparsefinder.pattern.Pattern` rows directly (a counting pass, then the index at its
final width, keys increasing). Work per pair is at most the key's group count. Hand-written for
want of a library kernel for this set operation; without Numba, or with
``SPARSEFINDER_CPU_KERNELS=0``, callers keep their torch path.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from ..kernels import available, set_threads
from ..kernels import numba as _nb

__all__ = ["available", "shared_group_rows"]

#: Rows per parallel task (the group marks are allocated once per task).
_BLOCK = 64

if _nb is not None:
    _jit = functools.partial(_nb.njit, cache=True, nogil=True)

    @_jit
    def _row(qg, kg, num_groups, nvalid, g, i, mark, index, fill):  # keys of row (g, i); written to index if fill
        c, t = qg.shape[2], kg.shape[2]
        for a in range(c):
            x = qg[g, i, a]
            if 0 <= x < num_groups:
                mark[x] = True
        m = 0
        for j in range(nvalid):
            for b in range(t):
                y = kg[g, j, b]
                if 0 <= y < num_groups and mark[y]:
                    if fill:
                        index[g, i, m] = j
                    m += 1
                    break
        for a in range(c):
            x = qg[g, i, a]
            if 0 <= x < num_groups:
                mark[x] = False
        return m

    @_jit(parallel=True)
    def _rows(qg, kg, num_groups, nvalid, counts, index, fill):  # qg (G, n, c), kg (G, n, t) → counts (G, n)
        groups, n = qg.shape[0], qg.shape[1]
        rows = groups * n
        for blk in _nb.prange((rows + _BLOCK - 1) // _BLOCK):
            mark = np.zeros(max(num_groups, 1), np.bool_)
            for row in range(blk * _BLOCK, min(rows, (blk + 1) * _BLOCK)):
                g, i = row // n, row % n
                m = _row(qg, kg, num_groups, nvalid[g], g, i, mark, index, fill) if i < nvalid[g] else 0
                if fill:
                    index[g, i, m:] = 0
                else:
                    counts[g, i] = m


def shared_group_rows(query_groups: Tensor, key_groups: Tensor, num_groups: int, nvalid: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """Keys sharing a group with each query, as pattern rows.

    ``query_groups`` ``(G, n, c)`` and ``key_groups`` ``(G, n, t)`` are integer group ids (entries
    outside ``[0, num_groups)`` mean "no group"); row group ``g`` sees its first ``nvalid[g]``
    queries and keys. Returns ``index`` ``(G, n, w)`` (increasing keys, zero padded, ``w`` the
    widest row, at least 1) and ``counts`` ``(G, n)``.
    """
    set_threads()
    groups, n, _ = query_groups.shape
    qg = query_groups.to(torch.int64).contiguous().numpy()
    kg = key_groups.to(torch.int64).contiguous().numpy()
    nv = nvalid.to(torch.int64).contiguous().numpy()
    counts = np.empty((groups, n), np.int64)
    _rows(qg, kg, num_groups, nv, counts, np.empty((1, 1, 1), np.int64), False)
    index = np.empty((groups, n, max(int(counts.max()) if counts.size else 0, 1)), np.int64)
    _rows(qg, kg, num_groups, nv, counts, index, True)
    return torch.from_numpy(index), torch.from_numpy(counts)
