"""Load and overload of ``POST /v1/encode`` with locust (library use, headless): goodput, p50/p99, RSS, 429s.

Starts ``sparsefinder serve`` on 127.0.0.1 (its own store, settings from the flags), runs
``--clients`` locust users for ``--seconds`` (they stop by themselves), samples the server's
RSS every second, and prints one JSON object: status counts, failures (anything but 200 and
429/503 with ``Retry-After``), goodput (200s per second), p50/p99 of the 200s, RSS over time.
Users send one WikiText-2 line per request in a closed loop; with ``--backoff`` a refused user
sleeps ``Retry-After`` seconds (as a well-behaved client does), without it retries at once.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_load.py --clients 16 --seconds 30 --queue-size 16
"""

from __future__ import annotations

import gevent.monkey

gevent.monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import psutil  # noqa: E402
from locust import FastHttpUser, constant, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from sparsefinder.config import default_data_dir  # noqa: E402


def _texts(count: int = 500) -> list[str]:
    lines = (default_data_dir() / "test.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip()[:300] for line in lines if len(line.strip()) > 40][:count]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """``sparsefinder serve`` with the flags' queue and batch settings; returns once ``/readyz`` is 200."""
    import httpx

    port = _free_port()
    env = dict(os.environ, SPARSEFINDER_DEVICE="cpu", SPARSEFINDER_QUEUE_SIZE=str(args.queue_size),
               SPARSEFINDER_QUEUE_TEXTS=str(args.queue_texts), SPARSEFINDER_BATCH_MAX_TEXTS=str(args.batch_texts),
               SPARSEFINDER_JOBS_DIR=str(root / "jobs"), SPARSEFINDER_TORCH_THREADS=str(args.torch_threads))
    if args.model:
        env["SPARSEFINDER_MODEL"] = args.model
    proc = subprocess.Popen([sys.executable, "-m", "sparsefinder.cli", "serve", "--port", str(port), "--store",
                             str(root / "store"), "--reports", str(root / "reports")],
                            stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not start:\n{(root / 'server.log').read_text()[-2000:]}")


def make_user(texts: list[str], predictor: str, backoff: bool, codes: Counter, missing_retry_after: list):
    class EncodeUser(FastHttpUser):
        wait_time = constant(0)

        @task
        def encode(self) -> None:
            body = {"texts": [random.choice(texts)], "predictor": predictor}
            with self.client.post("/v1/encode", json=body, catch_response=True, name="encode") as res:
                codes[res.status_code] += 1
                if res.status_code == 200:
                    res.success()
                    return
                if res.status_code in (429, 503):
                    retry = res.headers.get("Retry-After")
                    if retry is None:
                        missing_retry_after.append(res.status_code)
                        res.failure("refused without Retry-After")
                        return
                    res.success()  # a refusal, not an error: counted apart from the 200s below
                    if backoff:
                        gevent.sleep(float(retry))
                    return
                res.failure(f"HTTP {res.status_code}")

    return EncodeUser


def run(url: str, pid: int, args: argparse.Namespace) -> dict:
    codes: Counter = Counter()
    missing: list = []
    latencies: list[float] = []
    env = Environment(user_classes=[make_user(_texts(), args.predictor, args.backoff, codes, missing)], host=url)
    env.events.request.add_listener(
        lambda response=None, response_time=0.0, **_: response is not None and getattr(response, "status_code", 0)
        == 200 and latencies.append(response_time))
    process = psutil.Process(pid)
    rss: list[tuple[float, float]] = []
    runner = env.create_local_runner()
    start = time.monotonic()
    runner.start(args.clients, spawn_rate=args.clients)

    def sample() -> None:
        while True:
            rss.append((round(time.monotonic() - start, 1), round(process.memory_info().rss / 2**20, 1)))
            gevent.sleep(1.0)

    sampler = gevent.spawn(sample)
    gevent.spawn_later(args.seconds, runner.quit)
    runner.greenlet.join()
    elapsed = time.monotonic() - start
    sampler.kill()
    latencies.sort()
    pct = (lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None)
    warm = [r for t, r in rss if t >= args.seconds / 3]
    return {"clients": args.clients, "seconds": round(elapsed, 1), "queue_size": args.queue_size,
            "backoff": args.backoff, "torch_threads": args.torch_threads, "status": dict(codes),
            "errors": sum(n for c, n in codes.items() if c not in (200, 429, 503)) + len(missing),
            "refused_without_retry_after": len(missing), "goodput_rps": round(codes[200] / elapsed, 2),
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "rss_mb": rss,
            "rss_growth_after_warmup_mb": round(max(warm) - min(warm), 1) if warm else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--queue-size", type=int, default=16)
    parser.add_argument("--queue-texts", type=int, default=256)
    parser.add_argument("--batch-texts", type=int, default=64)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--predictor", default="dense")
    parser.add_argument("--model", default=None, help="encoder folder (default: the packaged one)")
    parser.add_argument("--backoff", action=argparse.BooleanOptionalAction, default=False,
                        help="refused users sleep Retry-After seconds before their next request")
    parser.add_argument("--out", type=Path, help="also append the JSON line to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp), args)
        try:
            result = run(url, proc.pid, args)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
