"""Server-side batching of ``POST /v1/encode`` (as michaelfeil/infinity and text-embeddings-inference do).

Concurrent requests with the same mode key (predictor, certified, truncate, layers, recall) are joined into
one forward pass: the batching task takes the oldest request of the lane that goes next, waits at most
``batch_max_wait_ms`` for more of its kind, concatenates up to ``batch_max_texts`` texts of that lane, runs
one ``engine.encode`` on the model thread and splits the result back per request. Certified requests run
alone (their ``keys_added`` is a per-batch sum). If a joined batch fails on one request's texts (too long),
each request is rerun alone so that the error reaches only the request at fault.

Long and short requests wait in two lanes (:class:`Lanes`). A request is long when its longest text has
more than ``long_tokens`` tokens as it will run (cut to the encoder's limit with ``truncate``), counted with
the engine's tokenizer on a helper thread (neither the event loop nor the model thread) before it joins a
lane. A long request runs one text per pass (chunked scheduling: a text longer than ``batch_tokens`` runs
alone in the encoder anyway, so splitting costs nothing) and is answered when its last text has run.
Short requests go first; the oldest long request's next text goes next once ``long_every`` short passes
have been taken while long requests waited (the count restarts at each long pass), or as soon as no
short request waits. So a short request waits behind at most the pass already running and one long
text per ``long_every`` short passes, and a long request's j-th text waits for at most j × ``long_every``
short passes. The queue is bounded over both lanes together (and the
requests being counted), in requests (``queue_size``) and in texts (``queue_texts``); beyond, 429 with
``Retry-After``.
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

__all__ = ["EncodeBatcher", "Lanes"]

#: What requests must share to join one forward pass: predictor, certified, truncate, layers, recall.
ModeKey = tuple[str, bool, bool, tuple[int, ...] | None, float | None]


@dataclass
class _Request:
    key: ModeKey
    texts: list[str]
    future: asyncio.Future
    long: bool = False
    enqueued: float = field(default_factory=time.perf_counter)
    taken: int = 0
    """Texts of a long request handed to passes so far (a long request runs a text per pass)."""
    parts: list[EncodeResult] = field(default_factory=list)
    """Results of a long request's passes so far."""


class Lanes:
    """The waiting requests in a short and a long lane, and the choice of the next forward pass (no I/O)."""

    def __init__(self, max_texts: int, long_every: int) -> None:
        self.max_texts = max_texts
        self.long_every = long_every
        self.short: deque[_Request] = deque()
        self.long: deque[_Request] = deque()
        self.texts = 0
        self.short_passes = 0
        """Short passes taken while a long request waited, since the last long pass."""

    def __len__(self) -> int:
        return len(self.short) + len(self.long)

    def add(self, request: _Request) -> None:
        (self.long if request.long else self.short).append(request)
        self.texts += len(request.texts)

    def next_lane(self) -> deque[_Request] | None:
        """The lane whose oldest request runs next: short first, long after ``long_every`` short passes."""
        if self.long and (not self.short or self.short_passes >= self.long_every):
            return self.long
        return self.short or None

    def full(self) -> bool:
        """Whether the next pass cannot grow: long or certified, or ``max_texts`` texts of its mode wait."""
        lane = self.next_lane()
        key = lane[0].key
        return lane is self.long or key[1] or sum(len(r.texts) for r in lane if r.key == key) >= self.max_texts

    def take(self) -> list[_Request]:
        """The next pass, removed from its lane: the lane's oldest request and the next short ones of its mode, up
        to ``max_texts`` texts in all (a certified or long request alone); cancelled requests included."""
        lane = self.next_lane()
        first = lane[0]
        if lane is self.long:  # its next text alone: a long text runs in a pass of its own anyway (batch_tokens)
            first.taken += 1
            self.texts -= 1
            if first.taken == len(first.texts):
                lane.popleft()
            self.short_passes = 0
            return [first]
        if first.key[1]:  # certified: alone
            chosen = [first]
        else:
            chosen, total = [], 0
            for request in lane:
                if request.key == first.key and (not chosen or total + len(request.texts) <= self.max_texts):
                    chosen.append(request)
                    total += len(request.texts)
        for request in chosen:
            lane.remove(request)
            self.texts -= len(request.texts)
        if self.long:
            self.short_passes += 1
        return chosen

    def drop(self, request: _Request) -> None:
        """Remove a long request (its pass failed, or it was cancelled) with the texts it had left."""
        if request in self.long:
            self.long.remove(request)
            self.texts -= len(request.texts) - request.taken


