"""Attention Pruning: a data-informed global mask per (layer, head) (Rugina et al. 2020,
"Data-Informed Global Sparseness in Attention Mechanisms for Deep Neural Networks").

The mask is the attention averaged over the fit corpus, kept where it passes a threshold,
and is the same for every input. Our gold graphs are α-entmax supports, so the averaged
quantity is the binary gold attention: the frequency with which a position is in the gold
graph, by relative offset ``j − i`` (default) or by absolute pair ``(i, j)`` (``absolute``).
Knob: ``threshold``; a position is kept when its frequency is strictly above it.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from ..errors import SparsefinderError
from ..pattern import Pattern
from ..inputs import AttentionInputs
from .base import Predictor
from .position_stats import offset_pattern, pair_pattern, position_counts


def check_threshold(owner: str, value: object) -> None:
    """Raise unless ``value`` is a number in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise SparsefinderError(f"{owner} threshold must be a number in [0, 1), got {value!r}")


def position_pattern(score: Tensor, threshold: float, absolute: bool, inputs: AttentionInputs) -> Pattern:
    """Keep positions with ``score > threshold`` for a padded batch, shape ``(B, H, n, n)``.

    ``score`` is (H, 2L−1) by offset or (H, L²) by pair; the mask is built once for the padded
    length and cut by each sequence's length.
    """
    keep = score.to(inputs.queries.device) > threshold
    if absolute:
        fit_length = int(round(keep.shape[-1] ** 0.5))
        return pair_pattern(keep.reshape(keep.shape[0], fit_length, fit_length), inputs.length, inputs.lengths)
    return offset_pattern(keep, inputs.length, inputs.lengths)


class AttentionPruningPredictor(Predictor):
    """Keep the positions whose gold frequency over the fit corpus exceeds ``threshold``."""

    positional = True
    name: ClassVar[str] = "attention-pruning"
    spec_key = ("pruning",)
    spec_tokens = {"pruning": "threshold", "abs": "absolute"}
    knob = "threshold"
    grid = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001, 0.0)
    description = "fixed mask per head from gold frequency by offset (or absolute pair), thresholded"
    source = "Rugina et al. 2020, Data-Informed Global Sparseness in Attention Mechanisms"
    learns = True
    fitted_tensors = ("frequency",)

    def __init__(self, *, threshold: float = 0.1, absolute: bool = False) -> None:
        self.threshold = threshold
        self.absolute = absolute

    def _validate_params(self) -> None:
        check_threshold("attention-pruning", self.threshold)
        if not isinstance(self.absolute, bool):
            raise SparsefinderError(f"attention-pruning absolute must be true or false, got {self.absolute!r}")

    def fit(self, data, progress: bool = False) -> AttentionPruningPredictor:
        """Sets ``frequency_`` : float32 (layers, H, 2L−1) by offset, or (layers, H, L²) by pair."""
        self._validate_params()
        self.frequency_ = position_counts(data, absolute=self.absolute).frequency().float()
        return self

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """The layer's fixed mask, cut to each sequence's length; shape ``(B, H, n, n)``."""
        self.check_is_fitted()
        return position_pattern(self.frequency_[inputs.layer], self.threshold, self.absolute, inputs)

