"""Schema conformance: schemathesis (every check, a fixed example budget per operation) against a real server.

Runs the ``st`` command line, as a user would, against its own uvicorn process on 127.0.0.1
(a fresh store, so that generated fits and deletes touch no other test), once with the bearer
token and once without. Any failure of any check fails the test with schemathesis' report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TOKEN, launch, wait_ready

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).parent / "schemathesis.toml"
EXAMPLES_PER_OPERATION = 10


@pytest.fixture(scope="module")
def schema_server(tmp_path_factory, tiny_corpus):
    root = tmp_path_factory.mktemp("schema")
    log = root / "server.log"
    proc, url = launch(root, tiny_corpus.parent, log, SPARSEFINDER_MAX_BODY_BYTES="20000",
                       SPARSEFINDER_MAX_TEXTS="8", SPARSEFINDER_FIT_LIMIT="2", SPARSEFINDER_FIT_MAX_LENGTH="16")
    wait_ready(proc, url, log)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.parametrize("authenticated", [True, False], ids=["with-token", "without-token"])
def test_schemathesis_all_checks_pass(schema_server, authenticated, tmp_path):
    st = Path(sys.executable).with_name("st")
    cmd = [str(st), "--config-file", str(CONFIG), "run", f"{schema_server}/openapi.json", "--checks", "all",
           "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", "17", "--generation-deterministic",
           "--request-timeout", "60", "--no-color"]
    if authenticated:
        cmd += ["-H", f"Authorization: Bearer {TOKEN}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=420, cwd=tmp_path)  # its cache goes there
    report = "\n".join(line[:400] for line in run.stdout.splitlines())
    assert run.returncode == 0, report[-8000:]
    assert "Tested: 13" in report and "failures" not in report.split("SUMMARY")[-1].lower(), report[-3000:]
