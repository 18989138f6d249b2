"""Our attention functions in transformers' attention-function registry.

After :func:`register_attention`, ``AutoModel.from_pretrained(path,
attn_implementation="sparsefinder_entmax")`` runs the unchanged encoder with dense
α-entmax in place of softmax. α comes from the ``entmax_alpha`` keyword given to the
model's forward, else ``config.entmax_alpha``, else the default 1.5. An
``attention_recorder`` keyword (a callable) receives, per layer, the attention inputs and
the support as a pattern: that is how extraction captures queries, keys, values and gold graphs
without patching modules (on the sparse path, the pattern computed on: with the
``exact`` route, the gold graph without an ``n × n`` tensor). Masks use transformers' additive ``eager`` mask function.

``attn_implementation="sparsefinder_sparse"`` computes each layer on a predicted pattern
(method.md §5): for the whole right-padded batch at once, the ``attention_predictor`` keyword
(a fitted :class:`~sparsefinder.predictors.base.Predictor`) predicts the pattern from the
layer's own queries and keys, and :func:`~sparsefinder.attention.sparse.sparse_entmax_attention`
(or the certified mode when ``attention_certified=True``) computes on it. The predictor may
also be ``"dense"`` (dense α-entmax by the ``entmax`` package), ``"exact"`` (the same attention by
the certified route from an empty pattern: exact score rows, each row's threshold found without
a sort, no ``n × n`` probability tensor) or ``"softmax"`` (the original model), so one loaded
model serves every mode. ``attention_input_ids`` ``(B, n)`` reaches lexical predictors
(``-1`` when absent); an ``attention_stats`` (:class:`SparseAttentionStats`) collects the
sparsity and added keys of every layer, and the attention output ``(B, n, H, d)`` of each
layer when created with ``keep_outputs=True`` (for the fidelity report). ``attention_layers`` (else
``config.sparsefinder_layers``) limits the predictor to the listed layers; the others run dense
α-entmax (:mod:`sparsefinder.layers`).

A **banded model** declares ``config.sparsefinder_attention_window`` ``W`` > 0 (``distil-long
--attention-window``): each query attends to the keys within ``±W`` positions only, and every mode
honours it: dense α-entmax masks the scores outside the band (the n² reference), softmax and the ``exact``
route score each chunk of queries against its key range only (SDPA; one matrix product, then the row
kernels), and a
predictor's pattern is cut to the band before the sparse or certified compute reads it. Its gold graph
is the support within the band.

Every α-entmax mode here computes in float32: a model loaded in bfloat16 (``Settings.dtype``) hands its queries, keys,
values and mask over upcast and gets the output back in its own dtype (:func:`in_float32`), so pairs, thresholds and
certified exactness are those of the float32 computation. The ``"softmax"`` mode (the original model, the reference
the others are compared with) runs in the model's own dtype, as transformers runs it: SDPA in bfloat16 in a bfloat16
model (at 4,096 tokens about half the time of SDPA in float32).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from ..alpha_entmax import entmax
from ..config import BAND_OFFSET, DEFAULT_ALPHA, SPARSE_CHUNK_PAIRS
from ..errors import SparsefinderError
from ..inputs import AttentionInputs
from ..layers import applies_to_layer
from ..pattern import Pattern, band_keys, band_mask, band_rows, query_chunks, sparsity_of
from ..predictors.base import Predictor
from .attached import attached_certified, attached_predictor
from ..attention.certified import certified_entmax_attention, certified_entmax_rows
from ..attention import cpu_rows
from ..attention.sparse import needs_grad, row_kernels_apply, sparse_entmax_attention, sparse_entmax_rows

__all__ = [
    "CONFIG_WINDOW", "DENSE_ENTMAX", "EXACT", "REFERENCE_MODES", "SPARSE_ENTMAX", "AttentionRecorder", "SparseAttentionStats",
    "alpha_of", "attention_mode", "entmax_attention", "float32_mask", "in_float32", "input_ids_of", "register_attention", "runs_softmax", "sparse_attention", "window_of",
]

DENSE_ENTMAX = "sparsefinder_entmax"
SPARSE_ENTMAX = "sparsefinder_sparse"
#: The reference mode computed by the certified route from an empty pattern.
EXACT = "exact"
#: Attention modes that are not predictors: dense α-entmax (the ``entmax`` package, and the exact route) and the
#: original softmax.
REFERENCE_MODES = ("dense", EXACT, "softmax")

#: ``config.json`` key of a banded model: each query attends to the keys within ``±W`` positions (absent or 0: every key).
CONFIG_WINDOW = "sparsefinder_attention_window"

#: ``recorder(layer, query, key, value, support)``: tensors ``(B, H, n, d)`` and the pattern ``(B, H, n, n)``
#: the attention kept (dense α-entmax: its exact support; the sparse path: the pattern it computed on).
AttentionRecorder = Callable[[int, Tensor, Tensor, Tensor, Pattern], None]


def alpha_of(module: nn.Module, kwargs: dict) -> float:
    """α for this call: the ``entmax_alpha`` keyword, else ``config.entmax_alpha``, else the default."""
    alpha = kwargs.get("entmax_alpha")
    if alpha is None:
        alpha = getattr(module.config, "entmax_alpha", None)
    return float(alpha if alpha is not None else DEFAULT_ALPHA)


def window_of(config: object) -> int:
    """The model's attention window ``W`` (``config.sparsefinder_attention_window``; 0: every key)."""
    return int(getattr(config, CONFIG_WINDOW, 0) or 0)


