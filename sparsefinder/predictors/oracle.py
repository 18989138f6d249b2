"""References that read every score ``q·k``: each query's true top-k keys, and its exact support.

Oracles, not predictors: they read every score, which is the work predictors are meant to
avoid. Reports draw the top-k oracle as the ceiling a predictor of the same budget can reach.
The support oracle is the gold graph itself, computed a chunk of queries at a time (never an
``n × n`` tensor per head beyond one chunk): sparse attention on it *is* dense α-entmax, forward
and backward (keys outside the support have zero probability and zero gradient), which is how
long documents are trained without dense ``n²`` attention (:mod:`sparsefinder.training.long_distill`).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..alpha_entmax import check_alpha, support
from ..attention import cpu_rows
from ..attention.sparse import row_kernels_apply
from ..config import DEFAULT_ALPHA, SPARSE_CHUNK_PAIRS
from ..pattern import Pattern, compact, query_chunks
from ..inputs import AttentionInputs
from .base import Predictor
from .fixed import validate_sweep


class OracleTopK(Predictor):
    """Keep the ``k`` highest-scoring keys of each query (all keys when ``k ≥ n``)."""

    name: ClassVar[str] = "oracle-topk"
    spec_key = ("oracle", "topk")
    spec_tokens = {"oracle": None, "topk": "k"}
    knob = "k"
    grid = (4, 8, 16, 32, 64, 128)
    description = "true top-k scores of each query (reference: needs all scores)"
    source = "reference"
    reference = True

    def __init__(self, *, k: int = 32) -> None:
        self.k = k

    def _validate_params(self) -> None:
        self._require_int("k", minimum=1)

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Top-``k`` of ``q·kᵀ`` per query and head, over each sequence's valid keys."""
        self.check_is_fitted()
        return ranked_keys(inputs, self.k)

    def predict_sweep(self, inputs: AttentionInputs, values: list[int]) -> list[Pattern]:
        """One ranking by score for the largest ``k``, cut to each value (the knob is left at the last value)."""
        validate_sweep(self, values)
        ranked = ranked_keys(inputs, max(values))
        return [ranked.narrow(k) for k in values]


def ranked_keys(inputs: AttentionInputs, k: int) -> Pattern:
    """The ``k`` highest-scoring valid keys of each query in decreasing score order, shape ``(B, H, n, n)``.

    Rows are ranked, so :meth:`Pattern.narrow` gives any smaller top-``k``.
    """
    scores = torch.matmul(inputs.queries, inputs.keys.transpose(-1, -2))  # (B, H, n, n)
    scores = scores.masked_fill(~inputs.key_mask()[:, None, None, :], float("-inf"))
    top = scores.topk(min(k, inputs.length), dim=-1).indices  # padded keys rank last and are dropped
    return Pattern.from_index(top, lengths=inputs.lengths.to(top.device), unique=True)


class OracleSupport(Predictor):
    """Keep each query's exact α-entmax support over the scores ``q·k/√d`` (recall 1, sparsity = gold)."""

    name: ClassVar[str] = "oracle-support"
    spec_key = ("oracle", "support")
    spec_tokens = {"oracle": None, "support": None, "alpha": "alpha"}
    knob = None
    description = "exact α-entmax support of each query (reference: needs all scores)"
    source = "reference"
    reference = True
    in_reports = False

    def __init__(self, *, alpha: float = DEFAULT_ALPHA) -> None:
        self.alpha = alpha

    def _validate_params(self) -> None:
        check_alpha(self.alpha)

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """The gold graph of ``inputs`` ``(B, H, n, n)``, scored a chunk of queries at a time (no autograd)."""
        self.check_is_fitted()
        q, k = inputs.queries.detach(), inputs.keys.detach()
        batch, heads, n, d = q.shape
        lengths = inputs.lengths.to(q.device)
        keys_ok = inputs.key_mask()[:, None, None, :]
        starts = query_chunks(n, batch * heads * n, SPARSE_CHUNK_PAIRS)
        pieces = []
        for s in starts:
            z = torch.matmul(q[:, :, s:s + starts.step], k.transpose(-1, -2)) * d**-0.5  # (B, H, c, n)
            c = z.shape[2]
            queries_ok = (torch.arange(s, s + c, device=q.device) < lengths[:, None])[:, None, :]  # (B, 1, c)
            if row_kernels_apply(z, float(self.alpha)):
                nvalid = (lengths[:, None, None] * queries_ok).expand(batch, heads, c).reshape(-1)
                ((index, counts),) = cpu_rows.select_rows(z.reshape(-1, n), nvalid, [torch.full_like(nvalid, 1e-30,
                                                                                                     dtype=z.dtype)])
                pieces.append((index.view(batch, heads, c, -1), counts.view(batch, heads, c)))
            else:
                kept = support(z.masked_fill(~keys_ok, float("-inf")), float(self.alpha)) & queries_ok[..., None]
                pieces.append(compact(kept))
        return Pattern.cat_rows(pieces, lengths)
