"""Fixed patterns that read neither queries nor keys (except the learned global positions).

- Window: each query keeps the keys within ``±width`` positions (Longformer's sliding window,
  Beltagy et al. 2020; the local part of BigBird, Zaheer et al. 2020; Brahma et al. 2022's
  position mask).
- Random: ``keys`` uniformly random keys per query, seeded (BigBird's random part; Brahma
  et al.'s random mask); compares any predictor with chance at the same budget.
- Global tokens: the first/last tokens (``[CLS]``, ``[SEP]``) attend to and are attended by
  every token (Longformer, BigBird); or the ``k`` key positions most often in the gold graphs of
  the fit data, per (layer, head).
- Strided: Sparse Transformer (Child et al. 2019): a local band of ``stride`` and every
  ``stride``-th key, made bidirectional for an encoder.
- BigBird (Zaheer et al. 2020) and Longformer (Beltagy et al. 2020): unions of window, global
  and random, at token rather than block granularity.

All patterns are built from padded index lists or pairs: no ``(n, n)`` dense intermediate.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..config import RANDOM_SAMPLE_CHUNK
from ..pattern import Pattern
from .base import AttentionInputs, Predictor, register_predictor



def layer_generator(seed: int, layer: int) -> torch.Generator:
    """A CPU generator seeded by ``(seed, layer)``: the same seed gives the same pattern per layer."""
    return torch.Generator().manual_seed(seed * 1_000_003 + layer)


def random_pattern(num_heads: int, length: int, keys: int, generator: torch.Generator,
                   device: torch.device | str | None = None) -> Pattern:
    """``keys`` distinct uniformly random keys per query and head (all keys when ``keys ≥ n``).

    Samples by the top-``keys`` of random scores per row, ``RANDOM_SAMPLE_CHUNK // n`` rows at a time.
    """
    n = length
    k = min(keys, n)
    if k == 0:
        return Pattern.empty(num_heads, n, device=device)
    rows = num_heads * n
    step = max(1, RANDOM_SAMPLE_CHUNK // n)
    index = torch.cat([torch.rand(min(step, rows - r), n, generator=generator).topk(k, dim=-1).indices
                       for r in range(0, rows, step)])
    return Pattern.from_padded(index.reshape(num_heads, n, k).to(device))


def fixed_global_positions(count: int) -> list[int]:
    """``count`` global positions: first, last, then the next ones from the start (``[0, -1, 1, 2, …]``)."""
    return ([0, -1] + list(range(1, max(count - 1, 1))))[:count]


def per_head_global(positions: Tensor, length: int) -> Pattern:
    """Global tokens chosen per head: ``positions`` (H, g) int64 (entries ≥ ``length`` are ignored)."""
    heads = []
    for pos in positions:
        pos = pos[pos < length]
        heads.append(Pattern.global_tokens(1, length, pos, device=positions.device) if pos.numel()
                     else Pattern.empty(1, length, device=positions.device))
    return Pattern.stack_heads(heads)


@register_predictor
class WindowPredictor(Predictor):
    """Keep keys within ``±width`` positions of the query."""

    name: ClassVar[str] = "window"
    spec_key = ("window",)
    spec_tokens = {"window": "width"}
    knob = "width"
    grid = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
    description = "local window of ±w positions"
    source = "Beltagy et al. 2020, Longformer"

    def __init__(self, *, width: int = 16) -> None:
        self.width = width

    def _validate_params(self) -> None:
        self._require_int("width", minimum=0)

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Band of ``2·width + 1`` keys around each query (clipped at the edges), for every head."""
        self.check_is_fitted()
        return Pattern.window(inputs.num_heads, inputs.length, self.width, device=inputs.queries.device)


@register_predictor
class RandomPredictor(Predictor):
    """``keys`` uniformly random keys per query, seeded per (seed, layer)."""

    name: ClassVar[str] = "random"
    spec_key = ("random",)
    spec_tokens = {"random": "keys", "seed": "seed"}
    knob = "keys"
    grid = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    description = "k uniformly random keys per query (chance at a matched budget)"
    source = "Zaheer et al. 2020, BigBird (random part); Brahma et al. 2022"

    def __init__(self, *, keys: int = 16, seed: int = 0) -> None:
        self.keys = keys
        self.seed = seed

    def _validate_params(self) -> None:
        self._require_int("keys", minimum=0)
        self._require_int("seed", minimum=0)

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """``min(keys, n)`` distinct random keys per query and head."""
        self.check_is_fitted()
        return random_pattern(inputs.num_heads, inputs.length, self.keys, layer_generator(self.seed, inputs.layer),
                              device=inputs.queries.device)


