"""Load and overload, short and bounded: bench/bench_load.py (locust, headless) against its own server on 127.0.0.1.

Counts only (timings belong to the bench figures in docs/service.md): no errors under load;
under overload, refusals are 429 with ``Retry-After``, never 5xx, and requests are still served.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_load.py"


def _load(*flags: str) -> dict:
    run = subprocess.run([sys.executable, str(BENCH), *flags], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_load_within_capacity_has_no_errors():
    result = _load("--clients", "4", "--seconds", "6", "--queue-size", "8")
    assert result["errors"] == 0 and set(result["status"]) == {"200"}, result
    assert result["status"]["200"] >= 4 and len(result["rss_mb"]) >= 5


def test_overload_is_refused_with_retry_after_and_still_served():
    result = _load("--clients", "16", "--seconds", "8", "--queue-size", "2", "--queue-texts", "4")
    codes = result["status"]
    assert result["errors"] == 0 and result["refused_without_retry_after"] == 0, result
    assert set(codes) == {"200", "429"} and codes["429"] > 0 and codes["200"] > 0, result
