"""Request dependencies: the loaded engine, the model thread, the jobs and the settings."""

from __future__ import annotations

from fastapi import Request

from sparsefinder.config import Settings

from .engine import Engine
from .errors import ApiError
from .jobs import JobManager
from .metrics import ServiceMetrics
from .worker import ModelWorker


def engine(request: Request) -> Engine:
    """The engine; 503 while the model is still loading."""
    eng = getattr(request.app.state, "engine", None)
    if eng is None:
        raise ApiError(503, "the model is still loading; retry shortly")
    return eng


def worker(request: Request) -> ModelWorker:
    return request.app.state.worker


def jobs(request: Request) -> JobManager:
    jm = getattr(request.app.state, "jobs", None)
    if jm is None:
        raise ApiError(503, "the model is still loading; retry shortly")
    return jm


def settings(request: Request) -> Settings:
    return request.app.state.settings


def metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics
