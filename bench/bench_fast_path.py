"""The predicted path against dense α-entmax and softmax, whole model and per layer (issues 11 and 12).

Real inputs: WikiText-2 ``test.txt`` paragraphs of at least ``--min-tokens`` tokens, cut to
``--max-tokens`` (at most the model's 512 positions), through the served model (default: the adapted entmax encoder). One
process; every mode runs on the same texts, modes interleaved within each repeat; the median
over ``--repeats`` is reported, with the thread count and the text lengths.

Whole model (``SparseEncoder.encode``, batch 1 and ``--batch``): ms per text for softmax (the
original model, SDPA), dense α-entmax, the ``exact`` mode (dense α-entmax by the certified route
from an empty pattern), each ``--predictor`` (its prediction included) and each
in certified mode; embedding cosine to dense entmax; the predicted pairs' recall against the
gold graph of the same texts (macro over heads, mean over layers) and their sparsity.
Per layer (``--breakdown``): where the time of one layer goes (dense entmax, SDPA, the certified
mode from an empty pattern — an exact dense entmax —, the predictor, the sparse compute, the
predictor's fused routes where it has them — prediction and sparse or certified compute in one pass a
row, as the model runs them —, the certified compute from a given pattern) on the captured queries/keys/values.
Peak RSS of the process is printed at the end.

    python bench/bench_fast_path.py --threads 2 --texts 16 --repeats 3 \\
        --predictor proj24-score-thr0.99-ep0 --predictor proj16-score-knn32-adapt-ep0 --breakdown
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch

from sparsefinder.alpha_entmax import entmax
from sparsefinder.attention.certified import certified_entmax_attention
from sparsefinder.attention.sparse import sparse_entmax_attention
from sparsefinder.capture import capture
from sparsefinder.choice import resolve_mode
from sparsefinder.config import DEFAULT_BATCH_TOKENS, MODEL_DTYPES, default_data_dir, get_settings
from sparsefinder.encoder import SparseEncoder
from sparsefinder.metrics import compare
from sparsefinder.pattern import Pattern


def wikitext_texts(tokenizer, count: int, min_tokens: int, max_tokens: int) -> list[str]:
    """The first ``count`` paragraphs of ``test.txt`` with at least ``min_tokens`` tokens, cut to ``max_tokens``."""
    out = []
    for line in (default_data_dir() / "test.txt").read_text(encoding="utf-8").splitlines():
        text = line.strip()
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text and not text.startswith("=") else []
        if len(ids) + 2 >= min_tokens:
            out.append(text if len(ids) + 2 <= max_tokens else tokenizer.decode(ids[:max_tokens - 2]))
            if len(out) == count:
                break
    return out


def median_ms(times: list[float], texts: int) -> float:
    return statistics.median(times) * 1000 / texts


def recall_and_sparsity(encoder: SparseEncoder, predictor, texts: list[str]) -> tuple[float, float, float]:
    """Mean recall, sparsity and gold sparsity of ``predictor`` on the gold graphs of ``texts`` (truncated)."""
    rec, sp, gold_sp = [], [], []
    for text in texts:
        ids = encoder.tokenizer(text, truncation=True, max_length=encoder.max_length)["input_ids"]
        seq = next(capture(encoder.model, [ids], encoder.alpha))
        for layer, gold in enumerate(seq.gold):
            m = compare(predictor.predict(seq.inputs(layer)), gold)
            rec.append(float(m["recall"].mean()))
            sp.append(float(m["sparsity"].mean()))
            gold_sp.append(float(m["gold_sparsity"].mean()))
    return statistics.mean(rec), statistics.mean(sp), statistics.mean(gold_sp)


def whole_model(encoder: SparseEncoder, modes: dict, texts: list[str], batch: int, repeats: int) -> dict:
    """Median ms per text of each mode, batches of ``batch`` texts, modes interleaved."""
    times: dict[str, list[float]] = {name: [] for name in modes}
    embeddings: dict[str, torch.Tensor] = {}
    for _ in range(repeats):
        for name, (mode, certified) in modes.items():
            start = time.perf_counter()
            parts = [encoder.encode(texts[i:i + batch], mode, certified=certified, truncate=True)
                     for i in range(0, len(texts), batch)]
            times[name].append(time.perf_counter() - start)
            embeddings[name] = torch.cat([p.embeddings for p in parts])
    dense = embeddings["dense entmax"]
    return {name: {"ms_per_text": round(median_ms(times[name], len(texts)), 1),
                   "cosine_to_dense_min": round(float((embeddings[name] * dense).sum(-1).min()), 6)}
            for name in modes}


def breakdown(encoder: SparseEncoder, predictors: dict, text: str, repeats: int) -> list[dict]:
    """Per layer: ms of dense entmax, SDPA, each predictor's prediction, sparse and certified compute."""
    ids = encoder.tokenizer(text, truncation=True, max_length=encoder.max_length)["input_ids"]
    seq = next(capture(encoder.model, [ids], encoder.alpha))
    rows = []

    def timed(fn) -> float:
        fn()
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return round(statistics.median(out) * 1000, 2)

    for layer in range(len(seq.gold)):
        q, k, v = (x[layer].float().unsqueeze(0).contiguous() for x in (seq.queries, seq.keys, seq.values))
        scale = q.shape[-1] ** -0.5
        row = {"layer": layer, "n": seq.length,
               "dense entmax": timed(lambda: entmax(q @ k.transpose(-1, -2) * scale, encoder.alpha) @ v),
               "sdpa softmax": timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)),
               "exact, empty pattern": timed(lambda: certified_entmax_attention(
                   q, k, v, Pattern.empty(q.shape[1], seq.length), encoder.alpha, keep_pattern=False))}
        inputs = seq.inputs(layer)
        for name, predictor in predictors.items():
            pattern = predictor.predict(inputs)
            row[f"{name} predict"] = timed(lambda: predictor.predict(inputs))
            row[f"{name} sparse"] = timed(lambda: sparse_entmax_attention(q, k, v, pattern, encoder.alpha))
            if predictor.attend_rows(inputs, v, encoder.alpha, scale) is not None:  # the routes the model runs
                row[f"{name} fused predict+sparse"] = timed(lambda: predictor.attend_rows(inputs, v, encoder.alpha,
                                                                                          scale))
                row[f"{name} fused certified"] = timed(lambda: predictor.attend_rows(inputs, v, encoder.alpha, scale,
                                                                                     certified=True))
            row[f"{name} certified"] = timed(lambda: certified_entmax_attention(q, k, v, pattern, encoder.alpha,
                                                                                keep_pattern=False))
            row[f"{name} keys/query"] = round(pattern.nnz / (pattern.num_heads * seq.length), 1)
            row[f"{name} added/query"] = round(float(certified_entmax_attention(q, k, v, pattern).keys_added.sum())
                                               / (pattern.num_heads * seq.length), 3)
        row["gold keys/query"] = round(seq.gold[layer].nnz / (seq.gold[layer].num_heads * seq.length), 1)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="encoder folder (default: the served default model)")
    parser.add_argument("--store", default=None, help="artifact store (default: settings)")
    parser.add_argument("--predictor", action="append", default=[], help="stored id or spec (repeatable)")
    parser.add_argument("--texts", type=int, default=16)
    parser.add_argument("--min-tokens", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=512, help="cut texts to this many tokens (special included)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                        help="padded tokens per forward pass (texts sorted by length; a larger value joins more)")
    parser.add_argument("--breakdown", action="store_true", help="also time each layer's parts")
    parser.add_argument("--dtype", choices=MODEL_DTYPES, default="float32",
                        help="precision of the model's dense layers and softmax (α-entmax attention computes in float32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = SparseEncoder(args.model, device="cpu", batch_tokens=args.batch_tokens, dtype=args.dtype)
    texts = wikitext_texts(encoder.tokenizer, args.texts, args.min_tokens, min(args.max_tokens, encoder.max_length))
    lengths = [min(len(encoder.tokenizer(t)["input_ids"]), encoder.max_length) for t in texts]
    store = args.store or get_settings().store
    predictors = {name: resolve_mode(name, store, model_id=encoder.info.id, alpha=encoder.alpha)
                  for name in args.predictor}
    modes = {"softmax (SDPA)": ("softmax", False), "dense entmax": ("dense", False), "exact": ("exact", False)}
    for name, predictor in predictors.items():
        modes[name] = (predictor, False)
        modes[f"{name} certified"] = (predictor, True)
    print(json.dumps({"model": encoder.info.id, "dtype": args.dtype, "threads": args.threads,
                      "batch_tokens": args.batch_tokens,
                      "texts": len(texts),
                      "tokens_min_median_max": [min(lengths), int(statistics.median(lengths)), max(lengths)]}))
    for name, predictor in predictors.items():
        recall, sparsity, gold = recall_and_sparsity(encoder, predictor, texts)
        print(json.dumps({"predictor": name, "spec": predictor.spec, "recall": round(recall, 4),
                          "sparsity": round(sparsity, 4), "gold_sparsity": round(gold, 4)}))
    for batch in (1, args.batch):
        result = whole_model(encoder, modes, texts, batch, args.repeats)
        print(json.dumps({"batch": batch, "modes": result}))
    if args.breakdown:
        for row in breakdown(encoder, predictors, texts[0], max(args.repeats, 5)):
            print(json.dumps(row))
    print(json.dumps({"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    main()
