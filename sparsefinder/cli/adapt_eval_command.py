"""``sparsefinder adapt-eval``: fidelity of an entmax encoder to the softmax one (:mod:`sparsefinder.training.adapt_eval`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import get_settings, ADAPT_EVAL_MAX_LENGTH, ADAPT_EVAL_SPARSITY_SEQUENCES, ADAPT_EVAL_TEXTS
from ..errors import SparsefinderError
from ..files import atomic_write_json
from ..model import packaged_model_path, pick_device, resolve_model
from ..training.adapt_eval import evaluate_adapted
from ..training.model_card import ADAPT_JSON, record_fidelity


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="held-out plain-text file, one text per line (e.g. test.txt)")
    parser.add_argument("--model", default=None, help="adapted model folder from `sparsefinder adapt` (default: the "
                        "default model when it is not the packaged one, else only the unadapted entmax model)")
    parser.add_argument("--base-model", default=None, help="softmax reference (default: all-MiniLM-L6-v2)")
    parser.add_argument("--alpha", type=float, default=None, help="alpha (default: the adapted model's, else 1.5)")
    parser.add_argument("--texts", type=int, default=ADAPT_EVAL_TEXTS, help="texts sampled evenly from the corpus")
    parser.add_argument("--max-length", type=int, default=ADAPT_EVAL_MAX_LENGTH, help="tokens per text, L")
    parser.add_argument("--sparsity-sequences", type=int, default=ADAPT_EVAL_SPARSITY_SEQUENCES,
                        help="packed L-token sequences for gold sparsity (0 skips it)")
    parser.add_argument("--out", default=None, help="write the JSON here too")


def run(args: argparse.Namespace) -> int:
    if args.texts < 6:
        raise SparsefinderError(f"--texts must be at least 6, got {args.texts}")
    if args.model is None and resolve_model() != packaged_model_path():
        args.model = str(resolve_model())
    settings = get_settings()
    result = evaluate_adapted(args.corpus, model=args.model, base_model=args.base_model, alpha=args.alpha,
                              texts=args.texts, max_length=args.max_length,
                              sparsity_sequences=args.sparsity_sequences,
                              device=pick_device(settings.device), dtype=settings.dtype)
    if args.out:
        atomic_write_json(args.out, result)
    # the model card's fidelity is the float32 model's: a reading in another precision is printed only
    if args.model is not None and settings.dtype == "float32" and (Path(args.model) / ADAPT_JSON).is_file():
        record_fidelity(args.model, result)
    print(json.dumps(result))
    return 0
