"""The HTTP API against a real uvicorn process: each endpoint's success case and its error codes."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time

import httpx
import pytest

from conftest import HEADS, LAYERS, hand_report

from sparsefinder.report import style_predictors

pytestmark = pytest.mark.slow


def _err(res: httpx.Response, status: int, field: str | None = None) -> dict:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"} and body["error"]["status"] == status and body["error"]["message"]
    if field is not None:
        assert body["error"]["field"] == field
    return body["error"]


def test_health_and_ready(service):
    with service.client() as c:
        assert c.get("/healthz").json()["status"] == "ok"
        ready = c.get("/readyz").json()
        assert ready["status"] == "ok" and ready["model"].startswith("all-MiniLM-L6-v2@")


def test_encode_dense_embeddings_are_unit_vectors(service):
    with service.client() as c:
        res = c.post("/v1/encode", json={"texts": ["hello world", "a longer sentence about cats"]})
    assert res.status_code == 200, res.text
    body = res.json()
    emb = body["embeddings"]
    assert len(emb) == 2 and len(emb[0]) == 384
    assert all(abs(sum(x * x for x in e) - 1.0) < 1e-4 for e in emb)
    assert body["sparsity"] == [0.0] * 6 and body["keys_added"] == [0] * 6 and body["num_tokens"][0] == 4


def test_encode_softmax_differs_from_entmax(service):
    with service.client() as c:
        texts = {"texts": ["the cat sat on the mat"]}
        dense = c.post("/v1/encode", json=texts).json()["embeddings"][0]
        soft = c.post("/v1/encode", json={**texts, "predictor": "softmax"}).json()
    assert soft["sparsity"] == [0.0] * 6
    assert abs(sum(x * x for x in soft["embeddings"][0]) - 1.0) < 1e-4
    assert max(abs(a - b) for a, b in zip(soft["embeddings"][0], dense)) > 1e-3


def test_encode_window_sparsity_is_exact(service):
    # "hello world" → [CLS] hello world [SEP]: n = 4, window ±1 keeps 3n − 2 = 10 of 16 pairs
    with service.client() as c:
        body = c.post("/v1/encode", json={"texts": ["hello world"], "predictor": "window1"}).json()
    assert body["sparsity"] == pytest.approx([1 - 10 / 16] * 6)


def test_encode_wide_window_equals_dense(service):
    with service.client() as c:
        dense = c.post("/v1/encode", json={"texts": ["the cat sat on the mat"]}).json()["embeddings"][0]
        wide = c.post("/v1/encode", json={"texts": ["the cat sat on the mat"], "predictor": "window64"}).json()
    assert wide["sparsity"] == [0.0] * 6
    assert wide["embeddings"][0] == pytest.approx(dense, abs=1e-5)


def test_encode_certified_equals_dense(service):
    text = {"texts": ["the cat sat on the mat because it was tired"]}
    with service.client() as c:
        dense = c.post("/v1/encode", json=text).json()["embeddings"][0]
        cert = c.post("/v1/encode", json={**text, "predictor": "window1", "certified": True}).json()
        assert c.post("/v1/encode", json={**text, "certified": True}).json()["embeddings"][0] == dense
    assert cert["embeddings"][0] == pytest.approx(dense, abs=1e-5)
    assert sum(cert["keys_added"]) > 0


@pytest.mark.parametrize("body, status, field", [
    ({"texts": []}, 422, "texts"),
    ({"texts": "not a list"}, 422, "texts"),
    ({"texts": ["x"] * 17}, 422, "texts"),
    ({"texts": ["x"], "predictor": "no-such-thing"}, 404, "predictor"),
    ({"texts": ["x"], "predictor": "window-1"}, 404, "predictor"),
    ({"texts": ["x"], "certified": "maybe"}, 422, "certified"),
    ({"texts": ["x"], "colour": "red"}, 422, "colour"),
])
def test_encode_rejects_bad_requests(service, body, status, field):
    with service.client() as c:
        _err(c.post("/v1/encode", json=body), status, field)


def test_encode_long_text_needs_truncate(service):
    long_text = "word " * 600
    with service.client() as c:
        _err(c.post("/v1/encode", json={"texts": ["short", long_text]}), 400, "texts")
        ok = c.post("/v1/encode", json={"texts": [long_text], "truncate": True})
    assert ok.status_code == 200 and len(ok.json()["embeddings"]) == 1


def test_malformed_json_is_422_naming_the_body(service):
    with service.client() as c:
        _err(c.post("/v1/encode", content=b"{not json", headers={"content-type": "application/json"}), 422, "body")


def test_attention_window_pattern_and_metrics(service):
    with service.client() as c:
        res = c.post("/v1/attention", json={"text": "hello world", "predictor": "window1", "layer": 2, "head": 5})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["tokens"] == ["[CLS]", "hello", "world", "[SEP]"]
    assert body["predicted"] == [[0, 1], [0, 1, 2], [1, 2, 3], [2, 3]]
    gold = body["gold"]
    assert len(gold) == 4 and all(row for row in gold)
    hits = sum(len(set(p) & set(g)) for p, g in zip(body["predicted"], gold))
    n_gold = sum(len(g) for g in gold)
    assert body["recall"] == pytest.approx(hits / n_gold)
    assert body["sparsity"] == pytest.approx(1 - 10 / 16)
    assert body["gold_sparsity"] == pytest.approx(1 - n_gold / 16)


@pytest.mark.parametrize("body, status, field", [
    ({"text": "hi", "predictor": "window1", "layer": 6}, 404, "layer"),
    ({"text": "hi", "predictor": "window1", "head": 12}, 404, "head"),
    ({"text": "hi", "predictor": "window1", "layer": -1}, 422, "layer"),
    ({"text": "", "predictor": "window1"}, 422, "text"),
    ({"text": "hi", "predictor": "zzz"}, 404, "predictor"),
    ({"text": "word " * 600, "predictor": "window1"}, 422, "text"),
])
def test_attention_rejects_bad_requests(service, body, status, field):
    with service.client() as c:
        _err(c.post("/v1/attention", json=body), status, field)


def test_state_changing_routes_need_the_token(service):
    fit = {"spec": "window4", "corpus": str(service.corpus)}
    with service.client() as c:
        _err(c.post("/v1/predictors", json=fit), 401)
        _err(c.post("/v1/predictors", json=fit, headers={"Authorization": "Bearer wrong"}), 403)
        # the token is checked before the body is parsed: garbage without a token is still 401
        _err(c.post("/v1/predictors", content=b"garbage"), 401)
        _err(c.delete("/v1/predictors/anything"), 401)
        _err(c.get("/v1/jobs/anything"), 401)
        _err(c.get("/v1/jobs/anything", headers={"Authorization": "Basic abc"}), 401)
        assert c.get("/v1/predictors").json()["predictors"] == []


def test_not_found(service):
    with service.client() as c:
        _err(c.get("/v1/predictors/nope"), 404)
        _err(c.get("/v1/jobs/nope", headers=service.auth), 404)
        _err(c.delete("/v1/predictors/nope", headers=service.auth), 404)
        _err(c.get("/v1/reports/nope"), 404)
        _err(c.get("/v1/reports/nope/pareto.png"), 404)
        _err(c.get("/v1/no-such-route"), 404)
        _err(c.post("/v1/predictors", json={"spec": "window4", "corpus": "no-such-file.txt"},
                    headers=service.auth), 404, "corpus")


def test_fit_rejects_bad_spec(service):
    with service.client() as c:
        _err(c.post("/v1/predictors", json={"spec": "bogus9", "corpus": str(service.corpus)}, headers=service.auth),
             404, "spec")
        _err(c.post("/v1/predictors", json={"spec": "window4"}, headers=service.auth), 422, "corpus")


def test_body_limit_413(service):
    big = json.dumps({"texts": ["x" * 30000]}).encode()
    with service.client() as c:
        _err(c.post("/v1/encode", content=big, headers={"content-type": "application/json"}), 413)

        def chunks():  # no Content-Length: the size is counted while the body streams
            for i in range(0, len(big), 4096):
                yield big[i:i + 4096]

        _err(c.post("/v1/encode", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_fit_job_to_completion_then_use_and_delete(service):
    fit = {"spec": "window4", "corpus": str(service.corpus), "max_length": 32, "limit": 2}
    with service.client() as c:
        res = c.post("/v1/predictors", json=fit, headers=service.auth)
        assert res.status_code == 202, res.text
        job = res.json()
        assert job["state"] in ("queued", "running") and job["spec"] == "window4"
        _err(c.post("/v1/predictors", json=fit, headers=service.auth), 409)
        deadline = time.monotonic() + 180
        while job["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
            job = c.get(f"/v1/jobs/{job['id']}", headers=service.auth).json()
        assert job["state"] == "done" and job["progress"] == 1.0, job
        artifact = job["result_id"]
        listed = c.get("/v1/predictors").json()["predictors"]
        assert [p["id"] for p in listed] == [artifact]
        info = c.get(f"/v1/predictors/{artifact}").json()
        assert info["id"] == artifact and info["params"]["width"] == 4
        enc = c.post("/v1/encode", json={"texts": ["one two three four five six"], "predictor": artifact}).json()
        n = 8  # [CLS] six words [SEP]; window ±4 keeps n² − (n−4)(n−5) = 64 − 12 = 52 pairs
        assert enc["sparsity"] == pytest.approx([1 - 52 / n**2] * 6)
        _err(c.delete(f"/v1/predictors/{artifact}"), 401)
        assert c.get(f"/v1/predictors/{artifact}").status_code == 200
        assert c.delete(f"/v1/predictors/{artifact}", headers=service.auth).json() == {"id": artifact,
                                                                                        "deleted": True}
        _err(c.get(f"/v1/predictors/{artifact}"), 404)
        _err(c.post("/v1/encode", json={"texts": ["x"], "predictor": artifact}), 404, "predictor")


def test_full_queue_answers_429_and_worker_survives(service):
    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=service.url, timeout=120) as c:
            body = {"texts": ["a sentence of moderate length for the encoder to chew on"] * 16}
            res = await asyncio.gather(*(c.post("/v1/encode", json=body) for _ in range(6)))
            assert all(int(r.headers["retry-after"]) >= 1 for r in res if r.status_code == 429)
            return [r.status_code for r in res]

    codes = asyncio.run(burst())
    assert set(codes) <= {200, 429} and 429 in codes and 200 in codes, codes
    with service.client() as c:
        assert c.post("/v1/encode", json={"texts": ["still alive"]}).status_code == 200


def test_reports_json_csv_and_plots(service):
    with service.client() as c:
        listed = c.get("/v1/reports").json()["reports"]
        assert [r["id"] for r in listed] == ["r1"] and listed[0]["predictors"] == ["window", "oracle"]
        # the stored report plus each predictor's kind and colour (shared by the page and the PNG)
        styled = [{**p, "kind": s["kind"], "color": s["color"]}
                  for p, s in zip(hand_report()["predictors"], style_predictors(hand_report()))]
        assert c.get("/v1/reports/r1").json() == {**hand_report(), "predictors": styled}
        res = c.get("/v1/reports/r1", params={"format": "csv"})
        assert res.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(res.text)))
        report = hand_report()
        cells = {(p["spec"], s["spec"], layer, head): s
                 for p in report["predictors"] for s in p["settings"]
                 for layer in range(LAYERS) for head in range(HEADS)}
        assert len(rows) == len(cells) == 5 * LAYERS * HEADS
        for row in rows:
            setting = cells.pop((row["predictor"], row["setting"], int(row["layer"]), int(row["head"])))
            for metric in ("recall", "sparsity", "precision"):
                assert float(row[metric]) == pytest.approx(
                    setting["per_head"][metric][int(row["layer"])][int(row["head"])], abs=1e-6)
        assert not cells
        _err(c.get("/v1/reports/r1", params={"format": "xml"}), 422, "format")
        png = c.get("/v1/reports/r1/pareto.png")
        assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
        svg = c.get("/v1/reports/r1/pareto.svg")
        assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content


def test_metrics_count_requests(service):
    with service.client() as c:
        c.get("/healthz")
        text = c.get("/metrics").text
    assert 'sparsefinder_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "sparsefinder_request_seconds_bucket" in text and "sparsefinder_model_queue" in text
    assert 'sparsefinder_encode_sparsity_count{predictor="window"}' in text
    assert 'predictor="window1"' not in text


def test_openapi_and_offline_docs(service):
    with service.client() as c:
        spec = c.get("/openapi.json").json()
        ops = [op for path in spec["paths"].values() for op in path.values()]
        assert {op["operationId"] for op in ops} >= {"encode", "attention", "list_predictors", "get_predictor",
                                                    "fit_predictor", "delete_predictor", "get_job", "list_reports",
                                                    "get_report", "get_pareto", "healthz", "readyz", "metrics"}
        docs = c.get("/docs").text
        assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
        assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
