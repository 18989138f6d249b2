"""``sparsefinder extend-positions``: a copy of an encoder that takes longer inputs (:mod:`sparsefinder.training.long_context`)."""

from __future__ import annotations

import argparse
import json

from ..training.long_context import extend_positions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="local encoder folder (default: the default model)")
    parser.add_argument("--out", required=True, help="model folder to create")
    parser.add_argument("--max-positions", type=int, required=True, help="new maximum length in tokens, e.g. 4096")


def run(args: argparse.Namespace) -> int:
    out = extend_positions(args.model, args.out, args.max_positions)
    print(json.dumps({"model": str(out), "max_positions": args.max_positions}))
    return 0
