"""Reference curve: each query's true top-k keys.

An oracle, not a predictor: it reads every score ``q·k``, which is the work predictors are
meant to avoid. Reports draw it as the ceiling a predictor of the same budget can reach.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..pattern import Pattern
from ..inputs import AttentionInputs
from .base import Predictor
from .fixed import validate_sweep


class OracleTopK(Predictor):
    """Keep the ``k`` highest-scoring keys of each query (all keys when ``k ≥ n``)."""

    name: ClassVar[str] = "oracle-topk"
    spec_key = ("oracle", "topk")
    spec_tokens = {"oracle": None, "topk": "k"}
    knob = "k"
    grid = (4, 8, 16, 32, 64, 128)
    description = "true top-k scores of each query (reference: needs all scores)"
    source = "reference"
    reference = True

    def __init__(self, *, k: int = 32) -> None:
        self.k = k

    def _validate_params(self) -> None:
        self._require_int("k", minimum=1)

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Top-``k`` of ``q·kᵀ`` per query and head, over each sequence's valid keys."""
        self.check_is_fitted()
        return ranked_keys(inputs, self.k)

    def predict_sweep(self, inputs: AttentionInputs, values: list[int]) -> list[Pattern]:
        """One ranking by score for the largest ``k``, cut to each value (the knob is left at the last value)."""
        validate_sweep(self, values)
        ranked = ranked_keys(inputs, max(values))
        return [ranked.narrow(k) for k in values]


def ranked_keys(inputs: AttentionInputs, k: int) -> Pattern:
    """The ``k`` highest-scoring valid keys of each query in decreasing score order, shape ``(B, H, n, n)``.

    Rows are ranked, so :meth:`Pattern.narrow` gives any smaller top-``k``.
    """
    scores = torch.matmul(inputs.queries, inputs.keys.transpose(-1, -2))  # (B, H, n, n)
    scores = scores.masked_fill(~inputs.key_mask()[:, None, None, :], float("-inf"))
    top = scores.topk(min(k, inputs.length), dim=-1).indices  # padded keys rank last and are dropped
    return Pattern.from_index(top, lengths=inputs.lengths.to(top.device), unique=True)
