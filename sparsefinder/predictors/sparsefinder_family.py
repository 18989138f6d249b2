"""The Sparsefinder predictors: distance, quantization and clustering on learned projections
(Treviso et al. 2022, "Predicting Attention Sparsity in Transformers"; method.md §4).

Every predictor here projects a layer's queries and keys with the per-head maps learned by
:mod:`.projection`, then keeps pairs that are close in the projected space:

- ``proj-knn`` (``proj4-knn64``): each query's ``k`` nearest projected keys;
- ``proj-radius`` (``proj4-radius95``): keys within a per-head radius, calibrated on the fit
  data so that the given percentage of gold pairs lies inside it;
- ``proj-quant`` (``proj4-quant8``): ``B`` buckets per projected dimension (boundaries at
  fit-data quantiles); a pair is kept when it shares a bucket in at least one dimension;
- ``proj-kmeans`` (``proj4-kmeans16-top2``): k-means on projected queries and keys together;
  a query keeps the keys of its ``top`` nearest clusters.

Shared spec tokens: ``proj<r>`` the projected dimension, ``score`` the score-approximation
objective (default: the paper's margin loss), ``shared`` one map for queries and keys,
``win<w>`` adds a local window of ±w, ``glob`` adds the first and last tokens as global
tokens, ``ep<e>`` training epochs, ``seed<s>`` the seed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import config
from ..errors import SparsefinderError
from ..faiss_backend import kmeans
from ..pattern import Pattern
from .base import AttentionInputs, Predictor, register_predictor
from .projection import FitSample, collect_samples, distance, train_layer

__all__ = ["KMeansPredictor", "KNNPredictor", "ProjectionPredictor", "QuantizationPredictor", "RadiusPredictor"]

_HEAD_TOKENS = {"proj": "rank", "score": "score", "shared": "shared"}
_TAIL_TOKENS = {"win": "window", "glob": "glob", "ep": "epochs", "seed": "seed"}


def _tokens(own: dict[str, str]) -> dict[str, str]:
    return {**_HEAD_TOKENS, **own, **_TAIL_TOKENS}


class ProjectionPredictor(Predictor):
    """Base of the Sparsefinder family: learned projections, optional window and global tokens."""

    source = "Treviso et al. 2022, Predicting Attention Sparsity in Transformers"
    learns = True
    #: Names of the fitted tensors (attributes carry a trailing ``_``) beyond the projections.
    extra_state: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, rank: int = 4, score: bool = False, shared: bool = False, window: int = 0,
                 glob: bool = False, epochs: int = 10, seed: int = 0) -> None:
        self.rank = rank
        self.score = score
        self.shared = shared
        self.window = window
        self.glob = glob
        self.epochs = epochs
        self.seed = seed

    # ------------------------------------------------------------ validation
    def _validate_params(self) -> None:
        self._require_int("rank", minimum=1)
        self._require_int("window", "epochs", "seed", minimum=0)
        self._require_bool("score", "shared", "glob")
        self._validate_knob()

    def _validate_knob(self) -> None:
        """Check the subclass's own parameters (override)."""

    # ------------------------------------------------------------ fitting
    def fit(self, data: Any, progress: bool = False) -> ProjectionPredictor:
        """Learn the projections of every (layer, head), then the subclass's fit-data statistics.

        Parameters
        ----------
        data : GoldDataset
            Sequences with gold graphs; every sequence is read once.
        progress : bool
            Show progress bars (the loss of each epoch is also logged at INFO level).
        """
        self._validate_params()
        generator = torch.Generator().manual_seed(self.seed)
        samples = collect_samples(data, None, generator, progress)
        wq, wk, losses = [], [], []
        for layer, sample in enumerate(samples):
            q, k, loss = train_layer(sample, rank=self.rank, score=self.score, shared=self.shared,
                                     epochs=self.epochs, generator=generator, progress=progress,
                                     desc=f"layer {layer}")
            wq.append(q)
            wk.append(k)
            losses.append(loss)
        self.wq_ = torch.stack(wq)
        self.wk_ = torch.stack(wk)
        self.fit_losses_ = losses
        for layer, sample in enumerate(samples):
            qp = torch.einsum("shmd,hdr->shmr", sample.queries, self.wq_[layer])
            kp = torch.einsum("shnd,hdr->shnr", sample.keys, self.wk_[layer])
            self._fit_layer(layer, sample, qp, kp, generator)
        self._finish_fit()
        return self

    def _fit_layer(self, layer: int, sample: FitSample, qp: Tensor, kp: Tensor, generator: torch.Generator) -> None:
        """Collect the subclass's statistics of one layer from projected fit data (override).

        ``qp`` has shape (S, H, m, r) and ``kp`` (S, H, n, r).
        """

    def _finish_fit(self) -> None:
        """Stack per-layer statistics into the fitted tensors (override)."""

    def fit_metrics(self) -> dict[str, Any]:
        """Final training loss of each layer (for artifact metadata)."""
        losses = getattr(self, "fit_losses_", None)
        return {"final_loss_per_layer": [round(x[-1], 6) if x else None for x in losses]} if losses else {}

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Tensor]:
        self.check_is_fitted()
        return {name: getattr(self, f"{name}_").contiguous() for name in ("wq", "wk", *self.extra_state)}

    def load_state_dict(self, state: dict[str, Tensor]) -> ProjectionPredictor:
        for name in ("wq", "wk", *self.extra_state):
            if name not in state:
                raise SparsefinderError(f"{self.name}: fitted state lacks tensor {name!r}")
            setattr(self, f"{name}_", state[name])
        if self.wq_.shape[-1] != self.rank:
            raise SparsefinderError(f"{self.name}: stored projections have rank {self.wq_.shape[-1]}, spec says {self.rank}")
        return self

    # ------------------------------------------------------------ prediction
    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Pattern of shape (H, n, n): the subclass's pairs, plus window and global tokens if asked."""
        self.check_is_fitted()
        layers, heads, dim, _ = self.wq_.shape
        if not 0 <= inputs.layer < layers or inputs.num_heads != heads or inputs.queries.shape[-1] != dim:
            raise SparsefinderError(
                f"{self.spec} was fitted on {layers} layers × {heads} heads of dimension {dim}; got layer "
                f"{inputs.layer} with {inputs.num_heads} heads of dimension {inputs.queries.shape[-1]}")
        wq = self.wq_[inputs.layer].to(inputs.queries)
        wk = self.wk_[inputs.layer].to(inputs.keys)
        qp = torch.einsum("hnd,hdr->hnr", inputs.queries, wq)
        kp = torch.einsum("hnd,hdr->hnr", inputs.keys, wk)
        pattern = self._predict_projected(inputs.layer, qp, kp)
        extra = []
        n, device = inputs.length, inputs.queries.device
        if self.window:
            extra.append(Pattern.window(heads, n, self.window, device=device))
        if self.glob:
            extra.append(Pattern.global_tokens(heads, n, list(config.GLOBAL_POSITIONS), device=device))
        return pattern.union(*extra) if extra else pattern

    def _predict_projected(self, layer: int, qp: Tensor, kp: Tensor) -> Pattern:  # pragma: no cover - abstract
        """Pattern from projected queries ``qp`` and keys ``kp``, each of shape (H, n, r)."""
        raise NotImplementedError



