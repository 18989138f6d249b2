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

Every pattern depends on positions only, so each predictor works on the whole padded batch at
once: built for the padded length and cut by each sequence's length (a sequence gets the same
pattern alone or in any batch). Random keys come from a hash of (seed, layer, head, query,
key) rather than a generator for the same reason.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ..config import RANDOM_SAMPLE_CHUNK
from ..inputs import AttentionInputs
from ..pattern import Pattern
from .base import Predictor
from .position_stats import gold_pairs

_HASH_MASK = (1 << 31) - 1


def layer_generator(seed: int, layer: int) -> torch.Generator:
    """A CPU generator seeded by ``(seed, layer)``: the same seed gives the same pattern per layer."""
    return torch.Generator().manual_seed(seed * 1_000_003 + layer)


def validate_sweep(predictor: Predictor, values: list[Any]) -> None:
    """Check every knob value of a sweep (a user error names the bad one); leaves the knob at the last value."""
    predictor.check_is_fitted()
    for value in values:
        predictor.set_params(**{predictor.knob: value})


def _mix(x: Tensor) -> Tensor:
    """31-bit integer hash (xor-shift and multiply rounds, products below 2⁶³): int64 → int64 in ``[0, 2³¹)``."""
    x = x & _HASH_MASK
    for _ in range(2):
        x = x ^ (x >> 16)
        x = (x * 0x45D9F3B) & _HASH_MASK
    return x ^ (x >> 16)


