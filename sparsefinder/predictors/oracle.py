"""Reference curve: each query's true top-k keys.

An oracle, not a predictor: it reads every score ``q·k``, which is the work predictors are
meant to avoid. Reports draw it as the ceiling a predictor of the same budget can reach.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..pattern import Pattern
from .base import AttentionInputs, Predictor, register_predictor


@register_predictor
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
        """Top-``k`` of ``q·kᵀ`` per query and head."""
        self.check_is_fitted()
        scores = torch.matmul(inputs.queries, inputs.keys.transpose(-1, -2))  # (H, n, n)
        top = scores.topk(min(self.k, inputs.length), dim=-1).indices
        return Pattern.from_padded(top)
