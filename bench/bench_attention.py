"""Time and peak memory of one attention layer (12 heads, d = 32) across lengths (issue 6).

Methods: SDPA softmax, dense ``entmax15``, ``entmax15`` with partial sort ``k=32``,
``entmax_bisect``, our sparse path with the predictor's cost included (window predictor,
``2·16 + 1 = 33`` kept keys per query) and the certified mode started from that pattern.
Inputs: real queries/keys/values of layer ``--layer`` of the model on WikiText test text at
L ≤ 512; above, Gaussian ``q, k, v`` scaled by ``--scale`` (gold sparsity measured on the
first 256 queries and printed). Dense methods are skipped above ``--max-dense`` (and
bisection above ``--max-bisect``, SDPA above ``--max-sdpa``: on CPU it materialises the scores),
certified above ``--max-certified``: said in the table.
Peak memory is the process RSS increase sampled every millisecond during the call.

    python bench/bench_attention.py --threads 1 --repeats 2 | tee bench/results-cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import torch
from entmax import entmax15, entmax_bisect

from sparsefinder.alpha_entmax import entmax
from sparsefinder.attention.certified import certified_entmax_attention
from sparsefinder.attention.sparse import sparse_entmax_attention
from sparsefinder.inputs import AttentionInputs
from sparsefinder.predictors.registry import predictor_from_spec

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def measure(fn, repeats: int) -> tuple[float, float]:
    """Best wall time (ms) over ``repeats`` and peak RSS increase (MiB) of the first call."""
    base, peak, stop = _rss(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    stop.set()
    thread.join()
    return min(times) * 1000, max(peak[0] - base, 0) / 2**20


def real_inputs(length: int, layer: int):
    from sparsefinder.capture import capture
    from sparsefinder.config import default_data_dir
    from sparsefinder.corpus import iter_texts, pack_sequences
    from sparsefinder.model import load_encoder

    from sparsefinder.hf.attention import DENSE_ENTMAX

    model, tok, _ = load_encoder(attn_implementation=DENSE_ENTMAX)
    ids = next(pack_sequences(iter_texts(default_data_dir() / "test.txt"), tok, length))
    seq = next(capture(model, [ids], 1.5))
    inp = seq.inputs(layer)
    return inp.queries[0], inp.keys[0], seq.values[layer].float(), seq.input_ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layer", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.5, help="std of synthetic q and k entries")
    ap.add_argument("--max-dense", type=int, default=4096)
    ap.add_argument("--max-bisect", type=int, default=1024)
    ap.add_argument("--max-certified", type=int, default=4096)
    ap.add_argument("--max-sdpa", type=int, default=8192, help="CPU SDPA materialises scores: ~7 GiB at 8k")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    predictor = predictor_from_spec("window16").fit(None)
    heads, d = 12, 32
    rows = []
    for n in args.lengths:
        if n <= 512:
            q, k, v, ids = real_inputs(n, args.layer)
            n = q.shape[1]
            source = f"model layer {args.layer}"
        else:
            g = torch.Generator().manual_seed(n)
            q, k, v = (torch.randn(heads, n, d, generator=g) * args.scale for _ in range(3))
            ids = torch.zeros(n, dtype=torch.long)
            source = f"gaussian x{args.scale}"
        scaling = d**-0.5
        sample = entmax(q[:, :256] @ k.transpose(1, 2) * scaling, 1.5) > 0
        gold_sparsity = 1 - float(sample.float().mean())
        inputs = AttentionInputs.single(args.layer, q, k, ids)
        pattern = predictor.predict(inputs)
        sdpa_ms = None
        methods = {
            "sdpa_softmax": (lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), n <= args.max_sdpa),
            "entmax15": (lambda: entmax15(q @ k.transpose(1, 2) * scaling, dim=-1) @ v, n <= args.max_dense),
            "entmax15_k32": (lambda: entmax15(q @ k.transpose(1, 2) * scaling, dim=-1, k=32) @ v,
                             n <= args.max_dense),
            "entmax_bisect": (lambda: entmax_bisect(q @ k.transpose(1, 2) * scaling, 1.5, dim=-1) @ v,
                              n <= args.max_bisect),
            "predict_window16": (lambda: predictor.predict(inputs), True),
            "sparse_window16": (lambda: sparse_entmax_attention(q, k, v, predictor.predict(inputs)), True),
            "certified_window16": (lambda: certified_entmax_attention(q, k, v, predictor.predict(inputs)).output,
                                   n <= args.max_certified),
        }
        row = {"L": n, "inputs": source, "gold_sparsity_sampled": round(gold_sparsity, 4),
               "kept_per_query": pattern.nnz / (heads * n), "threads": args.threads}
        for name, (fn, run) in methods.items():
            if not run:
                row[name] = "skipped"
                continue
            reps = 1 if name in ("entmax15", "entmax15_k32", "entmax_bisect", "certified_window16") and n > 1024 \
                else args.repeats
            ms, mib = measure(fn, reps)
            row[name] = {"ms": round(ms, 1), "peak_mib": round(mib, 1)}
            if name == "sdpa_softmax":
                sdpa_ms = ms
        if n <= args.max_certified:
            row["certified_keys_added_per_query"] = float(
                certified_entmax_attention(q, k, v, pattern).keys_added.sum()) / (heads * n)
        sp = row["sparse_window16"]["ms"]
        if sdpa_ms is not None:
            row["speedup_vs_sdpa"] = round(sdpa_ms / sp, 2)
        if isinstance(row["entmax15"], dict):
            row["speedup_vs_entmax15"] = round(row["entmax15"]["ms"] / sp, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"machine": f"{os.cpu_count()}-core CPU, shared", "load_avg": os.getloadavg(), "rows": rows},
                      fh, indent=1)


if __name__ == "__main__":
    main()
