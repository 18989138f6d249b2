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
from .config import DEFAULT_ALPHA, DEFAULT_BATCH_TOKENS
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

    @classmethod
    def join(cls, parts: list[EncodeResult]) -> EncodeResult:
        """The texts of ``parts`` in order as one result: rows and per-text figures concatenated, per-layer
        sparsity averaged over all the texts, keys added and seconds summed (no attention outputs)."""
        texts = sum(len(p.num_tokens) for p in parts)
        return cls(embeddings=torch.cat([p.embeddings for p in parts]),
                   sparsity=[sum(p.sparsity[layer] * len(p.num_tokens) for p in parts) / texts
                             for layer in range(len(parts[0].sparsity))],
                   text_sparsity=[row for p in parts for row in p.text_sparsity],
                   keys_added=[sum(layer) for layer in zip(*(p.keys_added for p in parts))],
                   seconds=sum(p.seconds for p in parts), num_tokens=[n for p in parts for n in p.num_tokens])


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
    max_tokens : int, optional
        Longest text in tokens (default: the model's positions).
    batch_tokens : int
        Padded tokens per forward pass (:meth:`encode` sorts texts by length and runs groups of at
        most this many padded tokens; a longer text runs alone).
    dtype : str
        Precision of the weights and dense layers, one of ``MODEL_DTYPES`` (``Settings.dtype``); α-entmax attention
        computes in float32 (softmax in this precision, as transformers runs it) and embeddings come back in float32
        in every one.
    """

    def __init__(self, model: str | Path | None = None, device: str | None = None, alpha: float = DEFAULT_ALPHA,
                 max_tokens: int | None = None, batch_tokens: int = DEFAULT_BATCH_TOKENS, dtype: str = "float32"):
        self.device = torch.device(pick_device(device))
        self.alpha = alpha
        self.dtype = dtype
        self.model, self.tokenizer, self.info = load_encoder(model, attn_implementation=SPARSE_ENTMAX,
                                                             device=self.device, dtype=dtype)
        if max_tokens is not None and not 3 <= max_tokens:
            raise SparsefinderError(f"max tokens must be at least 3, got {max_tokens}")
        self.max_tokens = max_tokens
        if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
            raise SparsefinderError(f"batch tokens must be a positive number of tokens, got {batch_tokens!r}")
        self.batch_tokens = batch_tokens
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
        return self._pad(self._token_ids(texts, truncate))

    def _token_ids(self, texts: list[str], truncate: bool) -> dict[str, list[list[int]]]:
        """Unpadded token ids (and masks) of each text; a text over :attr:`max_length` raises unless ``truncate``."""
        if not texts:
            raise SparsefinderError("no texts to encode")
        ids = self.tokenizer(texts, truncation=truncate, max_length=self.max_length if truncate else None)
        for i, row in enumerate(ids["input_ids"]):
            if len(row) > self.max_length:
                limit = "the model's" if self.max_length == self.info.max_positions else "the limit of"
                raise SparsefinderError(f"text {i} has {len(row)} tokens, more than {limit} {self.max_length}; "
                                        "shorten it or pass truncate=True")
        return {k: v for k, v in ids.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def _pad(self, ids: dict[str, list[list[int]]]) -> dict[str, Tensor]:
        batch = self.tokenizer.pad(ids, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def groups(self, lengths: Sequence[int]) -> list[list[int]]:
        """Text indices in forward passes: sorted by length, each pass at most :attr:`batch_tokens` padded tokens."""
        out: list[list[int]] = []
        for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
            if out and (len(out[-1]) + 1) * lengths[i] <= self.batch_tokens:
                out[-1].append(i)
            else:
                out.append([i])
        return out

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
        ids = self._token_ids(texts, truncate)
        lengths = [len(row) for row in ids["input_ids"]]
        groups = [list(range(len(texts)))] if keep_attention else self.groups(lengths)  # kept outputs share one n
        embeddings: list[Tensor] = [torch.empty(0)] * len(texts)
        text_sparsity: list[list[float]] = [[] for _ in texts]
        keys_added: list[int] = []
        outputs: list[Tensor] | None = None
        for group in groups:
            batch = self._pad({k: [v[i] for i in group] for k, v in ids.items()})
            stats = SparseAttentionStats(keep_outputs=keep_attention)
            hidden = self.model(**batch, attention_predictor=predictor, attention_certified=certified,
                                attention_input_ids=batch["input_ids"], attention_stats=stats,
                                entmax_alpha=self.alpha, **{LAYERS_KWARG: layers}).last_hidden_state
            pooled = mean_pool(hidden, batch["attention_mask"]).cpu()
            seen = sorted(stats.sparsity)
            for b, i in enumerate(group):
                embeddings[i] = pooled[b]
                text_sparsity[i] = [stats.sparsity[layer][b] for layer in seen]
            added = [sum(stats.keys_added[layer]) for layer in seen]
            keys_added = [a + b for a, b in zip(keys_added, added)] if keys_added else added
            if keep_attention:
                outputs = [stats.outputs[layer].float().cpu() for layer in seen]
        return EncodeResult(
            embeddings=torch.stack(embeddings),
            sparsity=[sum(column) / len(texts) for column in zip(*text_sparsity)],
            text_sparsity=text_sparsity,
            keys_added=keys_added,
            seconds=time.perf_counter() - start,
            num_tokens=lengths,
            attention_outputs=outputs,
        )
