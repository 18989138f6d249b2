"""Server-side batching of /v1/encode: concurrent requests share forward passes, answers unchanged."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

pytestmark = pytest.mark.slow

TEXTS = [["the cat sat on the mat"], ["a much longer sentence about sparse attention in encoders", "hi"],
         ["one two three four five six seven"], ["Valkyria Chronicles III is a tactical role playing game"],
         ["short"], ["sparse", "attention keeps few keys"], ["α-entmax gives exact zeros"]]


def _batches(client: httpx.Client) -> float:
    text = client.get("/metrics").text
    return float(re.search(r"^sparsefinder_encode_batches_total (\S+)$", text, re.M).group(1))


async def _concurrent(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        return await asyncio.gather(*(c.post("/v1/encode", json=b) for b in bodies))


@pytest.mark.parametrize("predictor", ["dense", "window2"])
def test_concurrent_requests_share_forward_passes_and_match_alone(service, predictor):
    bodies = [{"texts": t, "predictor": predictor} for t in TEXTS]
    with service.client() as c:
        alone = [c.post("/v1/encode", json=b).json() for b in bodies]
        before = _batches(c)
        together = asyncio.run(_concurrent(service.url, bodies))
        passes = _batches(c) - before
    assert [r.status_code for r in together] == [200] * len(bodies)
    assert 1 <= passes < len(bodies)
    assert max(r.json()["batch_texts"] for r in together) > max(len(t) for t in TEXTS)
    for one, joined in zip(alone, (r.json() for r in together)):
        assert joined["num_tokens"] == one["num_tokens"]
        assert joined["sparsity"] == pytest.approx(one["sparsity"], abs=1e-6)
        for a, b in zip(one["embeddings"], joined["embeddings"]):
            assert b == pytest.approx(a, abs=1e-5)


def test_a_bad_request_in_a_batch_fails_alone(service):
    bodies = [{"texts": ["fine text"]}, {"texts": ["word " * 600]}, {"texts": ["also fine"]}]
    codes = [r.status_code for r in asyncio.run(_concurrent(service.url, bodies))]
    assert codes == [200, 400, 200]


def test_model_thread_trims_the_heap_after_every_call():
    """With ``trim_memory``, batches of changing shapes do not leave the allocator holding their peaks."""
    from service.metrics import ServiceMetrics
    from service.worker import ModelWorker, malloc_trim

    assert malloc_trim()() in (0, 1, None)  # glibc answers 0 or 1; elsewhere a no-op
    worker = ModelWorker(2, ServiceMetrics(), trim_memory=True)
    trims = []
    worker._trim = lambda: trims.append(1)

    async def calls():
        return [await worker.run(lambda x: x * 2, i) for i in range(3)]

    assert asyncio.run(calls()) == [0, 2, 4] and len(trims) == 3
    with pytest.raises(ZeroDivisionError):
        asyncio.run(worker.run(lambda: 1 / 0))
    assert len(trims) == 4  # also after a call that failed
    worker.shutdown()
    assert ModelWorker(2, ServiceMetrics())._trim() is None  # off by default
