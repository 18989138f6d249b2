"""Prometheus metrics of one app: request counts, latency histograms, sparsity used, queue depth."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ServiceMetrics", "MetricsMiddleware"]


class ServiceMetrics:
    """The app's collectors, in their own registry (so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sparsefinder_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("sparsefinder_request_seconds", "HTTP request latency", ["method", "route"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.sparsity = Histogram("sparsefinder_encode_sparsity", "mean attention sparsity of an encode request",
                                  ["predictor"], registry=self.registry,
                                  buckets=(0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0))
        self.queue = Gauge("sparsefinder_model_queue", "model requests running or waiting", registry=self.registry)
        self.batches = Counter("sparsefinder_encode_batches_total", "forward passes run for /v1/encode",
                               registry=self.registry)
        self.batch_texts = Histogram("sparsefinder_encode_batch_texts", "texts per /v1/encode forward pass",
                                     registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.long_requests = Counter("sparsefinder_encode_long_requests_total",
                                     "/v1/encode requests queued in the long lane (longest text over long_tokens)",
                                     registry=self.registry)
        self.rejected = Counter("sparsefinder_model_rejected_total", "model requests refused with 429 (queue full)",
                                registry=self.registry)


class MetricsMiddleware:
    """Count every request and time it, labelled by the matched route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(msg: Message) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