def banded(attention_mask: Tensor | None, n: int, window: int, dtype: torch.dtype, device: torch.device
           ) -> Tensor | None:
    """The additive mask ``(B, 1, n, n)`` (or ``(1, 1, n, n)``) with :data:`~sparsefinder.config.BAND_OFFSET` added to
    the pairs outside ``±window``; ``attention_mask`` as is for ``window`` 0."""
    if not window:
        return attention_mask
    outside = ~band_mask(0, n, 0, n, window, device)
    offset = torch.zeros(n, n, dtype=dtype, device=device).masked_fill(outside, BAND_OFFSET)
    return offset[None, None] if attention_mask is None else attention_mask + offset


def banded_softmax(query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None, scaling: float,
                   window: int, dropout: float = 0.0) -> Tensor:
    """Softmax attention within ``±window`` (SDPA), a chunk of queries at a time against its key range only (O(n·W)
    work and memory, no ``n × n`` mask): ``(B, H, n, d)`` inputs, additive ``attention_mask`` ``(B, 1, n, n)`` or
    ``None`` → output ``(B, n, H, d)``."""
    batch, heads, n, _ = query.shape
    starts = query_chunks(n, batch * heads * n, SPARSE_CHUNK_PAIRS, window)
    outs = []
    for s in starts:
        c = min(starts.step, n - s)
        lo, hi = band_keys(s, c, n, window)
        mask = torch.zeros(c, hi - lo, dtype=query.dtype, device=query.device).masked_fill(
            ~band_mask(s, c, lo, hi, window, query.device), BAND_OFFSET)
        if attention_mask is not None:
            mask = attention_mask[:, :, s:s + c, lo:hi] + mask
        outs.append(nn.functional.scaled_dot_product_attention(
            query[:, :, s:s + c], key[:, :, lo:hi], value[:, :, lo:hi], attn_mask=mask, dropout_p=dropout,
            scale=scaling))
    return torch.cat(outs, 2).transpose(1, 2).contiguous()


def entmax_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    """Dense α-entmax attention: ``(B, H, n, d)`` inputs → output ``(B, n, H, d)`` and probabilities ``(B, H, n, n)``
    (a banded model's pairs outside its band get probability 0)."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    band = banded(attention_mask, query.shape[2], window_of(module.config), scores.dtype, scores.device)
    if band is not None:
        scores = scores + band
    alpha = alpha_of(module, kwargs)
    if alpha == 1.5 and scores.requires_grad and scores.dtype == torch.float32 and row_kernels_apply(scores, alpha):
        probs = cpu_rows.entmax15_rows(scores)  # training: compiled thresholds, closed-form backward
    else:
        probs = entmax(scores, alpha)
    recorder: AttentionRecorder | None = kwargs.get("attention_recorder")
    if recorder is not None:
        lengths = valid_lengths(attention_mask, query.shape[0], query.shape[2], query.device)
        recorder(module.layer_idx, query, key, value, Pattern.from_mask(probs > 0, lengths))
    probs_dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs_dropped, value).transpose(1, 2).contiguous()
    return out, probs


@dataclass
class SparseAttentionStats:
    """Per-layer statistics of one forward pass through :func:`sparse_attention`.

    ``sparsity[l]`` and ``keys_added[l]`` list one value per batch element: the share of
    valid (query, key) pairs not computed (mean over heads; 0 for dense modes) and the
    pairs the certified mode added to the predicted pattern.
    """

    sparsity: dict[int, list[float]] = field(default_factory=dict)
    keys_added: dict[int, list[int]] = field(default_factory=dict)
    keep_outputs: bool = False
    outputs: dict[int, Tensor] = field(default_factory=dict)
    """Layer → attention output ``(B, n, H, d)``, kept when ``keep_outputs``."""

    def record(self, layer: int, sparsity: list[float], keys_added: list[int]) -> None:
        """Add one forward pass's per-sequence values of ``layer``."""
        self.sparsity.setdefault(layer, []).extend(sparsity)
        self.keys_added.setdefault(layer, []).extend(keys_added)


