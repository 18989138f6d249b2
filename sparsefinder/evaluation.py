"""Evaluating predictors against gold graphs: recall–sparsity curves (method.md §3).

:func:`evaluate` streams a dataset once, a chunk of sequences at a time, layer by layer; for
every predictor it predicts the patterns of all knob values in one sweep, compares each with the
gold graph (a dense mask built once per batch and layer, read by one gather per kept pair)
and accumulates macro averages per (layer, head). Predictors whose pattern depends only on the
layer and the sequence lengths (:attr:`~sparsefinder.predictors.base.Predictor.positional`: fixed
windows, BigBird, Longformer, Attention Pruning, …) predict once per layer and length in a chunk,
not once per sequence. The result is the report dictionary written by
:mod:`sparsefinder.report` (schema in that module's docstring).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Any

from torch import Tensor

from tqdm.auto import tqdm

from .version import __version__
from .config import EVAL_BATCH, EVAL_CHUNK, EVAL_CHUNK_PAIRS, EVAL_SWEEP_PAIRS
from .dataset import GoldDataset, Sequence, batch_inputs
from .inputs import AttentionInputs
from .metrics import MetricsAccumulator, compare
from .pattern import Pattern
from .predictors.base import Predictor

__all__ = ["Candidate", "evaluate", "pareto_front", "summarise_curve"]

AVERAGING = "macro: per (layer, head) averaged over sequences; headline numbers are the mean over all (layer, head)"
RECALL_LEVELS = (0.95, 0.99)
#: The knob name of predictors calibrated to a recall target: their settings carry ``requested_recall``.
RECALL_KNOB = "recall"


@dataclass
class Candidate:
    """A fitted predictor to evaluate, with the knob values to sweep (``None``: its current setting only)."""

    predictor: Predictor
    values: list[Any] | None = None
    artifact_id: str | None = None
    fit_seconds: float | None = None
    _accumulators: list[MetricsAccumulator] = field(default_factory=list, repr=False)
    _seconds: list[float] = field(default_factory=list, repr=False)
    _predicted: int = field(default=0, repr=False)
    """Sequence-layers actually predicted (positional patterns are reused across a chunk)."""

    def settings(self) -> list[Any]:
        knob = self.predictor.knob
        if knob is None or self.values is None:
            return [getattr(self.predictor, knob) if knob else None]
        return list(self.values)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(sparsity, recall)`` points, by increasing sparsity."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best = [], -1.0
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def summarise_curve(points: list[tuple[float, float]]) -> dict[str, float | None]:
    """Numbers read off a curve of ``(sparsity, recall)`` points.

    ``sparsity_at_recall_X``: the largest measured sparsity with recall ≥ X (``None`` if no
    point reaches X). ``auc``: area under the attainable curve ``s ↦ max{recall_i : sparsity_i ≥ s}``
    over ``[0, 1]``, with the full pattern ``(0, 1)`` always attainable.
    """
    out: dict[str, float | None] = {}
    for level in RECALL_LEVELS:
        ok = [s for s, r in points if r >= level]
        out[f"sparsity_at_recall_{level}"] = max(ok) if ok else None
    pts = set(points) | {(0.0, 1.0)}
    area, prev = 0.0, 0.0
    for x in sorted({s for s, _ in pts}):
        area += (x - prev) * max(r for s, r in pts if s >= x)
        prev = x
    out["auc"] = area
    return out


def _batches(dataset: GoldDataset, limit: int | None, size: int) -> Iterator[list[Sequence]]:
    batch: list[Sequence] = []
    for seq in dataset.sequences(limit):
        batch.append(seq)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate(dataset: GoldDataset, candidates: list[Candidate], *, limit: int | None = None,
             progress: bool = True, batch_size: int = EVAL_BATCH, chunk: int = EVAL_CHUNK) -> dict[str, Any]:
    """Evaluate every candidate setting on up to ``limit`` sequences of ``dataset``; return the report dict.

    ``chunk`` sequences (fewer when long: :data:`~sparsefinder.config.EVAL_CHUNK_PAIRS`) are read at a
    time and evaluated layer by layer, ``batch_size`` sequences
    per prediction; per batch and layer the gold graph becomes a dense mask once, each candidate
    predicts all its knob values in one
    :meth:`~sparsefinder.predictors.base.Predictor.predict_sweep` (a positional predictor once per
    layer and lengths in the chunk), and every pattern is scored against the mask with one gather
    per kept pair. A candidate's prediction time is split evenly over its knob values and counted
    per prediction actually made.
    """
    layers, heads = dataset.num_layers, dataset.num_heads
    chunk = max(1, min(chunk, EVAL_CHUNK_PAIRS // dataset.max_length**2))
    gold_acc = MetricsAccumulator(layers, heads)
    for c in candidates:
        c._accumulators = [MetricsAccumulator(layers, heads) for _ in c.settings()]
        c._seconds = [0.0 for _ in c.settings()]
        c._predicted = 0
    total = min(len(dataset), limit) if limit is not None else len(dataset)
    sequences = 0
    bar = tqdm(total=total, unit="seq", desc="evaluate", disable=not progress)
    for sequences_read in _batches(dataset, limit, max(chunk, batch_size)):
        batches = [sequences_read[i:i + batch_size] for i in range(0, len(sequences_read), batch_size)]
        for layer in range(layers):
            golds = []
            for batch in batches:
                inputs, gold = batch_inputs(batch, layer, dataset.attention_window)
                golds.append((inputs, gold, gold.to_dense()))
                gold_acc.add(layer, compare(gold, gold, golds[-1][2]))
            for c in candidates:
                _evaluate_layer(c, layer, golds)
        sequences += len(sequences_read)
        bar.update(len(sequences_read))
    bar.close()
    gold_per_head = gold_acc.per_head()["gold_sparsity"]
    return {
        "id": None,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "sparsefinder_version": __version__,
        "num_layers": layers,
        "num_heads": heads,
        "averaging": AVERAGING,
        "dataset": {
            "path": str(dataset.folder),
            "model_id": dataset.model_id,
            "alpha": dataset.alpha,
            "max_length": dataset.max_length,
            "sequences": sequences,
            "corpus_sha256": dataset.manifest.get("corpus", {}).get("sha256"),
        },
        "gold": {"sparsity": float(gold_per_head.mean()), "per_head": {"gold_sparsity": gold_per_head.tolist()}},
        "predictors": [_predictor_entry(c) for c in candidates],
    }


def _evaluate_layer(c: Candidate, layer: int, golds: list[tuple[AttentionInputs, Pattern, Tensor]]) -> None:
    """Add one layer of a chunk to ``c``'s accumulators: ``golds`` holds (inputs, gold, gold mask) per batch.

    A banded model's patterns are cut to its band (``inputs.band``), as its attention reads them."""
    values = c.settings()
    reused: dict[tuple, list[Pattern]] = {}
    for inputs, gold, gold_mask in golds:
        key = (inputs.length, tuple(inputs.lengths.tolist()))
        if c.predictor.positional and key in reused:
            for j, pattern in enumerate(reused[key]):
                c._accumulators[j].add(layer, compare(pattern, gold, gold_mask))
            continue
        c._predicted += inputs.batch_size
        if c.predictor.knob and inputs.batch_size * inputs.num_heads * inputs.length**2 > EVAL_SWEEP_PAIRS:
            for j, value in enumerate(values):  # long inputs: one knob value's pattern at a time
                t0 = time.perf_counter()
                (pattern,) = c.predictor.predict_sweep(inputs, [value])
                pattern = pattern.within(inputs.band)
                c._seconds[j] += time.perf_counter() - t0
                c._accumulators[j].add(layer, compare(pattern, gold, gold_mask))
                del pattern
            continue
        t0 = time.perf_counter()
        patterns = c.predictor.predict_sweep(inputs, values) if c.predictor.knob else [c.predictor.predict(inputs)]
        patterns = [p.within(inputs.band) for p in patterns]
        share = (time.perf_counter() - t0) / len(values)
        for j, pattern in enumerate(patterns):
            c._seconds[j] += share
            c._accumulators[j].add(layer, compare(pattern, gold, gold_mask))
        if c.predictor.positional:
            reused[key] = patterns


