"""Gathered-rows Triton kernel for sparse α-entmax attention (forward, inference).

One program per (head, query) row loads the row's kept key indices from the pattern's
padded layout, gathers those keys, scores them, finds the α-entmax threshold in registers
and sums the gathered values: scores never leave the chip, memory is O(nnz). The
threshold search follows AdaSplash (Gonçalves et al. 2025, "AdaSplash: Adaptive Sparse
Flash Attention"): bisection on ``τ`` in ``[max − 1, max − W^{1−α}]``; for α = 1.5 a final
closed-form step on the found support, ``τ = (Σx − sqrt((Σx)² − |S|(Σx² − 1))) / |S|``,
makes it exact. Used by :func:`~sparsefinder.attention.sparse.sparse_entmax_attention` on
CUDA tensors without autograd; correctness is tested on CPU with ``TRITON_INTERPRET=1``.

Triton is an optional dependency (the ``gpu`` extra) imported only here, and lazily; the kernel
itself lives in ``_triton_kernel`` (module-level, so the interpreter can patch ``tl``).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..alpha_entmax import check_alpha
from ..config import DEFAULT_ALPHA, TRITON_BISECT_ITERATIONS
from ..errors import SparsefinderError
from ..pattern import Pattern

__all__ = ["triton_available", "triton_sparse_entmax_attention"]


def triton_available() -> bool:
    """Whether ``triton`` can be imported."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _kernel():
    """Compile-on-first-use kernel (``TRITON_INTERPRET`` is read when it is defined)."""
    try:
        import triton
    except ImportError as exc:
        raise SparsefinderError(f"the Triton kernel needs triton: pip install 'sparsefinder[gpu]' ({exc})") from None

    from . import _triton_kernel

    return triton, _triton_kernel.sparse_entmax_fwd


def triton_sparse_entmax_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, alpha: float = DEFAULT_ALPHA, scaling: float | None = None,
) -> Tensor:
    """Sparse α-entmax attention by the Triton kernel; same contract as ``sparse_entmax_attention``.

    ``q, k, v`` ``(B, H, n, d)`` (or ``(H, n, d)`` with a one-sequence pattern) on a CUDA device (or
    CPU under ``TRITON_INTERPRET=1``); the kernel reads the pattern's ``index`` and ``counts`` as
    they are, one program per (sequence, head, query) row. Returns the shape of ``q`` in float32
    precision cast to ``q.dtype``. Forward only (no autograd).
    """
    alpha = check_alpha(alpha)
    triton, kernel = _kernel()
    single = q.dim() == 3
    if single:
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
    batch, heads, n, d = q.shape
    scaling = d**-0.5 if scaling is None else scaling
    pattern = pattern.to(q.device)
    rows = batch * heads
    width = pattern.width
    out = torch.empty(rows, n, d, device=q.device, dtype=torch.float32)
    kernel[(rows * n,)](
        q.reshape(rows, n, d).contiguous(), k.reshape(rows, n, d).contiguous(), v.reshape(rows, n, d).contiguous(),
        pattern.index.reshape(rows, n, width).contiguous(), pattern.counts.reshape(rows, n).contiguous(), out,
        n, width, d, float(scaling), float(alpha),
        N_ITER=TRITON_BISECT_ITERATIONS, IS_15=alpha == 1.5,
        BLOCK_W=triton.next_power_of_2(width), BLOCK_D=triton.next_power_of_2(d),
    )
    out = out.masked_fill((pattern.counts.reshape(rows, n) == 0).unsqueeze(-1), 0.0).view(batch, heads, n, d)
    return (out[0] if single else out).to(q.dtype)
