"""``sparsefinder distil-long``: teach an α-entmax encoder long documents from its windowed softmax teacher.

Issue 13's recipe, after Longformer (Beltagy et al. 2020): the student's position table is
extended by copying (:func:`~sparsefinder.training.long_context.extend_encoder`), then it reads
whole documents ``[CLS] body [SEP]`` of up to ``doc_tokens`` tokens (WikiText articles cut to
that length) and learns the teacher's windowed view of them
(:mod:`sparsefinder.training.windowed_teacher`) with the loss

    L = (1 − cos(e_s, e_t)) + w · MSE(h_s, t) + w_c · mean_i (1 − cos(h_s,i, t_i))

where ``e_s`` is the student's document embedding, ``e_t`` the mean of the teacher's window
embeddings, ``h_s`` the student's body-token states and ``t`` each token's state in the window
where it sits most centrally (``w`` is :data:`~sparsefinder.config.ADAPT_HIDDEN_WEIGHT`, ``w_c`` the
token weight, :data:`~sparsefinder.config.LONG_TOKEN_WEIGHT` by default). So that
short texts keep their fidelity, each step also adds ``adapt``'s loss on ``short_batch`` lines of
the corpus (at most :data:`~sparsefinder.config.ADAPT_MAX_LENGTH` tokens, dense α-entmax).

Dense ``n²`` entmax is too slow and too big at these lengths on a CPU, so the student computes
attention through the sparse path on the **exact support** of each layer
(:class:`~sparsefinder.predictors.oracle.OracleSupport`, scores computed a chunk of queries at a
time): keys outside the support have zero probability and zero gradient, so this is dense
α-entmax, forward and backward, at the cost of the kept pairs. Layers are recomputed in the
backward pass (gradient checkpointing), so memory holds one layer's gathered keys at a time.
With ``attention_window`` ``W`` the student attends within ``±W`` positions instead (the ``windowW``
pattern: Longformer's local attention, α-entmax within the band), in training and in the record's
fidelity; the copied position table then never puts two positions 512 apart in one query's reach. The
saved model declares its band (``sparsefinder_attention_window`` in its config), so every mode of every
command reads it through the band (:mod:`sparsefinder.hf.attention`).

Like ``adapt``: deterministic given the seed (documents visited in a seeded permutation, dropout
off, token embeddings frozen), a checkpoint every K steps beside the output (``--resume``
continues on the same trajectory), and a model folder that loads with ``--model`` everywhere, with
its run record (``long.json``) and model card. The last
:data:`~sparsefinder.config.LONG_HOLDOUT_DOCS` documents are held out for the record's fidelity.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..alpha_entmax import check_alpha
from ..config import (ADAPT_HIDDEN_WEIGHT, ADAPT_MAX_LENGTH, ADAPT_SEED, ADAPT_WARMUP, DEFAULT_ALPHA,
                      LONG_ATTENTION_WINDOW, LONG_CHECKPOINT_EVERY, LONG_DOC_TOKENS, LONG_HOLDOUT_DOCS, LONG_LR,
                      LONG_MAX_POSITIONS, LONG_SHORT_BATCH, LONG_STEPS, LONG_STRIDE, LONG_TOKEN_WEIGHT, LONG_WINDOW)
from ..corpus import check_corpus, iter_articles, iter_texts
from ..errors import SparsefinderError
from ..hf.attention import CONFIG_WINDOW, SPARSE_ENTMAX
from ..model import describe_device, load_encoder, mean_pool, model_info, packaged_model_path, pick_device, resolve_model
from ..predictors.base import Predictor
from ..predictors.fixed import WindowPredictor
from ..predictors.oracle import OracleSupport
from ..version import __version__
from .adapt import batch_indices, collate, distillation_loss
from .checkpoints import TrainingRun, check_output, checkpoint_dir, load_checkpoint, save_trained
from .long_context import extend_encoder
from .model_card import LONG_JSON, write_long_model_card
from .windowed_teacher import WindowedTargets, long_fidelity, student_states, windowed_targets

__all__ = ["distil_long", "long_documents", "long_loss", "student_attention"]


def long_documents(corpus: str | Path, tokenizer: PreTrainedTokenizerBase, doc_tokens: int, min_tokens: int
                   ) -> list[list[int]]:
    """Body token ids of a corpus's long documents: each article cut into consecutive pieces of
    ``doc_tokens − 2`` tokens, pieces of fewer than ``min_tokens`` tokens dropped."""
    room = doc_tokens - 2
    out = []
    for article in iter_articles(corpus):
        ids = tokenizer(article, add_special_tokens=False)["input_ids"]
        out += [ids[s:s + room] for s in range(0, len(ids), room) if len(ids[s:s + room]) >= min_tokens]
    return out


def long_loss(states: Tensor, targets: WindowedTargets, hidden_weight: float = ADAPT_HIDDEN_WEIGHT,
              token_weight: float = LONG_TOKEN_WEIGHT) -> tuple[Tensor, dict[str, float]]:
    """Loss of student states ``(m + 2, D)`` against the windowed teacher's targets; returns it and its three
    parts (embedding ``1 − cos``, hidden MSE, mean token ``1 − cos``)."""
    embedding = mean_pool(states[None], torch.ones(1, states.shape[0], device=states.device))[0]
    emb_loss = 1 - (embedding * targets.embedding.to(states.device)).sum()
    tokens = targets.tokens.to(states.device)
    mse = ((states[1:-1] - tokens) ** 2).mean()
    token_loss = 1 - nn.functional.cosine_similarity(states[1:-1], tokens, dim=-1).mean()
    return emb_loss + hidden_weight * mse + token_weight * token_loss, {
        "embedding": float(emb_loss.detach()), "hidden_mse": float(mse.detach()), "token": float(token_loss.detach())}


def student_attention(alpha: float, attention_window: int) -> tuple[Predictor, str]:
    """The pattern the student reads documents through, and its description: the exact support of every
    layer (``attention_window`` 0: dense α-entmax), else the ``±attention_window`` band (α-entmax within it)."""
    if attention_window:
        window = WindowPredictor(width=attention_window).fit(None)
        return window, f"±{attention_window} window ({window.spec}), sparse path"
    return OracleSupport(alpha=alpha).fit(None), "exact support (oracle-support), sparse path"


def _student(model: Path, alpha: float, max_positions: int, device: str
             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The student: ``model`` on the sparse path, its positions extended, dropout off, layers recomputed in backward."""
    student, tokenizer, info = load_encoder(model, SPARSE_ENTMAX, device)
    if info.max_positions < max_positions:
        extend_encoder(student, tokenizer, max_positions)
    student.config.entmax_alpha = alpha
    student.get_input_embeddings().requires_grad_(False)
    for module in student.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return student, tokenizer