def _predictor_entry(c: Candidate) -> dict[str, Any]:
    p = c.predictor
    predicted = max(c._predicted, 1) / c._accumulators[0].num_layers  # sequences predicted (positional ones are reused)
    settings = []
    for value, acc, seconds in zip(c.settings(), c._accumulators, c._seconds):
        if p.knob is not None:
            p.set_params(**{p.knob: value})
        per_head = acc.per_head()
        mean = acc.mean()
        settings.append({
            "spec": p.spec,
            "knob_value": value,
            "recall": mean["recall"],
            "sparsity": mean["sparsity"],
            "precision": mean["precision"],
            "worst_head_recall": float(per_head["recall"].min()),
            "requested_recall": value if p.knob == RECALL_KNOB else None,
            "predict_seconds_per_sequence": seconds / predicted,
            "per_head": {m: per_head[m].tolist() for m in ("recall", "sparsity", "precision")},
        })
    points = [(s["sparsity"], s["recall"]) for s in settings]
    return {
        "spec": p.family_spec,
        "name": p.name,
        "artifact_id": c.artifact_id,
        "knob": p.knob,
        "description": p.description,
        "source": p.source,
        "reference": p.reference,
        "fit_seconds": c.fit_seconds,
        "settings": settings,
        "pareto": pareto_front(points),
        "summary": summarise_curve(points),
    }
