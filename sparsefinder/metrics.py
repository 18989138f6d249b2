"""Recall, sparsity, precision and gold sparsity of predicted patterns (method.md §3).

For one sequence, one (layer, head), gold set ``G``, predicted set ``P`` and ``N = n²`` valid
pairs: recall ``|P∩G|/|G|``, sparsity ``1 − |P|/N``, precision ``|P∩G|/|P|`` (0 when ``P`` is
empty), gold sparsity ``1 − |G|/N``. :class:`MetricsAccumulator` averages them over
sequences per (layer, head) (macro); ``.mean()`` then averages over heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .pattern import Pattern

__all__ = ["METRICS", "MetricsAccumulator", "compare"]

METRICS = ("recall", "sparsity", "precision", "gold_sparsity")


def compare(predicted: Pattern, gold: Pattern, gold_mask: Tensor | None = None) -> dict[str, Tensor]:
    """Metrics of ``predicted`` against ``gold`` per sequence and head: float64 tensors ``(B, H)``.

    ``gold_mask`` (``gold.to_dense()``, ``(B, H, n, n)``) may be passed when many patterns are
    compared with the same gold graph: the comparison then costs one gather per kept pair.
    """
    hits = predicted.hits(gold.to_dense() if gold_mask is None else gold_mask).double()
    n_pred = predicted.nnz_per_head().double()
    n_gold = gold.nnz_per_head().double()
    total = gold.lengths.double().square().clamp(min=1)[:, None]
    return {
        "recall": hits / n_gold.clamp(min=1),
        "sparsity": 1.0 - n_pred / total,
        "precision": torch.where(n_pred > 0, hits / n_pred.clamp(min=1), torch.zeros_like(hits)),
        "gold_sparsity": 1.0 - n_gold / total,
    }


@dataclass
class MetricsAccumulator:
    """Running macro averages over sequences, per (layer, head)."""

    num_layers: int
    num_heads: int

    def __post_init__(self) -> None:
        self._sums = {m: torch.zeros(self.num_layers, self.num_heads, dtype=torch.float64) for m in METRICS}
        self._count = torch.zeros(self.num_layers, dtype=torch.long)

    def add(self, layer: int, metrics: dict[str, Tensor]) -> None:
        """Add the per-head metrics ``(B, H)`` of ``B`` sequences (from :func:`compare`) for ``layer``."""
        for m in METRICS:
            self._sums[m][layer] += metrics[m].cpu().reshape(-1, self.num_heads).sum(0)
        self._count[layer] += metrics[METRICS[0]].reshape(-1, self.num_heads).shape[0]

    @property
    def sequences(self) -> int:
        """Sequences seen (the minimum over layers)."""
        return int(self._count.min())

    def per_head(self) -> dict[str, Tensor]:
        """Macro averages, each of shape ``(layers, heads)``."""
        count = self._count.clamp(min=1).double()[:, None]
        return {m: s / count for m, s in self._sums.items()}

    def mean(self) -> dict[str, float]:
        """Macro averages over sequences, then the mean over all (layer, head)."""
        return {m: float(v.mean()) for m, v in self.per_head().items()}
