"""``POST /v1/encode``: sentence embeddings with sparse attention."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from sparsefinder.choice import REFERENCE_MODES

from .. import deps
from ..errors import ApiError, documented
from ..schemas import EncodeRequest, EncodeResponse

router = APIRouter(prefix="/v1", tags=["inference"])


@router.post("/encode", response_model=EncodeResponse, operation_id="encode",
             responses=documented(400, 404, 413, 422, 429, 503))
async def encode(req: EncodeRequest, engine=Depends(deps.engine), batcher=Depends(deps.batcher),
                 metrics=Depends(deps.metrics), settings=Depends(deps.settings)) -> EncodeResponse:
    """Embed ``texts`` running the model with the chosen predictor's attention pattern (batched with concurrent requests)."""
    if len(req.texts) > settings.max_texts:
        raise ApiError(422, f"texts: at most {settings.max_texts} texts per request", "texts")
    out = await batcher.encode(engine, req.texts, req.predictor, req.certified, req.truncate, req.layers, req.recall)
    if out.sparsity:  # labelled by predictor family, so that user-chosen specs cannot grow the label set
        family = req.predictor if req.predictor in REFERENCE_MODES else engine.predictor(req.predictor).name
        metrics.sparsity.labels(family).observe(sum(out.sparsity) / len(out.sparsity))
    return out
