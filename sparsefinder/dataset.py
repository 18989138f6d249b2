"""Extracted datasets: per-sequence queries, keys, values and gold graphs, in shards.

A dataset folder holds ``manifest.json`` and ``shard-XXXXX.safetensors`` files. Each shard
stores, for ``S`` sequences of lengths ``n_s`` (``T = Σ n_s`` tokens):

- ``input_ids`` (T,) int32 and ``lengths`` (S,) int64;
- ``queries``, ``keys``, ``values`` (layers, H, T, d) float16;
- the gold graphs in CSR pieces: ``gold_row_lengths`` (layers, H, T) int32 (gold keys per
  query) and ``gold_col`` int32, ordered by sequence, layer, head, query, key.

:class:`ShardWriter` writes them, :class:`GoldDataset` streams them back one shard at a
time, so memory stays bounded by the shard size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from .errors import NotFoundError, SparsefinderError
from .pattern import Pattern
from .inputs import AttentionInputs

__all__ = ["ExtractTotals", "GoldDataset", "InMemoryDataset", "MANIFEST", "Sequence", "ShardWriter", "batch_inputs"]

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class Sequence:
    """One extracted sequence of ``n`` tokens.

    Attributes
    ----------
    input_ids : Tensor, int64, shape (n,)
    queries, keys, values : Tensor, float16, shape (layers, H, n, d)
    gold : list[Pattern]
        Gold graph of each layer, each of shape (H, n, n).
    """

    input_ids: Tensor
    queries: Tensor
    keys: Tensor
    values: Tensor
    gold: list[Pattern]

    @property
    def length(self) -> int:
        return int(self.input_ids.numel())

    def inputs(self, layer: int) -> AttentionInputs:
        """Predictor inputs of ``layer`` in float32 (a batch of one)."""
        return AttentionInputs.single(layer, self.queries[layer].float(), self.keys[layer].float(), self.input_ids)

    def gold_sparsity(self) -> Tensor:
        """Sparsity of the gold graph per (layer, head), shape (layers, H)."""
        return torch.stack([g.sparsity()[0] for g in self.gold])


@dataclass
class ExtractTotals:
    """Running totals of an extraction, added sequence by sequence in corpus order.

    Attributes
    ----------
    gold_sparsity : Tensor, float64, shape (layers, H)
        Sum over sequences of each sequence's gold sparsity per (layer, head).
    """

    gold_sparsity: Tensor
    sequences: int = 0
    tokens: int = 0

    def add(self, sparsity: Tensor, tokens: int) -> None:
        """Add one sequence: its gold sparsity (layers, H) and its length."""
        self.gold_sparsity += sparsity
        self.sequences += 1
        self.tokens += tokens


def batch_inputs(sequences: list[Sequence], layer: int, band: int = 0) -> tuple[AttentionInputs, Pattern]:
    """Predictor inputs ``(B, H, n, d)`` of ``layer`` for sequences padded to the longest (of a model banded to
    ``±band``, 0: every key), and their gold graphs."""
    n = max(s.length for s in sequences)

    def pad(x: Tensor) -> Tensor:  # (H, m, d) -> (H, n, d)
        return torch.nn.functional.pad(x, (0, 0, 0, n - x.shape[1]))

    queries = torch.stack([pad(s.queries[layer]) for s in sequences]).float()
    keys = torch.stack([pad(s.keys[layer]) for s in sequences]).float()
    ids = torch.stack([torch.nn.functional.pad(s.input_ids, (0, n - s.length), value=-1) for s in sequences])
    lengths = torch.tensor([s.length for s in sequences], dtype=torch.long)
    gold = Pattern.stack([s.gold[layer] for s in sequences], length=n)
    return AttentionInputs(layer, queries, keys, ids, lengths, band), gold


class ShardWriter:
    """Accumulates sequences and writes a shard every ``shard_size`` sequences into ``folder``."""

    def __init__(self, folder: Path, shard_size: int) -> None:
        self.folder = folder
        self.shard_size = shard_size
        self.shards: list[dict] = []
        self._pending: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self._pending.append(seq)
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write the pending sequences (if any) as one shard."""
        if not self._pending:
            return
        seqs, self._pending = self._pending, []
        name = f"shard-{len(self.shards):05d}.safetensors"
        tensors = {
            "input_ids": torch.cat([s.input_ids for s in seqs]).to(torch.int32),
            "lengths": torch.tensor([s.length for s in seqs], dtype=torch.long),
            "queries": torch.cat([s.queries for s in seqs], dim=2).half().contiguous(),
            "keys": torch.cat([s.keys for s in seqs], dim=2).half().contiguous(),
            "values": torch.cat([s.values for s in seqs], dim=2).half().contiguous(),
            "gold_row_lengths": torch.cat(
                [torch.stack([g.row_lengths() for g in s.gold]) for s in seqs], dim=2).to(torch.int32).contiguous(),
            "gold_col": torch.cat([g.csr()[1] for s in seqs for g in s.gold]).to(torch.int32),
        }
        save_file(tensors, str(self.folder / name))
        self.shards.append({"file": name, "sequences": len(seqs), "tokens": int(tensors["lengths"].sum()),
                            "gold_edges": int(tensors["gold_col"].numel())})


