"""``sparsefinder pipeline``: the main job (:mod:`sparsefinder.training.pipeline`), then the service with ``--serve``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ..config import (DEFAULT_MAX_LENGTH, LONG_DOC_TOKENS, LONG_MAX_POSITIONS, LONG_STEPS, LONG_STRIDE, LONG_WINDOW,
                      PIPELINE_EVAL_SEQUENCES, PIPELINE_FIT_SEQUENCES, PIPELINE_FIT_SPECS, PIPELINE_LONG_EVAL_SEQUENCES,
                      PIPELINE_LONG_EVAL_SPECS, PIPELINE_LONG_FIT_SEQUENCES, PIPELINE_LONG_FIT_SPECS, default_data_dir,
                      get_settings)
from ..errors import ConflictError
from ..model import adapted_model_path, model_info, packaged_model_path
from ..service.serve import serve
from ..training.adapt import adapt
from ..training.long_distill import distil_long
from ..training.model_card import ADAPT_JSON, LONG_JSON
from ..training.pipeline import pipeline
from .arguments import MODEL_HELP, add_engine_arguments, engine_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = default_data_dir()
    parser.add_argument("--fit-corpus", type=Path, default=data / "valid.txt", help="corpus to fit predictors on")
    parser.add_argument("--eval-corpus", type=Path, default=data / "test.txt", help="corpus to evaluate on")
    parser.add_argument("--predictors", nargs="+", default=list(PIPELINE_FIT_SPECS), metavar="SPEC",
                        help="learned predictor specs to fit and store")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="L")
    parser.add_argument("--fit-sequences", type=int, default=PIPELINE_FIT_SEQUENCES)
    parser.add_argument("--eval-sequences", type=int, default=PIPELINE_EVAL_SEQUENCES)
    parser.add_argument("--store", default=None, help="artifact store (default: settings)")
    parser.add_argument("--reports", type=Path, default=None, help="reports root (default: settings)")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--no-adapt", action="store_true", help="use the packaged softmax-trained encoder as is")
    parser.add_argument("--long", action="store_true",
                        help=f"also the long-document report: distil a {LONG_MAX_POSITIONS}-token encoder from the "
                             f"model (cached), fit and evaluate at {LONG_MAX_POSITIONS} tokens "
                             f"({PIPELINE_LONG_FIT_SEQUENCES} + {PIPELINE_LONG_EVAL_SEQUENCES} sequences)")
    parser.add_argument("--serve", action="store_true", help="then serve the results (sparsefinder serve)")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    model = args.model or settings.model
    if model is None and args.no_adapt:
        model = str(packaged_model_path())
    elif model is None:
        model = str(adapted_model_path(settings.work_dir))
        reuse_trained(model, ADAPT_JSON, lambda: adapt(args.fit_corpus, model, alpha=settings.alpha))
    store, reports = args.store or settings.store, args.reports or settings.reports
    outs = [pipeline(args.fit_corpus, args.eval_corpus, specs=args.predictors, max_length=args.max_length,
                     fit_sequences=args.fit_sequences, eval_sequences=args.eval_sequences, store_url=store,
                     reports=reports, model=model, engine=engine_of(args))]
    if args.long:
        name = model_info(model).id.split("@")[0]
        long_model = str(settings.work_dir / "models" / f"{name}-long{LONG_MAX_POSITIONS // 1024}k")
        reuse_trained(long_model, LONG_JSON, lambda: distil_long(
            args.fit_corpus, long_model, model=model, alpha=settings.alpha, max_positions=LONG_MAX_POSITIONS,
            doc_tokens=LONG_DOC_TOKENS, steps=LONG_STEPS, window=LONG_WINDOW, stride=LONG_STRIDE))
        outs.append(pipeline(args.fit_corpus, args.eval_corpus, specs=list(PIPELINE_LONG_FIT_SPECS),
                             max_length=LONG_MAX_POSITIONS, fit_sequences=PIPELINE_LONG_FIT_SEQUENCES,
                             eval_sequences=PIPELINE_LONG_EVAL_SEQUENCES, store_url=store, reports=reports,
                             model=long_model, engine=engine_of(args), evaluate=list(PIPELINE_LONG_EVAL_SPECS)))
    for out in outs:
        print_summary(out)
    if args.serve:
        serve(settings.model_copy(update={"store": store, "reports": reports, "model": model}))
    return 0


def reuse_trained(folder: str, record: str, train: Callable[[], object]) -> None:
    """Run ``train`` (cached by its own run record), or keep the encoder a different run finished in ``folder``."""
    try:
        train()
    except ConflictError:
        if not (Path(folder) / record).is_file():
            raise
        print(f"using the encoder already trained in {folder} with other settings (remove the folder to train it "
              "again with today's)", file=sys.stderr)


def print_summary(out: Path) -> None:
    """One line per predictor of the report in ``out`` (sparsity at recall 0.95 and 0.99, AUC), then the folder."""
    report = json.loads((out / "report.json").read_text())
    rows = [f"{'predictor':<28} {'sp@r.95':>8} {'sp@r.99':>8} {'AUC':>6}"]
    for p in report["predictors"]:
        s = p["summary"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        rows.append(f"{p['spec']:<28} {fmt(s['sparsity_at_recall_0.95']):>8} {fmt(s['sparsity_at_recall_0.99']):>8} "
                    f"{s['auc']:>6.3f}")
    print("\n".join(rows))
    print(f"report: {out}")
