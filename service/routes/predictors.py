"""``/v1/predictors``: list, inspect, fit (a job) and delete stored predictors."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path

from .. import deps
from ..errors import documented
from ..security import BEARER
from ..schemas import Deleted, FitRequest, JobInfo, PredictorInfo, PredictorList

router = APIRouter(prefix="/v1/predictors", tags=["predictors"])

ID = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@router.get("", response_model=PredictorList, operation_id="list_predictors", responses=documented(503))
async def list_predictors(engine=Depends(deps.engine)) -> PredictorList:
    """Every stored predictor's metadata, and store folders that could not be read."""
    return PredictorList(predictors=[a.to_dict() for a in engine.store.list()], problems=engine.store.problems())


@router.get("/{artifact_id}", response_model=PredictorInfo, operation_id="get_predictor",
            responses=documented(400, 404, 422, 503))
async def get_predictor(artifact_id: str = ID, engine=Depends(deps.engine)) -> PredictorInfo:
    """Metadata of one stored predictor (id or unique id prefix)."""
    return PredictorInfo(**engine.store.info(artifact_id).to_dict())


@router.post("", response_model=JobInfo, status_code=202, operation_id="fit_predictor", openapi_extra=BEARER,
             responses=documented(401, 403, 404, 409, 413, 422, 503))
async def fit(req: FitRequest, jobs=Depends(deps.jobs)) -> JobInfo:
    """Start a fit job (needs the bearer token): extract ``corpus`` (under the corpus root) or ``corpus_text``, fit ``spec``."""
    return jobs.submit(req)


@router.delete("/{artifact_id}", response_model=Deleted, operation_id="delete_predictor", openapi_extra=BEARER,
               responses=documented(400, 401, 403, 404, 422, 503))
async def delete(artifact_id: str = ID, engine=Depends(deps.engine)) -> Deleted:
    """Delete a stored predictor (needs the bearer token)."""
    full_id = engine.store.info(artifact_id).id
    engine.store.delete(full_id)
    engine.forget(full_id)
    return Deleted(id=full_id)
