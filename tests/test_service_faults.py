"""Faults: SIGKILL during a fit job, a half-written and a corrupted artifact, a model that does not load.

Real ``sparsefinder serve`` processes on 127.0.0.1, killed with SIGKILL and restarted on the same
store and jobs folder.
"""

from __future__ import annotations

import shutil
import signal
import time

import httpx
import pytest

from conftest import TOKEN, launch, wait_ready

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _wait_job(c: httpx.Client, job_id: str, until, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        if until(job):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_sigkill_during_a_fit_job_then_restart(tmp_path, data_dir):
    log = tmp_path / "server.log"
    proc, url = launch(tmp_path, data_dir, log)
    try:
        wait_ready(proc, url, log)
        with httpx.Client(base_url=url, timeout=60) as c:
            quick = c.post("/v1/predictors", headers=AUTH,
                           json={"spec": "window4", "corpus_text": "one two three\nfour five six\n", "limit": 2,
                                 "max_length": 16}).json()
            good = _wait_job(c, quick["id"], lambda j: j["state"] == "done")["result_id"]
            slow = c.post("/v1/predictors", headers=AUTH,
                          json={"spec": "routing", "corpus": "test.txt", "limit": 2000, "max_length": 128})
            assert slow.status_code == 202, slow.text
            _wait_job(c, slow.json()["id"], lambda j: j["state"] == "running" and j["progress"] > 0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    store = tmp_path / "store"
    # what a SIGKILL in the middle of ArtifactStore.save leaves: its temporary folder, half written
    (store / ".tmp-window4-deadbeef0000-1234abcd").mkdir()
    (store / ".tmp-window4-deadbeef0000-1234abcd" / "tensors.safetensors").write_bytes(b"\x00" * 10)
    # a corrupted artifact: a copy of the good one whose tensors were cut short
    shutil.copytree(store / good, store / "window4-corrupted00")
    tensors = next((store / "window4-corrupted00").glob("*.safetensors"))
    tensors.write_bytes(tensors.read_bytes()[:20])

    proc, url = launch(tmp_path, data_dir, log)
    try:
        wait_ready(proc, url, log, timeout=120)
        with httpx.Client(base_url=url, timeout=60) as c:
            job = c.get(f"/v1/jobs/{slow.json()['id']}", headers=AUTH).json()
            assert job["state"] == "failed" and job["error"].startswith("interrupted"), job
            assert c.get(f"/v1/jobs/{quick['id']}", headers=AUTH).json()["result_id"] == good
            listed = c.get("/v1/predictors").json()
            assert [p["id"] for p in listed["predictors"]] == [good]
            assert list(listed["problems"]) == ["window4-corrupted00"]
            assert "corrupt" in listed["problems"]["window4-corrupted00"]
            assert c.post("/v1/encode", json={"texts": ["still served"], "predictor": good}).status_code == 200
            bad = c.post("/v1/encode", json={"texts": ["x"], "predictor": "window4-corrupted00"})
            assert 400 <= bad.status_code < 500 and bad.json()["error"]["field"] == "predictor", bad.text
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "skipping stored predictor window4-corrupted00" in log.read_text()
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir() if not p.name.endswith(".json")) == []


def test_a_model_that_fails_to_load_makes_readyz_say_why(tmp_path, tiny_corpus):
    log = tmp_path / "server.log"
    proc, url = launch(tmp_path, tiny_corpus.parent, log, SPARSEFINDER_MODEL=str(tmp_path / "no-such-model"))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ready = httpx.get(url + "/readyz")
                if "failed to load" in ready.text:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-2000:]
            time.sleep(0.3)
        assert ready.status_code == 503 and "no-such-model" in ready.json()["error"]["message"]
        assert httpx.get(url + "/healthz").status_code == 200
        enc = httpx.post(url + "/v1/encode", json={"texts": ["x"]})
        assert enc.status_code == 503 and "failed to load" in enc.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
