"""How many kept pairs of a pattern a gold mask also holds, per sequence and head, compiled by Numba.

Evaluation compares every knob value of every predictor with the gold graph of each layer
(:func:`~sparsefinder.metrics.compare`): hundreds of patterns per sequence. The torch expression
(:meth:`~sparsefinder.pattern.Pattern.hits`) gathers the mask over all ``B·H·n·w`` slots and masks
the unused ones, two full-size temporaries per pattern; :func:`pattern_hits` reads only the
``counts`` used slots of each row, parallel over rows. Without Numba, or with
``SPARSEFINDER_CPU_KERNELS=0``, :meth:`Pattern.hits` keeps the torch path.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from .kernels import available, set_threads
from .kernels import numba as _nb

__all__ = ["available", "pattern_hits"]

if _nb is not None:
    @functools.partial(_nb.njit, cache=True, nogil=True, parallel=True)
    def _hits(index, counts, mask, out):  # index (G, n, w), counts (G, n), mask (G, n, n) → out (G,)
        groups, n = counts.shape
        for g in _nb.prange(groups):
            total = 0
            for i in range(n):
                for s in range(counts[g, i]):
                    if mask[g, i, index[g, i, s]]:
                        total += 1
            out[g] = total


def pattern_hits(index: Tensor, counts: Tensor, mask: Tensor) -> Tensor:
    """``Σ_i |{index[b, h, i, s] : s < counts[b, h, i]} ∩ mask[b, h, i]|`` for CPU tensors: int64 ``(B, H)``.

    ``index`` ``(B, H, n, w)`` and ``counts`` ``(B, H, n)`` are a pattern's rows, ``mask`` a boolean
    ``(B, H, n, n)``.
    """
    set_threads()
    batch, heads, n, width = index.shape
    out = np.empty(batch * heads, np.int64)
    _hits(index.reshape(batch * heads, n, width).contiguous().numpy(), counts.reshape(batch * heads, n).contiguous().numpy(),
          mask.reshape(batch * heads, n, n).contiguous().numpy(), out)
    return torch.from_numpy(out).view(batch, heads)
