"""``sparsefinder fit``: fit a predictor on an extracted dataset and store it as an artifact."""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from ..config import get_settings
from ..dataset import GoldDataset, Sequence
from ..errors import SparsefinderError
from ..predictors.base import predictor_from_spec
from ..store import ArtifactInfo, ArtifactStore

__all__ = ["add_arguments", "fit", "run"]


class _FirstSequences:
    """A dataset view that yields only its first ``limit`` sequences (manifest shared)."""

    def __init__(self, dataset: GoldDataset, limit: int) -> None:
        self._dataset = dataset
        self._limit = limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dataset, name)

    def __len__(self) -> int:
        return min(len(self._dataset), self._limit)

    def sequences(self, limit: int | None = None) -> Iterator[Sequence]:
        return self._dataset.sequences(self._limit if limit is None else min(limit, self._limit))


def fit(data: str, predictor: str, store: str | None = None, limit: int | None = None,
        progress: bool = False) -> ArtifactInfo:
    """Fit ``predictor`` (a spec) on the dataset folder ``data`` and save it in ``store``.

    Returns the stored artifact's info (an identical fit returns the existing artifact).
    """
    if limit is not None and limit < 1:
        raise SparsefinderError(f"--limit must be at least 1, got {limit}")
    model = predictor_from_spec(predictor)
    dataset: Any = GoldDataset(data)
    if limit is not None:
        dataset = _FirstSequences(dataset, limit)
    start = time.perf_counter()
    model.fit(dataset, progress=progress)
    seconds = time.perf_counter() - start
    metrics = model.fit_metrics() if hasattr(model, "fit_metrics") else {}
    target = ArtifactStore(store or get_settings().store)
    return target.save(model, dataset=dataset, fit_seconds=seconds, fit_metrics=metrics)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder from 'sparsefinder extract'")
    parser.add_argument("--predictor", required=True, help="predictor spec, e.g. proj8-score-knn64 or proj4-kmeans16")
    parser.add_argument("--store", default=None, help="artifact store: folder or fsspec URL (default: settings)")
    parser.add_argument("--limit", type=int, default=None, help="fit on the first N sequences only")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or loss log")


def run(args: argparse.Namespace) -> int:
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    info = fit(args.data, args.predictor, args.store, args.limit, progress=not args.quiet)
    print(json.dumps({"id": info.id, "spec": info.spec, "fit_seconds": info.fit_seconds,
                      "fit_sequences": info.fit_sequences}))
    return 0
