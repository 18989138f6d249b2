"""``sparsefinder evaluate``: every chosen predictor on the same gold graphs, one report.

The evaluation data is an extracted dataset (``--data``) or any plain-text corpus
(``--corpus``, extracted on the fly into the work folder and cached by content). Each
name is an artifact id of the store, a spec of a stored or stateless predictor, or a
learned spec fitted on ``--fit-data``; specs that leave the knob out are swept over the
predictor's grid. ``all`` means every stored predictor plus every baseline. Writes ``report.json``, ``report.csv``, ``pareto.png``/``.svg`` and
``pareto_layers.png`` into ``--out``.
"""

from __future__ import annotations

import time
from pathlib import Path


from ..config import get_settings
from ..corpus import check_corpus
from ..dataset import GoldDataset
from ..errors import NotFoundError, SparsefinderError
from ..choice import check_recall
from ..evaluation import RECALL_KNOB, Candidate
from ..model import model_info
from ..predictors.registry import available_predictors, predictor_from_spec, sweep_values
from ..store import ArtifactStore, resolve_predictor
from .engine import Engine
from .extract import extract

__all__ = ["at_recall_target", "build_candidates", "check_compatible", "dataset_for_corpus"]


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
            if not cls.learns and cls.in_reports:
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
