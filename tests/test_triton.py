"""The Triton kernel (under ``TRITON_INTERPRET=1`` without CUDA) equals dense α-entmax and the torch path.

The kernel runs in a fresh process (``tests/triton_interpret_check.py``): the interpreter
flag only takes effect when set before triton is first imported, and other tests may import
it earlier through their libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sparsefinder.attention.triton_entmax import triton_available

if not triton_available():  # pragma: no cover - depends on the environment
    print("test_triton: triton cannot be imported; install the 'gpu' extra to run these tests")
    pytest.skip("triton cannot be imported (install sparsefinder[gpu])", allow_module_level=True)


@pytest.fixture(scope="module")
def errors() -> dict[str, float]:
    script = Path(__file__).with_name("triton_interpret_check.py")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("alpha", [1.5, 1.25, 2.0])
def test_full_pattern_equals_dense(errors, alpha):
    assert errors[f"full-{alpha}"] < (1e-5 if alpha == 1.5 else 1e-4)  # bisection only for α ≠ 1.5


def test_ragged_pattern_matches_torch_path(errors):
    assert errors["ragged"] < 1e-5
    assert errors["empty_row"] == 0.0
    assert errors["batched"] < 1e-5  # a padded batch of two sequences, read as is by the kernel
