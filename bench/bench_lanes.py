"""A short request sent behind long ones: its latency with the long-request lane and first in, first out.

Starts ``sparsefinder serve`` twice on the long-document encoder: with the default lane threshold
(``LONG_TOKENS`` 512) and with the lane switched off (``LONG_TOKENS`` above any text: every request
short, one first-in-first-out queue, as before the lane). Each round sends ``--longs`` requests of
one ``--long-tokens`` text each at once, then, ``--gap`` seconds later, one request of one
``--short-tokens`` text, all in the ``--mode``; prints the short request's latency and when the last
long one finished (median over ``--rounds``). Run by hand on an idle machine::

    python bench/bench_lanes.py --model artifacts/models/minilm-entmax15-long4k --longs 3 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx
from bench_service import start_server, texts_of_length

POLICIES = {"lanes": None, "fifo": str(10**9)}


async def round_trip(url: str, long_text: str, short_text: str, longs: int, gap: float, mode: str) -> dict:
    """Seconds from the first send to the short answer, and to the last long answer."""
    async with httpx.AsyncClient(base_url=url, timeout=900) as c:
        start = time.perf_counter()

        async def post(text: str) -> float:
            res = await c.post("/v1/encode", json={"texts": [text], "predictor": mode})
            res.raise_for_status()
            return time.perf_counter() - start

        long_tasks = [asyncio.create_task(post(long_text)) for _ in range(longs)]
        await asyncio.sleep(gap)
        sent = time.perf_counter() - start
        short_done = await post(short_text)
        return {"short_s": short_done - sent, "last_long_s": max(await asyncio.gather(*long_tasks))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="long-document encoder folder")
    p.add_argument("--long-tokens", type=int, default=4096)
    p.add_argument("--short-tokens", type=int, default=128)
    p.add_argument("--longs", type=int, default=3)
    p.add_argument("--gap", type=float, default=0.5, help="seconds between the long requests and the short one")
    p.add_argument("--mode", default="exact", help="predictor or attention mode of every request")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    long_text, short_text = texts_of_length(args.long_tokens, 1)[0], texts_of_length(args.short_tokens, 1)[0]
    print(json.dumps({"model": args.model, "long_tokens": args.long_tokens, "short_tokens": args.short_tokens,
                      "longs": args.longs, "gap_s": args.gap, "mode": args.mode, "threads": args.threads}))
    for policy, long_tokens in POLICIES.items():
        settings = {"model": args.model} | ({"long_tokens": long_tokens} if long_tokens else {})
        proc, url = start_server(queue=args.longs + 2, threads=args.threads, store=None, **settings)
        try:
            asyncio.run(round_trip(url, long_text, short_text, 1, 0.0, args.mode))  # warm-up
            rounds = [asyncio.run(round_trip(url, long_text, short_text, args.longs, args.gap, args.mode))
                      for _ in range(args.rounds)]
        finally:
            proc.terminate()
            proc.wait()
        print(json.dumps({"policy": policy,
                          "short_latency_s": round(statistics.median(r["short_s"] for r in rounds), 2),
                          "last_long_s": round(statistics.median(r["last_long_s"] for r in rounds), 2),
                          "short_latency_each_s": [round(r["short_s"], 2) for r in rounds]}), flush=True)


if __name__ == "__main__":
    main()
