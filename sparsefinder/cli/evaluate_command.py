"""``sparsefinder evaluate``: a Pareto report of predictors on a dataset or corpus (:mod:`sparsefinder.training.evaluate`)."""

from __future__ import annotations

import argparse
import json

from tqdm.auto import tqdm

from ..config import DEFAULT_ALPHA, DEFAULT_MAX_LENGTH, get_settings
from ..dataset import GoldDataset
from ..errors import SparsefinderError
from ..report import write_report
from ..store import ArtifactStore
from ..training.distributed import evaluate_sharded
from ..training.evaluate import at_recall_target, build_candidates, check_compatible, dataset_for_corpus
from .arguments import MODEL_HELP, add_engine_arguments, engine_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="extracted dataset folder to evaluate on")
    source.add_argument("--corpus", help="plain-text file to extract on the fly and evaluate on")
    parser.add_argument("--predictors", "--predictor", nargs="+", required=True, metavar="SPEC",
                        help="predictor specs (knob left out = swept), or 'all'")
    parser.add_argument("--out", required=True, help="report folder to write")
    parser.add_argument("--store", default=None, help="artifact store with fitted predictors (default: settings)")
    parser.add_argument("--fit-data", default=None, help="extracted dataset to fit learned predictors not in the store")
    parser.add_argument("--fit-limit", type=int, default=None, help="fit on at most N sequences of --fit-data")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on at most N sequences")
    parser.add_argument("--recall", type=float, default=None,
                        help="evaluate recall-calibrated predictors (proj-threshold) at this target only, e.g. 0.99: "
                             "the report shows the requested and the measured recall side by side")
    parser.add_argument("--model", default=None, help=f"with --corpus: {MODEL_HELP}")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="L, with --corpus")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="alpha, with --corpus")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise SparsefinderError(f"--limit must be at least 1, got {args.limit}")
    engine = engine_of(args)
    if args.data:
        data = GoldDataset(args.data)
    else:
        data = dataset_for_corpus(args.corpus, model=args.model, max_length=args.max_length, alpha=args.alpha,
                                  limit=args.limit, engine=engine)
    fit_data = GoldDataset(args.fit_data, limit=args.fit_limit) if args.fit_data else None
    if fit_data is not None:
        check_compatible(fit_data, data)
    store = ArtifactStore(args.store or get_settings().store)
    candidates = build_candidates(args.predictors, data, store=store, fit_data=fit_data)
    if args.recall is not None:
        candidates = at_recall_target(candidates, args.recall)
    report = evaluate_sharded(engine, data, candidates, limit=args.limit)
    out = write_report(report, args.out)
    tqdm.write(f"report written to {out}")
    print(json.dumps({p["spec"]: p["summary"] for p in report["predictors"]}, indent=1))
    return 0
