"""What every compiled CPU kernel shares: whether Numba runs here, and on how many threads.

The kernels (:mod:`sparsefinder.attention.cpu_rows`, :mod:`sparsefinder.predictors.group_rows`,
:mod:`sparsefinder.hit_counts`) are module-level Numba functions cached on disk; each caller keeps
a torch path for when :func:`available` is false (Numba missing, or ``SPARSEFINDER_CPU_KERNELS=0``).
"""

from __future__ import annotations

import functools
from typing import ContextManager

import torch
from threadpoolctl import ThreadpoolController

from .config import CPU_KERNELS

__all__ = ["available", "numba", "set_threads", "single_threaded_blas"]

try:  # Numba is a dependency, but the torch paths must keep working without it
    import numba
except ImportError:  # pragma: no cover - exercised only where Numba is missing
    numba = None


def available() -> bool:
    """Whether the compiled kernels can run (Numba installed and not switched off)."""
    return numba is not None and CPU_KERNELS


def set_threads() -> None:
    """Run Numba's parallel loops on torch's thread count (one knob for both)."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


@functools.cache
def _blas() -> ThreadpoolController:
    import scipy.linalg.cython_blas  # noqa: F401 - the BLAS Numba's np.dot calls: loaded before the controller looks
    return ThreadpoolController().select(user_api="blas")


def single_threaded_blas() -> ContextManager:
    """A context in which the BLAS libraries loaded when it is first used run one thread each (threadpoolctl; restored
    on exit); scipy's, the one Numba's ``np.dot`` calls, is loaded first. Kernels whose parallel tasks call BLAS from
    their own threads would otherwise oversubscribe the cores, and OpenBLAS called inside an OpenMP region warns that it
    may hang. (A controller lists the loaded libraries in about a millisecond, so it is made once.)"""
    return _blas().limit(limits=1)
