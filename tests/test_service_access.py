"""Access: the bearer token on every state-changing route, never from the query string, never logged or exposed."""

from __future__ import annotations

import argparse

import pytest

from conftest import TOKEN
from service import security
from sparsefinder.cli.serve_command import add_arguments
from sparsefinder.config import Settings

pytestmark = pytest.mark.slow

FIT = {"spec": "window4", "corpus": "tiny.txt"}
PROTECTED = [("POST", "/v1/predictors", {"json": FIT}), ("DELETE", "/v1/predictors/some-id", {}),
             ("GET", "/v1/jobs/abc123", {})]


@pytest.mark.parametrize("method, path, kwargs", PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_state_changing_routes_refuse_missing_wrong_and_query_tokens(service, method, path, kwargs):
    with service.client() as c:
        missing = c.request(method, path, **kwargs)
        wrong = c.request(method, path, headers={"Authorization": "Bearer not-the-token"}, **kwargs)
        other_scheme = c.request(method, path, headers={"Authorization": f"Basic {TOKEN}"}, **kwargs)
        in_query = c.request(method, path, params={"token": TOKEN}, **kwargs)
        in_query_too = c.request(method, path, params={"access_token": TOKEN},
                                 headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)
    assert [missing.status_code, wrong.status_code, other_scheme.status_code, in_query.status_code,
            in_query_too.status_code] == [401, 403, 401, 401, 401]
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "query string" in in_query.json()["error"]["message"]


def test_undeclared_method_is_405_before_the_token(service):
    with service.client() as c:
        res = c.post("/v1/predictors/some-id", json={})
        put = c.put("/v1/jobs/abc123")
    assert res.status_code == 405 and set(res.headers["allow"].split(", ")) >= {"GET", "DELETE"}
    assert put.status_code == 405 and "GET" in put.headers["allow"]


def test_token_is_compared_in_constant_time(monkeypatch):
    calls = []
    monkeypatch.setattr(security.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or a == b)
    assert security.token_matches("abc", "abc") and not security.token_matches("abd", "abc")
    assert calls == [(b"abc", b"abc"), (b"abd", b"abc")]


def test_tokens_never_reach_the_log_nor_the_metrics(service):
    with service.client() as c:
        c.get("/v1/jobs/abc123", params={"token": TOKEN})
        c.get("/v1/jobs/abc123", headers={"Authorization": f"Bearer {TOKEN}"})
        c.delete("/v1/predictors/secret-looking-id", headers={"Authorization": "Bearer some-wrong-secret"})
        metrics = c.get("/metrics").text
    log = service.log.read_text()
    assert "GET /v1/jobs/abc123 HTTP" in log  # the access log runs, without its query string
    for secret in (TOKEN, "some-wrong-secret"):
        assert secret not in log and secret not in metrics
    assert "secret-looking-id" not in metrics and "abc123" not in metrics  # route templates, not raw paths
    assert 'route="/v1/predictors/{artifact_id}"' in metrics


def test_binds_loopback_by_default():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert Settings().host == "127.0.0.1" and parser.parse_args([]).host == "127.0.0.1"
