"""``sparsefinder fidelity``: embedding and attention-output fidelity of predictors (:mod:`sparsefinder.training.fidelity`)."""

from __future__ import annotations

import argparse
import json

from ..config import DEFAULT_ALPHA, FIDELITY_TEXTS
from ..training.fidelity import fidelity_report
from .arguments import MODEL_HELP, add_layers_argument, layers_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="plain-text file, one text per non-blank line")
    parser.add_argument("--predictors", nargs="+", required=True, help="predictor IDs or specs")
    parser.add_argument("--out", required=True, help="report folder to create")
    parser.add_argument("--limit", type=int, default=FIDELITY_TEXTS, help="first N texts of the corpus")
    parser.add_argument("--certified", action="store_true", help="also run each predictor in certified mode")
    parser.add_argument("--store", default=None, help="artifact store (default: $SPARSEFINDER_STORE)")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="alpha of alpha-entmax (> 1)")
    add_layers_argument(parser)
    parser.add_argument("--layer-study", action="store_true",
                        help="run each predictor sparse from layer k on (every k) and on each layer alone")


def run(args: argparse.Namespace) -> int:
    report = fidelity_report(args.corpus, args.predictors, args.out, limit=args.limit, certified=args.certified,
                      store=args.store, model=args.model, alpha=args.alpha, layers=layers_of(args),
                      layer_study=args.layer_study)
    for r in report["rows"]:
        print(json.dumps({k: r[k] for k in ("mode", "reference", "cosine_mean", "cosine_min", "work_skipped")}
                         | {"sparsity": round(sum(r["sparsity"]) / len(r["sparsity"]), 4),
                            "rel_error_last": r["rel_error"][-1]}))
    return 0
