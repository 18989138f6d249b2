"""The model thread: every model call runs in one worker thread behind a bounded queue.

PyTorch already uses every core for one forward pass, so requests run one at a time;
up to ``queue_size`` wait, more are refused with 429. An exception in a call goes back
to its request; the thread itself never dies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import ApiError
from .metrics import ServiceMetrics

__all__ = ["ModelWorker"]

T = TypeVar("T")


class ModelWorker:
    """Run blocking model calls one at a time; ``queue_size`` calls may wait."""

    def __init__(self, queue_size: int, metrics: ServiceMetrics) -> None:
        self.queue_size = queue_size
        self.metrics = metrics
        self.pending = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsefinder-model")

    async def run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` on the model thread; 429 when ``queue_size`` calls are already waiting."""
        if self.pending >= self.queue_size + 1:
            self.metrics.rejected.inc()
            raise ApiError(429, f"the model queue is full ({self.queue_size} waiting); retry later")
        self.pending += 1
        self.metrics.queue.set(self.pending)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        finally:
            self.pending -= 1
            self.metrics.queue.set(self.pending)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
