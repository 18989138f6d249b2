"""Server-side batching of ``POST /v1/encode`` (as michaelfeil/infinity and text-embeddings-inference do).

Concurrent requests with the same mode key (predictor, certified, truncate, layers, recall) are joined into
one forward pass: the batching task takes the oldest waiting request, waits at most
``batch_max_wait_ms`` for more of its kind, concatenates up to ``batch_max_texts`` texts, runs
one ``engine.encode`` on the model thread and splits the result back per request. The queue
is bounded in requests (``queue_size``) and in texts (``queue_texts``); beyond, 429 with
``Retry-After``. Certified requests run alone (their ``keys_added`` is a per-batch sum).
If a joined batch fails on one request's texts (too long), each request is rerun alone so
that the error reaches only the request at fault.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from sparsefinder.config import Settings
from sparsefinder.encoder import EncodeResult

from .engine import Engine
from .errors import ApiError
from .metrics import ServiceMetrics
from .schemas import EncodeResponse
from .worker import ModelWorker, overloaded

__all__ = ["EncodeBatcher"]

#: What requests must share to join one forward pass: predictor, certified, truncate, layers, recall.
ModeKey = tuple[str, bool, bool, tuple[int, ...] | None, float | None]


@dataclass
class _Request:
    key: ModeKey
    texts: list[str]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class EncodeBatcher:
    """Gather concurrent encode requests into forward passes on the model thread."""

    def __init__(self, settings: Settings, worker: ModelWorker, metrics: ServiceMetrics) -> None:
        self.max_texts = settings.batch_max_texts
        self.max_wait = settings.batch_max_wait_ms / 1000
        self.queue_requests = settings.queue_size
        self.queue_texts = settings.queue_texts
        self.worker = worker
        self.metrics = metrics
        self.waiting: deque[_Request] = deque()
        self.waiting_texts = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def refusal(self, texts: int = 1) -> ApiError | None:
        """The 429 for a request of ``texts`` texts if the queue cannot take it now, else ``None``."""
        if len(self.waiting) < self.queue_requests and self.waiting_texts + texts <= self.queue_texts:
            return None
        batches = 1 + self.waiting_texts / max(1, self.max_texts)
        return overloaded(f"the encode queue is full ({len(self.waiting)} requests, {self.waiting_texts} texts "
                          "waiting)", self.metrics, batches * self.worker.last_seconds)

    async def encode(self, engine: Engine, texts: list[str], predictor: str, certified: bool, truncate: bool,
                     layers: list[int] | None = None, recall: float | None = None) -> EncodeResponse:
        """The response ``engine`` gives for these texts alone, computed in a shared forward pass."""
        if (refused := self.refusal(len(texts))) is not None:
            raise refused
        key = (predictor, certified, truncate, tuple(layers) if layers is not None else None, recall)
        request = _Request(key, texts, asyncio.get_running_loop().create_future())
        self.waiting.append(request)
        self._count(len(texts))
        self._ensure_running(engine)
        self._wake.set()
        return await request.future

    # ------------------------------------------------------------ the batching task
    def _count(self, texts: int) -> None:
        self.waiting_texts += texts
        self.metrics.queue.set(len(self.waiting))

    def _ensure_running(self, engine: Engine) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(engine))

    def _take(self) -> list[_Request]:
        """The oldest request and the next ones of its mode, up to ``max_texts`` texts in all."""
        first = self.waiting[0]
        if first.key[1]:  # certified: alone
            chosen = [first]
        else:
            chosen, total = [], 0
            for request in self.waiting:
                if request.key == first.key and (not chosen or total + len(request.texts) <= self.max_texts):
                    chosen.append(request)
                    total += len(request.texts)
        for request in chosen:
            self.waiting.remove(request)
            self._count(-len(request.texts))
        return chosen

    def _full(self) -> bool:
        key = self.waiting[0].key
        return key[1] or sum(len(r.texts) for r in self.waiting if r.key == key) >= self.max_texts

    async def _loop(self, engine: Engine) -> None:
        while True:
            while not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            remaining = self.waiting[0].enqueued + self.max_wait - time.perf_counter()
            while remaining > 0 and not self._full():
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                remaining = self.waiting[0].enqueued + self.max_wait - time.perf_counter()
            batch = [r for r in self._take() if not r.future.cancelled()]
            if batch:
                await self._run(engine, batch)

    async def _run(self, engine: Engine, batch: list[_Request]) -> None:
        predictor, certified, truncate, layers, recall = batch[0].key
        texts = [t for r in batch for t in r.texts]
        try:
            result = await self.worker.call(engine.encode, texts, predictor, certified, truncate, layers, recall)
        except ApiError as exc:
            if len(batch) > 1 and exc.field == "texts":  # one request's texts: find it by running each alone
                for request in batch:
                    await self._run(engine, [request])
                return
            _fail(batch, exc)
            return
        except Exception as exc:  # noqa: BLE001 - goes back to the requests (500 there)
            _fail(batch, exc)
            return
        self.metrics.batches.inc()
        self.metrics.batch_texts.observe(len(texts))
        done = time.perf_counter()
        start = 0
        for request in batch:
            part = slice(start, start + len(request.texts))
            start = part.stop
            if not request.future.done():
                request.future.set_result(_response(result, part, predictor, len(texts),
                                                    done - request.enqueued - result.seconds))

    def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _fail(batch: list[_Request], exc: Exception) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(exc)


def _response(result: EncodeResult, part: slice, predictor: str, batch_texts: int,
              queue_seconds: float) -> EncodeResponse:
    """One request's share of a batch: its embeddings rows, per-layer sparsity averaged over its texts."""
    per_text = result.text_sparsity[part]
    sparsity = [sum(layer) / len(per_text) for layer in zip(*per_text)]
    return EncodeResponse(predictor=predictor, embeddings=result.embeddings[part].tolist(), sparsity=sparsity,
                          keys_added=list(result.keys_added), num_tokens=result.num_tokens[part],
                          seconds=float(result.seconds), queue_seconds=max(0.0, float(queue_seconds)),
                          batch_texts=batch_texts)
