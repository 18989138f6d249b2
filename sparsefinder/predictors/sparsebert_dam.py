"""SparseBERT's Differentiable Attention Mask (Shi et al. 2021, "SparseBERT: Rethinking the
Importance Analysis in Self-attention").

A mask probability ``σ(ℓ)`` per position of each (layer, head) — relative offset ``j − i``
(default) or absolute pair (``absolute``) — learned by gradient descent on the fit corpus.
SparseBERT trains the logits with the task loss plus a sparsity penalty ``λ·mean σ(ℓ)``; we
have no task, so the loss keeps the gold edges instead: the binary cross-entropy of the mask
against the gold graph over all valid pairs, plus ``λ·mean σ(ℓ)``. The loss is a sum over
pairs, so it is computed exactly from the per-position gold and pair counts
(:mod:`.position_stats`) and minimised with Adam, full batch, for every head at once.
Knob: ``threshold`` on ``σ(ℓ)``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..config import DAM_LEARNING_RATE, DAM_STEPS
from ..errors import SparsefinderError
from ..pattern import Pattern
from .attention_pruning import check_threshold, position_pattern
from ..inputs import AttentionInputs
from .base import Predictor
from .position_stats import PositionCounts, position_counts


def train_mask_logits(counts: PositionCounts, penalty: float, steps: int, lr: float) -> Tensor:
    """Minimise ``[Σ g·softplus(−ℓ) + (t−g)·softplus(ℓ) + λ·t·σ(ℓ)] / Σ t`` per head.

    Parameters
    ----------
    counts : PositionCounts
        Gold ``g`` (layers, H, P) and total ``t`` (P,) counts.

    Returns
    -------
    Tensor, float32, shape (layers, H, P)
        Mask logits ``ℓ``; positions that never occur keep ``−∞``-like logits (−30).
    """
    gold = counts.gold.float()
    total = counts.total.float().expand_as(gold)
    scale = counts.total.sum().clamp(min=1).float()
    logits = torch.zeros_like(gold, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    softplus = torch.nn.functional.softplus
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (gold * softplus(-logits) + (total - gold) * softplus(logits)
                + penalty * total * torch.sigmoid(logits)).sum() / scale
        loss.backward()
        optimizer.step()
    return torch.where(counts.total > 0, logits.detach(), torch.full_like(gold, -30.0))


class SparseBertDAMPredictor(Predictor):
    """Keep positions whose learned mask probability exceeds ``threshold``."""

    positional = True
    name: ClassVar[str] = "sparsebert-dam"
    spec_key = ("dam",)
    spec_tokens = {"dam": "threshold", "penalty": "penalty", "abs": "absolute"}
    knob = "threshold"
    grid = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001)
    description = "learned mask over offsets (or pairs): BCE to the gold graph + sparsity penalty"
    source = "Shi et al. 2021, SparseBERT (Differentiable Attention Mask)"
    learns = True
    fitted_tensors = ("logits",)

    def __init__(self, *, threshold: float = 0.5, penalty: float = 0.1, absolute: bool = False,
                 steps: int = DAM_STEPS, learning_rate: float = DAM_LEARNING_RATE) -> None:
        self.threshold = threshold
        self.penalty = penalty
        self.absolute = absolute
        self.steps = steps
        self.learning_rate = learning_rate

    def _validate_params(self) -> None:
        check_threshold("sparsebert-dam", self.threshold)
        if isinstance(self.penalty, bool) or not isinstance(self.penalty, (int, float)) or self.penalty < 0:
            raise SparsefinderError(f"sparsebert-dam penalty must be a non-negative number, got {self.penalty!r}")
        if not isinstance(self.absolute, bool):
            raise SparsefinderError(f"sparsebert-dam absolute must be true or false, got {self.absolute!r}")
        self._require_int("steps", minimum=1)
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise SparsefinderError(f"sparsebert-dam learning_rate must be a positive number, got {rate!r}")

    def fit(self, data, progress: bool = False) -> SparseBertDAMPredictor:
        """Sets ``logits_`` : float32 (layers, H, 2L−1) by offset, or (layers, H, L²) by pair."""
        self._validate_params()
        counts = position_counts(data, absolute=self.absolute)
        self.logits_ = train_mask_logits(counts, float(self.penalty), self.steps, float(self.learning_rate))
        return self

    def mask_probability(self, layer: int) -> Tensor:
        """``σ(ℓ)`` of ``layer``, shape (H, P)."""
        self.check_is_fitted()
        return torch.sigmoid(self.logits_[layer])

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Positions with ``σ(ℓ) > threshold``, cut to each sequence's length; shape ``(B, H, n, n)``."""
        return position_pattern(self.mask_probability(inputs.layer), self.threshold, self.absolute, inputs)