def _grid_quantiles(values: Tensor) -> Tensor:
    """Quantiles of ``values`` (shape (..., N)) at ``PROJ_QUANTILE_POINTS`` evenly spaced levels: (..., Q)."""
    levels = torch.linspace(0, 1, config.PROJ_QUANTILE_POINTS, dtype=values.dtype)
    return torch.quantile(values, levels, dim=-1).movedim(0, -1).contiguous()


def _read_grid(grid: Tensor, level: Tensor | float) -> Tensor:
    """Read the quantile ``level`` ∈ [0, 1] off a grid from :func:`_grid_quantiles` (nearest grid point)."""
    last = grid.shape[-1] - 1
    index = torch.round(torch.as_tensor(level, dtype=torch.float64) * last).long().clamp(0, last)
    return grid[..., index]


def _group_pattern(query_groups: Tensor, key_groups: Tensor, num_groups: int) -> Pattern:
    """Keep ``(h, i, j)`` when a group of query ``i`` is a group of key ``j`` (within head ``h``).

    Parameters
    ----------
    query_groups : Tensor, int64, shape (H, n, c)
        Groups each query belongs to, in ``[0, num_groups)``.
    key_groups : Tensor, int64, shape (H, n, t)
        Groups each key belongs to.

    Returns
    -------
    Pattern of shape (H, n, n), built from the key lists of the groups (no (n, n) intermediate).
    """
    heads, n, t = key_groups.shape
    device = key_groups.device
    head_offset = torch.arange(heads, device=device)[:, None, None] * num_groups
    kg = (key_groups + head_offset).reshape(-1)
    key_of = torch.arange(n, device=device)[None, :, None].expand(heads, n, t).reshape(-1)
    order = torch.argsort(kg, stable=True)
    sorted_keys = key_of[order]
    counts = torch.bincount(kg, minlength=heads * num_groups)
    starts = torch.cumsum(counts, 0) - counts
    qg = (query_groups + head_offset).reshape(-1)
    rows = (torch.arange(heads * n, device=device)[:, None].expand(-1, query_groups.shape[-1])).reshape(-1)
    length = counts[qg]
    first = torch.repeat_interleave(starts[qg], length)
    offset = torch.arange(int(length.sum()), device=device) - torch.repeat_interleave(torch.cumsum(length, 0) - length,
                                                                                       length)
    keys = sorted_keys[first + offset]
    return Pattern.from_codes(torch.repeat_interleave(rows, length) * n + keys, heads, n)


def _rows_pattern(index: Tensor, lengths: Tensor) -> Pattern:
    """Pattern keeping the first ``lengths[h]`` entries of each row of ``index`` (H, n, k) in head ``h``."""
    heads, n, k = index.shape
    keep = torch.arange(k, device=index.device)[None, None, :] < lengths[:, None, None]
    cols = index.masked_fill(~keep, n).sort(dim=-1).values  # kept keys first, sorted
    crow = torch.zeros(heads * n + 1, dtype=torch.long, device=index.device)
    crow[1:] = torch.cumsum(lengths.repeat_interleave(n), 0)
    return Pattern(crow, cols[cols < n], heads, n)


def allocate_budget(recall_at: Tensor, k: int) -> Tensor:
    """Per-head key budgets with mean ``k`` that maximise the mean fit-data recall.

    Parameters
    ----------
    recall_at : Tensor, shape (H, K)
        ``recall_at[h, j]``: share of head ``h``'s fit gold pairs ranked in the top ``j + 1``.
    k : int
        Mean budget per query.

    Returns
    -------
    Tensor, int64, shape (H,)
        Budgets ``k_h ≥ 1`` (each at most ``K``): the ``H·k`` largest recall gains over all heads.
    """
    heads, width = recall_at.shape
    if k >= width:
        return torch.full((heads,), width, dtype=torch.long)
    gains = torch.diff(recall_at, dim=1, prepend=torch.zeros(heads, 1, dtype=recall_at.dtype))
    gains[:, 0] = float("inf")  # every head keeps at least one key
    chosen = gains.reshape(-1).topk(heads * k).indices // width
    return torch.bincount(chosen, minlength=heads)


@register_predictor
class KNNPredictor(ProjectionPredictor):
    """Each query keeps its ``k`` nearest keys in the projected space.

    With ``adapt`` the budget ``k`` is a mean over the heads of a layer: each head gets the
    share that maximises the mean recall on the fit data (:func:`allocate_budget`).
    """

    name = "proj-knn"
    spec_key = ("proj", "knn")
    spec_tokens = _tokens({"knn": "k", "adapt": "adapt"})
    knob = "k"
    grid = (8, 16, 24, 32, 48, 64, 96, 128)
    description = "learned projections, k nearest projected keys (adapt: per-head budgets)"
    extra_state = ("recall_at",)

    def __init__(self, *, rank: int = 4, score: bool = False, shared: bool = False, k: int = 64,
                 adapt: bool = False, window: int = 0, glob: bool = False, epochs: int = 10, seed: int = 0) -> None:
        super().__init__(rank=rank, score=score, shared=shared, window=window, glob=glob, epochs=epochs, seed=seed)
        self.k = k
        self.adapt = adapt

    def _validate_knob(self) -> None:
        self._require_int("k", minimum=1)
        self._require_bool("adapt")

    def _fit_layer(self, layer: int, sample: FitSample, qp: Tensor, kp: Tensor, generator: torch.Generator) -> None:
        dist = distance(qp, kp, self.score).masked_fill(~sample.key_mask[:, None, None, :], float("inf"))
        rank = torch.argsort(torch.argsort(dist, dim=-1), dim=-1)  # position of each key in its query's order
        heads, n = dist.shape[1], dist.shape[-1]
        counts = torch.stack([torch.bincount(rank[:, h][sample.gold[:, h]], minlength=n) for h in range(heads)])
        if layer == 0:
            self._curves = []
        self._curves.append(torch.cumsum(counts, 1).double() / counts.sum(1, keepdim=True).clamp(min=1))

    def _finish_fit(self) -> None:
        self.recall_at_ = torch.stack(self._curves).float()  # (L, H, n_max)
        del self._curves

    def _predict_projected(self, layer: int, qp: Tensor, kp: Tensor) -> Pattern:
        dist = distance(qp, kp, self.score)
        heads, n, _ = dist.shape
        if self.adapt:
            budgets = allocate_budget(self.recall_at_[layer].double(), self.k).clamp(max=n).to(dist.device)
        else:
            budgets = torch.full((heads,), min(self.k, n), dtype=torch.long, device=dist.device)
        index = dist.topk(int(budgets.max()), dim=-1, largest=False).indices
        return _rows_pattern(index, budgets)


