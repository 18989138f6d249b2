"""``sparsefinder fit``: fit a predictor on an extracted dataset and store it as an artifact."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ..choice import set_recall_target
from ..config import get_settings
from ..dataset import GoldDataset
from ..errors import SparsefinderError
from ..predictors.registry import predictor_from_spec
from ..store import ArtifactInfo, ArtifactStore
from . import engine as engines
from .engine import Engine, absolute

__all__ = ["add_arguments", "fit", "fit_all", "run"]


def fit(data: str, predictor: str, store: str | None = None, limit: int | None = None,
        progress: bool = False, recall: float | None = None) -> ArtifactInfo:
    """Fit ``predictor`` (a spec) on the dataset folder ``data`` and save it in ``store``.

    ``recall`` sets the stored recall target of a recall-calibrated predictor (its default knob).
    Returns the stored artifact's info (an identical fit returns the existing artifact).
    """
    if limit is not None and limit < 1:
        raise SparsefinderError(f"--limit must be at least 1, got {limit}")
    model = predictor_from_spec(predictor)
    if recall is not None:
        set_recall_target(model, recall)
    dataset = GoldDataset(data, limit=limit)
    start = time.perf_counter()
    model.fit(dataset, progress=progress)
    seconds = time.perf_counter() - start
    metrics = model.fit_metrics() if hasattr(model, "fit_metrics") else {}
    target = ArtifactStore(store or get_settings().store)
    return target.save(model, dataset=dataset, fit_seconds=seconds, fit_metrics=metrics)


def fit_all(engine: Engine, data: str | Path, specs: list[str], store: str, *, limit: int | None = None,
            progress: bool = True, recall: float | None = None) -> list[ArtifactInfo]:
    """Fit every spec on the dataset folder ``data`` into ``store``: one call (a Ray task) per spec.

    Artifact ids are content hashes, so both engines store the same artifacts.
    """
    local = not engine.is_ray
    calls = [(absolute(data), spec, absolute(store), limit, progress and local, recall) for spec in specs]
    return engine.map(fit, calls, desc="fit", progress=progress and not local, unit="predictor")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder from 'sparsefinder extract'")
    parser.add_argument("--predictor", "--predictors", nargs="+", required=True, metavar="SPEC",
                        help="predictor specs, e.g. proj8-score-knn64 proj4-kmeans16 (one Ray task each)")
    parser.add_argument("--store", default=None, help="artifact store: folder or fsspec URL (default: settings)")
    parser.add_argument("--limit", type=int, default=None, help="fit on the first N sequences only")
    parser.add_argument("--recall", type=float, default=None,
                        help="stored recall target of a recall-calibrated predictor (proj-threshold), e.g. 0.99")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or loss log")
    engines.add_arguments(parser)


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
    infos = fit_all(Engine.from_args(args), args.data, args.predictor, args.store or get_settings().store,
                    limit=args.limit, progress=not args.quiet, recall=args.recall)
    for info in infos:
        print(json.dumps({"id": info.id, "spec": info.spec, "fit_seconds": info.fit_seconds,
                          "fit_sequences": info.fit_sequences}))
    return 0
