"""Server-side batching of /v1/encode: concurrent requests share forward passes, answers unchanged; long
requests wait in their own lane, short ones go first, and long ones are not starved."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from conftest import launch, wait_ready
from service.batcher import Lanes, _Request

pytestmark = pytest.mark.slow

TEXTS = [["the cat sat on the mat"], ["a much longer sentence about sparse attention in encoders", "hi"],
         ["one two three four five six seven"], ["Valkyria Chronicles III is a tactical role playing game"],
         ["short"], ["sparse", "attention keeps few keys"], ["α-entmax gives exact zeros"]]

#: 38 tokens: long for the ``lanes`` server (``long_tokens`` 16), where every text in TEXTS is short.
LONG = ("In the third game of the series, a squad of penal soldiers fights a secret war for the principality "
        "of Gallia during the Second Europan War, apart from the regular army.")
LONG_EVERY = 1


def _metric(client: httpx.Client, name: str) -> float:
    text = client.get("/metrics").text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def _batches(client: httpx.Client) -> float:
    return _metric(client, "sparsefinder_encode_batches_total")


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


# ------------------------------------------------------------------ long and short lanes
@pytest.fixture(scope="module")
def lanes(tmp_path_factory, tiny_corpus) -> str:
    """A server where a text over 16 tokens is long and a long request waits at most one short pass."""
    root = tmp_path_factory.mktemp("lanes")
    log = root / "server.log"
    proc, url = launch(root, tiny_corpus.parent, log, SPARSEFINDER_LONG_TOKENS="16",
                       SPARSEFINDER_LONG_EVERY=str(LONG_EVERY), SPARSEFINDER_MAX_TEXTS="16",
                       SPARSEFINDER_BATCH_MAX_TEXTS="16", SPARSEFINDER_BATCH_MAX_WAIT_MS="50",
                       SPARSEFINDER_QUEUE_SIZE="16", SPARSEFINDER_QUEUE_TEXTS="64", SPARSEFINDER_TORCH_THREADS="1")
    wait_ready(proc, url, log)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


async def _completion_order(url: str, bodies: dict[str, dict]) -> tuple[list[str], dict[str, httpx.Response]]:
    """Send ``bodies`` at once (started in their order); the names in the order their responses came back."""
    order: list[str] = []

    async def post(c: httpx.AsyncClient, name: str, body: dict) -> httpx.Response:
        res = await c.post("/v1/encode", json=body)
        order.append(name)
        return res

    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        tasks = {name: asyncio.create_task(post(c, name, body)) for name, body in bodies.items()}
        return order, {name: await task for name, task in tasks.items()}


def test_a_short_request_does_not_wait_for_the_long_ones_ahead(lanes):
    # long requests never share a pass (9 texts each: nor could two of them, 18 > batch_max_texts 16)
    bodies = {f"long{i}": {"texts": [f"{LONG} ({i}, {j})" for j in range(9)]} for i in range(3)}
    bodies["short"] = {"texts": TEXTS[0]}
    with httpx.Client(base_url=lanes, timeout=120) as c:
        alone = {name: c.post("/v1/encode", json=body).json() for name, body in bodies.items()}
        long_before = _metric(c, "sparsefinder_encode_long_requests_total")
        order, together = asyncio.run(_completion_order(lanes, bodies))
        assert _metric(c, "sparsefinder_encode_long_requests_total") - long_before == 3
    assert {name: r.status_code for name, r in together.items()} == dict.fromkeys(bodies, 200)
    # it waits at most for the long pass running when it arrived (first in, first out: it would come last)
    assert order.index("short") <= 1, order
    for name, one in alone.items():
        joined = together[name].json()
        assert joined["num_tokens"] == one["num_tokens"]
        for a, b in zip(one["embeddings"], joined["embeddings"]):
            assert b == pytest.approx(a, abs=1e-5)


def test_a_long_request_is_not_starved_by_a_stream_of_short_ones(lanes):
    # each short request has its own mode (predictor), so each takes a forward pass of its own
    bodies = {"long": {"texts": [LONG] * 2}} | {f"short{k}": {"texts": ["the cat sat on the mat"],
                                                                "predictor": f"window{k}"} for k in range(1, 7)}
    with httpx.Client(base_url=lanes, timeout=120) as c:
        alone = c.post("/v1/encode", json=bodies["long"]).json()
    order, together = asyncio.run(_completion_order(lanes, bodies))
    assert {name: r.status_code for name, r in together.items()} == dict.fromkeys(bodies, 200)
    # a text per pass: at most LONG_EVERY short passes before each of its 2 texts, and one before it arrived
    assert order.index("long") <= 2 * LONG_EVERY + 1, order
    # and shorts ran between its two texts; its answer is that of the request sent alone
    assert order.index("long") >= 1, order
    joined = together["long"].json()
    assert joined["num_tokens"] == alone["num_tokens"] and joined["batch_texts"] == 1
    assert joined["sparsity"] == pytest.approx(alone["sparsity"], abs=1e-6)
    for a, b in zip(alone["embeddings"], joined["embeddings"]):
        assert b == pytest.approx(a, abs=1e-5)


def test_a_bad_long_request_fails_alone(lanes):
    bodies = {"fine": {"texts": [LONG]}, "bad": {"texts": ["word " * 600]}, "also fine": {"texts": [LONG, LONG]}}
    _, together = asyncio.run(_completion_order(lanes, bodies))
    assert {name: r.status_code for name, r in together.items()} == {"fine": 200, "bad": 400, "also fine": 200}


def _pass_order(queue: Lanes, requests: list[_Request]) -> list[list[str]]:
    """The forward passes ``queue`` makes of ``requests`` (all waiting at once), each as its requests' names."""
    for request in requests:
        queue.add(request)
    passes = []
    while queue:
        passes.append([request.texts[0] for request in queue.take()])
    return passes


