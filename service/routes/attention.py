"""``POST /v1/attention``: one text's predicted and gold attention graph for a layer and head."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from .. import deps
from ..errors import documented
from ..schemas import AttentionRequest, AttentionResponse

router = APIRouter(prefix="/v1", tags=["inference"])


@router.post("/attention", response_model=AttentionResponse, operation_id="attention",
             responses=documented(400, 404, 413, 422, 429, 503))
async def attention(req: AttentionRequest, engine=Depends(deps.engine),
                    worker=Depends(deps.worker)) -> AttentionResponse:
    """Predicted pattern and gold graph (index lists per query), recall and sparsity, tokens for display."""
    return await worker.run(engine.attention, req.text, req.predictor, req.layer, req.head, req.truncate)
