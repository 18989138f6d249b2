"""``sparsefinder evaluate``: every chosen predictor on the same gold graphs, one report.

The evaluation data is an extracted dataset (``--data``) or any plain-text corpus
(``--corpus``, extracted on the fly into the work folder and cached by content). Each
name is an artifact id of the store, a spec of a stored or stateless predictor, or a
learned spec fitted on ``--fit-data``; specs that leave the knob out are swept over the
predictor's grid. ``all`` means every stored predictor plus every baseline. Writes ``report.json``, ``report.csv``, ``pareto.png``/``.svg`` and
``pareto_layers.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..config import DEFAULT_ALPHA, DEFAULT_MAX_LENGTH, MODEL_HELP, get_settings
from ..corpus import check_corpus
from ..dataset import GoldDataset
from ..errors import NotFoundError, SparsefinderError
from ..choice import check_recall
from ..evaluation import RECALL_KNOB, Candidate
from ..model import model_info
from ..predictors.registry import available_predictors, predictor_from_spec, sweep_values
from ..report import write_report
from ..store import ArtifactStore, resolve_predictor
from . import engine as engines
from .distributed import evaluate_sharded
from .engine import Engine
from .extract import extract

__all__ = ["add_arguments", "at_recall_target", "build_candidates", "dataset_for_corpus", "run"]


def dataset_for_corpus(corpus: str | Path, *, model: str | None, max_length: int, alpha: float,
                       limit: int | None, engine: Engine | None = None) -> GoldDataset:
    """Extract ``corpus`` into the work folder (cached by corpus content, model, α, L and limit)."""
    sha = check_corpus(corpus).sha256
    info = model_info(model)
    name = f"{Path(corpus).stem}-{sha[:12]}-{info.id.split('@')[-1]}-L{max_length}-a{alpha:g}-n{limit or 'all'}"
    return extract(corpus, get_settings().work_dir / "datasets" / name, model=model, max_length=max_length,
                   alpha=alpha, limit=limit, engine=engine)


def check_compatible(fit: GoldDataset, data: GoldDataset) -> None:
    """Raise a user error unless both datasets come from the same model and α."""
    if fit.model_id != data.model_id or fit.alpha != data.alpha:
        raise SparsefinderError(
            f"fit data ({fit.model_id}, alpha {fit.alpha}) and evaluation data ({data.model_id}, alpha {data.alpha}) "
            "come from different models or alphas")


def _fit_candidate(spec: str, fit_data: GoldDataset | None, progress: bool) -> Candidate:
    predictor = predictor_from_spec(spec)
    if predictor.learns and fit_data is None:
        raise SparsefinderError(f"no stored artifact for {spec!r}: fit it first ('sparsefinder fit') or pass --fit-data")
    t0 = time.perf_counter()
    predictor.fit(fit_data, progress=progress)
    return Candidate(predictor, sweep_values(spec), fit_seconds=time.perf_counter() - t0 if predictor.learns else None)


def build_candidates(specs: list[str], data: GoldDataset, *, store: ArtifactStore | None = None,
                     fit_data: GoldDataset | None = None, progress: bool = True) -> list[Candidate]:
    """Ready candidates for ``specs``: artifact ids, specs of stored or stateless predictors, or
    learned specs fitted on ``fit_data``. ``all`` means every stored artifact compatible with
    ``data``, every stateless predictor and, given ``fit_data``, every learned family not stored.
    """
    candidates: list[Candidate] = []
    names = list(dict.fromkeys(s for s in specs if s != "all"))
    if "all" in specs:
        stored = [i for i in (store.list() if store is not None else [])
                  if i.model_id == data.model_id and i.alpha == data.alpha]
        names += [i.id for i in stored]
        stored_families = {i.spec for i in stored}
        for cls in available_predictors().values():
            family = cls().family_spec
            if not cls.learns:
                names.append(family)
            elif fit_data is not None and family not in stored_families:
                names.append(family)
    for name in dict.fromkeys(names):
        try:
            predictor = resolve_predictor(name, store, model_id=data.model_id, alpha=data.alpha)
        except NotFoundError:
            candidates.append(_fit_candidate(name, fit_data, progress))
            continue
        artifact = getattr(predictor, "artifact_", None)
        values = sweep_values(predictor.family_spec) if artifact is not None and artifact.id.startswith(name) \
            else sweep_values(name)
        candidates.append(Candidate(predictor, values, artifact_id=artifact.id if artifact else None,
                                    fit_seconds=artifact.fit_seconds if artifact else None))
    return candidates


def at_recall_target(candidates: list[Candidate], recall: float) -> list[Candidate]:
    """The candidates with every recall-calibrated predictor set to ``recall`` instead of swept."""
    recall = check_recall(recall, "--recall")
    for c in candidates:
        if c.predictor.knob == RECALL_KNOB:
            c.predictor.set_params(recall=recall)
            c.values = [recall]
    return candidates


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
    engines.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise SparsefinderError(f"--limit must be at least 1, got {args.limit}")
    engine = Engine.from_args(args)
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