def _request(name: str, long: bool = False, mode: str = "dense", texts: int = 1) -> _Request:
    """A waiting request named by its texts (no future: :class:`Lanes` only orders requests)."""
    return _Request((mode, False, False, None, None), [name] * texts, None, long)


def test_lanes_take_short_passes_first_and_a_long_one_after_long_every():
    def shorts(count: int = 4) -> list[_Request]:  # fresh requests each time: a long one counts its passes
        return [_request(f"s{k}", mode=f"window{k}") for k in range(count)]  # their own modes: a pass each

    def longs() -> list[_Request]:
        return [_request("l0", long=True), _request("l1", long=True)]  # one mode, yet a pass each

    assert _pass_order(Lanes(max_texts=16, long_every=2), longs() + shorts()) == [
        ["s0"], ["s1"], ["l0"], ["s2"], ["s3"], ["l1"]]
    assert _pass_order(Lanes(max_texts=16, long_every=1), longs() + shorts()) == [
        ["s0"], ["l0"], ["s1"], ["l1"], ["s2"], ["s3"]]
    # a long request never joins a short one of its mode; with no short one waiting it runs at once
    assert _pass_order(Lanes(max_texts=16, long_every=4), [_request("l", long=True), _request("s")]) == [
        ["s"], ["l"]]
    assert _pass_order(Lanes(max_texts=16, long_every=4), [_request("l", long=True)]) == [["l"]]
    # long requests never join and run a text per pass (short ones join by mode up to max_texts)
    assert _pass_order(Lanes(max_texts=4, long_every=4),
                       [_request("a", long=True, texts=3), _request("b", long=True, texts=2),
                        _request("c", long=True, texts=1)]) == [["a"], ["a"], ["a"], ["b"], ["b"], ["c"]]
    # short passes come between a long request's texts
    assert _pass_order(Lanes(max_texts=16, long_every=1), [_request("l", long=True, texts=3)] + shorts(2)) == [
        ["s0"], ["l"], ["s1"], ["l"], ["l"]]
    assert _pass_order(Lanes(max_texts=4, long_every=4),
                       [_request("a", texts=3), _request("b", texts=2), _request("c", texts=1)]) == [["a", "c"], ["b"]]


def test_lanes_drop_a_long_request_with_the_texts_it_had_left():
    queue = Lanes(max_texts=16, long_every=1)
    long, short = _request("l", long=True, texts=3), _request("s")
    for request in (long, short):
        queue.add(request)
    assert queue.take() == [short] and queue.take() == [long] and queue.texts == 2
    queue.drop(long)  # cancelled (or failed) after its first text: the other two never run
    assert not queue and queue.texts == 0 and queue.next_lane() is None
    queue.drop(short)  # not waiting: nothing changes
    assert queue.texts == 0