def valid_lengths(attention_mask: Tensor | None, batch: int, n: int, device: torch.device) -> Tensor:
    """Valid tokens per sequence ``(B,)`` from the additive mask; padding must sit at the end."""
    if attention_mask is None:
        return torch.full((batch,), n, dtype=torch.long, device=device)
    allowed = (attention_mask[:, 0] > torch.finfo(attention_mask.dtype).min / 2).any(1)  # (B, n) keys
    lengths = allowed.sum(-1)
    if not bool((allowed == (torch.arange(n, device=device) < lengths[:, None])).all()):
        raise SparsefinderError("sparse attention needs right-padded batches (tokenizer padding_side='right')")
    return lengths


def input_ids_of(kwargs: dict, batch: int, n: int, query: Tensor) -> Tensor:
    """The ``attention_input_ids`` keyword ``(B, n)``, or ``-1`` everywhere when absent."""
    input_ids = kwargs.get("attention_input_ids")
    return torch.full((batch, n), -1, dtype=torch.long, device=query.device) if input_ids is None else input_ids


def attention_mode(module: nn.Module, kwargs: dict) -> Predictor | str:
    """The mode of this call of :func:`sparse_attention`: the ``attention_predictor`` keyword, else the predictor
    attached to the model, else ``"dense"``; ``"dense"`` too for a predictor in a layer outside its
    ``attention_layers`` (dense entmax there, nothing skipped)."""
    predictor = kwargs.get("attention_predictor") or attached_predictor(module.config) or "dense"
    if not isinstance(predictor, str) and not applies_to_layer(module.layer_idx, kwargs, module.config):
        return "dense"
    return predictor


def runs_softmax(module: nn.Module, kwargs: dict) -> bool:
    """Whether this call of :func:`sparse_attention` runs the original softmax attention."""
    mode = attention_mode(module, kwargs)
    return isinstance(mode, str) and mode == "softmax"


def sparse_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, None]:
    """α-entmax attention on predicted pairs: ``(B, H, n, d)`` inputs → output ``(B, n, H, d)``.

    The predictor sees the whole right-padded batch of this layer at once and returns one
    batched :class:`~sparsefinder.pattern.Pattern`, which the sparse (or certified) compute
    reads as is; on a CPU with no recorder the sparse and certified computes read it chunk of queries
    by chunk instead (:meth:`~sparsefinder.predictors.base.Predictor.predict_rows`, same pairs), so no
    layer-wide index padded to its widest row is built, or, for a predictor with a fused route
    (:meth:`~sparsefinder.predictors.base.Predictor.attend_rows`), none at all. Outputs at padded positions are zero. Modes by the ``attention_predictor``
    keyword: a Predictor, ``"dense"``, ``"exact"`` or ``"softmax"``. Inference only: attention dropout is
    not applied on predicted patterns.
    """
    predictor = attention_mode(module, kwargs)
    stats: SparseAttentionStats | None = kwargs.get("attention_stats")
    layer = module.layer_idx
    if isinstance(predictor, str) and predictor != EXACT:
        if predictor not in REFERENCE_MODES:
            raise SparsefinderError(f"attention_predictor must be a Predictor, 'dense', 'exact' or 'softmax', "
                                    f"got {predictor!r}")
        if predictor == "dense":
            out = entmax_attention(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                   **kwargs)[0]
        elif window_of(module.config):  # a banded model's softmax, a chunk of queries against its key range at a time
            out = banded_softmax(query, key, value, attention_mask, query.shape[-1] ** -0.5 if scaling is None else scaling,
                                 window_of(module.config), dropout if module.training else 0.0)
        else:
            out = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                         **kwargs)[0]
        if stats is not None:
            stats.record(layer, [0.0] * query.shape[0], [0] * query.shape[0])
            if stats.keep_outputs:
                stats.outputs[layer] = out.detach()
        return out, None
    batch, heads, n, d = query.shape
    scaling = d**-0.5 if scaling is None else scaling
    alpha = alpha_of(module, kwargs)
    lengths = valid_lengths(attention_mask, batch, n, query.device)
    exact = isinstance(predictor, str)  # the only string mode left
    window = window_of(module.config)
    inputs = None if exact else AttentionInputs(layer, query.detach().float(), key.detach().float(),
                                                input_ids_of(kwargs, batch, n, query), lengths, window)
    added = torch.zeros(batch, heads, dtype=torch.long)
    recorder: AttentionRecorder | None = kwargs.get("attention_recorder")
    # the band the predicted pairs are cut to (0: they lie within the model's band already, or there is none)
    cut = 0 if exact or (predictor.reach is not None and predictor.reach <= window) else window
    certified = exact or bool(kwargs.get("attention_certified", attached_certified(module.config)))
    # on a CPU with no recorder the predictor's rows feed the compute chunk by chunk: no layer-wide pattern; a
    # predictor with a fused route evaluates its rule inside the compute instead (its pairs lie within the band)
    rows = predictor.predict_rows(inputs) if not exact and recorder is None and not query.is_cuda else None
    fused = None if rows is None or needs_grad(query, key, value) else \
        predictor.attend_rows(inputs, value, alpha, scaling, certified)
    if fused is not None:
        out, kept, added = fused
        sparsity = sparsity_of(kept, lengths)
    elif certified:
        if rows is not None:
            result = certified_entmax_rows(query, key, value, rows, lengths, alpha, scaling, keep_pattern=False,
                                           window=window)
        else:
            pattern = Pattern.empty(heads, n, lengths, query.device) if exact else predictor.predict(inputs)
            result = certified_entmax_attention(query, key, value, pattern, alpha, scaling,
                                                keep_pattern=recorder is not None, window=window)
        out, added, pattern = result.output, result.keys_added, result.pattern
        sparsity = sparsity_of(result.kept, lengths)
    elif rows is not None:
        banded_rows = ((s, *band_rows(s, index, counts, cut)) for s, index, counts in rows)
        out, kept = sparse_entmax_rows(query, key, value, banded_rows, alpha, scaling)
        sparsity = sparsity_of(kept, lengths)
    else:
        pattern = predictor.predict(inputs).within(cut)
        out = sparse_entmax_attention(query, key, value, pattern, alpha, scaling)
        sparsity = pattern.sparsity()
    if recorder is not None:
        recorder(layer, query, key, value, pattern)
    if bool((lengths < n).any()):  # padded queries get zeros (a broadcast masked_fill costs 0.4 ms a layer at n = 512)
        padded = torch.arange(n, device=query.device) >= lengths[:, None]
        out = out.masked_fill(padded[:, None, :, None], 0.0)
    out = out.transpose(1, 2).contiguous()
    if stats is not None:
        if exact:  # every score was computed, nothing was predicted
            stats.record(layer, [0.0] * batch, [0] * batch)
        else:
            stats.record(layer, sparsity.mean(-1).tolist(), added.sum(-1).tolist())
        if stats.keep_outputs:
            stats.outputs[layer] = out.detach()
    return out, None


