"""``sparsefinder evaluate``: every chosen predictor on the same gold graphs, one report.

The evaluation data is an extracted dataset (``--data``) or any plain-text corpus
(``--corpus``, extracted on the fly into the work folder and cached by content). Each
spec is a stateless predictor, or a learned one fitted on ``--fit-data``; specs that leave
the knob out are swept over the predictor's grid. ``all`` means every registered
predictor. Writes ``report.json``, ``report.csv``, ``pareto.png``/``.svg`` and
``pareto_layers.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..config import DEFAULT_ALPHA, DEFAULT_MAX_LENGTH, get_settings
from ..corpus import check_corpus
from ..dataset import GoldDataset, InMemoryDataset
from ..errors import SparsefinderError
from ..evaluation import Candidate, evaluate
from ..model import model_info
from ..predictors.base import available_predictors, predictor_from_spec, sweep_values
from ..report import write_report
from .extract import extract

__all__ = ["add_arguments", "build_candidates", "dataset_for_corpus", "run"]


def dataset_for_corpus(corpus: str | Path, *, model: str | None, max_length: int, alpha: float,
                       limit: int | None) -> GoldDataset:
    """Extract ``corpus`` into the work folder (cached by corpus content, model, α, L and limit)."""
    sha = check_corpus(corpus).sha256
    info = model_info(model)
    name = f"{Path(corpus).stem}-{sha[:12]}-{info.id.split('@')[-1]}-L{max_length}-a{alpha:g}-n{limit or 'all'}"
    return extract(corpus, get_settings().work_dir / "datasets" / name, model=model, max_length=max_length,
                   alpha=alpha, limit=limit)


def check_compatible(fit: GoldDataset, data: GoldDataset) -> None:
    """Raise a user error unless both datasets come from the same model and α."""
    if fit.model_id != data.model_id or fit.alpha != data.alpha:
        raise SparsefinderError(
            f"fit data ({fit.model_id}, alpha {fit.alpha}) and evaluation data ({data.model_id}, alpha {data.alpha}) "
            "come from different models or alphas")


def build_candidates(specs: list[str], fit_data: GoldDataset | None, *, fit_limit: int | None = None,
                     progress: bool = True) -> list[Candidate]:
    """Fitted candidates for ``specs`` (``all`` expands to every registered predictor)."""
    if "all" in specs:
        specs = [s for s in specs if s != "all"] + [cls.name for cls in available_predictors().values()]
    candidates = []
    for spec in dict.fromkeys(specs):
        predictor = predictor_from_spec(spec)
        if predictor.learns and fit_data is None:
            raise SparsefinderError(f"predictor {spec!r} learns from data: pass --fit-data DIR (an extracted dataset)")
        t0 = time.perf_counter()
        data = fit_data
        if predictor.learns and fit_limit is not None:
            data = InMemoryDataset(list(fit_data.sequences(fit_limit)), alpha=fit_data.alpha,
                                   model_id=fit_data.model_id, max_length=fit_data.max_length)
        predictor.fit(data, progress=progress)
        fit_seconds = time.perf_counter() - t0 if predictor.learns else None
        candidates.append(Candidate(predictor, sweep_values(spec), fit_seconds=fit_seconds))
    return candidates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="extracted dataset folder to evaluate on")
    source.add_argument("--corpus", help="plain-text file to extract on the fly and evaluate on")
    parser.add_argument("--predictors", "--predictor", nargs="+", required=True, metavar="SPEC",
                        help="predictor specs (knob left out = swept), or 'all'")
    parser.add_argument("--out", required=True, help="report folder to write")
    parser.add_argument("--fit-data", default=None, help="extracted dataset to fit learned predictors on")
    parser.add_argument("--fit-limit", type=int, default=None, help="fit on at most N sequences of --fit-data")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on at most N sequences")
    parser.add_argument("--model", default=None, help="encoder folder, with --corpus")
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="L, with --corpus")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="alpha, with --corpus")


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise SparsefinderError(f"--limit must be at least 1, got {args.limit}")
    if args.data:
        data = GoldDataset(args.data)
    else:
        data = dataset_for_corpus(args.corpus, model=args.model, max_length=args.max_length, alpha=args.alpha,
                                  limit=args.limit)
    fit_data = GoldDataset(args.fit_data) if args.fit_data else None
    if fit_data is not None:
        check_compatible(fit_data, data)
    candidates = build_candidates(args.predictors, fit_data, fit_limit=args.fit_limit)
    report = evaluate(data, candidates, limit=args.limit)
    out = write_report(report, args.out)
    tqdm.write(f"report written to {out}")
    print(json.dumps({p["spec"]: p["summary"] for p in report["predictors"]}, indent=1))
    return 0
