"""Running the encoder with exact α-entmax and capturing each layer's attention inputs.

A recorder passed as the ``attention_recorder`` keyword reaches our registered attention
function (:mod:`sparsefinder.hf.attention`) in every layer; it keeps the queries, keys,
values and the support of the attention (the gold graph). Used by extraction, by the
service's attention view and by anything that needs gold graphs of new text.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from transformers import PreTrainedModel

from .dataset import Sequence
from .hf.attention import EXACT
from .pattern import Pattern

__all__ = ["capture"]


@torch.no_grad()
def capture(model: PreTrainedModel, batch: list[list[int]], alpha: float) -> Iterator[Sequence]:
    """Run ``model`` on token-id lists and capture every layer's attention inputs and gold graph.

    ``model`` is loaded with ``attn_implementation="sparsefinder_entmax"`` (dense α-entmax, the
    support read off the probabilities) or ``"sparsefinder_sparse"`` (the ``exact`` route: exact score
    rows a chunk of queries at a time, each row's threshold and support, no ``n × n`` tensor, for long
    sequences). A banded model's gold graph is its support within the band. Yields one :class:`~sparsefinder.dataset.Sequence` per input, padding removed: float16
    queries/keys/values of shape (layers, H, n, d) and the gold pattern of every layer.
    """
    device = next(model.parameters()).device
    n_max = max(len(ids) for ids in batch)
    input_ids = torch.zeros(len(batch), n_max, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for b, ids in enumerate(batch):
        input_ids[b, :len(ids)] = torch.tensor(ids)
        mask[b, :len(ids)] = 1
    captured: dict[int, tuple] = {}

    def record(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, support: Pattern) -> None:
        captured[layer] = (q.half().cpu(), k.half().cpu(), v.half().cpu(), support.to("cpu"))

    model(input_ids=input_ids.to(device), attention_mask=mask.to(device), attention_recorder=record,
          entmax_alpha=alpha, attention_predictor=EXACT)
    layers = sorted(captured)
    for b, ids in enumerate(batch):
        n = len(ids)
        q, k, v = (torch.stack([captured[layer][j][b, :, :n] for layer in layers]) for j in range(3))
        gold = [captured[layer][3].sequence(b) for layer in layers]
        yield Sequence(input_ids[b, :n].clone(), q, k, v, gold)