def _read_shard(path: Path) -> Iterator[Sequence]:
    try:
        t = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SparsefinderError(f"dataset shard {path} is unreadable or truncated ({exc}); extract it again") from None
    lengths = t["lengths"].tolist()
    row_len = t["gold_row_lengths"].long()
    col = t["gold_col"].long()
    start, edge = 0, 0
    layers, heads = row_len.shape[:2]
    for n in lengths:
        stop = start + n
        gold = []
        for layer in range(layers):
            rl = row_len[layer, :, start:stop].reshape(-1)
            nnz = int(rl.sum())
            gold.append(Pattern.from_csr(rl, col[edge:edge + nnz], heads, n))
            edge += nnz
        yield Sequence(t["input_ids"][start:stop].long(), t["queries"][:, :, start:stop],
                       t["keys"][:, :, start:stop], t["values"][:, :, start:stop], gold)
        start = stop


class GoldDataset:
    """An extracted dataset folder, read back sequence by sequence (the first ``limit`` only, if given)."""

    def __init__(self, folder: str | Path, limit: int | None = None) -> None:
        if limit is not None and limit < 1:
            raise SparsefinderError(f"a dataset limit must be at least 1, got {limit}")
        self.limit = limit
        self.folder = Path(folder)
        manifest = self.folder / MANIFEST
        if not self.folder.is_dir():
            raise NotFoundError(f"dataset folder {self.folder} does not exist; run 'sparsefinder extract' first")
        if not manifest.is_file():
            raise SparsefinderError(f"{self.folder} is not a sparsefinder dataset (no {MANIFEST})")
        try:
            self.manifest: dict = json.loads(manifest.read_text())
            self.manifest["model"]["id"]  # noqa: B018 - presence check
        except (ValueError, KeyError, TypeError):
            raise SparsefinderError(f"{manifest} is corrupt; extract the dataset again") from None

    # manifest shortcuts
    @property
    def model_id(self) -> str:
        return self.manifest["model"]["id"]

    @property
    def alpha(self) -> float:
        return float(self.manifest["alpha"])

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def num_layers(self) -> int:
        return int(self.manifest["model"]["num_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.manifest["model"]["num_heads"])

    @property
    def head_dim(self) -> int:
        return int(self.manifest["model"]["head_dim"])

    @property
    def attention_window(self) -> int:
        """The band of the model the gold graphs come from (``±W`` keys; 0: every key)."""
        return int(self.manifest["model"].get("attention_window", 0))

    def __len__(self) -> int:
        total = int(self.manifest["sequences"])
        return total if self.limit is None else min(total, self.limit)

    def __iter__(self) -> Iterator[Sequence]:
        return self.sequences()

    def sequences(self, limit: int | None = None) -> Iterator[Sequence]:
        """Yield up to ``limit`` sequences (all by default), one shard in memory at a time."""
        limit = len(self) if limit is None else min(limit, len(self))
        done = 0
        for shard in self.manifest["shards"]:
            for seq in _read_shard(self.folder / shard["file"]):
                if done >= limit:
                    return
                yield seq
                done += 1

    def __repr__(self) -> str:
        return (f"GoldDataset({str(self.folder)!r}, sequences={len(self)}, model={self.model_id!r}, "
                f"alpha={self.alpha}, max_length={self.max_length})")


class InMemoryDataset(GoldDataset):
    """A dataset held in memory (tests, synthetic heads, a service's single input).

    Same reading interface as :class:`GoldDataset`; ``queries`` etc. of each sequence have
    shape (layers, H, n, d).
    """

    def __init__(self, sequences: list[Sequence], *, alpha: float = 1.5, model_id: str = "in-memory",
                 max_length: int | None = None) -> None:
        if not sequences:
            raise SparsefinderError("an in-memory dataset needs at least one sequence")
        self.folder = Path("<memory>")
        self.limit = None
        self._sequences = list(sequences)
        layers, heads, _, dim = sequences[0].queries.shape
        self.manifest = {
            "key": {"model_id": model_id, "alpha": alpha},
            "model": {"id": model_id, "num_layers": layers, "num_heads": heads, "head_dim": dim},
            "alpha": alpha,
            "max_length": max_length or max(s.length for s in sequences),
            "sequences": len(sequences),
            "tokens": sum(s.length for s in sequences),
            "shards": [],
        }

    def sequences(self, limit: int | None = None) -> Iterator[Sequence]:
        yield from self._sequences[:limit]
