"""Shared fixtures: the real data folder, a tiny corpus and a tiny real extracted dataset; the service
(one real uvicorn process for the whole session)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sparsefinder.config import default_data_dir
from sparsefinder.model import packaged_model_path

# The suite runs on the packaged encoder whatever `make run` has adapted in the work dir
# (tests of the default-model resolution unset this themselves).
os.environ.setdefault("SPARSEFINDER_MODEL", str(packaged_model_path()))

TINY_TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Sparse attention keeps only a few keys for every query, and the rest get exactly zero.",
    "Valkyria Chronicles III is a tactical role @-@ playing video game developed by Sega and Media.Vision.",
]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """WikiText-2 folder (``../shared/data/wikitext-2``)."""
    path = default_data_dir()
    assert (path / "test.txt").is_file(), f"WikiText-2 is expected in {path}"
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-line corpus."""
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n".join(TINY_TEXTS) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny corpus extracted with the real encoder at L = 32: a few real sequences."""
    from sparsefinder.training.extract import extract

    return extract(tiny_corpus, tmp_path_factory.mktemp("data") / "tiny", max_length=32, progress=False)


# ------------------------------------------------------------------ service
TOKEN = "test-token"
LAYERS, HEADS = 6, 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grid(value: float) -> list[list[float]]:
    return [[value] * HEADS for _ in range(LAYERS)]


def _setting(spec: str, knob: int, recall: float, sparsity: float) -> dict:
    per_head = {"recall": _grid(recall), "sparsity": _grid(sparsity), "precision": _grid(0.5)}
    per_head["recall"][0][0] = 1.0  # layer 0, head 0 differs from the mean
    return {"spec": spec, "knob_value": knob, "recall": recall, "sparsity": sparsity, "precision": 0.5,
            "predict_seconds_per_sequence": 0.001, "per_head": per_head}


def hand_report(report_id: str = "r1") -> dict:
    """A report.json written by hand after the report schema: two predictors, 3 + 2 settings."""
    return {
        "id": report_id, "created": "2026-11-23T12:00:00+00:00", "sparsefinder_version": "0.1.0",
        "num_layers": LAYERS, "num_heads": HEADS, "averaging": "macro",
        "dataset": {"path": "/data/test", "model_id": "all-MiniLM-L6-v2@x", "alpha": 1.5, "max_length": 64,
                    "sequences": 4, "corpus_sha256": "0" * 64},
        "gold": {"sparsity": 0.9, "per_head": {"gold_sparsity": _grid(0.9)}},
        "predictors": [
            {"spec": "window", "name": "window", "artifact_id": None, "knob": "width", "description": "local window",
             "source": "Beltagy et al. 2020", "reference": False, "fit_seconds": 0.0,
             "settings": [_setting("window1", 1, 0.3, 0.95), _setting("window4", 4, 0.5, 0.85),
                          _setting("window16", 16, 0.8, 0.5)],
             "pareto": [0, 1, 2], "summary": {"sparsity_at_recall_0.95": None, "sparsity_at_recall_0.99": None,
                                              "auc": 0.4}},
            {"spec": "oracle", "name": "oracle", "artifact_id": None, "knob": "k", "description": "top-k of scores",
             "source": "-", "reference": True, "fit_seconds": 0.0,
             "settings": [_setting("oracle-k4", 4, 0.9, 0.9), _setting("oracle-k8", 8, 0.99, 0.8)],
             "pareto": [0, 1], "summary": {"sparsity_at_recall_0.95": 0.85, "sparsity_at_recall_0.99": 0.8,
                                           "auc": 0.9}},
        ],
    }


@dataclass
class Service:
    url: str
    root: Path
    corpus: Path
    log: Path

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kw)

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {TOKEN}"}


def launch(root: Path, corpus_root: Path, log: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """``sparsefinder serve`` on a free port with store, reports and jobs under ``root``; not yet ready."""
    port = _free_port()
    full = dict(os.environ, SPARSEFINDER_TOKEN=TOKEN, SPARSEFINDER_JOBS_DIR=str(root / "jobs"),
                SPARSEFINDER_CORPUS_ROOT=str(corpus_root), SPARSEFINDER_DEVICE="cpu", **env)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sparsefinder.cli", "serve", "--port", str(port),
                                 "--store", str(root / "store"), "--reports", str(root / "reports")],
                                stdout=out, stderr=subprocess.STDOUT, env=full)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> None:
    """Poll ``/readyz`` until 200; fail with the server log if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"service did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.fixture(scope="session")
def service(tmp_path_factory, tiny_corpus) -> Service:
    """``sparsefinder serve`` on a free port with an empty store and one hand-written report."""
    root = tmp_path_factory.mktemp("service")
    (root / "reports" / "r1").mkdir(parents=True)
    (root / "reports" / "r1" / "report.json").write_text(json.dumps(hand_report()))
    log = root / "server.log"
    proc, url = launch(root, tiny_corpus.parent, log, SPARSEFINDER_MAX_BODY_BYTES="20000",
                       SPARSEFINDER_MAX_TEXTS="16", SPARSEFINDER_QUEUE_SIZE="8", SPARSEFINDER_QUEUE_TEXTS="24",
                       SPARSEFINDER_BATCH_MAX_TEXTS="16", SPARSEFINDER_BATCH_MAX_WAIT_MS="50")
    wait_ready(proc, url, log)
    yield Service(url, root, tiny_corpus, log)
    proc.terminate()
    proc.wait(timeout=30)
