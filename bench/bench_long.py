"""Whole-model encode of long WikiText-2 documents (issue 13, first measurements), run by hand.

The encoder with its position table extended by copying (``sparsefinder extend-positions``; no
distillation at the new length yet) embeds ``--docs`` documents of ``--tokens`` tokens (consecutive
``test.txt`` paragraphs joined) with SDPA softmax, dense α-entmax, the ``exact`` mode (dense α-entmax
by the certified route from an empty pattern) — or the ``--modes`` named — and each ``--predictor``
on the sparse path (its prediction included) and in certified mode. Prints ms per document (median
of ``--repeats``), how many times faster than each reference mode already run (``x_dense``, ``x_softmax``,
``x_softmax-all``: same process, same documents), cosine to dense entmax, sparsity, and the process's peak RSS so far after each
mode (run one mode per process to read each mode's own peak). Stored predictors are loaded by id. A banded
model (``sparsefinder_attention_window``) runs every mode within its band; ``softmax-all`` reads it with softmax
over every key, as the original model would.

    python bench/bench_long.py --model /tmp/long4k --tokens 4096 --predictor window16 \\
        --stored proj24-thr-<id> --store artifacts/store
    python bench/bench_long.py --model /tmp/long16k --tokens 16384 --docs 1 --modes exact   # one mode's peak
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from sparsefinder.attention import cpu_rows
from sparsefinder.config import MODEL_DTYPES, default_data_dir
from sparsefinder.encoder import SparseEncoder
from sparsefinder.hf.attention import CONFIG_WINDOW, window_of
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.store import ArtifactStore


def documents(tokenizer, count: int, tokens: int) -> list[str]:
    """``count`` texts of ``tokens`` tokens: consecutive non-heading ``test.txt`` paragraphs joined."""
    out, ids = [], []
    for line in (default_data_dir() / "test.txt").read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if not text or text.startswith("="):
            continue
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= tokens - 2:
            out.append(tokenizer.decode(ids[:tokens - 2]))
            ids = []
            if len(out) == count:
                break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="extended encoder folder")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--docs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--predictor", action="append", default=[], help="spec of a predictor that learns nothing")
    parser.add_argument("--stored", action="append", default=[], help="id of a stored predictor (with --store)")
    parser.add_argument("--store", default="artifacts/store")
    parser.add_argument("--modes", default="softmax,dense,exact",
                        help="comma-separated reference modes to run, of softmax, softmax-all (a banded model's softmax "
                             "over every key), dense, exact ('' for none; dense is slow and needs n² memory at long "
                             "lengths)")
    parser.add_argument("--dtype", choices=MODEL_DTYPES, default="float32",
                        help="precision of the model's dense layers and softmax (α-entmax attention computes in float32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu_rows.warm_up()  # compile (or load) the row kernels before anything is timed
    encoder = SparseEncoder(args.model, device="cpu", dtype=args.dtype)
    texts = documents(encoder.tokenizer, args.docs, args.tokens)
    labels = {"softmax": "softmax (SDPA)", "softmax-all": "softmax (SDPA), every key", "dense": "dense entmax",
              "exact": "exact"}
    chosen = [m for m in args.modes.split(",") if m]
    if unknown := [m for m in chosen if m not in labels]:
        parser.error(f"--modes: unknown {', '.join(unknown)} (choose from {', '.join(labels)})")
    modes = [(labels[m], m, False) for m in labels if m in chosen]
    band = window_of(encoder.model.config)
    predictors = [predictor_from_spec(spec).fit(None) for spec in args.predictor]
    predictors += [ArtifactStore(args.store).load(artifact) for artifact in args.stored]
    for predictor in predictors:
        modes += [(predictor.spec, predictor, False), (f"{predictor.spec} certified", predictor, True)]
    print(json.dumps({"model": encoder.info.id, "dtype": args.dtype, "tokens": args.tokens, "docs": len(texts),
                      "threads": args.threads}))
    reference, baselines = None, {}
    with torch.inference_mode():
        for label, mode, certified in modes:
            times, result = [], None
            # a banded model read as if it saw every key: the original model's attention over the whole document
            setattr(encoder.model.config, CONFIG_WINDOW, 0 if mode == "softmax-all" else band)
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = [encoder.encode([t], "softmax" if mode == "softmax-all" else mode, certified=certified)
                          for t in texts]
                times.append((time.perf_counter() - start) / len(texts))
            setattr(encoder.model.config, CONFIG_WINDOW, band)
            emb = torch.cat([r.embeddings for r in result])
            if mode == "dense":
                reference = emb
            cosine = float((emb * reference).sum(-1).min()) if reference is not None else None
            sparsity = statistics.mean(statistics.mean(r.sparsity) for r in result)
            ms = statistics.median(times) * 1000
            if mode in ("dense", "softmax", "softmax-all"):
                baselines[mode] = ms
            speedups = {f"x_{name}": round(base / ms, 2) for name, base in baselines.items() if name != mode}
            print(json.dumps({"mode": label, "ms_per_doc": round(ms, 1), **speedups, "cosine_to_dense_min": cosine,
                              "sparsity": round(sparsity, 4),
                              "peak_rss_mib_so_far": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}),
                  flush=True)


if __name__ == "__main__":
    main()
