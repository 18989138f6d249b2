"""What a predictor sees: one layer's queries and keys for a padded batch of sequences."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AttentionInputs"]


@dataclass(frozen=True)
class AttentionInputs:
    """One layer's attention inputs for ``B`` sequences padded to ``n`` positions.

    Attributes
    ----------
    layer : int
        Layer index.
    queries, keys : Tensor, shape (B, H, n, d)
        Per-head queries and keys (before scaling); padded positions hold anything.
    input_ids : Tensor, int64, shape (B, n)
        Token ids, for lexical predictors (``-1`` where unknown).
    lengths : Tensor, int64, shape (B,)
        Valid tokens of each sequence, at the front.
    band : int
        A banded model's reach: each query attends to the keys within ``±band`` positions only (0: every
        key). Consumers cut any pattern to it; predictors that score pairs may score the band only.
    """

    layer: int
    queries: Tensor
    keys: Tensor
    input_ids: Tensor
    lengths: Tensor
    band: int = 0

    @classmethod
    def single(cls, layer: int, queries: Tensor, keys: Tensor, input_ids: Tensor | None = None) -> AttentionInputs:
        """One unpadded sequence: ``queries``/``keys`` ``(H, n, d)``, ``input_ids`` ``(n,)``."""
        n = queries.shape[1]
        ids = input_ids if input_ids is not None else torch.full((n,), -1, dtype=torch.long, device=queries.device)
        return cls(layer, queries.unsqueeze(0), keys.unsqueeze(0), ids.reshape(1, n).long(),
                   torch.tensor([n], dtype=torch.long, device=queries.device))

    @property
    def batch_size(self) -> int:
        return int(self.queries.shape[0])

    @property
    def num_heads(self) -> int:
        return int(self.queries.shape[1])

    @property
    def length(self) -> int:
        """``n``, the padded number of positions."""
        return int(self.queries.shape[2])

    def key_mask(self) -> Tensor:
        """Boolean ``(B, n)``: valid positions."""
        return torch.arange(self.length, device=self.queries.device) < self.lengths[:, None]

    def sequence(self, b: int) -> AttentionInputs:
        """Sequence ``b`` alone, cut to its valid tokens."""
        n = int(self.lengths[b])
        return AttentionInputs(self.layer, self.queries[b:b + 1, :, :n], self.keys[b:b + 1, :, :n],
                               self.input_ids[b:b + 1, :n], self.lengths[b:b + 1], self.band)
