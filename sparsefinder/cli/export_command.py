"""``sparsefinder export``: a model folder that carries its predictor (:mod:`sparsefinder.export`)."""

from __future__ import annotations

import argparse
import json

from ..export import export_model
from .arguments import MODEL_HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictor", required=True, help="stored predictor ID (or unique prefix) or a spec")
    parser.add_argument("--out", required=True, help="model folder to create")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--store", default=None, help="artifact store (default: $SPARSEFINDER_STORE)")
    parser.add_argument("--certified", action="store_true", help="run the predictor in certified (exact) mode")
    parser.add_argument("--recall", type=float, default=None,
                        help="set the knob to the sparsest setting with this mean recall in a report")
    parser.add_argument("--report", default=None, help="report folder for --recall (default: the newest on the model)")


def run(args: argparse.Namespace) -> int:
    entries = export_model(args.out, args.predictor, model=args.model, store=args.store, certified=args.certified,
                           recall=args.recall, report=args.report)
    print(json.dumps({"out": args.out, **entries}))
    return 0
