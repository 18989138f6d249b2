"""Fitting predictors on an extracted dataset and storing them as artifacts (``sparsefinder fit``)."""

from __future__ import annotations

import time
from pathlib import Path

from ..choice import set_recall_target
from ..config import get_settings
from ..dataset import GoldDataset
from ..errors import SparsefinderError
from ..predictors.base import Predictor
from ..predictors.registry import predictor_from_spec
from ..store import ArtifactInfo, ArtifactStore
from .engine import Engine, absolute

__all__ = ["fit", "fit_all"]


def fit(data: GoldDataset | str | Path, predictor: Predictor | str, store: ArtifactStore | str | None = None,
        limit: int | None = None, progress: bool = False, recall: float | None = None) -> ArtifactInfo:
    """Fit ``predictor`` (an unfitted predictor or a spec) on ``data`` and save it in ``store``.

    ``data`` is a dataset or its folder (``limit`` applies to a folder), ``store`` a store or its
    URL (default: the settings'). ``recall`` sets the stored recall target of a recall-calibrated
    predictor (its default knob). Returns the stored artifact's info (an identical fit returns the
    existing artifact).
    """
    if limit is not None and limit < 1:
        raise SparsefinderError(f"--limit must be at least 1, got {limit}")
    model = predictor_from_spec(predictor) if isinstance(predictor, str) else predictor
    if recall is not None:
        set_recall_target(model, recall)
    dataset = data if isinstance(data, GoldDataset) else GoldDataset(data, limit=limit)
    start = time.perf_counter()
    model.fit(dataset, progress=progress)
    seconds = time.perf_counter() - start
    metrics = model.fit_metrics() if hasattr(model, "fit_metrics") else {}
    target = store if isinstance(store, ArtifactStore) else ArtifactStore(store or get_settings().store)
    return target.save(model, dataset=dataset, fit_seconds=seconds, fit_metrics=metrics)


def fit_all(engine: Engine, data: str | Path, specs: list[str], store: str, *, limit: int | None = None,
            progress: bool = True, recall: float | None = None) -> list[ArtifactInfo]:
    """Fit every spec on the dataset folder ``data`` into ``store``: one call (a Ray task) per spec.

    Artifact ids are content hashes, so both engines store the same artifacts.
    """
    local = not engine.is_ray
    calls = [(absolute(data), spec, absolute(store), limit, progress and local, recall) for spec in specs]
    return engine.map(fit, calls, desc="fit", progress=progress and not local, unit="predictor")
