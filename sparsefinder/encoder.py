"""Sentence embeddings from the unchanged encoder with sparse α-entmax attention (method.md §3, fidelity).

:class:`SparseEncoder` loads the model once with the ``sparsefinder_sparse`` attention
function (:mod:`sparsefinder.hf.attention`); each :meth:`SparseEncoder.encode` call picks the
mode: a fitted predictor (attention on its predicted pairs, optionally certified exact),
``"dense"`` (dense α-entmax, the reference), ``"exact"`` (the same attention by the certified
route from an empty pattern) or ``"softmax"`` (the original model). Embeddings
are the attention-masked mean of the last hidden states, L2-normalised. A ``layers`` choice
applies the predictor to some layers only (:mod:`sparsefinder.layers`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .hf.attention import REFERENCE_MODES, SPARSE_ENTMAX, SparseAttentionStats
from .config import DEFAULT_ALPHA
from .errors import SparsefinderError
from .layers import CONFIG_KEY, LAYERS_KWARG, check_layers
from .model import ModelInfo, load_encoder, mean_pool, pick_device
from .predictors.base import Predictor

__all__ = ["EncodeResult", "SparseEncoder"]


@dataclass(frozen=True)
class EncodeResult:
    """Output of :meth:`SparseEncoder.encode` for ``B`` texts and ``L`` layers."""

    embeddings: Tensor
    """Float32 ``(B, D)``, L2-normalised."""
    sparsity: list[float]
    """Per layer: mean over texts and heads of the share of valid pairs not computed."""
    text_sparsity: list[list[float]]
    """Per text, per layer: mean over heads of the share of valid pairs not computed."""
    keys_added: list[int]
    """Per layer: pairs the certified mode added, summed over texts (0 when not certified)."""
    seconds: float
    """Wall time of tokenisation and forward pass."""
    num_tokens: list[int]
    """Tokens per text (special tokens included)."""
    attention_outputs: list[Tensor] | None = None
    """Per layer, the attention output ``(B, n, H, d)`` (padded positions zero or arbitrary); only
    with ``keep_attention=True``."""


class SparseEncoder:
    """The encoder loaded once, run with any attention mode.

    Parameters
    ----------
    model : str or Path, optional
        Local Hugging Face encoder folder; default the default model
        (:func:`sparsefinder.model.resolve_model`: the adapted encoder once ``make run`` made it).
    device : str, optional
        ``"cuda"`` or ``"cpu"``; default CUDA when present.
    alpha : float
        α of α-entmax for the dense and sparse modes.
    """

    def __init__(self, model: str | Path | None = None, device: str | None = None, alpha: float = DEFAULT_ALPHA,
                 max_tokens: int | None = None):
        self.device = torch.device(pick_device(device))
        self.alpha = alpha
        self.model, self.tokenizer, self.info = load_encoder(model, attn_implementation=SPARSE_ENTMAX,
                                                             device=self.device)
        if max_tokens is not None and not 3 <= max_tokens:
            raise SparsefinderError(f"max tokens must be at least 3, got {max_tokens}")
        self.max_tokens = max_tokens
        check_layers(getattr(self.model.config, CONFIG_KEY, None), self.info.num_layers, f"config {CONFIG_KEY}")

    @property
    def model_info(self) -> ModelInfo:
        return self.info

    @property
    def max_length(self) -> int:
        """Longest input in tokens: the model's positions, or ``max_tokens`` when that is lower."""
        return min(int(self.info.max_positions), self.max_tokens or int(self.info.max_positions))

    def tokenize(self, texts: list[str], truncate: bool = False) -> dict[str, Tensor]:
        """Padded token ids and attention mask ``(B, n)``; too long texts raise unless ``truncate``."""
        if not texts:
            raise SparsefinderError("no texts to encode")
        batch = self.tokenizer(texts, padding=True, truncation=truncate,
                               max_length=self.max_length if truncate else None, return_tensors="pt")
        if batch["input_ids"].shape[1] > self.max_length:
            lengths = batch["attention_mask"].sum(1)
            first = int((lengths > self.max_length).nonzero()[0, 0])
            limit = "the model's" if self.max_length == self.info.max_positions else "the limit of"
            raise SparsefinderError(f"text {first} has {int(lengths[first])} tokens, more than {limit} "
                                    f"{self.max_length}; shorten it or pass truncate=True")
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                          "token_type_ids")}

    @torch.inference_mode()
    def encode(self, texts: list[str], predictor: Predictor | str = "dense", certified: bool = False,
               truncate: bool = False, keep_attention: bool = False,
               layers: Sequence[int] | None = None) -> EncodeResult:
        """Embed ``texts`` with attention computed by ``predictor`` (a fitted Predictor or a reference mode:
        ``"dense"``, ``"exact"``, ``"softmax"``).

        Texts longer than the model's positions raise a :class:`SparsefinderError` unless
        ``truncate``; ``keep_attention`` also returns every layer's attention output. ``layers``
        lists the layers the predictor is applied to (the others run dense α-entmax and count
        sparsity 0); ``None`` means the model config's ``sparsefinder_layers``, else every layer.
        """
        layers = check_layers(layers, self.info.num_layers, "layers")
        if isinstance(predictor, str) and predictor not in REFERENCE_MODES:
            raise SparsefinderError(f"predictor must be a fitted predictor or one of {', '.join(REFERENCE_MODES)}; "
                                    f"got {predictor!r}")
        if certified and isinstance(predictor, str):
            raise SparsefinderError(f"certified mode needs a predictor ({predictor!r} computes every pair already)")
        if isinstance(predictor, Predictor):
            predictor.check_is_fitted()
        start = time.perf_counter()
        batch = self.tokenize(texts, truncate)
        stats = SparseAttentionStats(keep_outputs=keep_attention)
        hidden = self.model(**batch, attention_predictor=predictor, attention_certified=certified,
                            attention_input_ids=batch["input_ids"], attention_stats=stats,
                            entmax_alpha=self.alpha, **{LAYERS_KWARG: layers}).last_hidden_state
        embeddings = mean_pool(hidden, batch["attention_mask"]).float().cpu()
        layers = sorted(stats.sparsity)
        return EncodeResult(
            embeddings=embeddings,
            sparsity=[sum(stats.sparsity[i]) / len(stats.sparsity[i]) for i in layers],
            text_sparsity=[[stats.sparsity[i][b] for i in layers] for b in range(len(texts))],
            keys_added=[sum(stats.keys_added[i]) for i in layers],
            seconds=time.perf_counter() - start,
            num_tokens=[int(x) for x in batch["attention_mask"].sum(1)],
            attention_outputs=[stats.outputs[i].float().cpu() for i in layers] if keep_attention else None,
        )