def random_pattern(num_heads: int, length: int, keys: int, seed: int, layer: int, lengths: Tensor,
                   device: torch.device | str | None = None) -> Pattern:
    """``min(keys, lengths[b])`` distinct uniformly random keys per query and head, shape ``(B, H, n, n)``.

    Key ``j`` of query ``i`` in head ``h`` is ranked by a hash of ``(seed, layer, h, i, j)``
    (ties broken by ``j``), so a sequence gets the same keys whatever the batch and rows are
    ranked: :meth:`Pattern.narrow` gives any smaller budget. About ``RANDOM_SAMPLE_CHUNK`` scores
    are held at a time.
    """
    n = length
    lengths = lengths.to(device)
    k = min(keys, n)
    if k == 0:
        return Pattern.empty(num_heads, n, lengths, device=device)
    positions = torch.arange(n, device=device)
    heads = torch.arange(num_heads, device=device)
    row_hash = _mix(_mix(_mix(torch.tensor(seed * 1_000_003 + layer, device=device)) + heads)[:, None] + positions)
    batch, rows = lengths.numel(), num_heads * n
    valid = positions < lengths[:, None]  # (B, n)
    step = max(1, RANDOM_SAMPLE_CHUNK // (batch * n))
    chunks = []
    for first in range(0, rows, step):  # each (h, i) row is hashed once, ranked for every sequence
        score = (_mix(row_hash.reshape(-1)[first:first + step, None] + positions) << 31) | positions
        chunks.append(score.expand(batch, -1, -1).masked_fill(~valid[:, None, :], -1).topk(k, dim=-1).indices)
    index = torch.cat(chunks, dim=1).view(batch, num_heads, n, k)  # padded keys rank last and are dropped
    return Pattern.from_index(index, lengths=lengths, unique=True)


def fixed_global_positions(count: int) -> list[int]:
    """``count`` global positions: first, last, then the next ones from the start (``[0, -1, 1, 2, …]``)."""
    return ([0, -1] + list(range(1, max(count - 1, 1))))[:count]


class WindowUnion(Predictor):
    """Base of the predictors whose knob is a window ``width`` joined to a pattern that does not depend on it.

    :meth:`predict_sweep` builds that pattern once and joins one window per value.
    """

    knob: ClassVar[str | None] = "width"
    width: int

    def width_free(self, inputs: AttentionInputs) -> Pattern | None:
        """The part of the pattern that does not depend on ``width`` (``None``: the window alone)."""
        return None

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """The ``±width`` window, joined to :meth:`width_free`; shape ``(B, H, n, n)``."""
        self.check_is_fitted()
        return self._join(inputs, self.width, self.width_free(inputs))

    def predict_sweep(self, inputs: AttentionInputs, values: list[int]) -> list[Pattern]:
        """One :meth:`width_free` for every width (the knob is left at the last value)."""
        validate_sweep(self, values)
        fixed = self.width_free(inputs)
        return [self._join(inputs, width, fixed) for width in values]

    @staticmethod
    def _join(inputs: AttentionInputs, width: int, fixed: Pattern | None) -> Pattern:
        window = Pattern.window(inputs.num_heads, inputs.length, width, lengths=inputs.lengths,
                                device=inputs.queries.device)
        return window if fixed is None else window.union(fixed)


class WindowPredictor(WindowUnion):
    """Keep keys within ``±width`` positions of the query."""

    positional = True
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

    @property
    def reach(self) -> int:
        """``width``: no pair farther apart is kept."""
        return self.width


class RandomPredictor(Predictor):
    """``keys`` uniformly random keys per query, seeded per (seed, layer)."""

    positional = True
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
        """``min(keys, lengths[b])`` distinct random keys per query and head, shape ``(B, H, n, n)``."""
        self.check_is_fitted()
        return self._ranked(inputs, self.keys)

    def predict_sweep(self, inputs: AttentionInputs, values: list[int]) -> list[Pattern]:
        """One ranking for the largest budget, cut to each value (the knob is left at the last value)."""
        validate_sweep(self, values)
        ranked = self._ranked(inputs, max(values))
        return [ranked.narrow(k) if k else Pattern.empty(inputs.num_heads, inputs.length, ranked.lengths,
                                                         device=ranked.device) for k in values]

    def _ranked(self, inputs: AttentionInputs, keys: int) -> Pattern:
        return random_pattern(inputs.num_heads, inputs.length, keys, self.seed, inputs.layer, inputs.lengths,
                              device=inputs.queries.device)


class GlobalPredictor(Predictor):
    """``tokens`` global tokens at fixed positions: first, last, then the following ones."""

    positional = True
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
        """Rows and columns of the global positions, for every head; shape ``(B, H, n, n)``."""
        self.check_is_fitted()
        return Pattern.global_tokens(inputs.num_heads, inputs.length, fixed_global_positions(self.tokens),
                                     lengths=inputs.lengths, device=inputs.queries.device)


class AttendedGlobalPredictor(Predictor):
    """Global tokens at the ``tokens`` key positions most often in the fit data's gold graphs, per (layer, head)."""

    positional = True
    name: ClassVar[str] = "attended-global"
    spec_key = ("attended", "global")
    spec_tokens = {"attended": None, "global": "tokens"}
    knob = "tokens"
    grid = (1, 2, 4, 8, 16, 32, 64, 128)
    description = "global tokens at the k key positions most attended in the fit data (per head)"
    source = "Beltagy et al. 2020 (global attention), positions learned from gold graphs"
    learns = True
    fitted_tensors = ("ranking",)

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
                rows, col = gold_pairs(gold)
                heads = torch.div(rows, n, rounding_mode="floor")
                counts[layer] += torch.bincount(heads * length + col, minlength=data.num_heads * length
                                                ).reshape(data.num_heads, length).double() / n
        self.ranking_ = counts.argsort(dim=-1, descending=True, stable=True)
        return self

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Global rows and columns of each head's top ``tokens`` positions inside each sequence; ``(B, H, n, n)``."""
        self.check_is_fitted()
        ranking = self.ranking_[inputs.layer].to(inputs.queries.device)[None]  # (1, H, L)
        lengths = inputs.lengths.to(ranking.device)
        inside = ranking < lengths[:, None, None]  # (B, H, L)
        chosen = inside & (inside.cumsum(-1) <= self.tokens)
        n = inputs.length
        is_global = torch.zeros(*chosen.shape[:2], n + 1, dtype=torch.bool, device=ranking.device)
        is_global.scatter_(-1, torch.where(chosen, ranking, n), True)
        return Pattern.from_global(is_global[..., :n], lengths)



class StridedPredictor(Predictor):
    """Sparse Transformer strided pattern: ``|i−j| < stride`` or ``(i−j) mod stride = 0``."""

    positional = True
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
        """Band ``±(stride−1)`` and the keys congruent to the query modulo ``stride``; ``(B, H, n, n)``."""
        self.check_is_fitted()
        b, h, n, s = inputs.batch_size, inputs.num_heads, inputs.length, self.stride
        device = inputs.queries.device
        lengths = inputs.lengths.to(device)
        columns = (torch.arange(n, device=device)[:, None] % s) + s * torch.arange(-(-n // s), device=device)
        shape = (b, h, *columns.shape)
        strided = Pattern.from_index(columns.clamp(max=n - 1).expand(shape), (columns < n).expand(shape), lengths,
                                     unique=True)
        return strided.union(Pattern.window(h, n, s - 1, lengths=lengths, device=device))


class BigBirdPredictor(Predictor):
    """BigBird at token level, scaled by one block size ``b``: window ``±⌊3b/2⌋``, ``3b`` random keys, ``2b`` globals."""

    positional = True
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
        """Union of window, random and global patterns (globals: the first and last ``b`` tokens); ``(B, H, n, n)``."""
        self.check_is_fitted()
        h, n, b = inputs.num_heads, inputs.length, self.block
        device = inputs.queries.device
        lengths = inputs.lengths.to(device)
        globals_ = list(range(b)) + list(range(-b, 0))
        return Pattern.window(h, n, 3 * b // 2, lengths=lengths, device=device).union(
            random_pattern(h, n, 3 * b, self.seed, inputs.layer, lengths, device=device),
            Pattern.global_tokens(h, n, globals_, lengths=lengths, device=device))


class LongformerPredictor(WindowUnion):
    """Longformer: window ``±width`` plus ``tokens`` global tokens ([CLS], [SEP], …)."""

    positional = True
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

    def width_free(self, inputs: AttentionInputs) -> Pattern:
        """The global tokens ``[0, -1, 1, 2, …]`` of each sequence."""
        return Pattern.global_tokens(inputs.num_heads, inputs.length, fixed_global_positions(self.tokens),
                                     lengths=inputs.lengths, device=inputs.queries.device)