@register_predictor
class GlobalPredictor(Predictor):
    """``tokens`` global tokens at fixed positions: first, last, then the following ones."""

    name: ClassVar[str] = "global"
    spec_key = ("global",)
    spec_tokens = {"global": "tokens"}
    knob = "tokens"
    grid = (1, 2, 4, 8, 16, 32, 64, 128)
    description = "global tokens at fixed positions ([CLS], [SEP], then the first ones)"
    source = "Beltagy et al. 2020, Longformer; Zaheer et al. 2020, BigBird"

    def __init__(self, *, tokens: int = 2) -> None:
        self.tokens = tokens

    def _validate_params(self) -> None:
        self._require_int("tokens", minimum=0)

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Rows and columns of the global positions, for every head."""
        self.check_is_fitted()
        return Pattern.global_tokens(inputs.num_heads, inputs.length, fixed_global_positions(self.tokens),
                                     device=inputs.queries.device)


@register_predictor
class AttendedGlobalPredictor(Predictor):
    """Global tokens at the ``tokens`` key positions most often in the fit data's gold graphs, per (layer, head)."""

    name: ClassVar[str] = "attended-global"
    spec_key = ("attended", "global")
    spec_tokens = {"attended": None, "global": "tokens"}
    knob = "tokens"
    grid = (1, 2, 4, 8, 16, 32, 64, 128)
    description = "global tokens at the k key positions most attended in the fit data (per head)"
    source = "Beltagy et al. 2020 (global attention), positions learned from gold graphs"
    learns = True

    def __init__(self, *, tokens: int = 2) -> None:
        self.tokens = tokens

    def _validate_params(self) -> None:
        self._require_int("tokens", minimum=0)

    def fit(self, data, progress: bool = False) -> AttendedGlobalPredictor:
        """Rank absolute key positions by their share of gold in-edges, per (layer, head).

        Sets ``ranking_`` : int64 (layers, H, L), positions from most to least attended.
        """
        self._validate_params()
        length = data.max_length
        counts = torch.zeros(data.num_layers, data.num_heads, length, dtype=torch.float64)
        for seq in data.sequences():
            n = seq.length
            for layer, gold in enumerate(seq.gold):
                heads = torch.div(gold.rows(), n, rounding_mode="floor")
                counts[layer] += torch.bincount(heads * length + gold.col, minlength=data.num_heads * length
                                                ).reshape(data.num_heads, length).double() / n
        self.ranking_ = counts.argsort(dim=-1, descending=True, stable=True)
        return self

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Global rows and columns of the head's top positions (those inside the sequence)."""
        self.check_is_fitted()
        ranking = self.ranking_[inputs.layer].to(inputs.queries.device)
        ranking = torch.stack([r[r < inputs.length][:self.tokens] for r in ranking])
        return per_head_global(ranking, inputs.length)

    def state_dict(self) -> dict[str, Tensor]:
        self.check_is_fitted()
        return {"ranking": self.ranking_}

    def load_state_dict(self, state: dict[str, Tensor]) -> AttendedGlobalPredictor:
        self.ranking_ = state["ranking"].long()
        return self


@register_predictor
class StridedPredictor(Predictor):
    """Sparse Transformer strided pattern: ``|i−j| < stride`` or ``(i−j) mod stride = 0``."""

    name: ClassVar[str] = "strided"
    spec_key = ("strided",)
    spec_tokens = {"strided": "stride"}
    knob = "stride"
    grid = (2, 4, 8, 16, 32, 64, 128)
    description = "local band of the stride plus every stride-th key (bidirectional)"
    source = "Child et al. 2019, Sparse Transformer"

    def __init__(self, *, stride: int = 16) -> None:
        self.stride = stride

    def _validate_params(self) -> None:
        self._require_int("stride", minimum=1)

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Union of the band ``±(stride−1)`` and the keys congruent to the query modulo ``stride``."""
        self.check_is_fitted()
        h, n, s = inputs.num_heads, inputs.length, self.stride
        device = inputs.queries.device
        columns = (torch.arange(n, device=device)[:, None] % s) + s * torch.arange(-(-n // s), device=device)
        valid = columns < n
        strided = Pattern.from_padded(columns.clamp(max=n - 1).expand(h, n, -1), valid.expand(h, n, -1))
        return strided.union(Pattern.window(h, n, s - 1, device=device))


@register_predictor
class BigBirdPredictor(Predictor):
    """BigBird at token level, scaled by one block size ``b``: window ``±⌊3b/2⌋``, ``3b`` random keys, ``2b`` globals."""

    name: ClassVar[str] = "bigbird"
    spec_key = ("bigbird",)
    spec_tokens = {"bigbird": "block", "seed": "seed"}
    knob = "block"
    grid = (1, 2, 4, 8, 16, 32, 64)
    description = "window (3 blocks) + random (3 blocks) + global (2 blocks), token level"
    source = "Zaheer et al. 2020, BigBird (ITC configuration)"

    def __init__(self, *, block: int = 8, seed: int = 0) -> None:
        self.block = block
        self.seed = seed

    def _validate_params(self) -> None:
        self._require_int("block", minimum=1)
        self._require_int("seed", minimum=0)

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Union of window, random and global patterns (globals: the first and last ``b`` tokens)."""
        self.check_is_fitted()
        h, n, b = inputs.num_heads, inputs.length, self.block
        device = inputs.queries.device
        globals_ = list(range(b)) + list(range(-b, 0))
        return Pattern.window(h, n, 3 * b // 2, device=device).union(
            random_pattern(h, n, 3 * b, layer_generator(self.seed, inputs.layer), device=device),
            Pattern.global_tokens(h, n, globals_, device=device))


@register_predictor
class LongformerPredictor(Predictor):
    """Longformer: window ``±width`` plus ``tokens`` global tokens ([CLS], [SEP], …)."""

    name: ClassVar[str] = "longformer"
    spec_key = ("longformer",)
    spec_tokens = {"longformer": "width", "global": "tokens"}
    knob = "width"
    grid = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
    description = "sliding window ±w plus global [CLS]/[SEP]"
    source = "Beltagy et al. 2020, Longformer"

    def __init__(self, *, width: int = 16, tokens: int = 2) -> None:
        self.width = width
        self.tokens = tokens

    def _validate_params(self) -> None:
        self._require_int("width", minimum=0)
        self._require_int("tokens", minimum=0)

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Union of the window and the global tokens."""
        self.check_is_fitted()
        h, n = inputs.num_heads, inputs.length
        device = inputs.queries.device
        return Pattern.window(h, n, self.width, device=device).union(
            Pattern.global_tokens(h, n, fixed_global_positions(self.tokens), device=device))
