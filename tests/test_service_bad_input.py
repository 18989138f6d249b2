"""Malformed requests (the table in docs/service.md): each is a 4xx whose error names the field at fault."""

from __future__ import annotations

import json
import os

import pytest

from conftest import TOKEN

pytestmark = pytest.mark.slow

JSON = {"content-type": "application/json"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# (case, method, path, keyword arguments of httpx, status, field)
CASES = [
    ("invalid JSON", "POST", "/v1/encode", {"content": b'{"texts": ["a"', "headers": JSON}, 422, "body"),
    ("not an object", "POST", "/v1/encode", {"json": ["a"]}, 422, "body"),
    ("no body", "POST", "/v1/encode", {"headers": JSON}, 422, "body"),
    ("non-UTF-8 bytes", "POST", "/v1/encode", {"content": b'{"texts": ["\xff\xfe"]}', "headers": JSON}, 422, "body"),
    ("texts not a list", "POST", "/v1/encode", {"json": {"texts": "a"}}, 422, "texts"),
    ("a text not a string", "POST", "/v1/encode", {"json": {"texts": ["a", 3]}}, 422, "texts[1]"),
    ("boolean as string", "POST", "/v1/encode", {"json": {"texts": ["a"], "truncate": "true"}}, 422, "truncate"),
    ("boolean as number", "POST", "/v1/encode", {"json": {"texts": ["a"], "certified": 1}}, 422, "certified"),
    ("integer as string", "POST", "/v1/attention", {"json": {"text": "a", "predictor": "window1", "layer": "1"}},
     422, "layer"),
    ("fractional integer", "POST", "/v1/attention", {"json": {"text": "a", "predictor": "window1", "head": 1.5}},
     422, "head"),
    ("unknown field", "POST", "/v1/encode", {"json": {"texts": ["a"], "colour": "red"}}, 422, "colour"),
    ("huge body", "POST", "/v1/encode", {"json": {"texts": ["x" * 30_000]}}, 413, "body"),
    ("huge batch", "POST", "/v1/encode", {"json": {"texts": ["x"] * 17}}, 422, "texts"),
    ("empty batch", "POST", "/v1/encode", {"json": {"texts": []}}, 422, "texts"),
    ("empty text", "POST", "/v1/encode", {"json": {"texts": [""]}}, 422, "texts[0]"),
    ("whitespace-only text", "POST", "/v1/encode", {"json": {"texts": ["fine", " \t\n "]}}, 422, "texts[1]"),
    ("control characters", "POST", "/v1/encode", {"json": {"texts": ["a\x00b"]}}, 422, "texts[0]"),
    ("escape sequence", "POST", "/v1/attention", {"json": {"text": "\x1b[31mred", "predictor": "window1"}},
     422, "text"),
    ("text over the model's length", "POST", "/v1/encode", {"json": {"texts": ["word " * 600]}}, 400, "texts"),
    ("unknown predictor", "POST", "/v1/encode", {"json": {"texts": ["a"], "predictor": "nope"}}, 404, "predictor"),
    ("negative knob", "POST", "/v1/encode", {"json": {"texts": ["a"], "predictor": "window-1"}}, 404, "predictor"),
    ("recall target above 1", "POST", "/v1/encode", {"json": {"texts": ["a"], "predictor": "degree1.5"}},
     404, "predictor"),
    ("knob not a number", "POST", "/v1/encode", {"json": {"texts": ["a"], "predictor": "window1e9"}},
     404, "predictor"),
    ("layer beyond the model", "POST", "/v1/attention", {"json": {"text": "a", "predictor": "window1", "layer": 99}},
     404, "layer"),
    ("negative head", "POST", "/v1/attention", {"json": {"text": "a", "predictor": "window1", "head": -1}},
     422, "head"),
    # an encoded / is decoded before routing: no route has a path parameter with a slash
    ("../ in a predictor id", "GET", "/v1/predictors/..%2F..%2Fetc%2Fpasswd", {}, 404, "path"),
    ("dot file as a predictor id", "DELETE", "/v1/predictors/.store", {"headers": AUTH}, 422, "artifact_id"),
    (".. in a report id", "GET", "/v1/reports/..r1", {}, 422, "report_id"),
    ("../ in a report id", "GET", "/v1/reports/..%2Fr1", {}, 404, "path"),
    ("../ in a job id", "GET", "/v1/jobs/..%2Fx", {"headers": AUTH}, 404, "path"),
    ("dots in a job id", "GET", "/v1/jobs/..x", {"headers": AUTH}, 422, "job_id"),
    ("unknown report format", "GET", "/v1/reports/r1?format=xml", {}, 422, "format"),
    ("fit: absurd recall target", "POST", "/v1/predictors", {"json": {"spec": "degree1.5", "corpus": "tiny.txt"},
                                                             "headers": AUTH}, 404, "spec"),
    ("fit: absurd max_length", "POST", "/v1/predictors",
     {"json": {"spec": "window4", "corpus": "tiny.txt", "max_length": 10**9}, "headers": AUTH}, 422, "max_length"),
    ("fit: no corpus", "POST", "/v1/predictors", {"json": {"spec": "window4"}, "headers": AUTH}, 422, "corpus"),
    ("fit: both corpora", "POST", "/v1/predictors",
     {"json": {"spec": "window4", "corpus": "tiny.txt", "corpus_text": "x"}, "headers": AUTH}, 422, "corpus"),
    ("fit: /etc/shadow", "POST", "/v1/predictors", {"json": {"spec": "window4", "corpus": "/etc/shadow"},
                                                    "headers": AUTH}, 403, "corpus"),
    ("fit: ../ out of the root", "POST", "/v1/predictors",
     {"json": {"spec": "window4", "corpus": "../../../etc/passwd"}, "headers": AUTH}, 403, "corpus"),
    ("fit: missing file in the root", "POST", "/v1/predictors",
     {"json": {"spec": "window4", "corpus": "nope.txt"}, "headers": AUTH}, 404, "corpus"),
    ("fit: binary upload", "POST", "/v1/predictors", {"json": {"spec": "window4", "corpus_text": "a\x00b"},
                                                      "headers": AUTH}, 400, "corpus_text"),
]


@pytest.mark.parametrize("case, method, path, kwargs, status, field", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_4xx_naming_the_field(service, case, method, path, kwargs, status, field):
    with service.client() as c:
        res = c.request(method, path, **kwargs)
    assert res.status_code == status, res.text
    error = res.json()["error"]
    assert error["status"] == status and error["field"] == field and error["message"], error
    assert "Traceback" not in res.text


def test_symlink_escaping_the_corpus_root_is_refused(service):
    link = service.corpus.parent / "escape.txt"
    if not link.exists():
        os.symlink("/etc/passwd", link)
    with service.client() as c:
        res = c.post("/v1/predictors", json={"spec": "window4", "corpus": "escape.txt"}, headers=AUTH)
    assert res.status_code == 403 and res.json()["error"]["field"] == "corpus", res.text
    assert "/etc/passwd" not in json.dumps(res.json())
