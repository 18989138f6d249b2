"""``sparsefinder distil-long``: an entmax encoder for long documents (:mod:`sparsefinder.training.long_distill`)."""

from __future__ import annotations

import argparse
import json

from ..config import (ADAPT_SEED, DEFAULT_ALPHA, LONG_ATTENTION_WINDOW, LONG_CHECKPOINT_EVERY, LONG_DOC_TOKENS, LONG_LR,
                      LONG_MAX_POSITIONS, LONG_SHORT_BATCH, LONG_STEPS, LONG_STRIDE, LONG_TOKEN_WEIGHT, LONG_WINDOW)
from ..training.long_distill import distil_long
from .arguments import MODEL_HELP, interrupted_training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="plain-text WikiText-style file of articles (valid.txt)")
    parser.add_argument("--out", required=True, help="model folder to create")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--teacher", default=None, help="softmax encoder folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="alpha of alpha-entmax (> 1)")
    parser.add_argument("--max-positions", type=int, default=LONG_MAX_POSITIONS, help="positions of the new encoder")
    parser.add_argument("--doc-tokens", type=int, default=LONG_DOC_TOKENS, help="tokens per training document")
    parser.add_argument("--window", type=int, default=LONG_WINDOW, help="tokens per teacher window")
    parser.add_argument("--stride", type=int, default=LONG_STRIDE, help="tokens between teacher window starts")
    parser.add_argument("--steps", type=int, default=LONG_STEPS, help="optimizer steps (one document each)")
    parser.add_argument("--lr", type=float, default=LONG_LR, help="peak learning rate (AdamW, linear schedule)")
    parser.add_argument("--seed", type=int, default=ADAPT_SEED)
    parser.add_argument("--short-batch", type=int, default=LONG_SHORT_BATCH,
                        help="short corpus lines per step under adapt's loss, to keep short-text fidelity (0: none)")
    parser.add_argument("--token-weight", type=float, default=LONG_TOKEN_WEIGHT,
                        help="weight of the mean token-state 1 - cos to the teacher in the loss (0: none)")
    parser.add_argument("--attention-window", type=int, default=LONG_ATTENTION_WINDOW,
                        help="attend to keys within ±W positions only (Longformer's local attention; the model "
                             "declares its band and every mode reads it so); 0: every key")
    parser.add_argument("--checkpoint-every", type=int, default=LONG_CHECKPOINT_EVERY, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue the run from <out>.checkpoint")


def run(args: argparse.Namespace) -> int:
    try:
        record = distil_long(args.corpus, args.out, model=args.model, teacher=args.teacher, alpha=args.alpha,
                             max_positions=args.max_positions, doc_tokens=args.doc_tokens, window=args.window,
                             stride=args.stride, steps=args.steps, lr=args.lr, seed=args.seed, short_batch=args.short_batch,
                             token_weight=args.token_weight, attention_window=args.attention_window,
                             checkpoint_every=args.checkpoint_every, resume=args.resume)
    except KeyboardInterrupt:
        return interrupted_training("distil-long", args.out)
    print(json.dumps({"model": str(args.out), "steps": record["step"], "loss_first": record["losses"][0],
                      "loss_last": record["losses"][-1], "elapsed_s": record["cost"]["elapsed_s"],
                      "holdout_fidelity": record["holdout_fidelity"]}))
    return 0
