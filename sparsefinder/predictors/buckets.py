"""Patterns of (query, key) pairs that share a group, built without a dense ``(n, n)`` mask.

The one helper behind every hashing and clustering predictor: Reformer LSH (Kitaev et al.
2020: groups are (round, bucket)), Routing Transformer clusters (Roy et al. 2021), the lexical
mask (Brahma et al. 2022: groups are token ids) and the Sparsefinder quantization and k-means
predictors (Treviso et al. 2022). Each query keeps every key that shares one of its groups.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..pattern import Pattern
from . import group_rows

__all__ = ["group_pattern"]


def group_pattern(query_groups: Tensor, key_groups: Tensor, num_groups: int) -> Pattern:
    """Keep ``(h, i, j)`` when a group of query ``i`` is also a group of key ``j`` in head ``h``.

    Parameters
    ----------
    query_groups : Tensor, int64, shape (H, n, c)
        The groups each query belongs to; entries outside ``[0, num_groups)`` mean "no group".
    key_groups : Tensor, int64, shape (H, n, t)
        The groups each key belongs to, same convention.
    num_groups : int
        Groups per head (disjoint groups of several rounds are numbered apart, e.g. ``round·B + bucket``).

    Returns
    -------
    Pattern of one sequence, shape ``(1, H, n, n)``. On a CPU the compiled row kernel of
    :mod:`.group_rows` builds the rows directly; otherwise it costs one sort of the ``H·n·t`` key
    memberships plus one per kept pair (duplicates from several shared groups are merged).
    """
    if group_rows.available() and not key_groups.is_cuda:
        heads, n = query_groups.shape[:2]
        index, counts = group_rows.shared_group_rows(query_groups, key_groups, num_groups,
                                                     torch.full((heads,), n, dtype=torch.long))
        return Pattern(index[None], counts[None], torch.tensor([n], dtype=torch.long))
    heads, n, c = query_groups.shape
    device = key_groups.device
    head_offset = torch.arange(heads, device=device)[:, None, None] * num_groups
    key_ok = (key_groups >= 0) & (key_groups < num_groups)
    key_group = (key_groups.long() + head_offset)[key_ok]  # (m,) in (head, key, slot) order
    key_of = torch.arange(n, device=device)[None, :, None].expand_as(key_groups)[key_ok]
    members = key_of[torch.argsort(key_group, stable=True)]  # keys grouped by (head, group)
    size = torch.bincount(key_group, minlength=heads * num_groups)
    start = torch.cumsum(size, 0) - size
    query_ok = (query_groups >= 0) & (query_groups < num_groups)
    query_group = (query_groups.long() + head_offset)[query_ok]
    row = torch.arange(heads * n, device=device).view(heads, n, 1).expand(-1, -1, c)[query_ok]
    per_entry = size[query_group]  # keys reached through each (query, group) entry
    first = torch.cumsum(per_entry, 0) - per_entry
    entry = torch.repeat_interleave(torch.arange(per_entry.numel(), device=device), per_entry)
    slot = torch.arange(entry.numel(), device=device) - first[entry] + start[query_group[entry]]
    pair_row = row[entry]
    return Pattern.from_pairs(torch.div(pair_row, n, rounding_mode="floor"), pair_row % n, members[slot], heads, n)
