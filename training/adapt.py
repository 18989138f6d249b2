"""``sparsefinder adapt``: distil the softmax encoder into an α-entmax copy of itself.

Swapping softmax for α-entmax in a pretrained encoder changes its outputs (issue 8); the
Sparsefinder paper (Treviso et al., 2022) uses encoders *trained* with entmax attention,
and entmax attention itself is from Peters, Niculae & Martins (2019) / Correia et al.
(2019). Here a copy of the encoder, loaded with our dense α-entmax attention
(:mod:`sparsefinder.hf.attention`, α kept as ``config.entmax_alpha``), learns to
reproduce the frozen softmax model (``attn_implementation="eager"``) on the texts of a
corpus, with the loss

    L = (1 − cos(e_s, e_t)) + w · MSE(h_s, h_t)

where ``e`` are the sentence embeddings (masked mean of the last hidden states,
L2-normalised) and ``h`` the last hidden states of the non-padding tokens (``w`` is
:data:`~sparsefinder.config.ADAPT_HIDDEN_WEIGHT`).

Training is deterministic given the seed: texts (one per corpus line, truncated to L
tokens) are visited in a seeded permutation per epoch, so the data position is the step
itself; dropout is off and the token-embedding table stays frozen (it is a third of the
parameters and most of the optimizer's work, and attention is what changed). A checkpoint (weights, AdamW and scheduler state, RNG state,
step, losses) is written atomically every K steps next to the output folder
(``<out>.checkpoint/``); ``--resume`` continues from it on the same trajectory. The
result is a Hugging Face model folder (model, tokenizer, ``adapt.json``, ``README.md``
model card) that ``--model`` accepts everywhere. The last
:data:`~sparsefinder.config.ADAPT_HOLDOUT_TEXTS` texts of the corpus are kept out of
training and give the fidelity figures of the model card.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import torch
from torch import Tensor

from ..version import __version__
from ..alpha_entmax import check_alpha
from ..hf.attention import DENSE_ENTMAX
from ..config import (
    ADAPT_BATCH,
    ADAPT_CHECKPOINT_EVERY,
    ADAPT_HIDDEN_WEIGHT,
    ADAPT_HOLDOUT_TEXTS,
    ADAPT_LR,
    ADAPT_MAX_LENGTH,
    ADAPT_SEED,
    ADAPT_STEPS,
    ADAPT_WARMUP,
    DEFAULT_ALPHA,
)
from ..corpus import check_corpus, iter_texts
from ..errors import SparsefinderError
from ..model import describe_device, load_encoder, mean_pool, model_info, packaged_model_path, pick_device
from .adapt_eval import embed, embedding_fidelity
from .checkpoints import TrainingRun, check_output, checkpoint_dir, load_checkpoint, save_trained
from .model_card import ADAPT_JSON, write_model_card

__all__ = ["adapt", "batch_indices", "collate", "distillation_loss"]


def distillation_loss(student: Tensor, teacher: Tensor, mask: Tensor, hidden_weight: float = ADAPT_HIDDEN_WEIGHT
                      ) -> tuple[Tensor, dict[str, float]]:
    """Loss between last hidden states ``student``/``teacher`` ``(B, n, D)`` over ``mask`` ``(B, n)``.

    Returns the scalar ``mean(1 − cos(e_s, e_t)) + hidden_weight · MSE(h_s, h_t)`` (MSE over
    non-padding tokens and features) and its two parts as floats.
    """
    cos = (mean_pool(student, mask) * mean_pool(teacher, mask)).sum(-1)
    m = mask.unsqueeze(-1).to(student.dtype)
    mse = ((student - teacher) ** 2 * m).sum() / (m.sum() * student.shape[-1])
    emb_loss = (1 - cos).mean()
    return emb_loss + hidden_weight * mse, {"embedding": float(emb_loss.detach()), "hidden_mse": float(mse.detach())}


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Indices of the texts of step ``step`` (0-based): a seeded permutation of ``range(n)`` per epoch."""
    out = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch, pos = divmod(i, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        out.append(int(perm[pos]))
    return out


def collate(ids: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-padded ``input_ids`` and ``attention_mask`` ``(B, n)`` of token-id lists, on ``device``."""
    n = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), n), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for b, x in enumerate(ids):
        input_ids[b, :len(x)] = torch.tensor(x)
        mask[b, :len(x)] = 1
    return input_ids.to(device), mask.to(device)


def adapt(
    corpus: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = None,
    alpha: float = DEFAULT_ALPHA,
    steps: int = ADAPT_STEPS,
    max_length: int = ADAPT_MAX_LENGTH,
    batch_size: int = ADAPT_BATCH,
    lr: float = ADAPT_LR,
    seed: int = ADAPT_SEED,
    checkpoint_every: int = ADAPT_CHECKPOINT_EVERY,
    resume: bool = False,
    stop_after: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Distil ``model`` (default: the packaged encoder) into an α-entmax copy saved in ``out``.

    Returns the run record (also written as ``out/adapt.json``); if ``out`` already holds
    the result of the same run (same base model, corpus, α and options) that is returned. ``stop_after`` ends the
    run after that many steps *of this call* with only a checkpoint written (as an
    interruption would); a later call with ``resume=True`` finishes it. Without
    ``resume`` an existing checkpoint is an error, so no run is silently thrown away.
    """
    alpha = check_alpha(alpha)
    model = model if model is not None else packaged_model_path()
    for name, value, low in (("steps", steps, 1), ("batch size", batch_size, 1),
                             ("checkpoint interval", checkpoint_every, 1)):
        if value < low:
            raise SparsefinderError(f"{name} must be at least {low}, got {value}")
    if not lr > 0:
        raise SparsefinderError(f"learning rate must be positive, got {lr}")
    info = model_info(model)
    if not 3 <= max_length <= info.max_positions:
        raise SparsefinderError(f"max length {max_length} is outside 3..{info.max_positions} (the model's limit)")
    corpus_info = check_corpus(corpus)
    out = Path(out)
    key = {"model_id": info.id, "corpus_sha256": corpus_info.sha256, "alpha": alpha, "steps": steps,
           "max_length": max_length, "batch_size": batch_size, "lr": lr, "seed": seed,
           "hidden_weight": ADAPT_HIDDEN_WEIGHT, "warmup": ADAPT_WARMUP}
    done_record = out / ADAPT_JSON
    if done_record.is_file() and json.loads(done_record.read_text()).get("key") == key:
        return json.loads(done_record.read_text())
    check_output(out)
    ckpt = checkpoint_dir(out)
    state = load_checkpoint(ckpt, key, resume)

    device = pick_device(device)
    torch.manual_seed(seed)
    teacher, tokenizer, _ = load_encoder(model, "eager", device)
    teacher.requires_grad_(False)
    student, _, _ = load_encoder(model, DENSE_ENTMAX, device)
    student.config.entmax_alpha = alpha  # saved with the folder: our attention reads it
    student.get_input_embeddings().requires_grad_(False)  # the vocabulary table is most of the cost, none of the gap

    texts = list(iter_texts(corpus))
    holdout = min(ADAPT_HOLDOUT_TEXTS, len(texts) // 5)
    train_texts, held_texts = texts[:len(texts) - holdout], texts[len(texts) - holdout:]
    train_ids = tokenizer(train_texts, truncation=True, max_length=max_length)["input_ids"]

    run = TrainingRun(student, key=key, folder=ckpt, steps=steps, lr=lr, checkpoint_every=checkpoint_every,
                      stop_after=stop_after, state=state, desc=f"adapt α={alpha}", unit="step", progress=progress)
    for step in run.step_range():
        input_ids, mask = collate([train_ids[i] for i in batch_indices(step, len(train_ids), batch_size, seed)],
                                   tokenizer.pad_token_id, torch.device(device))
        with torch.no_grad():
            target = teacher(input_ids=input_ids, attention_mask=mask).last_hidden_state
        hidden = student(input_ids=input_ids, attention_mask=mask).last_hidden_state
        loss, parts = distillation_loss(hidden, target, mask)
        run.update(step, loss, cos=f"{1 - parts['embedding']:.4f}")
    record = run.finish()
    if record["status"] == "interrupted":
        return record
    losses, elapsed = record["losses"], record["elapsed_s"]

    student.eval()
    held = None
    if len(held_texts) > 1:
        ref = embed(teacher, tokenizer, held_texts, max_length)
        held = {"texts": len(held_texts), "max_length": max_length,
                "unadapted": embedding_fidelity(embed(load_encoder(model, DENSE_ENTMAX, device)[0], tokenizer, held_texts,
                                            max_length), ref),
                "adapted": embedding_fidelity(embed(student, tokenizer, held_texts, max_length), ref)}
    record = {
        **record,
        "format": 1,
        "key": key,
        "base_model": info.to_dict(),
        "alpha": alpha,
        "corpus": {"path": str(Path(corpus).resolve()), "sha256": corpus_info.sha256, "texts": len(texts),
                   "train_texts": len(train_texts), "holdout_texts": len(held_texts)},
        "training": {"steps": steps, "batch_size": batch_size, "max_length": max_length, "lr": lr,
                     "warmup": ADAPT_WARMUP, "schedule": "linear", "optimizer": "AdamW", "seed": seed,
                     "hidden_weight": ADAPT_HIDDEN_WEIGHT, "dropout": "off",
                     "frozen": "token embeddings",
                     "loss_first": losses[0], "loss_last": losses[-1]},
        "cost": {"elapsed_s": round(elapsed, 1), "device": device, "machine": describe_device(device)},
        "holdout_fidelity": held,
        "test_fidelity": None,
        "sparsefinder_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return save_trained(out, student, tokenizer, ADAPT_JSON, record, write_model_card)
