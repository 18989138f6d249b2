"""Routing Transformer attention pattern (Roy, Saffar, Vaswani & Grangier 2021).

Spherical k-means centroids are learned online on the raw queries and keys of the fit corpus
(normalised to unit length), per (layer, head), with the paper's exponential-moving-average
update: each sequence is a mini-batch, every centroid moves towards the mean of the unit
vectors assigned to it, ``μ ← normalise(λ·μ + (1 − λ)·mean)``. At prediction the assignment is
*balanced* as in the paper's implementation: each of the ``c`` centroids takes its
``⌈n / c⌉`` nearest queries and its ``⌈n / c⌉`` nearest keys, and every query attends to the
keys of each cluster it belongs to (a token may belong to several clusters or to none).
Centroids are fitted for every cluster count of the grid (and the current one), so the knob
can be swept without refitting.

Balanced clusters take ``⌈n / c⌉`` tokens of each sequence, so the predictor works per
sequence (``predict_sequence``; the base class stacks a batch).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..config import ROUTING_DECAY
from ..errors import SparsefinderError
from ..pattern import Pattern
from ..inputs import AttentionInputs
from .base import Predictor
from .buckets import group_pattern
from .fixed import layer_generator


def _unit(x: Tensor) -> Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def farthest_point_init(x: Tensor, clusters: int, generator: torch.Generator) -> Tensor:
    """``clusters`` unit seeds per group: a random first vector, then each time the vector least similar
    to the seeds so far. ``x`` (G, m, d) unit vectors with ``m ≥ clusters`` → (G, c, d)."""
    groups, m, _ = x.shape
    first = torch.randint(m, (groups,), generator=generator)
    chosen = [x[torch.arange(groups), first]]
    nearest = torch.einsum("gmd,gd->gm", x, chosen[0])
    for _ in range(1, clusters):
        pick = nearest.argmin(-1)
        chosen.append(x[torch.arange(groups), pick])
        nearest = torch.maximum(nearest, torch.einsum("gmd,gd->gm", x, chosen[-1]))
    return torch.stack(chosen, 1)


def online_spherical_kmeans(batches, clusters: int, decay: float, epochs: int,
                            generator: torch.Generator) -> Tensor:
    """Spherical k-means with EMA updates, batched over groups.

    Parameters
    ----------
    batches : callable returning an iterable of Tensor (G, m, d)
        Mini-batches of vectors for ``G`` independent groups (called once per epoch); the first
        one seeds the centroids (``m ≥ clusters``).
    clusters : int
        ``c``.
    decay : float
        EMA decay ``λ`` in ``[0, 1)``.
    epochs : int
        Passes over the batches.

    Returns
    -------
    Tensor, float32, shape (G, c, d)
        Unit centroids.
    """
    centroids = None
    for _ in range(epochs):
        for batch in batches():
            x = _unit(batch)
            if centroids is None:
                centroids = farthest_point_init(x, clusters, generator)
            assign = torch.einsum("gmd,gcd->gmc", x, centroids).argmax(-1)
            one_hot = torch.nn.functional.one_hot(assign, clusters).float()  # (G, m, c)
            sums = torch.einsum("gmc,gmd->gcd", one_hot, x)
            counts = one_hot.sum(1)[..., None]
            means = sums / counts.clamp(min=1)
            moved = _unit(decay * centroids + (1 - decay) * means)
            centroids = torch.where(counts > 0, moved, centroids)
    return centroids


def balanced_members(x: Tensor, centroids: Tensor, size: int) -> Tensor:
    """Indices of the ``size`` vectors nearest each centroid: (H, n, d), (H, c, d) → (H, c, size)."""
    sim = torch.einsum("hnd,hcd->hcn", _unit(x), centroids)
    return sim.topk(size, dim=-1).indices


def cluster_groups(x: Tensor, centroids: Tensor, size: int) -> Tensor:
    """Balanced clusters of each vector for :func:`~.buckets.group_pattern`: (H, n, d), (H, c, d) → (H, n, c).

    Entry ``c`` is ``c`` when the vector is among the ``size`` nearest to centroid ``c``, else −1 (none).
    """
    heads, n, _ = x.shape
    clusters = centroids.shape[1]
    member = torch.zeros(heads, clusters, n, dtype=torch.bool, device=x.device)
    member.scatter_(-1, balanced_members(x, centroids, size), True)
    ids = torch.arange(clusters, device=x.device)[None, :, None]
    return torch.where(member, ids, -1).transpose(1, 2)


class RoutingPredictor(Predictor):
    """Queries attend to the keys of their balanced k-means clusters (centroids fitted online)."""

    name: ClassVar[str] = "routing"
    spec_key = ("routing",)
    spec_tokens = {"routing": "clusters", "epochs": "epochs", "seed": "seed"}
    knob = "clusters"
    grid = (2, 4, 8, 16, 32, 64)
    description = "Routing Transformer: online spherical k-means on queries/keys, balanced clusters"
    source = "Roy et al. 2021, Routing Transformer"
    learns = True
    fitted_tensors = ("centroids",)

    def __init__(self, *, clusters: int = 8, epochs: int = 2, seed: int = 0, decay: float = ROUTING_DECAY) -> None:
        self.clusters = clusters
        self.epochs = epochs
        self.seed = seed
        self.decay = decay

    def _validate_params(self) -> None:
        self._require_int("clusters", "epochs", minimum=1)
        self._require_int("seed", minimum=0)
        if isinstance(self.decay, bool) or not isinstance(self.decay, (int, float)) or not 0 <= self.decay < 1:
            raise SparsefinderError(f"routing decay must be a number in [0, 1), got {self.decay!r}")

    def fit(self, data, progress: bool = False) -> RoutingPredictor:
        """Fit centroids for every cluster count in ``grid ∪ {clusters}`` (grid values above the first
        sequence's ``2n`` vectors are skipped).

        Sets ``centroids_`` : dict ``c`` → Tensor (layers, H, c, d).
        """
        self._validate_params()
        layers, heads = data.num_layers, data.num_heads

        def batches():
            for seq in data.sequences():
                both = torch.cat([seq.queries, seq.keys], dim=2)  # (layers, H, 2n, d)
                yield both.reshape(layers * heads, *both.shape[2:])

        first = next(iter(data.sequences()))
        points = 2 * first.length
        if self.clusters > points:
            raise SparsefinderError(f"routing clusters={self.clusters} exceeds the {points} queries and keys "
                                    "of the first fit sequence")
        self.centroids_ = {}
        for c in sorted({c for c in self.grid if c <= points} | {self.clusters}):
            cents = online_spherical_kmeans(batches, c, float(self.decay), self.epochs, layer_generator(self.seed, c))
            self.centroids_[c] = cents.reshape(layers, heads, c, -1)
        return self

    def predict_sequence(self, inputs: AttentionInputs) -> Pattern:
        """All (query, key) pairs inside each balanced cluster of one sequence: ``(1, H, n, n)``."""
        if self.clusters not in self.centroids_:
            raise SparsefinderError(f"routing was fitted for clusters in {sorted(self.centroids_)}, "
                                    f"not {self.clusters}; fit again with clusters={self.clusters}")
        n = inputs.length
        centroids = self.centroids_[self.clusters][inputs.layer].to(inputs.queries.device)
        size = min(n, -(-n // self.clusters))
        return group_pattern(cluster_groups(inputs.queries[0], centroids, size),
                             cluster_groups(inputs.keys[0], centroids, size), centroids.shape[1])

