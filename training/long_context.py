"""Longer inputs for a BERT-style encoder: the position table extended by copying (issue 13, first step).

Longformer (Beltagy et al. 2020) extended RoBERTa from 512 to 4,096 positions by copying the
learned 512 position embeddings over the new table, so every position starts from an embedding
the model has seen; further training then adapts them. :func:`extend_positions` does that copy
for a local Hugging Face encoder folder: positions ``0 … P−1`` keep their embeddings exactly
(short texts embed as before, bit for bit), position ``p ≥ P`` gets the embedding of
``p mod P``. The model's and tokenizer's maximum lengths become ``max_positions``; the folder
loads with ``--model`` everywhere. Beyond ``P`` tokens the copied table is only a starting point:
:mod:`sparsefinder.training.long_distill` then trains the model on long documents.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..errors import SparsefinderError
from ..files import atomic_dir
from ..model import load_encoder, model_info

__all__ = ["extend_encoder", "extend_positions"]


def extend_encoder(encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_positions: int) -> None:
    """Give ``encoder`` (in place) a position table of ``max_positions`` rows: row ``p`` copies row ``p mod P``."""
    embeddings = getattr(encoder, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, nn.Embedding):
        raise SparsefinderError("the model has no learned absolute position table to extend")
    old = table.weight.detach()
    rows = torch.arange(max_positions) % old.shape[0]
    wider = nn.Embedding(max_positions, old.shape[1], padding_idx=table.padding_idx)
    wider.weight.data.copy_(old[rows])
    embeddings.position_embeddings = wider
    for name in ("position_ids", "token_type_ids"):  # buffers sized by the old maximum
        if name in dict(embeddings.named_buffers()):
            buffer = getattr(embeddings, name)
            fill = torch.arange(max_positions) if name == "position_ids" else torch.zeros(max_positions)
            embeddings.register_buffer(name, fill.to(buffer.dtype)[None], persistent=False)
    encoder.config.max_position_embeddings = max_positions
    tokenizer.model_max_length = max_positions


def extend_positions(model: str | Path | None, out: str | Path, max_positions: int) -> Path:
    """Write ``model`` with a position table of ``max_positions`` rows into the new folder ``out``.

    ``model`` is a local encoder folder (default: the default model); it must have absolute
    learned positions (``embeddings.position_embeddings``). Returns ``out``.
    """
    info = model_info(model)
    if not isinstance(max_positions, int) or max_positions <= info.max_positions:
        raise SparsefinderError(f"--max-positions must be an integer above the model's {info.max_positions}, "
                                f"got {max_positions!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SparsefinderError(f"output folder {out} exists and is not empty; choose another folder")
    encoder, tokenizer, _ = load_encoder(info.path, "eager", "cpu")
    extend_encoder(encoder, tokenizer, max_positions)
    with atomic_dir(out) as tmp:
        encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out