def distil_long(
    corpus: str | Path,
    out: str | Path,
    *,
    model: str | Path | None = None,
    teacher: str | Path | None = None,
    alpha: float = DEFAULT_ALPHA,
    max_positions: int = LONG_MAX_POSITIONS,
    doc_tokens: int = LONG_DOC_TOKENS,
    steps: int = LONG_STEPS,
    lr: float = LONG_LR,
    window: int = LONG_WINDOW,
    stride: int = LONG_STRIDE,
    seed: int = ADAPT_SEED,
    short_batch: int = LONG_SHORT_BATCH,
    token_weight: float = LONG_TOKEN_WEIGHT,
    attention_window: int = LONG_ATTENTION_WINDOW,
    checkpoint_every: int = LONG_CHECKPOINT_EVERY,
    resume: bool = False,
    stop_after: int | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Train ``model`` (default: the default model) on the long documents of ``corpus``; save it in ``out``.

    ``teacher`` is the softmax encoder (default: the packaged one) read in windows of ``window``
    tokens. Returns the run record (also ``out/long.json``); ``out`` already holding the same
    run returns its record. ``stop_after`` and ``resume`` work as in :func:`~sparsefinder.training.adapt.adapt`.
    """
    alpha = check_alpha(alpha)
    for name, value, low in (("steps", steps, 1), ("checkpoint interval", checkpoint_every, 1), ("stride", stride, 1),
                             ("window", window, 3), ("short batch", short_batch, 0),
                             ("attention window", attention_window, 0)):
        if value < low:
            raise SparsefinderError(f"{name} must be at least {low}, got {value}")
    if not lr > 0:
        raise SparsefinderError(f"learning rate must be positive, got {lr}")
    if not token_weight >= 0:
        raise SparsefinderError(f"token weight must be at least 0, got {token_weight}")
    if not window < doc_tokens <= max_positions:
        raise SparsefinderError(f"document tokens must be above the window ({window}) and at most the positions "
                                f"({max_positions}), got {doc_tokens}")
    student_path = resolve_model(model)
    teacher_info = model_info(teacher if teacher is not None else packaged_model_path())
    if window > teacher_info.max_positions:
        raise SparsefinderError(f"window {window} is longer than the teacher's {teacher_info.max_positions} positions")
    corpus_info = check_corpus(corpus)
    out = Path(out)
    key = {"model_id": model_info(student_path).id, "teacher_id": teacher_info.id, "corpus_sha256": corpus_info.sha256,
           "alpha": alpha, "max_positions": max_positions, "doc_tokens": doc_tokens, "steps": steps, "lr": lr,
           "window": window, "stride": stride, "seed": seed, "hidden_weight": ADAPT_HIDDEN_WEIGHT,
           "short_batch": short_batch, "token_weight": token_weight,
           **({"attention_window": attention_window} if attention_window else {})}  # runs before the option keep their key
    done_record = out / LONG_JSON
    if done_record.is_file() and json.loads(done_record.read_text()).get("key") == key:
        return json.loads(done_record.read_text())
    check_output(out)
    ckpt = checkpoint_dir(out)
    state = load_checkpoint(ckpt, key, resume)

    device = pick_device(device)
    torch.manual_seed(seed)
    teacher_model, _, _ = load_encoder(teacher_info.path, "eager", device)
    teacher_model.requires_grad_(False)
    student, tokenizer = _student(student_path, alpha, max_positions, device)
    if attention_window:  # the saved model declares its band, so every mode reads it through the band
        setattr(student.config, CONFIG_WINDOW, attention_window)
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    docs = long_documents(corpus, tokenizer, doc_tokens, min_tokens=window)
    holdout = min(LONG_HOLDOUT_DOCS, len(docs) // 5)
    train, held = docs[:len(docs) - holdout], docs[len(docs) - holdout:]
    if not train:
        raise SparsefinderError(f"corpus {corpus} has no document longer than the window ({window} tokens)")
    reader, reading = student_attention(alpha, attention_window)
    short_ids = tokenizer(list(iter_texts(corpus)), truncation=True, max_length=ADAPT_MAX_LENGTH)["input_ids"]

    student.train()
    student.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    run = TrainingRun(student, key=key, folder=ckpt, steps=steps, lr=lr, checkpoint_every=checkpoint_every,
                      stop_after=stop_after, state=state, desc=f"distil-long L≤{doc_tokens}", unit="doc",
                      progress=progress)
    for step in run.step_range():
        body = train[batch_indices(step, len(train), 1, seed)[0]]
        targets = windowed_targets(teacher_model, body, cls_id, sep_id, window, stride)
        states = student_states(student, body, cls_id, sep_id, attention_predictor=reader)
        loss, parts = long_loss(states, targets, token_weight=token_weight)
        if short_batch:
            input_ids, mask = collate([short_ids[i] for i in batch_indices(step, len(short_ids), short_batch, seed)],
                                      tokenizer.pad_token_id, torch.device(device))
            with torch.no_grad():
                short_target = teacher_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            short_states = student(input_ids=input_ids, attention_mask=mask, attention_predictor="dense").last_hidden_state
            loss = loss + distillation_loss(short_states, short_target, mask)[0]
        run.update(step, loss, cos=f"{1 - parts['embedding']:.4f}", tok=f"{1 - parts['token']:.4f}",
                   n=str(len(body) + 2))
    record = run.finish()
    if record["status"] == "interrupted":
        return record
    losses, elapsed = record["losses"], record["elapsed_s"]

    student.activation_checkpointing_disable()
    student.eval()
    held_fidelity = None
    if held:
        targets = [windowed_targets(teacher_model, body, cls_id, sep_id, window, stride) for body in held]
        before, _ = _student(student_path, alpha, max_positions, device)
        with torch.no_grad():
            held_fidelity = {
                "doc_tokens": [len(b) + 2 for b in held],
                "before": long_fidelity([student_states(before.eval(), b, cls_id, sep_id, attention_predictor=reader)
                                         for b in held], targets),
                "after": long_fidelity([student_states(student, b, cls_id, sep_id, attention_predictor=reader)
                                        for b in held], targets)}
    record = {
        **record,
        "format": 1,
        "key": key,
        "base_model": model_info(student_path).to_dict(),
        "teacher": teacher_info.to_dict(),
        "alpha": alpha,
        "corpus": {"path": str(Path(corpus).resolve()), "sha256": corpus_info.sha256, "documents": len(docs),
                   "train_documents": len(train), "holdout_documents": len(held)},
        "training": {"steps": steps, "doc_tokens": doc_tokens, "max_positions": max_positions, "window": window,
                     "stride": stride, "lr": lr, "warmup": ADAPT_WARMUP, "schedule": "linear", "optimizer": "AdamW",
                     "seed": seed, "hidden_weight": ADAPT_HIDDEN_WEIGHT, "token_weight": token_weight,
                     "dropout": "off",
                     "frozen": "token embeddings", "attention": reading, "attention_window": attention_window,
                     "short_batch": short_batch, "short_max_length": ADAPT_MAX_LENGTH,
                     "loss_first": losses[0], "loss_last": losses[-1]},
        "cost": {"elapsed_s": round(elapsed, 1), "device": device, "machine": describe_device(device)},
        "holdout_fidelity": held_fidelity,
        "sparsefinder_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return save_trained(out, student, tokenizer, LONG_JSON, record, write_long_model_card)
