"""``sparsefinder fit``: fit predictors on an extracted dataset and store them (:mod:`sparsefinder.training.fit`)."""

from __future__ import annotations

import argparse
import json
import logging

from ..choice import set_recall_target
from ..config import get_settings
from ..dataset import GoldDataset
from ..errors import SparsefinderError
from ..predictors.registry import predictor_from_spec
from ..training.fit import fit_all
from .arguments import add_engine_arguments, engine_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder from 'sparsefinder extract'")
    parser.add_argument("--predictor", "--predictors", nargs="+", required=True, metavar="SPEC",
                        help="predictor specs, e.g. proj8-score-knn64 proj4-kmeans16 (one Ray task each)")
    parser.add_argument("--store", default=None, help="artifact store: folder or fsspec URL (default: settings)")
    parser.add_argument("--limit", type=int, default=None, help="fit on the first N sequences only")
    parser.add_argument("--recall", type=float, default=None,
                        help="stored recall target of a recall-calibrated predictor (proj-threshold), e.g. 0.99")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or loss log")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.limit is not None and args.limit < 1:
        raise SparsefinderError(f"--limit must be at least 1, got {args.limit}")
    GoldDataset(args.data)  # a missing or broken dataset is reported before any task starts
    for spec in args.predictor:
        checked = predictor_from_spec(spec)  # so is a bad spec
        if args.recall is not None:
            set_recall_target(checked, args.recall)  # and a recall target it cannot take
    infos = fit_all(engine_of(args), args.data, args.predictor, args.store or get_settings().store,
                    limit=args.limit, progress=not args.quiet, recall=args.recall)
    for info in infos:
        print(json.dumps({"id": info.id, "spec": info.spec, "fit_seconds": info.fit_seconds,
                          "fit_sequences": info.fit_sequences}))
    return 0
