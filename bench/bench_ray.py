"""Wall time of extraction, fitting and evaluation: the local engine against 1 and 2 local Ray workers.

Run by hand (not in CI), one thread per worker:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/bench_ray.py

Each engine runs in a fresh subprocess (``--one local|ray1|ray2``) on the same input: the first
``--sequences`` sequences of WikiText-2 ``test.txt`` at ``--max-length``. A Ray run starts its own
local cluster (``ray.init(num_cpus=N)``); the start-up is timed separately. Prints a Markdown
table and per-token rates (the inputs of the cluster plan in ``docs/distributed.md``); appends
the rows to ``bench/results-ray.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIT_SPECS = ["pruning", "routing", "dam", "proj4-kmeans16-ep0"]
EVAL_SPECS = ["window", "oracle-topk", "random", "pruning", "routing", "dam", "proj4-kmeans16-ep0"]


def one(engine_name: str, corpus: str, sequences: int, max_length: int) -> dict:
    from sparsefinder.store import ArtifactStore
    from sparsefinder.training.distributed import evaluate_sharded
    from sparsefinder.training.engine import Engine
    from sparsefinder.training.evaluate import build_candidates
    from sparsefinder.training.extract import extract
    from sparsefinder.training.fit import fit_all

    row: dict = {"engine": engine_name, "sequences": sequences, "L": max_length,
                 "threads_per_worker": int(os.environ.get("OMP_NUM_THREADS", "0")) or None}
    engine = Engine()
    if engine_name != "local":
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=int(engine_name[-1]), include_dashboard=False, logging_level="ERROR")
        row["ray_start_s"] = round(time.perf_counter() - t0, 2)
        engine = Engine("ray")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        data = extract(corpus, Path(tmp) / "data", max_length=max_length, limit=sequences, progress=False,
                       engine=engine)
        row["extract_s"] = round(time.perf_counter() - t0, 2)
        row["tokens"] = data.manifest["tokens"]
        t0 = time.perf_counter()
        fit_all(engine, data.folder, FIT_SPECS, str(Path(tmp) / "store"), progress=False)
        row["fit_s"] = round(time.perf_counter() - t0, 2)
        candidates = build_candidates(EVAL_SPECS, data, store=ArtifactStore(Path(tmp) / "store"), progress=False)
        t0 = time.perf_counter()
        report = evaluate_sharded(engine, data, candidates, progress=False)
        row["evaluate_s"] = round(time.perf_counter() - t0, 2)
        row["settings"] = sum(len(p["settings"]) for p in report["predictors"])
    return row


def main() -> None:
    from sparsefinder.config import default_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(default_data_dir() / "test.txt"))
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--engines", nargs="+", default=["local", "ray1", "ray2"])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.corpus, args.sequences, args.max_length)))
        return
    rows = []
    for name in args.engines:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--corpus", args.corpus, "--sequences",
                              str(args.sequences), "--max-length", str(args.max_length)],
                             capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
        if out.returncode:
            sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    with open(Path(__file__).with_name("results-ray.jsonl"), "a") as fh:
        for r in rows:
            fh.write(json.dumps({**r, "machine": machine, "date": time.strftime("%Y-%m-%d")}) + "\n")
    print(f"{rows[0]['sequences']} sequences, L={rows[0]['L']}, {rows[0]['tokens']} tokens; {machine}")
    print("| engine | Ray start (s) | extract (s) | fit (s) | evaluate (s) | extract tok/s | evaluate tok/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r.get('ray_start_s', '-')} | {r['extract_s']} | {r['fit_s']} | {r['evaluate_s']} | "
              f"{r['tokens'] / r['extract_s']:.0f} | {r['tokens'] / r['evaluate_s']:.0f} |")


if __name__ == "__main__":
    main()
