"""Extraction throughput (tokens/s) and peak memory at several sequence lengths.

Run by hand (not in CI):

    .venv/bin/python bench/bench_extract.py --lengths 128 512 --sequences 16

Each length runs in a fresh subprocess so peak resident memory (ru_maxrss) is its own.
The corpus defaults to WikiText-2 ``test.txt``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def one(corpus: str, length: int, sequences: int) -> dict:
    from sparsefinder.training.extract import extract

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ds = extract(corpus, Path(tmp) / "ds", max_length=length, limit=sequences, progress=False)
        seconds = time.perf_counter() - t0
        tokens = ds.manifest["tokens"]
        disk = sum(f.stat().st_size for f in (Path(tmp) / "ds").iterdir())
    return {"L": length, "sequences": sequences, "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "disk_mb_per_1k_tokens": round(disk / tokens * 1000 / 2**20, 2), "threads": torch.get_num_threads()}


def main() -> None:
    from sparsefinder.config import default_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(default_data_dir() / "test.txt"))
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.corpus, args.one, args.sequences)))
        return
    print("| L | sequences | tokens | seconds | tokens/s | peak RSS (MB) | disk MB / 1k tokens | threads |")
    print("|---|---|---|---|---|---|---|---|")
    for length in args.lengths:
        # the same token budget at every length: sequences scale with 512 / L
        n = args.sequences * max(1, 512 // length)
        out = subprocess.run([sys.executable, __file__, "--corpus", args.corpus, "--one", str(length),
                              "--sequences", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['L']} | {r['sequences']} | {r['tokens']} | {r['seconds']} | {r['tokens_per_s']} | "
              f"{r['peak_rss_mb']} | {r['disk_mb_per_1k_tokens']} | {r['threads']} |")


if __name__ == "__main__":
    main()
