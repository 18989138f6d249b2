"""Extraction, fitting and evaluation split into shards, and the shards merged back exactly.

- Evaluation: :func:`evaluate_sharded` gives each task a :class:`SequenceRange` of the
  dataset and runs :func:`sparsefinder.evaluation.evaluate` on it; :func:`merge_reports`
  turns the per-range reports into the report of the whole range. Per-(layer, head)
  numbers are macro averages over sequences, so they merge as sequence-weighted means;
  headline numbers, Pareto fronts and summaries are recomputed from the merged values,
  prediction times are summed.
- Extraction with Ray Data (:func:`extract_shards`): the corpus is read and tokenized by
  ``read_text`` → ``map_batches``; the token stream is packed into sequences on the driver
  (packing carries text over sequence boundaries, so it is sequential, and cheap); groups
  of ``SHARD_SEQUENCES`` sequences go to encoder actors (one model replica per actor) that
  write each shard through fsspec, atomically, into the dataset's temporary folder. The
  groups and the encoder batches inside them are those of the local engine, so the shards
  are the same. Ray Data restarts a dead actor and reruns its call (its default for actor
  pools); a rerun rewrites the same shard under the same name.

Nothing here imports Ray at module level; the local engine takes the plain paths.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import logging
import tempfile
import uuid
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from ..hf.attention import DENSE_ENTMAX
from ..capture import capture
from ..config import DISTRIBUTED_EVAL_SEQUENCES, SHARD_SEQUENCES, TOKENIZE_LINES
from ..corpus import pack_token_ids
from ..dataset import MANIFEST, ExtractTotals, GoldDataset, ShardWriter
from ..errors import SparsefinderError
from ..evaluation import Candidate, evaluate, pareto_front, summarise_curve
from ..model import load_encoder, model_info
from .engine import Engine, absolute

__all__ = ["SequenceRange", "evaluate_sharded", "extract_shards", "merge_reports", "sequence_ranges"]

SETTING_METRICS = ("recall", "sparsity", "precision")


# ------------------------------------------------------------------------------------ evaluation
class SequenceRange(GoldDataset):
    """Sequences ``start`` (included) to ``stop`` (excluded) of a dataset folder, read like a dataset.

    Only the shards that hold the range are read.
    """

    def __init__(self, folder: str | Path, start: int, stop: int) -> None:
        super().__init__(folder)
        total = int(self.manifest["sequences"])
        if not 0 <= start < stop <= total:
            raise SparsefinderError(f"sequence range {start}:{stop} is outside the dataset's 0:{total}")
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def sequences(self, limit: int | None = None) -> Iterator:
        count = len(self) if limit is None else min(limit, len(self))
        whole = GoldDataset(self.folder)
        skipped, shards = 0, list(whole.manifest["shards"])
        while shards and skipped + shards[0]["sequences"] <= self.start:
            skipped += shards.pop(0)["sequences"]
        whole.manifest = {**whole.manifest, "shards": shards}
        return islice(whole.sequences(), self.start - skipped, self.start - skipped + count)

    def __repr__(self) -> str:
        return f"SequenceRange({str(self.folder)!r}, {self.start}, {self.stop})"


def sequence_ranges(total: int, size: int) -> list[tuple[int, int]]:
    """``[(0, size), (size, 2 size), …]`` covering ``range(total)``."""
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _weighted_mean(values: list[Any], weights: list[int]) -> torch.Tensor:
    total = sum(weights)
    return sum(torch.tensor(v, dtype=torch.float64) * w for v, w in zip(values, weights)) / total


def merge_reports(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The report of the union of disjoint sequence ranges, from the reports of each range.

    Parameters
    ----------
    parts : list of dict
        Reports of :func:`~sparsefinder.evaluation.evaluate` on disjoint sequence ranges of one
        dataset with the same candidates, in any order. A single part is returned as is.
    """
    if not parts:
        raise SparsefinderError("no shard reports to merge")
    if len(parts) == 1:
        return parts[0]
    weights = [int(p["dataset"]["sequences"]) for p in parts]
    total = sum(weights)
    out = copy.deepcopy(parts[0])
    out["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    out["dataset"]["sequences"] = total
    gold = _weighted_mean([p["gold"]["per_head"]["gold_sparsity"] for p in parts], weights)
    out["gold"] = {"sparsity": float(gold.mean()), "per_head": {"gold_sparsity": gold.tolist()}}
    for j, entry in enumerate(out["predictors"]):
        for k, setting in enumerate(entry["settings"]):
            shard_settings = [p["predictors"][j]["settings"][k] for p in parts]
            for metric in SETTING_METRICS:
                per_head = _weighted_mean([s["per_head"][metric] for s in shard_settings], weights)
                setting["per_head"][metric] = per_head.tolist()
                setting[metric] = float(per_head.mean())
            seconds = sum(s["predict_seconds_per_sequence"] * w for s, w in zip(shard_settings, weights))
            setting["predict_seconds_per_sequence"] = seconds / total
        points = [(s["sparsity"], s["recall"]) for s in entry["settings"]]
        entry["pareto"] = pareto_front(points)
        entry["summary"] = summarise_curve(points)
    return out


def _evaluate_range(folder: str, start: int, stop: int, candidates: list[Candidate]) -> dict[str, Any]:
    return evaluate(SequenceRange(folder, start, stop), candidates, progress=False)


def evaluate_sharded(engine: Engine, dataset: GoldDataset, candidates: list[Candidate], *, limit: int | None = None,
                     progress: bool = True, shard_sequences: int = DISTRIBUTED_EVAL_SEQUENCES) -> dict[str, Any]:
    """The report of :func:`~sparsefinder.evaluation.evaluate`, computed by ``engine``.

    The local engine evaluates in this process; the Ray engine runs one task per
    ``shard_sequences`` sequences and merges their reports with :func:`merge_reports`.
    """
    if not engine.is_ray:
        return evaluate(dataset, candidates, limit=limit, progress=progress)
    if not (dataset.folder / MANIFEST).is_file():
        raise SparsefinderError("the Ray engine evaluates extracted dataset folders only")
    total = len(dataset) if limit is None else min(limit, len(dataset))
    ranges = sequence_ranges(total, shard_sequences)
    shared = engine.connect().put(candidates)
    folder = absolute(dataset.folder)
    parts = engine.map(_evaluate_range, [(folder, a, b, shared) for a, b in ranges], desc="evaluate",
                       progress=progress, sizes=[b - a for a, b in ranges], unit="seq")
    report = merge_reports(parts)
    report["dataset"]["path"] = str(dataset.folder)
    return report


# ------------------------------------------------------------------------------------ extraction
def _chunks(items: Iterator[Any] | list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    items = iter(items)
    while chunk := list(islice(items, size)):
        yield chunk


def _tokenize(batch: dict[str, np.ndarray], model_path: str) -> dict[str, np.ndarray]:
    """Ray Data batch: corpus lines → JSON token-id lists of the non-blank lines (no special tokens)."""
    tokenizer = _tokenizer(model_path)
    texts = [line.strip() for line in batch["text"] if line.strip()]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return {"ids": np.array([json.dumps(i) for i in ids], dtype=object)}


@functools.cache
def _tokenizer(model_path: str) -> Any:
    """The model's tokenizer, loaded once per worker process."""
    return AutoTokenizer.from_pretrained(model_path)


class _ShardEncoder:
    """Ray Data actor: one encoder replica; encodes a group of sequences and writes it as one shard."""

    def __init__(self, model: str | None, alpha: float, folder: str, batch_size: int) -> None:
        self.encoder = load_encoder(model, attn_implementation=DENSE_ENTMAX)[0]
        self.alpha, self.batch_size = alpha, batch_size
        self.fs, self.root = fsspec.core.url_to_fs(folder)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for index, ids in zip(batch["index"], batch["ids"]):
            sequences = json.loads(ids)
            with tempfile.TemporaryDirectory() as scratch:
                writer = ShardWriter(Path(scratch), len(sequences))
                sparsity = []
                for chunk in _chunks(sequences, self.batch_size):
                    for seq in capture(self.encoder, list(chunk), self.alpha):
                        writer.add(seq)
                        sparsity.append(seq.gold_sparsity().double().tolist())
                writer.flush()
                (entry,) = writer.shards
                blob = (Path(scratch) / entry["file"]).read_bytes()
            entry["file"] = f"shard-{int(index):05d}.safetensors"
            self._write(entry["file"], blob)
            out.append(json.dumps({"index": int(index), "entry": entry, "sparsity": sparsity,
                                   "lengths": [len(s) for s in sequences]}))
        return {"shard": np.array(out, dtype=object)}

    def _write(self, name: str, blob: bytes) -> None:
        """Write under a temporary name, then move into place: a killed attempt leaves no partial shard."""
        tmp = f"{self.root}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
        self.fs.pipe_file(tmp, blob)
        self.fs.mv(tmp, f"{self.root}/{name}")


def _token_stream(ray: Any, corpus: str, model_path: str) -> Iterator[list[int]]:
    lines = ray.data.read_text(corpus)
    tokens = lines.map_batches(_tokenize, fn_kwargs={"model_path": model_path},
                               batch_size=TOKENIZE_LINES)
    for batch in tokens.iter_batches(batch_size=TOKENIZE_LINES):
        for ids in batch["ids"]:
            yield json.loads(ids)


def extract_shards(engine: Engine, corpus: str | Path, folder: Path, *, model: str | Path | None, max_length: int,
                   alpha: float, limit: int | None, batch_size: int, totals: ExtractTotals,
                   progress: bool) -> list[dict]:
    """Encode the corpus on Ray and write its shards into ``folder``; returns the shard entries in order.

    ``totals`` gets every sequence in corpus order, as the local engine adds them.
    """
    if SHARD_SEQUENCES % batch_size:
        raise SparsefinderError(f"the Ray engine needs the extraction batch ({batch_size}) to divide the shard size "
                                f"({SHARD_SEQUENCES}), so that it encodes the same batches as the local engine")
    ray = engine.connect()
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    model_path = model_info(model).path
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokens = _token_stream(ray, absolute(corpus), model_path)
    try:  # with a limit, the rest of the corpus is not tokenized: closing the stream stops its Ray Data job
        stream = pack_token_ids(tokens, tokenizer.cls_token_id, tokenizer.sep_token_id, max_length)
        groups = [{"index": i, "ids": json.dumps(group)}
                  for i, group in enumerate(_chunks(islice(stream, limit), SHARD_SEQUENCES))]
    finally:
        tokens.close()
    encoder_args = {"model": None if model is None else absolute(model), "alpha": alpha,
                    "folder": absolute(folder), "batch_size": batch_size}
    shards = ray.data.from_items(groups).map_batches(
        _ShardEncoder, fn_constructor_kwargs=encoder_args, batch_size=1, num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=min(engine.workers(), len(groups))))
    results = []
    with tqdm(total=sum(len(json.loads(g["ids"])) for g in groups), unit="seq",
              desc=f"extract {Path(corpus).name} (ray)", disable=not progress) as bar:
        for row in shards.iter_rows():
            result = json.loads(row["shard"])
            results.append(result)
            bar.update(result["entry"]["sequences"])
    results.sort(key=lambda r: r["index"])
    if [r["index"] for r in results] != list(range(len(groups))):
        raise SparsefinderError(f"Ray extraction returned shards {[r['index'] for r in results]}, "
                                f"expected 0..{len(groups) - 1}")
    for result in results:
        for sparsity, length in zip(result["sparsity"], result["lengths"]):
            totals.add(torch.tensor(sparsity, dtype=torch.float64), length)
    return [r["entry"] for r in results]

