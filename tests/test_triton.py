"""The Triton kernel under ``TRITON_INTERPRET=1`` equals the torch sparse path and dense α-entmax."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must be set before triton is first imported

from sparsefinder.alpha_entmax import entmax  # noqa: E402
from sparsefinder.attention.triton_entmax import triton_available  # noqa: E402
from sparsefinder.pattern import Pattern  # noqa: E402

if not triton_available():  # pragma: no cover - depends on the environment
    print("test_triton: triton cannot be imported; install the 'gpu' extra to run these tests")
    pytest.skip("triton cannot be imported (install sparsefinder[gpu])", allow_module_level=True)


@pytest.fixture(scope="module")
def kernel_fn():
    from sparsefinder.attention.triton_entmax import triton_sparse_entmax_attention

    return triton_sparse_entmax_attention


def _qkv(heads=2, n=20, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return [(torch.randn(heads, n, d, generator=g) * 2).to(dev) for _ in range(3)]


@pytest.mark.parametrize("alpha", [1.5, 1.25, 2.0])
def test_full_pattern_equals_dense(kernel_fn, alpha):
    q, k, v = _qkv()
    dense = entmax(q @ k.transpose(1, 2) * 8**-0.5, alpha) @ v
    out = kernel_fn(q, k, v, Pattern.full(2, 20, device=q.device), alpha)
    atol = 1e-5 if alpha == 1.5 else 1e-4  # bisection only for α ≠ 1.5
    torch.testing.assert_close(out, dense, atol=atol, rtol=1e-5)


def test_ragged_pattern_matches_torch_path(kernel_fn):
    from sparsefinder.attention.sparse import sparse_entmax_attention

    q, k, v = _qkv(n=24, d=6, seed=1)  # d not a power of two: masked lanes
    mask = torch.rand(2, 24, 24, generator=torch.Generator().manual_seed(3)) < 0.3
    mask[0, 5] = False  # an empty row gives zeros
    pattern = Pattern.from_dense(mask)
    out = kernel_fn(q, k, v, pattern)
    torch.testing.assert_close(out, sparse_entmax_attention(q, k, v, pattern), atol=1e-5, rtol=1e-5)
    assert torch.equal(out[0, 5].cpu(), torch.zeros(6))
