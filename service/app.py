"""The HTTP service: app factory, lifespan and routes (FastAPI, after michaelfeil/infinity).

:func:`create_app` builds the app from :class:`~sparsefinder.config.Settings`; its lifespan
starts loading the model and the stored predictors once, on a background thread, so that
``/healthz`` answers at once and ``/readyz`` turns 200 when loading is done. Every model
call runs on one model thread behind a bounded queue (:mod:`.worker`).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import torch
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from sparsefinder.version import __version__
from sparsefinder.config import Settings, get_settings

from .batcher import EncodeBatcher
from .engine import Engine
from .errors import install_error_handlers
from .jobs import JobManager
from .metrics import MetricsMiddleware, ServiceMetrics
from .middleware import AdmissionMiddleware, BodyLimitMiddleware, TokenMiddleware
from .security import PROTECTED, SCHEME
from .routes import attention, encode, health, jobs, predictors, reports
from .worker import ModelWorker

__all__ = ["create_app"]

log = logging.getLogger("sparsefinder.service")

STATIC = Path(__file__).parent / "static"


def _load(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    engine = Engine(settings)
    # fit jobs extract with the engine's own resolved model, whatever appears in the work dir later
    app.state.jobs = JobManager(settings.model_copy(update={"model": engine.info.path}), engine.store,
                                on_saved=engine.predictor)
    app.state.engine = engine
    log.info("sparsefinder service ready: model %s on %s in %s", engine.info.id, engine.device, engine.encoder.dtype)


def _loaded(app: FastAPI, loading: asyncio.Future) -> None:
    """Record why loading failed: ``/readyz`` and the model routes answer 503 with the reason."""
    if loading.exception() is not None:
        exc = loading.exception()
        app.state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("the model failed to load: %s", app.state.load_error)


@asynccontextmanager
async def lifespan(app: FastAPI):
    loading = asyncio.get_running_loop().run_in_executor(None, _load, app)
    loading.add_done_callback(lambda f: _loaded(app, f))
    yield
    app.state.batcher.shutdown()
    app.state.worker.shutdown()
    if getattr(app.state, "jobs", None) is not None:
        app.state.jobs.shutdown()


def _docs_routes(app: FastAPI) -> None:
    """``/docs`` with the Swagger UI assets served from the ``fastapi-offline`` package (no CDN)."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount("/docs-assets", StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="sparsefinder API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")


def _document_server(app: FastAPI, settings: Settings) -> None:
    """Add to the generated schema what depends on the server: the bearer scheme, the texts per request."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = SCHEME
            schema["components"]["schemas"]["EncodeRequest"]["properties"]["texts"]["maxItems"] = settings.max_texts
        return app.openapi_schema

    app.openapi = openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    app = FastAPI(title="sparsefinder", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Sparse α-entmax attention: predicted attention graphs, embeddings, reports.")
    metrics = ServiceMetrics()
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.worker = ModelWorker(settings.queue_size, metrics, settings.trim_memory)
    app.state.batcher = EncodeBatcher(settings, app.state.worker, metrics)
    app.state.engine = None
    app.state.jobs = None
    app.state.load_error = None
    install_error_handlers(app)
    for module in (encode, attention, predictors, jobs, reports, health):
        app.include_router(module.router)
    _docs_routes(app)
    _document_server(app, settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    # added innermost first: metrics → token → admission → body limit → routes
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AdmissionMiddleware, path="/v1/encode", refusal=app.state.batcher.refusal,
                       delay_s=settings.refuse_delay_ms / 1000)
    app.add_middleware(TokenMiddleware, token=settings.token, protected=PROTECTED)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
