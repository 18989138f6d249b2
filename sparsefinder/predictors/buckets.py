"""Patterns of (query, key) pairs that share a bucket, built without a dense ``(n, n)`` mask.

Used by hashing and clustering predictors (Reformer LSH, Kitaev et al. 2020): each query
keeps every key that lands in the same bucket, in any of several rounds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..pattern import Pattern

__all__ = ["same_bucket_pattern"]


def same_bucket_pattern(query_bucket: Tensor, key_bucket: Tensor, num_buckets: int) -> Pattern:
    """Keep ``(i, j)`` of head ``h`` when query ``i`` and key ``j`` share a bucket in some round.

    Parameters
    ----------
    query_bucket, key_bucket : Tensor, int64, shape (R, H, n)
        Bucket of each query / key in each of ``R`` rounds, in ``[0, num_buckets)``.
    num_buckets : int
        Buckets per round.
    """
    rounds, heads, n = query_bucket.shape
    groups = rounds * heads
    offset = torch.arange(groups, device=query_bucket.device)[:, None] * num_buckets
    qb = (query_bucket.reshape(groups, n) + offset).reshape(-1)
    kb = (key_bucket.reshape(groups, n) + offset).reshape(-1)
    order = torch.argsort(kb, stable=True)  # keys grouped by (round, head, bucket)
    size = torch.bincount(kb, minlength=groups * num_buckets)
    start = torch.cumsum(size, 0) - size
    per_query = size[qb]
    query = torch.repeat_interleave(torch.arange(qb.numel(), device=qb.device), per_query)
    first = torch.cumsum(per_query, 0) - per_query
    slot = torch.arange(query.numel(), device=qb.device) - first[query] + start[qb[query]]
    head = torch.div(query, n, rounding_mode="floor") % heads
    return Pattern.from_pairs(head, query % n, order[slot] % n, heads, n)
