"""``sparsefinder adapt``: distil the softmax encoder into an α-entmax one (:mod:`sparsefinder.training.adapt`)."""

from __future__ import annotations

import argparse
import json

from ..config import (ADAPT_BATCH, ADAPT_CHECKPOINT_EVERY, ADAPT_LR, ADAPT_MAX_LENGTH, ADAPT_SEED, ADAPT_STEPS,
                      DEFAULT_ALPHA)
from ..training.adapt import adapt
from .arguments import interrupted_training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="plain-text training file, one text per line (valid.txt)")
    parser.add_argument("--out", required=True, help="model folder to create")
    parser.add_argument("--model", default=None, help="softmax encoder folder to adapt (default: all-MiniLM-L6-v2)")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="alpha of alpha-entmax (> 1)")
    parser.add_argument("--steps", type=int, default=ADAPT_STEPS, help="optimizer steps")
    parser.add_argument("--max-length", type=int, default=ADAPT_MAX_LENGTH, help="tokens per text, L")
    parser.add_argument("--batch-size", type=int, default=ADAPT_BATCH, help="texts per step")
    parser.add_argument("--lr", type=float, default=ADAPT_LR, help="peak learning rate (AdamW, linear schedule)")
    parser.add_argument("--seed", type=int, default=ADAPT_SEED)
    parser.add_argument("--checkpoint-every", type=int, default=ADAPT_CHECKPOINT_EVERY, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue the run from <out>.checkpoint")


def run(args: argparse.Namespace) -> int:
    try:
        record = adapt(args.corpus, args.out, model=args.model, alpha=args.alpha, steps=args.steps,
                       max_length=args.max_length, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       checkpoint_every=args.checkpoint_every, resume=args.resume)
    except KeyboardInterrupt:
        return interrupted_training("adapt", args.out)
    print(json.dumps({"model": str(args.out), "steps": record["step"], "loss_first": record["losses"][0],
                      "loss_last": record["losses"][-1], "elapsed_s": record["cost"]["elapsed_s"],
                      "holdout_fidelity": record["holdout_fidelity"]}))
    return 0
