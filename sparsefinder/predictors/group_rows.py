"""Pairs whose query and key share a group, row by row, compiled by Numba.

Hashing and clustering predictors keep a query–key pair when the two share a group: a (round,
bucket) of Reformer LSH, a Routing or k-means cluster, a token id, or a (coordinate, quantile
bucket) of the Sparsefinder quantization predictor. Listing each group's members and merging the
duplicates (:func:`~sparsefinder.predictors.buckets.group_pattern`'s torch path) sorts every kept
pair; :func:`shared_group_rows` instead walks each query's row once: it marks the query's groups,
keeps each key that has a marked group (stopping at the first), parallel over rows, and writes the
:class:`~sparsefinder.pattern.Pattern` rows directly (keys increasing). Work per pair is at most the key's group count. Hand-written for
want of a library kernel for this set operation; without Numba, or with
``SPARSEFINDER_CPU_KERNELS=0``, callers keep their torch path.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from ..config import PREDICT_CHUNK_SCORES
from ..kernels import available, set_threads
from ..pattern import pad_width, query_chunks
from ..kernels import numba as _nb

__all__ = ["available", "shared_group_rows"]

#: Rows per parallel task (the group marks are allocated once per task).
_BLOCK = 64

if _nb is not None:
    @functools.partial(_nb.njit, cache=True, nogil=True, parallel=True)
    def _rows(qg, kg, first, num_groups, nvalid, counts, index):  # queries first.. : qg (G, q, c), kg (G, n, t)
        groups, n, c = qg.shape  # n: queries in this chunk → counts (G, q), index (G, q, n)
        t = kg.shape[2]
        rows = groups * n
        for blk in _nb.prange((rows + _BLOCK - 1) // _BLOCK):
            mark = np.zeros(max(num_groups, 1), np.bool_)
            for row in range(blk * _BLOCK, min(rows, (blk + 1) * _BLOCK)):
                g, i = row // n, row % n
                m = 0
                if first + i < nvalid[g]:
                    for a in range(c):
                        x = qg[g, i, a]
                        if 0 <= x < num_groups:
                            mark[x] = True
                    for j in range(nvalid[g]):
                        for b in range(t):
                            y = kg[g, j, b]
                            if 0 <= y < num_groups and mark[y]:
                                index[g, i, m] = j
                                m += 1
                                break
                    for a in range(c):
                        x = qg[g, i, a]
                        if 0 <= x < num_groups:
                            mark[x] = False
                counts[g, i] = m


def shared_group_rows(query_groups: Tensor, key_groups: Tensor, num_groups: int, nvalid: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """Keys sharing a group with each query, as pattern rows.

    ``query_groups`` ``(G, n, c)`` and ``key_groups`` ``(G, n, t)`` are integer group ids (entries
    outside ``[0, num_groups)`` mean "no group"); row group ``g`` sees its first ``nvalid[g]``
    queries and keys. Returns ``index`` ``(G, n, w)`` (increasing keys, zero padded, ``w`` the
    widest row, at least 1) and ``counts`` ``(G, n)``. One pass per chunk of queries writes rows at
    full width (int32 scratch of at most ``PREDICT_CHUNK_SCORES`` entries), then the used width is kept.
    """
    set_threads()
    groups, n, _ = query_groups.shape
    qg, kg = query_groups.to(torch.int64).contiguous(), key_groups.to(torch.int64).contiguous().numpy()
    nv = nvalid.to(torch.int64).contiguous().numpy()
    starts = query_chunks(n, groups * n, PREDICT_CHUNK_SCORES)
    pieces = []
    for first in starts:
        chunk = qg[:, first:first + starts.step].contiguous().numpy()
        counts = np.empty(chunk.shape[:2], np.int64)
        scratch = np.empty((*chunk.shape[:2], max(n, 1)), np.int32)
        _rows(chunk, kg, first, num_groups, nv, counts, scratch)
        width = max(int(counts.max()) if counts.size else 0, 1)
        index = torch.from_numpy(scratch[:, :, :width]).long()
        counts_t = torch.from_numpy(counts)
        pieces.append((index.masked_fill_(torch.arange(width) >= counts_t[..., None], 0), counts_t))
    width = max(index.shape[-1] for index, _ in pieces)
    return (torch.cat([pad_width(index, width) for index, _ in pieces], 1), torch.cat([c for _, c in pieces], 1))
