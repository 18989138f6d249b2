"""Throughput and latency of ``POST /v1/encode``: requests/s, p50 and p99.

Grid: batch 1 and 16 texts, L = 128 and 512 tokens per text, 1 / 4 / 16 concurrent clients,
the ``--mode`` baselines (default dense entmax) vs a predictor. Starts ``sparsefinder serve`` on a
free port (or uses ``--url``), prints a Markdown table with the server's resident memory after each
cell (current and peak, from ``/proc``: flat memory shows as a flat column) and writes JSON. Run by
hand, for example::

    .venv/bin/python bench/bench_service.py --requests 4 --predictor window16 --out /tmp/bench.json
    .venv/bin/python bench/bench_service.py --predictor proj24-thr0.99 --store artifacts/store \
        --mode dense --mode softmax --mode exact --batch 1 8 --length 512 --clients 1 4 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from sparsefinder.config import default_data_dir
from sparsefinder.model import model_info


def texts_of_length(n_tokens: int, count: int) -> list[str]:
    """``count`` WikiText-2 passages that tokenize to exactly ``n_tokens`` (special tokens included)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_info().path)
    ids = tok((default_data_dir() / "test.txt").read_text()[:400_000], add_special_tokens=False)["input_ids"]
    out, step = [], n_tokens - 2
    for i in range(count):
        chunk = ids[i * step:(i + 1) * step]
        text = tok.decode(chunk)
        while len(tok(text)["input_ids"]) > n_tokens:  # decoding can merge pieces differently
            chunk = chunk[:-1]
            text = tok.decode(chunk)
        out.append(text)
    return out


async def run_cell(url: str, texts: list[str], predictor: str, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    todo = iter(range(requests))

    async def client(c: httpx.AsyncClient) -> None:
        for _ in todo:
            start = time.perf_counter()
            res = await c.post("/v1/encode", json={"texts": texts, "predictor": predictor})
            res.raise_for_status()
            latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        await c.post("/v1/encode", json={"texts": texts[:1], "predictor": predictor})  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(clients)))
        wall = time.perf_counter() - start
    lat = sorted(latencies)
    return {"requests_per_s": len(lat) / wall, "texts_per_s": len(lat) * len(texts) / wall,
            "p50_s": statistics.median(lat), "p99_s": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]}


def rss_mib(pid: int) -> tuple[int, int]:
    """Resident memory of process ``pid`` now and at its peak (MiB), from ``/proc/<pid>/status``."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def start_server(queue: int, threads: int | None, store: str | None, **settings: str) -> tuple[subprocess.Popen, str]:
    """``sparsefinder serve`` on a free port of 127.0.0.1, with ``SPARSEFINDER_<NAME>`` = value for each setting."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="sf-bench-")
    env = dict(os.environ, SPARSEFINDER_QUEUE_SIZE=str(queue), SPARSEFINDER_MAX_TEXTS="64",
               SPARSEFINDER_MAX_BODY_BYTES="10000000")
    if threads:
        env["SPARSEFINDER_TORCH_THREADS"] = str(threads)
    env.update({f"SPARSEFINDER_{name.upper()}": value for name, value in settings.items()})
    proc = subprocess.Popen([sys.executable, "-m", "sparsefinder.cli", "serve", "--port", str(port),
                             "--store", store or f"{tmp}/store", "--reports", f"{tmp}/reports"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=None, help="a running service (default: start one)")
    p.add_argument("--predictor", default="window16", help="predictor to compare with the baselines (id or spec)")
    p.add_argument("--mode", action="append", default=None, help="baseline mode: dense, exact or softmax "
                                                                 "(repeatable; default dense)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    p.add_argument("--length", type=int, nargs="+", default=[128, 512])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=8, help="requests per cell")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads of the started server")
    p.add_argument("--store", default=None, help="artifact store of the started server (default: an empty one)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()
    proc, url = (None, args.url) if args.url else start_server(queue=max(args.clients) + 1, threads=args.threads,
                                                                    store=args.store)
    rows = []
    print("| L | batch | clients | mode | requests/s | texts/s | p50 ms | p99 ms | RSS MiB | peak RSS MiB |\n"
          "|---|---|---|---|---|---|---|---|---|---|", flush=True)
    try:
        for length in args.length:
            pool = texts_of_length(length, max(args.batch))
            for batch in args.batch:
                for clients in args.clients:
                    for predictor in (*(args.mode or ["dense"]), args.predictor):
                        r = asyncio.run(run_cell(url, pool[:batch], predictor, clients, args.requests))
                        rss, peak = rss_mib(proc.pid) if proc is not None else (None, None)
                        rows.append({"length": length, "batch": batch, "clients": clients, "predictor": predictor,
                                     **r, "rss_mib": rss, "peak_rss_mib": peak})
                        print(f"| {length} | {batch} | {clients} | {predictor} | {r['requests_per_s']:.2f} | "
                              f"{r['texts_per_s']:.1f} | {r['p50_s'] * 1000:.0f} | {r['p99_s'] * 1000:.0f} | "
                              f"{rss} | {peak} |", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
