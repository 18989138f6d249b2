"""``sparsefinder extract``: queries, keys, values and gold graphs of a corpus.

The corpus is packed into sequences of at most L tokens (nothing is cut off), the encoder
runs with dense α-entmax attention (:mod:`sparsefinder.hf.attention`), and a recorder
captures each layer's queries, keys, values and the support of its attention (the gold
graph). Sequences stream into shards; the folder appears under its final name only when
complete, with a manifest (model id, corpus sha256, α, L, counts, package version).
"""

from __future__ import annotations

import datetime as dt
from itertools import islice
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..version import __version__
from ..alpha_entmax import check_alpha
from ..hf.attention import DENSE_ENTMAX, SPARSE_ENTMAX
from ..config import (BISECT_ITERATIONS, DEFAULT_ALPHA, DEFAULT_MAX_LENGTH, EXTRACT_BATCH, EXTRACT_BATCH_TOKENS,
                      EXTRACT_DENSE_MAX_LENGTH, SHARD_SEQUENCES)
from ..corpus import CorpusInfo, check_corpus, iter_texts, pack_sequences
from ..capture import capture
from ..dataset import MANIFEST, ExtractTotals, GoldDataset, ShardWriter
from ..errors import ConflictError, SparsefinderError
from ..files import atomic_dir, atomic_write_json
from ..model import ModelInfo, load_encoder, model_info
from .distributed import extract_shards
from .engine import Engine

__all__ = ["extract"]


def _dataset_key(info: ModelInfo, corpus_sha: str, alpha: float, max_length: int, limit: int | None) -> dict:
    return {"model_id": info.id, "corpus_sha256": corpus_sha, "alpha": alpha, "max_length": max_length,
            "limit": limit}


def _existing_key(out: Path) -> dict | None:
    """Key of the dataset already in ``out``; ``None`` if ``out`` is absent or empty; error otherwise."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise ConflictError(f"output {out} exists and is not a folder")
    if not any(out.iterdir()):
        return None
    if not (out / MANIFEST).is_file():
        raise ConflictError(f"output folder {out} is not empty and holds no sparsefinder dataset; choose another")
    return GoldDataset(out).manifest["key"]


def extraction_attention(max_length: int) -> str:
    """The attention extraction runs: dense α-entmax up to :data:`~sparsefinder.config.EXTRACT_DENSE_MAX_LENGTH`
    tokens, beyond it the sparse path on the exact support (no ``n × n`` tensor per head)."""
    return DENSE_ENTMAX if max_length <= EXTRACT_DENSE_MAX_LENGTH else SPARSE_ENTMAX


def _extract_shards(corpus: str | Path, folder: Path, *, model: str | Path | None, max_length: int, alpha: float,
                    limit: int | None, batch_size: int, totals: ExtractTotals, progress: bool) -> list[dict]:
    """Encode the corpus in this process and write its shards into ``folder``; returns the shard entries."""
    encoder, tokenizer, _ = load_encoder(model, attn_implementation=extraction_attention(max_length))
    sequences = pack_sequences(iter_texts(corpus), tokenizer, max_length)
    if limit is not None:
        sequences = islice(sequences, limit)
    writer = ShardWriter(folder, SHARD_SEQUENCES)
    with tqdm(total=limit, unit="seq", desc=f"extract {Path(corpus).name}", disable=not progress) as bar:
        while batch := list(islice(sequences, batch_size)):
            for seq in capture(encoder, batch, alpha):
                writer.add(seq)
                totals.add(seq.gold_sparsity(), seq.length)
            bar.update(len(batch))
    writer.flush()
    return writer.shards


def _manifest(key: dict, info: ModelInfo, corpus: str | Path, corpus_info: CorpusInfo, alpha: float,
              max_length: int, limit: int | None, shards: list[dict], totals: ExtractTotals) -> dict:
    """The dataset's ``manifest.json`` once every shard is written (the same for both engines)."""
    return {
        "format": 1,
        "key": key,
        "model": info.to_dict(),
        "corpus": {"path": str(Path(corpus).resolve()), "sha256": corpus_info.sha256,
                   "bytes": corpus_info.bytes, "texts": corpus_info.texts},
        "alpha": alpha,
        "max_length": max_length,
        "limit": limit,
        "entmax": {"method": "entmax15" if alpha == 1.5 else "sparsemax" if alpha == 2 else "bisection",
                   "bisect_iterations": BISECT_ITERATIONS},
        "sequences": totals.sequences,
        "tokens": totals.tokens,
        "gold_edges": sum(s["gold_edges"] for s in shards),
        "gold_sparsity": (totals.gold_sparsity / max(totals.sequences, 1)).tolist(),
        "shards": shards,
        "sparsefinder_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def extract(
    corpus: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    alpha: float = DEFAULT_ALPHA,
    limit: int | None = None,
    batch_size: int = EXTRACT_BATCH,
    progress: bool = True,
    engine: Engine | None = None,
) -> GoldDataset:
    """Extract the dataset of ``corpus`` into ``out`` and return it.

    ``engine`` picks where the encoder runs (default: this process); both engines write the
    same sequences in the same order, so the same shards.

    ``batch_size`` sequences run per forward pass, fewer when long (:data:`~sparsefinder.config.EXTRACT_BATCH_TOKENS`).
    If ``out`` already holds the same dataset (same model, corpus, α, L and limit) it is
    returned as is; a different dataset there is a :class:`ConflictError`.
    """
    alpha = check_alpha(alpha)
    if limit is not None and limit < 1:
        raise SparsefinderError(f"--limit must be at least 1, got {limit}")
    info = model_info(model)
    if not 3 <= max_length <= info.max_positions:
        raise SparsefinderError(f"max length {max_length} is outside 3..{info.max_positions} (the model's limit)")
    corpus_info = check_corpus(corpus)
    out = Path(out)
    key = _dataset_key(info, corpus_info.sha256, alpha, max_length, limit)
    existing = _existing_key(out)
    if existing == key:
        return GoldDataset(out)
    if existing is not None:
        raise ConflictError(f"output folder {out} already holds a different dataset "
                            f"(corpus sha256 {existing['corpus_sha256'][:12]}, alpha {existing['alpha']}, "
                            f"L {existing['max_length']}); choose another folder")

    batch_size = max(1, min(batch_size, EXTRACT_BATCH_TOKENS // max_length))
    totals = ExtractTotals(torch.zeros(info.num_layers, info.num_heads, dtype=torch.float64))
    with atomic_dir(out) as tmp:
        if engine is not None and engine.is_ray:
            shards = extract_shards(engine, corpus, tmp, model=model, max_length=max_length, alpha=alpha,
                                    limit=limit, batch_size=batch_size, totals=totals, progress=progress)
        else:
            shards = _extract_shards(corpus, tmp, model=model, max_length=max_length, alpha=alpha, limit=limit,
                                     batch_size=batch_size, totals=totals, progress=progress)
        atomic_write_json(tmp / MANIFEST, _manifest(key, info, corpus, corpus_info, alpha, max_length, limit,
                                                    shards, totals))
    return GoldDataset(out)