def in_float32(attend: Callable[..., tuple[Tensor, Tensor | None]],
               native: Callable[[nn.Module, dict], bool] | None = None) -> Callable[..., tuple[Tensor, Tensor | None]]:
    """``attend`` (an attention function of this module) computing in float32 for a model of another dtype: its
    ``(B, H, n, d)`` query, key, value and additive mask upcast, its output ``(B, n, H, d)`` cast back to the
    query's dtype (probabilities, when returned, stay float32); float32 inputs pass through untouched, and so do
    the calls for which ``native(module, kwargs)`` holds: they run in the model's dtype."""
    @functools.wraps(attend)
    def attend_in_float32(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                          attention_mask: Tensor | None, *args, **kwargs) -> tuple[Tensor, Tensor | None]:
        if query.dtype == torch.float32 or (native is not None and native(module, kwargs)):
            return attend(module, query, key, value, attention_mask, *args, **kwargs)
        out, probs = attend(module, query.float(), key.float(), value.float(),
                            None if attention_mask is None else attention_mask.float(), *args, **kwargs)
        return out.to(query.dtype), probs
    return attend_in_float32


def float32_mask(*args, **kwargs) -> Tensor | None:
    """transformers' additive ``eager`` mask ``(B, 1, n, n)`` (``None`` where nothing is masked), built in float32
    whatever the model's dtype: the α-entmax modes compute in float32, so no layer converts it (SDPA, in the softmax
    mode of a bfloat16 model, takes it as is with bfloat16 queries)."""
    return eager_mask(*args, **{**kwargs, "dtype": torch.float32})


def register_attention() -> None:
    """Register every sparsefinder attention function (idempotent), each computing in float32 (:func:`in_float32`)
    but the original softmax, which runs in the model's dtype."""
    AttentionInterface.register(DENSE_ENTMAX, in_float32(entmax_attention))
    AttentionMaskInterface.register(DENSE_ENTMAX, float32_mask)
    AttentionInterface.register(SPARSE_ENTMAX, in_float32(sparse_attention, native=runs_softmax))
    AttentionMaskInterface.register(SPARSE_ENTMAX, float32_mask)
