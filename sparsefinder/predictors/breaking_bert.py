"""Breaking-BERT masks (Brahma, Zablotskaia & Mimno 2022, "Breaking BERT: Evaluating and
Optimizing Sparsified Attention").

Brahma et al. replace BERT's attention by fixed masks built from position (neighbours within
a degree ``k``), lexical identity, syntax (dependency neighbours) and chance, and learn a
neighbour degree per layer that trades accuracy for sparsity. Here:

- position and random are :class:`~.fixed.WindowPredictor` and :class:`~.fixed.RandomPredictor`;
- :class:`LexicalPredictor`: a query keeps every key with the same token id (so repeated
  words link up), united with the ``±width`` neighbours (``width = 0``: lexical alone);
- :class:`NeighbourDegreePredictor`: one neighbour degree per layer, learned on the fit data
  as the smallest ``k`` whose window keeps a ``target`` share of the layer's gold edges
  (the gold graph replaces their task loss as the accuracy to trade);
- syntax is absent: no English dependency model of spaCy (or another parser) is published
  on PyPI by its authors, and nothing may download at run time (see the README).

The lexical mask is built per sequence (its groups are each sequence's token ids, through
:func:`~.buckets.group_pattern`) and stacked; the windows are built for the whole batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..errors import SparsefinderError
from ..pattern import Pattern
from ..inputs import AttentionInputs
from .base import Predictor
from .buckets import group_pattern
from .fixed import WindowUnion
from .position_stats import position_counts


def lexical_pattern(input_ids: Tensor, num_heads: int) -> Pattern:
    """Pairs ``(i, j)`` with ``input_ids[i] == input_ids[j]`` (diagonal included) of one sequence, for every head.

    ``input_ids`` (n,) → Pattern ``(1, H, n, n)``.
    """
    _, token = torch.unique(input_ids, return_inverse=True)
    groups = token.long().view(1, -1, 1).expand(num_heads, -1, 1)
    return group_pattern(groups, groups, int(token.max()) + 1 if token.numel() else 1)


class LexicalPredictor(WindowUnion):
    """Keys with the query's token id, plus the ``±width`` neighbours."""

    name: ClassVar[str] = "lexical"
    spec_key = ("lexical",)
    spec_tokens = {"lexical": "width"}
    knob = "width"
    grid = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
    description = "same-token keys (lexical mask) plus a ±w window"
    source = "Brahma et al. 2022, Breaking BERT (lexical + position masks)"

    def __init__(self, *, width: int = 0) -> None:
        self.width = width

    def _validate_params(self) -> None:
        self._require_int("width", minimum=0)

    def width_free(self, inputs: AttentionInputs) -> Pattern:
        """The lexical mask of each sequence, stacked to the padded batch."""
        ids = inputs.input_ids.to(inputs.queries.device)
        return Pattern.stack([lexical_pattern(ids[b, :int(m)], inputs.num_heads)
                              for b, m in enumerate(inputs.lengths.tolist())], length=inputs.length)


class NeighbourDegreePredictor(Predictor):
    """A window per layer whose degree is the smallest keeping ``target`` of the layer's gold edges."""

    positional = True
    name: ClassVar[str] = "neighbour-degree"
    spec_key = ("degree",)
    spec_tokens = {"degree": "target"}
    knob = "target"
    grid = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
    description = "per-layer neighbour degree learned to keep a target share of gold edges"
    source = "Brahma et al. 2022, Breaking BERT (learned per-layer degree)"
    learns = True
    fitted_tensors = ("recall_by_degree",)

    def __init__(self, *, target: float = 0.9) -> None:
        self.target = target

    def _validate_params(self) -> None:
        if isinstance(self.target, bool) or not isinstance(self.target, (int, float)) or not 0 <= self.target <= 1:
            raise SparsefinderError(f"neighbour-degree target must be a number in [0, 1], got {self.target!r}")

    def fit(self, data, progress: bool = False) -> NeighbourDegreePredictor:
        """Sets ``recall_by_degree_`` : float64 (layers, L), gold share within ``±k`` for ``k = 0..L−1``."""
        self._validate_params()
        counts = position_counts(data, absolute=False)
        gold = counts.gold.sum(1)  # (layers, 2L-1)
        centre = counts.length - 1
        by_distance = gold[:, centre:].clone()
        by_distance[:, 1:] += gold[:, :centre].flip(-1)
        self.recall_by_degree_ = by_distance.cumsum(-1) / gold.sum(-1, keepdim=True).clamp(min=1)
        return self

    def degree(self, layer: int) -> int:
        """The smallest ``k`` whose window reaches ``target`` on the fit data for ``layer``."""
        self.check_is_fitted()
        reached = self.recall_by_degree_[layer] >= self.target - 1e-12
        return int(reached.nonzero()[0]) if reached.any() else int(reached.numel() - 1)

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """The window of the layer's learned degree, shape ``(B, H, n, n)``."""
        return Pattern.window(inputs.num_heads, inputs.length, self.degree(inputs.layer), lengths=inputs.lengths,
                              device=inputs.queries.device)

