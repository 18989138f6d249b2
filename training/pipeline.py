"""``sparsefinder pipeline``: the main job, end to end on the default data.

Adapt the encoder to α-entmax once (``sparsefinder adapt``, cached; skipped with ``--no-adapt``
or when ``--model`` or ``$SPARSEFINDER_MODEL`` names an encoder), extract the fit corpus
(WikiText-2 ``valid.txt``) and the evaluation corpus (``test.txt``) with it,
fit the configured learned predictors into the store (skipping families already stored
for the same model and α), evaluate every stored predictor and every baseline on the
evaluation corpus, and write the report. Every step is cached, so a second run only
redoes what changed. With ``--serve`` the service starts afterwards on the results and model.
With ``--engine ray`` the extractions, fits and the evaluation run on Ray (the one-off
adaptation stays in this process); the results are the local engine's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm.auto import tqdm

from ..config import (DEFAULT_MAX_LENGTH, MODEL_HELP, PIPELINE_EVAL_SEQUENCES, PIPELINE_FIT_SEQUENCES,
                      PIPELINE_FIT_SPECS, default_data_dir, get_settings)
from ..model import adapted_model_path, packaged_model_path
from ..predictors.registry import predictor_from_spec
from ..report import write_report
from ..store import ArtifactStore
from . import engine as engines
from .adapt import adapt
from .distributed import evaluate_sharded
from .engine import Engine
from .evaluate import build_candidates, dataset_for_corpus
from .fit import fit_all

__all__ = ["add_arguments", "pipeline", "run"]


def pipeline(fit_corpus: Path, eval_corpus: Path, *, specs: list[str], max_length: int, fit_sequences: int,
             eval_sequences: int, store_url: str, reports: Path, model: str | None = None,
             engine: Engine | None = None) -> Path:
    """Run the main job on ``engine`` (default: this process); returns the report folder."""
    settings = get_settings()
    engine = engine or Engine()
    fit_data = dataset_for_corpus(fit_corpus, model=model, max_length=max_length, alpha=settings.alpha,
                                  limit=fit_sequences, engine=engine)
    eval_data = dataset_for_corpus(eval_corpus, model=model, max_length=max_length, alpha=settings.alpha,
                                   limit=eval_sequences, engine=engine)
    store = ArtifactStore(store_url)
    stored = {i.spec for i in store.list() if i.model_id == fit_data.model_id and i.alpha == fit_data.alpha}
    todo = []
    for spec in specs:
        family = predictor_from_spec(spec).family_spec
        if family in stored:
            tqdm.write(f"{family}: already in the store")
        else:
            todo.append(spec)
    for info in fit_all(engine, fit_data.folder, todo, store_url):
        tqdm.write(f"{info.spec}: fitted in {info.fit_seconds:.1f} s, stored as {info.id}")
    candidates = build_candidates(["all"], eval_data, store=store)
    report = evaluate_sharded(engine, eval_data, candidates)
    model_name = eval_data.model_id.split("@")[0]
    name = f"{eval_corpus.stem}-{model_name}-L{max_length}-n{eval_data.manifest['sequences']}"
    return write_report(report, reports / name)


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
    parser.add_argument("--serve", action="store_true", help="then serve the results (sparsefinder serve)")
    engines.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    model = args.model or settings.model
    if model is None and args.no_adapt:
        model = str(packaged_model_path())
    elif model is None:
        model = str(adapted_model_path(settings.work_dir))
        adapt(args.fit_corpus, model, alpha=settings.alpha)
    out = pipeline(args.fit_corpus, args.eval_corpus, specs=args.predictors, max_length=args.max_length,
                   fit_sequences=args.fit_sequences, eval_sequences=args.eval_sequences,
                   store_url=args.store or settings.store, reports=args.reports or settings.reports, model=model,
                   engine=Engine.from_args(args))
    report = json.loads((out / "report.json").read_text())
    rows = [f"{'predictor':<28} {'sp@r.95':>8} {'sp@r.99':>8} {'AUC':>6}"]
    for p in report["predictors"]:
        s = p["summary"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        rows.append(f"{p['spec']:<28} {fmt(s['sparsity_at_recall_0.95']):>8} {fmt(s['sparsity_at_recall_0.99']):>8} "
                    f"{s['auc']:>6.3f}")
    print("\n".join(rows))
    print(f"report: {out}")
    if args.serve:
        from ..service.serve import run as serve

        return serve(argparse.Namespace(host=settings.host, port=settings.port,
                                        store=args.store or settings.store,
                                        reports=str(args.reports or settings.reports), model=model))
    return 0
