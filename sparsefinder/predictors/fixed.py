"""Fixed patterns that read neither queries nor keys: the local window.

Window: each query keeps the keys within ``±width`` positions (Longformer's sliding window,
Beltagy et al. 2020; the local part of BigBird, Zaheer et al. 2020).
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import SparsefinderError
from ..pattern import Pattern
from .base import AttentionInputs, Predictor, register_predictor


@register_predictor
class WindowPredictor(Predictor):
    """Keep keys within ``±width`` positions of the query."""

    name: ClassVar[str] = "window"
    spec_key = ("window",)
    spec_tokens = {"window": "width"}
    knob = "width"
    grid = (0, 1, 2, 4, 8, 16, 32, 64, 128)
    description = "local window of ±w positions"
    source = "Beltagy et al. 2020, Longformer"

    def __init__(self, *, width: int = 16) -> None:
        self.width = width

    def _validate_params(self) -> None:
        if not isinstance(self.width, int) or self.width < 0:
            raise SparsefinderError(f"window width must be a non-negative integer, got {self.width!r}")

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Band of ``2·width + 1`` keys around each query (clipped at the edges), for every head."""
        self.check_is_fitted()
        return Pattern.window(inputs.num_heads, inputs.length, self.width, device=inputs.queries.device)
