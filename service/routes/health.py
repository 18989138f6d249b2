"""``/healthz`` (process up), ``/readyz`` (model and predictors loaded), ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import deps
from ..errors import documented, error_body
from ..schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, operation_id="healthz")
async def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, operation_id="readyz",
            responses=documented(503))
async def readyz(request: Request):
    """200 once the model and the stored predictors are loaded, else 503."""
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        return JSONResponse(error_body(503, deps.not_ready(request)), status_code=503)
    return Health(status="ok", model=engine.info.id, dtype=engine.encoder.dtype, predictors=len(engine.store.list()))


@router.get("/metrics", operation_id="metrics", response_class=Response)
async def metrics(m=Depends(deps.metrics)) -> Response:
    """Request counts, latency histograms, sparsity used and queue depth in Prometheus' text format."""
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
