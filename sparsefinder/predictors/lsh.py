"""Reformer-style LSH attention pattern (Kitaev, Kaiser & Levskaya 2020, "Reformer").

Angular LSH with random rotations: a vector ``x`` (normalised to unit length, as Reformer
normalises its shared query/keys) goes to bucket ``argmax([xR; −xR])`` for a random
``R ∈ R^{d × b/2}``. Queries and keys are hashed with the same rotations (shared buckets);
a pair is kept when query and key share a bucket in at least one of ``rounds`` hash rounds.
Rotations are drawn from a generator seeded by ``(seed, layer)``, per head and round, so the
pattern is deterministic. Reformer's sorting into fixed-size chunks (and attending to the
previous chunk) is a compute layout, not part of the bucket semantics, and is left out.

Buckets group the pairs of one sequence, so the predictor works per sequence
(``predict_sequence``; the base class stacks a batch). Rotations do not depend on the length:
a sequence gets the same pattern alone or in any batch.
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
from .fixed import layer_generator


def lsh_buckets(x: Tensor, rotations: Tensor) -> Tensor:
    """Angular LSH buckets.

    Parameters
    ----------
    x : Tensor, shape (H, n, d)
    rotations : Tensor, shape (R, H, d, b/2)

    Returns
    -------
    Tensor, int64, shape (H, n, R)
        Group ``r·b + bucket`` per head, vector and round ``r`` (bucket in ``[0, b)``), for
        :func:`~.buckets.group_pattern` with ``R·b`` groups.
    """
    unit = torch.nn.functional.normalize(x, dim=-1)
    rotated = torch.einsum("hnd,rhdb->hnrb", unit, rotations)
    buckets = 2 * rotations.shape[-1]
    return torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1) + buckets * torch.arange(
        rotations.shape[0], device=x.device)


class LSHPredictor(Predictor):
    """Keep the pairs whose unit query and key share an angular-LSH bucket in some round."""

    name: ClassVar[str] = "lsh"
    spec_key = ("lsh",)
    spec_tokens = {"lsh": "buckets", "rounds": "rounds", "seed": "seed"}
    knob = "buckets"
    grid = (2, 4, 8, 16, 32, 64, 128)
    description = "Reformer angular LSH on unit queries/keys, shared buckets, several rounds"
    source = "Kitaev et al. 2020, Reformer"

    def __init__(self, *, buckets: int = 16, rounds: int = 2, seed: int = 0) -> None:
        self.buckets = buckets
        self.rounds = rounds
        self.seed = seed

    def _validate_params(self) -> None:
        if not isinstance(self.buckets, int) or self.buckets < 2 or self.buckets % 2:
            raise SparsefinderError(f"lsh buckets must be an even integer ≥ 2, got {self.buckets!r}")
        self._require_int("rounds", minimum=1)
        self._require_int("seed", minimum=0)

    def predict_sequence(self, inputs: AttentionInputs) -> Pattern:
        """Same-bucket pairs over ``rounds`` rounds of ``buckets`` buckets, one sequence: ``(1, H, n, n)``."""
        q, k = inputs.queries[0], inputs.keys[0]
        shape = (self.rounds, inputs.num_heads, q.shape[-1], self.buckets // 2)
        rotations = torch.randn(shape, generator=layer_generator(self.seed, inputs.layer)).to(q.device, q.dtype)
        return group_pattern(lsh_buckets(q, rotations), lsh_buckets(k, rotations), self.rounds * self.buckets)
