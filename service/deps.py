"""Request dependencies: the loaded engine, the model thread, the jobs and the settings."""

from __future__ import annotations

from fastapi import Request

from sparsefinder.config import Settings

from .batcher import EncodeBatcher
from .engine import Engine
from .errors import ApiError
from .jobs import JobManager
from .metrics import ServiceMetrics
from .worker import ModelWorker


def _loaded(request: Request, name: str):
    """``app.state.<name>``, set once start-up has loaded the model; 503 until then."""
    value = getattr(request.app.state, name, None)
    if value is None:
        raise ApiError(503, not_ready(request))
    return value


def not_ready(request: Request) -> str:
    """Why the model routes cannot answer yet: still loading, or the reason loading failed."""
    error = request.app.state.load_error
    return f"the model failed to load: {error}" if error else "the model is still loading; retry shortly"


def engine(request: Request) -> Engine:
    """The engine; 503 while the model is still loading."""
    return _loaded(request, "engine")


def worker(request: Request) -> ModelWorker:
    return request.app.state.worker


def batcher(request: Request) -> EncodeBatcher:
    return request.app.state.batcher


def jobs(request: Request) -> JobManager:
    """The fit-job manager; 503 while the model is still loading."""
    return _loaded(request, "jobs")


def settings(request: Request) -> Settings:
    return request.app.state.settings


def metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics
