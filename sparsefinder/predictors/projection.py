"""Learned low-dimensional projections of queries and keys (Treviso et al. 2022, "Predicting
Attention Sparsity in Transformers", §3; method.md §4).

For every (layer, head) two linear maps ``W_Q, W_K : R^d → R^r`` (or one shared map) are
trained on the gold graphs of a fit dataset, with one of two objectives:

- ``margin`` (the paper's): for sampled gold keys ``k⁺`` and non-gold keys ``k⁻`` of a query
  ``q``, ``max(0, m + ‖q' − k'⁺‖² − ‖q' − k'⁻‖²)`` where ``x' = W x``. Predictors then use the
  squared Euclidean distance in the projected space.
- ``score``: the low-rank bilinear score ``q'·k'`` approximates the true scaled score
  ``q·k/√d``. It starts from the closed-form optimum of ``‖Q (W_Q W_Kᵀ − I/√d) Kᵀ‖_F``
  (a truncated SVD of ``C_Q^{1/2} C_K^{1/2}``, key-centred since a per-query shift does not
  change a ranking) and is refined with the mean squared error of the per-query centred
  scores plus a softmax cross-entropy that ranks gold keys first. Predictors then use the
  negated approximate score as the distance.

All heads of a layer are trained together with batched matrix products. Sampling and
initialisation use a seeded generator, so the same seed gives the same maps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .. import config

__all__ = ["FitSample", "Recipe", "collect_samples", "distance", "train_layer"]

log = logging.getLogger(__name__)


@dataclass
class FitSample:
    """Training material of one layer, over ``S`` fit sequences padded to ``n`` keys.

    Attributes
    ----------
    queries : Tensor, float32, shape (S, H, m, d)
        Sampled queries of each sequence and head.
    keys : Tensor, float32, shape (S, H, n, d)
        All keys (zero where padded).
    key_mask : Tensor, bool, shape (S, n)
        Real (not padded) keys.
    gold : Tensor, bool, shape (S, H, m, n)
        Gold keys of each sampled query.
    positions : Tensor, int64, shape (S, H, m)
        Position of each sampled query in its sequence.
    band : int
        The model's band (each query attends to the keys within ``±band``; 0: every key).
    """

    queries: Tensor
    keys: Tensor
    key_mask: Tensor
    gold: Tensor
    positions: Tensor
    band: int = 0

    def split(self, held: int) -> tuple[FitSample, FitSample]:
        """The first ``S − held`` sequences and the last ``held`` ones (kept aside for calibration)."""
        cut = self.queries.shape[0] - held
        parts = [(t[:cut], t[cut:]) for t in (self.queries, self.keys, self.key_mask, self.gold, self.positions)]
        return FitSample(*(a for a, _ in parts), band=self.band), FitSample(*(b for _, b in parts), band=self.band)

    def reach(self) -> Tensor:
        """Boolean ``(S, H, m, n)``: the keys each sampled query attends to (valid, and within the band)."""
        valid = self.key_mask[:, None, None, :]
        if not self.band:
            return valid
        offsets = torch.arange(self.key_mask.shape[1])[None, None, None, :] - self.positions[..., None]
        return valid & (offsets.abs() <= self.band)


@dataclass(frozen=True)
class Recipe:
    """How the projections are trained: every field changes a fit (the predictors' constructor parameters)."""

    queries_per_sequence: int = config.PROJ_QUERIES_PER_SEQUENCE
    batch_sequences: int = config.PROJ_BATCH_SEQUENCES
    learning_rate: float = config.PROJ_LEARNING_RATE
    margin: float = config.PROJ_MARGIN
    margin_pairs: int = config.PROJ_MARGIN_PAIRS
    rank_weight: float = config.PROJ_RANK_WEIGHT


def collect_samples(data, limit: int | None, generator: torch.Generator,
                    progress: bool = False, queries_per_sequence: int = config.PROJ_QUERIES_PER_SEQUENCE
                    ) -> list[FitSample]:
    """Read the fit dataset once and sample queries of every layer and head.

    Parameters
    ----------
    data : GoldDataset
    limit : int or None
        Use at most this many sequences.
    generator : torch.Generator
        Seeded source of the query sample.
    queries_per_sequence : int
        Queries sampled per sequence and head (all keys are kept).

    Returns
    -------
    list[FitSample]
        One per layer.
    """
    per_layer: list[list[tuple[Tensor, Tensor, Tensor, Tensor]]] = []
    for seq in tqdm(data.sequences(limit), desc="read fit data", unit="seq", disable=not progress,
                    total=min(len(data), limit or len(data))):
        layers, heads, n, _ = seq.queries.shape
        m = min(queries_per_sequence, n)
        pick = torch.argsort(torch.rand(heads, n, generator=generator), dim=1)[:, :m]  # (H, m)
        if not per_layer:
            per_layer = [[] for _ in range(layers)]
        for layer in range(layers):
            q = seq.queries[layer].float().gather(1, pick[:, :, None].expand(-1, -1, seq.queries.shape[-1]))
            gold = seq.gold[layer].to_dense()[0].gather(1, pick[:, :, None].expand(-1, -1, n))
            per_layer[layer].append((q, seq.keys[layer].float(), gold, pick))
    if not per_layer:
        raise ValueError("the fit dataset holds no sequence")
    return [_stack(items, int(getattr(data, "attention_window", 0))) for items in per_layer]


def _stack(items: list[tuple[Tensor, Tensor, Tensor, Tensor]], band: int) -> FitSample:
    n = max(k.shape[1] for _, k, _, _ in items)
    m = max(q.shape[1] for q, _, _, _ in items)
    s, (h, _, d) = len(items), items[0][1].shape
    queries = torch.zeros(s, h, m, d)
    keys = torch.zeros(s, h, n, d)
    key_mask = torch.zeros(s, n, dtype=torch.bool)
    gold = torch.zeros(s, h, m, n, dtype=torch.bool)
    positions = torch.zeros(s, h, m, dtype=torch.long)
    for i, (q, k, g, pick) in enumerate(items):
        queries[i, :, :q.shape[1]] = q
        keys[i, :, :k.shape[1]] = k
        key_mask[i, :k.shape[1]] = True
        gold[i, :, :g.shape[1], :g.shape[2]] = g
        positions[i, :, :pick.shape[1]] = pick
    return FitSample(queries, keys, key_mask, gold, positions, band)


def distance(qp: Tensor, kp: Tensor, score: bool) -> Tensor:
    """Distance between projected queries and keys (smaller is closer).

    Parameters
    ----------
    qp : Tensor, shape (..., m, r)
    kp : Tensor, shape (..., n, r)
    score : bool
        ``True``: the negated approximate score ``−q'·k'``; ``False``: squared Euclidean distance.

    Returns
    -------
    Tensor, shape (..., m, n)
    """
    if score:
        return -(qp @ kp.transpose(-1, -2))
    return torch.cdist(qp, kp, compute_mode="donot_use_mm_for_euclid_dist").square()


def closeness(qp: Tensor, kp: Tensor, score: bool) -> Tensor:
    """``−distance`` (larger is closer), shape ``(..., m, n)``: the approximate scores ``q'·k'`` themselves
    under the score objective (no negated copy)."""
    return qp @ kp.transpose(-1, -2) if score else -distance(qp, kp, score)


def _closed_form(sample: FitSample, rank: int) -> tuple[Tensor, Tensor]:
    """Best rank-``r`` bilinear approximation of the scaled scores, per head: (H, d, r) twice."""
    _, h, _, d = sample.queries.shape
    q = sample.queries.transpose(0, 1).reshape(h, -1, d)
    valid = sample.key_mask[:, None, :, None].expand_as(sample.keys)
    mean = (sample.keys * valid).sum((0, 2)) / valid[:, :, :, 0].sum((0, 2))[:, None].clamp(min=1)
    k = ((sample.keys - mean[None, :, None, :]) * valid).transpose(0, 1).reshape(h, -1, d)
    eye = torch.eye(d)

    def sqrt_and_inverse(c: Tensor) -> tuple[Tensor, Tensor]:
        c = c / c.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None].clamp(min=1e-12)
        vals, vecs = torch.linalg.eigh(c.double() + 1e-6 * eye.double())
        vals = vals.clamp(min=1e-9)
        root = (vecs * vals.sqrt()[:, None, :]) @ vecs.transpose(-1, -2)
        inv = (vecs * vals.rsqrt()[:, None, :]) @ vecs.transpose(-1, -2)
        return root, inv

    a, a_inv = sqrt_and_inverse(q.transpose(1, 2) @ q)
    b, b_inv = sqrt_and_inverse(k.transpose(1, 2) @ k)
    u, s, vh = torch.linalg.svd(a @ b)
    scale = (s[:, :rank] / math.sqrt(d)).sqrt()
    wq = a_inv @ u[:, :, :rank] * scale[:, None, :]
    wk = b_inv @ vh[:, :rank].transpose(-1, -2) * scale[:, None, :]
    pad = (0, max(rank - d, 0))  # a rank above d adds zero columns: the product is already exact
    return torch.nn.functional.pad(wq.float(), pad), torch.nn.functional.pad(wk.float(), pad)


def _sample_keys(mask: Tensor, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` random keys where ``mask`` holds, per row: indices and validity, shape (..., count)."""
    noise = torch.rand(mask.shape, generator=generator).masked_fill(~mask, -1.0)
    top, idx = noise.topk(min(count, mask.shape[-1]), dim=-1)
    return idx, top >= 0


def _margin_loss(qp: Tensor, keys: Tensor, wk: Tensor, gold: Tensor, negatives: Tensor,
                 generator: torch.Generator, recipe: Recipe) -> Tensor:
    """Hinge loss over sampled (gold, non-gold) key pairs of each query; only sampled keys are projected.

    ``qp`` (S, H, m, r) projected queries, ``keys`` (S, H, n, d), ``wk`` (H, d, r), masks (S, H, m, n).
    """
    s, h, m, _ = qp.shape

    def projected_distance(index: Tensor) -> Tensor:  # index (S, H, m, P) -> squared distances (S, H, m, P)
        picked = keys.gather(2, index.reshape(s, h, -1, 1).expand(-1, -1, -1, keys.shape[-1]))
        kp = torch.einsum("shpd,hdr->shpr", picked, wk).reshape(s, h, m, index.shape[-1], -1)
        return (qp[:, :, :, None, :] - kp).square().sum(-1)

    pos, pos_ok = _sample_keys(gold, recipe.margin_pairs, generator)
    neg, neg_ok = _sample_keys(negatives, recipe.margin_pairs, generator)
    d_pos, d_neg = projected_distance(pos), projected_distance(neg)
    hinge = (recipe.margin + d_pos[..., :, None] - d_neg[..., None, :]).clamp(min=0)
    ok = pos_ok[..., :, None] & neg_ok[..., None, :]
    return (hinge * ok).sum() / ok.sum().clamp(min=1)


def _score_loss(approx: Tensor, true: Tensor, gold: Tensor, key_ok: Tensor, rank_weight: float) -> Tensor:
    count = key_ok.sum(-1, keepdim=True).clamp(min=1)
    diff = (approx - true) * key_ok
    diff = (diff - diff.sum(-1, keepdim=True) / count) * key_ok
    mse = (diff.square().sum(-1) / count.squeeze(-1)).mean()
    logp = torch.log_softmax(approx.masked_fill(~key_ok, float("-inf")), dim=-1)
    rank = -(logp * gold).sum(-1) / gold.sum(-1).clamp(min=1)
    return mse + rank_weight * rank.mean()


def train_layer(sample: FitSample, *, rank: int, score: bool, shared: bool, epochs: int,
                generator: torch.Generator, recipe: Recipe = Recipe(), progress: bool = False,
                desc: str = "") -> tuple[Tensor, Tensor, list[float]]:
    """Train the projections of every head of one layer.

    Parameters
    ----------
    sample : FitSample
    rank : int
        Projected dimension ``r``.
    score : bool
        Score-approximation objective (else the margin loss).
    shared : bool
        One map for queries and keys.
    epochs : int
        Passes over the sampled sequences.
    recipe : Recipe
        Batch size, learning rate and loss constants.

    Returns
    -------
    wq, wk : Tensor, float32, shape (H, d, r)
    losses : list[float]
        Mean loss of each epoch.
    """
    s, h, _, d = sample.queries.shape
    if score:
        wq0, wk0 = _closed_form(sample, rank)
        if shared:
            wq0 = wk0 = (wq0 + wk0) / 2
    else:
        wq0 = torch.randn(h, d, rank, generator=generator) / math.sqrt(d)
        wk0 = wq0 if shared else torch.randn(h, d, rank, generator=generator) / math.sqrt(d)
    wq = wq0.clone().requires_grad_(True)
    wk = wq if shared else wk0.clone().requires_grad_(True)
    if epochs == 0:
        return wq0.clone(), wk0.clone(), []
    params = [wq] if shared else [wq, wk]
    opt = torch.optim.Adam(params, lr=recipe.learning_rate)
    batch = recipe.batch_sequences
    losses: list[float] = []
    bar = tqdm(range(epochs), desc=desc or "train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        order = torch.randperm(s, generator=generator)
        total = 0.0
        for start in range(0, s, batch):
            idx = order[start:start + batch]
            q, k, gold = sample.queries[idx], sample.keys[idx], sample.gold[idx]
            key_ok = sample.key_mask[idx][:, None, None, :].expand_as(gold)
            qp = torch.einsum("shmd,hdr->shmr", q, wq)
            if score:
                kp = torch.einsum("shnd,hdr->shnr", k, wk)
                true = q @ k.transpose(-1, -2) / math.sqrt(d)
                loss = _score_loss(qp @ kp.transpose(-1, -2), true, gold, key_ok, recipe.rank_weight)
            else:
                loss = _margin_loss(qp, k, wk, gold, key_ok & ~gold, generator, recipe)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        losses.append(total / s)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        log.info("%s epoch %d/%d loss %.5f", desc, epoch + 1, epochs, losses[-1])
    bar.close()
    return wq.detach().clone(), wk.detach().clone(), losses