class EncodeBatcher:
    """Gather concurrent encode requests into forward passes on the model thread."""

    def __init__(self, settings: Settings, worker: ModelWorker, metrics: ServiceMetrics) -> None:
        self.max_texts = settings.batch_max_texts
        self.max_wait = settings.batch_max_wait_ms / 1000
        self.queue_requests = settings.queue_size
        self.queue_texts = settings.queue_texts
        self.long_tokens = settings.long_tokens
        self.worker = worker
        self.metrics = metrics
        self.lanes = Lanes(settings.batch_max_texts, settings.long_every)
        self.counting = 0
        """Admitted requests whose tokens are being counted (not yet in a lane)."""
        self.counting_texts = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def refusal(self, texts: int = 1) -> ApiError | None:
        """The 429 for a request of ``texts`` texts if the queue cannot take it now, else ``None``."""
        requests, waiting_texts = len(self.lanes) + self.counting, self.lanes.texts + self.counting_texts
        if requests < self.queue_requests and waiting_texts + texts <= self.queue_texts:
            return None
        batches = 1 + waiting_texts / max(1, self.max_texts)
        return overloaded(f"the encode queue is full ({requests} requests, {waiting_texts} texts waiting)",
                          self.metrics, batches * self.worker.last_seconds)

    async def encode(self, engine: Engine, texts: list[str], predictor: str, certified: bool, truncate: bool,
                     layers: list[int] | None = None, recall: float | None = None) -> EncodeResponse:
        """The response ``engine`` gives for these texts alone, computed in a shared forward pass."""
        if (refused := self.refusal(len(texts))) is not None:
            raise refused
        admitted = time.perf_counter()
        self._counting(1, len(texts))
        try:
            tokens = await asyncio.to_thread(engine.token_counts, texts, truncate)
        finally:
            self._counting(-1, -len(texts))
        long = max(tokens, default=0) > self.long_tokens
        key = (predictor, certified, truncate, tuple(layers) if layers is not None else None, recall)
        request = _Request(key, texts, asyncio.get_running_loop().create_future(), long, admitted)
        self.lanes.add(request)
        self._gauge()
        if long:
            self.metrics.long_requests.inc()
        self._ensure_running(engine)
        self._wake.set()
        return await request.future

    # ------------------------------------------------------------ the batching task
    def _counting(self, requests: int, texts: int) -> None:
        self.counting += requests
        self.counting_texts += texts
        self._gauge()

    def _gauge(self) -> None:
        self.metrics.queue.set(len(self.lanes) + self.counting)

    def _ensure_running(self, engine: Engine) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(engine))

    async def _loop(self, engine: Engine) -> None:
        while True:
            while not self.lanes:
                self._wake.clear()
                await self._wake.wait()
            remaining = self.lanes.next_lane()[0].enqueued + self.max_wait - time.perf_counter()
            if remaining > 0 and not self.lanes.full():
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                    continue  # a request arrived: choose the lane again
                except asyncio.TimeoutError:
                    pass
            batch = []
            for request in self.lanes.take():
                if request.future.cancelled():
                    self.lanes.drop(request)  # a long one's texts still waiting go with it
                else:
                    batch.append(request)
            self._gauge()
            if batch:
                await self._run(engine, batch)

    async def _run(self, engine: Engine, batch: list[_Request]) -> None:
        if batch[0].long:
            await self._run_long(engine, batch[0])
            return
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

    async def _run_long(self, engine: Engine, request: _Request) -> None:
        """The pass of a long request's next text; its answer once its last text has run."""
        try:
            result = await self.worker.call(engine.encode, [request.texts[len(request.parts)]], *request.key)
        except Exception as exc:  # noqa: BLE001 - goes back to the request (4xx or 500 there)
            self.lanes.drop(request)
            self._gauge()
            _fail([request], exc)
            return
        self.metrics.batches.inc()
        self.metrics.batch_texts.observe(1)
        request.parts.append(result)
        if len(request.parts) == len(request.texts) and not request.future.done():
            whole = EncodeResult.join(request.parts)
            request.future.set_result(_response(whole, slice(None), request.key[0], 1,
                                                time.perf_counter() - request.enqueued - whole.seconds))

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