@register_predictor
class RadiusPredictor(ProjectionPredictor):
    """Keys within a per-head radius that covers ``radius`` percent of the fit data's gold pairs."""

    name = "proj-radius"
    spec_key = ("proj", "radius")
    spec_tokens = _tokens({"radius": "radius"})
    knob = "radius"
    grid = (50, 70, 80, 90, 95, 98, 99, 100)
    description = "learned projections, keys within a radius calibrated to cover a share of gold pairs"
    extra_state = ("gold_distance_quantiles",)

    def __init__(self, *, rank: int = 4, score: bool = False, shared: bool = False, radius: float = 90,
                 window: int = 0, glob: bool = False, epochs: int = 10, seed: int = 0) -> None:
        super().__init__(rank=rank, score=score, shared=shared, window=window, glob=glob, epochs=epochs, seed=seed)
        self.radius = radius

    def _validate_knob(self) -> None:
        if isinstance(self.radius, bool) or not isinstance(self.radius, (int, float)) or not 0 < self.radius <= 100:
            raise SparsefinderError(f"{self.name}: radius is a percentage of gold pairs in (0, 100], got {self.radius!r}")

    def _fit_layer(self, layer: int, sample: FitSample, qp: Tensor, kp: Tensor, generator: torch.Generator) -> None:
        dist = distance(qp, kp, self.score)  # (S, H, m, n)
        per_head = [dist[:, h][sample.gold[:, h]] for h in range(dist.shape[1])]
        if layer == 0:
            self._grids: list[Tensor] = []
        self._grids.append(torch.stack([_grid_quantiles(d) for d in per_head]))

    def _finish_fit(self) -> None:
        self.gold_distance_quantiles_ = torch.stack(self._grids)  # (L, H, Q)
        del self._grids

    def _predict_projected(self, layer: int, qp: Tensor, kp: Tensor) -> Pattern:
        dist = distance(qp, kp, self.score)
        limit = _read_grid(self.gold_distance_quantiles_[layer].to(dist), self.radius / 100)  # (H,)
        keep = dist <= limit[:, None, None]
        keep |= dist == dist.min(-1, keepdim=True).values  # every query keeps at least its nearest key
        return Pattern.from_dense(keep)


