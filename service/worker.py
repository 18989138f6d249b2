"""The model thread: every model call runs in one worker thread behind a bounded queue.

PyTorch already uses every core for one forward pass, so calls run one at a time; up to
``queue_size`` requests wait, more are refused with 429 and a ``Retry-After`` header
(:func:`overloaded`). An exception in a call goes back to its request; the thread never dies.

With the ``trim_memory`` setting the thread hands freed heap memory back to the operating
system after each call (glibc's ``malloc_trim``; a no-op elsewhere): batches of different shapes
otherwise leave the allocator holding the peak of every shape seen (docs/service-reliability.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import ApiError
from .metrics import ServiceMetrics

__all__ = ["ModelWorker", "overloaded"]

T = TypeVar("T")


def overloaded(message: str, metrics: ServiceMetrics, retry_after_s: float) -> ApiError:
    """The 429 answer to a request refused at admission, with ``Retry-After`` in whole seconds (at least 1)."""
    metrics.rejected.inc()
    return ApiError(429, f"{message}; retry later", headers={"Retry-After": str(max(1, math.ceil(retry_after_s)))})


def malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)`` (freed heap pages back to the OS), or a no-op where there is none."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return lambda: None
    return lambda: trim(0)


class ModelWorker:
    """Run blocking model calls one at a time; ``queue_size`` calls may wait."""

    def __init__(self, queue_size: int, metrics: ServiceMetrics, trim_memory: bool = False) -> None:
        self.queue_size = queue_size
        self.metrics = metrics
        self._trim = malloc_trim() if trim_memory else (lambda: None)
        self.pending = 0
        self.last_seconds = 1.0
        """Wall time of the latest call: the ``Retry-After`` estimate is queue length × this."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsefinder-model")

    async def call(self, fn: Callable[..., T], *args) -> T:
        """Await ``fn(*args)`` on the model thread, without admission control (callers bound their own queue)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            return await loop.run_in_executor(self._executor, self._then_trim, fn, *args)
        finally:
            self.last_seconds = loop.time() - start

    async def run(self, fn: Callable[..., T], *args) -> T:
        """Await ``fn(*args)`` on the model thread; 429 when ``queue_size`` calls are already waiting."""
        if self.pending >= self.queue_size + 1:
            raise overloaded(f"the model queue is full ({self.queue_size} waiting)", self.metrics,
                             self.pending * self.last_seconds)
        self.pending += 1
        self.metrics.queue.set(self.pending)
        try:
            return await self.call(fn, *args)
        finally:
            self.pending -= 1
            self.metrics.queue.set(self.pending)

    def _then_trim(self, fn: Callable[..., T], *args) -> T:
        try:
            return fn(*args)
        finally:
            self._trim()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
