"""Synthetic gold datasets with a known answer, for fast predictor tests.

:func:`grouped_dataset` builds heads whose tokens fall into ``groups`` equal groups: every
token's query and key is ``scale · e_g`` (``e_g`` a basis vector of R^d for its group ``g``).
Scores are ``scale²/√d`` inside a group and 0 across groups, so the α-entmax gold graph of
every query is exactly its own group (checked when the data is built), and the projection
``x ↦ x[:groups]`` separates gold from non-gold perfectly. A perfect predictor therefore
reaches recall 1.0 at sparsity ``1 − 1/groups``.
"""

from __future__ import annotations

import torch

from sparsefinder.alpha_entmax import support
from sparsefinder.dataset import InMemoryDataset, Sequence
from sparsefinder.pattern import Pattern


def group_of(head: int, length: int, groups: int) -> torch.Tensor:
    """Group of each token in ``head``: interleaved (``i mod G``) in even heads, blocks in odd ones; (n,)."""
    i = torch.arange(length)
    return i % groups if head % 2 == 0 else i // (length // groups)


def grouped_sequence(*, layers: int = 2, heads: int = 2, length: int = 32, dim: int = 8, groups: int = 4,
                     scale: float = 4.0, alpha: float = 1.5) -> Sequence:
    """One sequence of the grouped structure; queries/keys/values float16 (layers, H, n, d)."""
    assert length % groups == 0 and groups <= dim
    x = torch.zeros(layers, heads, length, dim)
    for layer in range(layers):
        for h in range(heads):
            g = (group_of(h, length, groups) + layer) % groups
            x[layer, h, torch.arange(length), g] = scale
    gold = [Pattern.from_dense(support(x[l] @ x[l].transpose(-1, -2) / dim**0.5, alpha)) for l in range(layers)]
    expected = [Pattern.from_dense(torch.stack([
        group_of(h, length, groups)[:, None] == group_of(h, length, groups)[None, :] for h in range(heads)]))
        for _ in range(layers)]
    assert gold == expected, "the synthetic gold graph must be exactly the groups"
    ids = torch.arange(length) + 1000
    return Sequence(ids, x.half(), x.half(), x.half(), gold)


def grouped_dataset(sequences: int = 2, **kwargs) -> InMemoryDataset:
    """An in-memory dataset of identical grouped sequences (see :func:`grouped_sequence`)."""
    return InMemoryDataset([grouped_sequence(**kwargs) for _ in range(sequences)],
                           alpha=kwargs.get("alpha", 1.5), model_id="synthetic-groups")


def write_dataset(folder, dataset: InMemoryDataset):
    """Write an in-memory dataset as a dataset folder readable by :class:`GoldDataset` (for CLI tests)."""
    from pathlib import Path

    from sparsefinder.dataset import MANIFEST, GoldDataset, ShardWriter
    from sparsefinder.files import atomic_write_json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder, shard_size=len(dataset))
    for seq in dataset.sequences():
        writer.add(seq)
    writer.flush()
    manifest = dict(dataset.manifest, format=1, shards=writer.shards,
                    corpus={"path": "<synthetic>", "sha256": "0" * 64, "bytes": 0, "texts": len(dataset)})
    atomic_write_json(folder / MANIFEST, manifest)
    return GoldDataset(folder)


def uneven_group_dataset(sequences: int = 4, sizes: tuple[int, ...] = (1, 2, 3, 5, 8, 13), dim: int = 8,
                         scale: float = 4.0) -> InMemoryDataset:
    """Two layers × two heads whose tokens fall into groups of the given, unequal ``sizes``.

    Token ``i`` has query and key ``scale · e_g`` for its group ``g`` (blocks in head 0, interleaved
    in head 1), so every query's gold support is exactly its group: supports of 1 to 13 keys.
    """
    assert len(sizes) <= dim
    groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    n = groups.numel()
    order = [torch.arange(n), torch.argsort(torch.arange(n) % len(sizes), stable=True).argsort()]
    x = torch.zeros(2, 2, n, dim)
    for h in range(2):
        x[:, h, torch.arange(n), groups[order[h]]] = scale
    gold = [Pattern.from_dense(support(x[l] @ x[l].transpose(-1, -2) / dim**0.5, 1.5)) for l in range(2)]
    expected = Pattern.from_dense(torch.stack([groups[order[h]][:, None] == groups[order[h]][None, :] for h in range(2)]))
    assert all(g == expected for g in gold), "the synthetic gold graph must be exactly the groups"
    seq = Sequence(torch.arange(n) + 1000, x.half(), x.half(), x.half(), gold)
    return InMemoryDataset([seq] * sequences, model_id="synthetic-uneven")