@register_predictor
class QuantizationPredictor(ProjectionPredictor):
    """``B`` quantile buckets per projected dimension; keep pairs sharing a bucket in ≥ 1 dimension."""

    name = "proj-quant"
    spec_key = ("proj", "quant")
    spec_tokens = _tokens({"quant": "buckets"})
    knob = "buckets"
    grid = (2, 4, 6, 8, 12, 16, 24, 32, 64)
    description = "learned projections, shared quantile bucket in at least one dimension"
    extra_state = ("value_quantiles",)

    def __init__(self, *, rank: int = 4, score: bool = False, shared: bool = False, buckets: int = 8,
                 window: int = 0, glob: bool = False, epochs: int = 10, seed: int = 0) -> None:
        super().__init__(rank=rank, score=score, shared=shared, window=window, glob=glob, epochs=epochs, seed=seed)
        self.buckets = buckets

    def _validate_knob(self) -> None:
        self._require_int("buckets", minimum=1)
        if self.buckets > config.PROJ_QUANTILE_POINTS - 1:
            raise SparsefinderError(f"{self.name}: at most {config.PROJ_QUANTILE_POINTS - 1} buckets, got {self.buckets}")

    def _fit_layer(self, layer: int, sample: FitSample, qp: Tensor, kp: Tensor, generator: torch.Generator) -> None:
        s, h, m, r = qp.shape
        q = qp.transpose(0, 1).reshape(h, -1, r)
        k = kp.transpose(0, 1)[:, sample.key_mask].reshape(h, -1, r)
        values = torch.cat([q, k], dim=1).transpose(1, 2)  # (H, r, N)
        if layer == 0:
            self._grids = []
        self._grids.append(_grid_quantiles(values))

    def _finish_fit(self) -> None:
        self.value_quantiles_ = torch.stack(self._grids)  # (L, H, r, Q)
        del self._grids

    def bucket_ids(self, layer: int, points: Tensor) -> Tensor:
        """Bucket of each projected coordinate: ``points`` (H, n, r) → int64 (H, n, r) in ``[0, B)``."""
        grid = self.value_quantiles_[layer].to(points)
        levels = torch.arange(1, self.buckets, dtype=torch.float64) / self.buckets
        bounds = _read_grid(grid, levels).contiguous()  # (H, r, B-1)
        return torch.searchsorted(bounds, points.transpose(1, 2).contiguous()).transpose(1, 2)

    def _predict_projected(self, layer: int, qp: Tensor, kp: Tensor) -> Pattern:
        r = qp.shape[-1]
        dim_offset = torch.arange(r, device=qp.device) * self.buckets
        return _group_pattern(self.bucket_ids(layer, qp) + dim_offset, self.bucket_ids(layer, kp) + dim_offset,
                              r * self.buckets)


@register_predictor
class KMeansPredictor(ProjectionPredictor):
    """k-means on projected queries and keys; a query keeps the keys of its ``top`` nearest clusters."""

    name = "proj-kmeans"
    spec_key = ("proj", "kmeans")
    spec_tokens = _tokens({"kmeans": "clusters", "top": "top"})
    knob = "top"
    grid = (1, 2, 3, 4, 6, 8)
    description = "learned projections, keys of the query's top-c k-means clusters"
    extra_state = ("centroids",)

    def __init__(self, *, rank: int = 4, score: bool = False, shared: bool = False, clusters: int = 16,
                 top: int = 1, window: int = 0, glob: bool = False, epochs: int = 10, seed: int = 0) -> None:
        super().__init__(rank=rank, score=score, shared=shared, window=window, glob=glob, epochs=epochs, seed=seed)
        self.clusters = clusters
        self.top = top

    def _validate_knob(self) -> None:
        self._require_int("clusters", minimum=1)
        self._require_int("top", minimum=1)

    def _fit_layer(self, layer: int, sample: FitSample, qp: Tensor, kp: Tensor, generator: torch.Generator) -> None:
        s, h, m, r = qp.shape
        q = qp.transpose(0, 1).reshape(h, -1, r)
        k = kp.transpose(0, 1)[:, sample.key_mask].reshape(h, -1, r)
        points = torch.cat([q, k], dim=1)
        if points.shape[1] > config.KMEANS_MAX_POINTS:
            points = points[:, torch.randperm(points.shape[1], generator=generator)[:config.KMEANS_MAX_POINTS]]
        if points.shape[1] < self.clusters:
            raise SparsefinderError(f"{self.name}: {self.clusters} clusters need at least as many fit points, "
                                    f"got {points.shape[1]}")
        if layer == 0:
            self._centroids = []
        self._centroids.append(torch.stack([
            kmeans(points[head], self.clusters, iterations=config.KMEANS_ITERATIONS, seed=self.seed)
            for head in range(h)]))

    def _finish_fit(self) -> None:
        self.centroids_ = torch.stack(self._centroids)  # (L, H, C, r)
        del self._centroids

    def load_state_dict(self, state: dict[str, Tensor]) -> KMeansPredictor:
        super().load_state_dict(state)
        if self.centroids_.shape[-2] != self.clusters:
            raise SparsefinderError(f"{self.name}: stored centroids number {self.centroids_.shape[-2]}, "
                                    f"spec says {self.clusters}")
        return self

    def _predict_projected(self, layer: int, qp: Tensor, kp: Tensor) -> Pattern:
        centroids = self.centroids_[layer].to(qp)
        key_cluster = distance(kp, centroids, False).argmin(-1, keepdim=True)  # (H, n, 1)
        top = min(self.top, self.clusters)
        query_clusters = distance(qp, centroids, self.score).topk(top, dim=-1, largest=False).indices
        return _group_pattern(query_clusters, key_cluster, self.clusters)
