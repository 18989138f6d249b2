"""``sparsefinder pipeline``: the main job, end to end on the default data.

Adapt the encoder to α-entmax once (``sparsefinder adapt``, cached; skipped with ``--no-adapt``
or when ``--model`` or ``$SPARSEFINDER_MODEL`` names an encoder), extract the fit corpus
(WikiText-2 ``valid.txt``) and the evaluation corpus (``test.txt``) with it,
fit the configured learned predictors into the store (skipping families already stored
for the same data), evaluate every stored predictor and every baseline on the
evaluation corpus, and write the report. Every step is cached, so a second run only
redoes what changed: the report is kept when it was written by this version of sparsefinder on the
same evaluation dataset for the same predictors (artifact ids and knob values). With ``--serve`` the service starts afterwards on the results and model.
With ``--long`` a second report is made the same way at 4,096 tokens, on the encoder that
``distil-long`` trains from the adapted one (cached too).
With ``--engine ray`` the extractions, fits and the evaluation run on Ray (the one-off
adaptation stays in this process); the results are the local engine's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..config import get_settings
from ..predictors.registry import predictor_from_spec
from ..evaluation import Candidate
from ..errors import SparsefinderError
from ..report import load_report, write_report
from ..version import __version__
from ..store import ArtifactStore
from .distributed import evaluate_sharded
from .engine import Engine
from .evaluate import build_candidates, dataset_for_corpus
from .fit import fit_all

__all__ = ["pipeline"]


def pipeline(fit_corpus: Path, eval_corpus: Path, *, specs: list[str], max_length: int, fit_sequences: int,
             eval_sequences: int, store_url: str, reports: Path, model: str | None = None,
             engine: Engine | None = None, evaluate: list[str] | None = None) -> Path:
    """Run the main job on ``engine`` (default: this process); returns the report folder.

    ``evaluate`` names what the report compares (default ``["all"]``: every stored predictor of the
    model and every baseline).
    """
    settings = get_settings()
    engine = engine or Engine()
    fit_data = dataset_for_corpus(fit_corpus, model=model, max_length=max_length, alpha=settings.alpha,
                                  limit=fit_sequences, engine=engine)
    eval_data = dataset_for_corpus(eval_corpus, model=model, max_length=max_length, alpha=settings.alpha,
                                   limit=eval_sequences, engine=engine)
    store = ArtifactStore(store_url)
    stored = {i.spec for i in store.list() if i.fitted_on(fit_data)}  # a family fitted on other data is fitted again
    todo = []
    for spec in specs:
        family = predictor_from_spec(spec).family_spec
        if family in stored:
            tqdm.write(f"{family}: already in the store")
        else:
            todo.append(spec)
    for info in fit_all(engine, fit_data.folder, todo, store_url):
        tqdm.write(f"{info.spec}: fitted in {info.fit_seconds:.1f} s, stored as {info.id}")
    candidates = build_candidates(evaluate or ["all"], eval_data, store=store)
    model_name = eval_data.model_id.split("@")[0]
    out = reports / f"{eval_corpus.stem}-{model_name}-L{max_length}-n{eval_data.manifest['sequences']}"
    if report_is_current(out, eval_data.folder, candidates):
        tqdm.write(f"report {out.name}: already written for this dataset and these predictors (remove it to evaluate "
                   "again)")
        return out
    return write_report(evaluate_sharded(engine, eval_data, candidates), out)


def report_is_current(out: Path, dataset: Path, candidates: list[Candidate]) -> bool:
    """Whether ``out`` holds a report written by this version of sparsefinder on ``dataset`` for exactly
    ``candidates`` (the same predictors, artifact ids and knob values, in order)."""
    try:
        report = load_report(out.parent, out.name)
        written = [(p["spec"], p["artifact_id"], [s["knob_value"] for s in p["settings"]]) for p in report["predictors"]]
        same_data = Path(report["dataset"]["path"]).name == dataset.name
        version = report["sparsefinder_version"]
    except (SparsefinderError, KeyError, TypeError):  # absent (NotFoundError is one), corrupt, or of an older layout
        return False
    wanted: list[Any] = [(c.predictor.family_spec, c.artifact_id, list(c.settings())) for c in candidates]
    return same_data and version == __version__ and json.loads(json.dumps(wanted)) == json.loads(json.dumps(written))
