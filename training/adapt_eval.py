"""``sparsefinder adapt-eval``: how close an entmax encoder is to the softmax original.

Three measurements on held-out texts (issue 8), each against the frozen softmax model
(``attn_implementation="eager"``) as reference:

- **embedding fidelity** — cosine of the sentence embeddings (masked mean pooling,
  L2-normalised) text by text; mean and worst, for the unadapted entmax model (the
  pretrained weights with α-entmax attention) and for the adapted one;
- **retrieval agreement** — each text is a query against all the others (cosine
  nearest neighbours); top-1 agreement is the fraction of queries whose nearest
  neighbour is the softmax model's, top-5 the mean overlap of the five nearest;
- **gold sparsity per layer** of the adapted model at L = 512, from a small extraction
  (:func:`sparsefinder.training.extract.extract`) on the same corpus.

The result is one JSON object; with ``--model`` pointing at a folder written by
``sparsefinder adapt`` the figures are also added to its ``adapt.json`` and model card.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..alpha_entmax import check_alpha
from ..hf.attention import DENSE_ENTMAX
from ..config import ADAPT_EVAL_MAX_LENGTH, ADAPT_EVAL_SPARSITY_SEQUENCES, ADAPT_EVAL_TEXTS, DEFAULT_ALPHA, ENCODE_BATCH
from ..corpus import check_corpus, iter_texts
from ..errors import SparsefinderError
from ..model import load_encoder, mean_pool, packaged_model_path, pick_device
from .extract import extract

__all__ = ["embed", "embedding_fidelity", "evaluate_adapted", "retrieval_agreement", "sample_texts"]



@torch.no_grad()
def embed(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int,
          batch_size: int = ENCODE_BATCH) -> torch.Tensor:
    """Sentence embeddings ``(N, D)`` of ``texts`` (truncated to ``max_length`` tokens), L2-normalised."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt").to(device)
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        out.append(mean_pool(hidden, enc["attention_mask"]).cpu())
    return torch.cat(out)


def embedding_fidelity(emb: torch.Tensor, ref: torch.Tensor) -> dict:
    """Cosine of unit embeddings ``emb`` and ``ref`` ``(N, D)`` row by row: mean, worst and 5th percentile."""
    cos = (emb * ref).sum(-1)
    return {"cosine_mean": float(cos.mean()), "cosine_worst": float(cos.min()),
            "cosine_p05": float(torch.quantile(cos, 0.05))}


def retrieval_agreement(emb: torch.Tensor, ref: torch.Tensor, k: int = 5) -> dict:
    """Nearest-neighbour agreement of unit embeddings ``emb`` with ``ref`` ``(N, D)``, each text a query.

    ``top1``: fraction of queries with the same nearest neighbour (itself excluded);
    ``top{k}``: mean of ``|kNN_emb ∩ kNN_ref| / k``.
    """
    n = emb.shape[0]
    if n <= k:
        raise SparsefinderError(f"retrieval agreement needs more than {k} texts, got {n}")
    eye = torch.eye(n, dtype=torch.bool)
    nn_emb = (emb @ emb.T).masked_fill(eye, -2).topk(k, dim=-1).indices
    nn_ref = (ref @ ref.T).masked_fill(eye, -2).topk(k, dim=-1).indices
    overlap = (nn_emb.unsqueeze(-1) == nn_ref.unsqueeze(-2)).any(-1).float().sum(-1) / k
    return {"top1": float((nn_emb[:, 0] == nn_ref[:, 0]).float().mean()), f"top{k}": float(overlap.mean())}


def sample_texts(corpus: str | Path, limit: int) -> list[str]:
    """``limit`` texts spread evenly over the corpus (deterministic), in corpus order."""
    texts = list(iter_texts(corpus))
    if len(texts) <= limit:
        return texts
    stride = len(texts) / limit
    return [texts[int(i * stride)] for i in range(limit)]


def evaluate_adapted(
    corpus: str | Path,
    *,
    model: str | Path | None,
    base_model: str | Path | None = None,
    alpha: float | None = None,
    texts: int = ADAPT_EVAL_TEXTS,
    max_length: int = ADAPT_EVAL_MAX_LENGTH,
    sparsity_sequences: int = ADAPT_EVAL_SPARSITY_SEQUENCES,
    device: str | None = None,
    dtype: str = "float32",
) -> dict:
    """Fidelity, retrieval agreement and gold sparsity of the entmax ``model`` against the softmax ``base_model``.

    ``model`` ``None`` evaluates the unadapted entmax model alone. α defaults to the
    adapted model's ``config.entmax_alpha``. ``sparsity_sequences`` 0 skips the extraction. ``dtype``: the
    precision the entmax models are read in (``Settings.dtype``; the softmax reference stays float32).
    """
    check_corpus(corpus)
    device = pick_device(device)
    base_model = base_model if base_model is not None else packaged_model_path()
    sample = sample_texts(corpus, texts)
    if len(sample) <= 5:
        raise SparsefinderError(f"corpus {corpus} has {len(sample)} texts; the evaluation needs at least 6")
    teacher, tokenizer, base_info = load_encoder(base_model, "eager", device)
    ref = embed(teacher, tokenizer, sample, max_length)
    del teacher
    unadapted, _, _ = load_encoder(base_model, DENSE_ENTMAX, device, dtype)
    candidates = {"unadapted": unadapted}
    adapted_info = None
    if model is not None:
        adapted, _, adapted_info = load_encoder(model, DENSE_ENTMAX, device, dtype)
        candidates["adapted"] = adapted
        alpha = alpha if alpha is not None else getattr(adapted.config, "entmax_alpha", None)
    alpha = check_alpha(alpha if alpha is not None else DEFAULT_ALPHA)
    result: dict = {"corpus": str(corpus), "texts": len(sample), "max_length": max_length, "alpha": alpha, "dtype": dtype,
                    "reference": base_info.id, "adapted_model": adapted_info.id if adapted_info else None}
    for name, m in candidates.items():
        m.config.entmax_alpha = alpha
        emb = embed(m, tokenizer, sample, max_length)
        result[name] = {**embedding_fidelity(emb, ref), "retrieval": retrieval_agreement(emb, ref)}
    if sparsity_sequences > 0:
        with tempfile.TemporaryDirectory() as tmp:
            ds = extract(corpus, Path(tmp) / "ds", model=model if model is not None else base_model,
                         max_length=max_length, alpha=alpha, limit=sparsity_sequences, progress=False)
            result["gold_sparsity"] = _sparsity_per_layer(ds)
    return result


def _sparsity_per_layer(ds) -> dict:
    """Fraction of valid (query, key) pairs outside the gold graph, per layer and overall."""
    edges = torch.zeros(ds.num_layers, dtype=torch.float64)
    pairs = 0
    for seq in ds.sequences():
        pairs += ds.num_heads * seq.length ** 2
        edges += torch.tensor([float(p.nnz) for p in seq.gold], dtype=torch.float64)
    per_layer = (1 - edges / pairs).tolist()
    return {"sequences": len(ds), "per_layer": per_layer, "overall": float(1 - edges.sum() / (pairs * ds.num_layers))}
