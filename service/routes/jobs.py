"""``GET /v1/jobs/{id}``: state and progress of a fit job."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path

from .. import deps
from ..errors import documented
from ..security import BEARER
from ..schemas import JobInfo

router = APIRouter(prefix="/v1/jobs", tags=["predictors"])


@router.get("/{job_id}", response_model=JobInfo, operation_id="get_job", openapi_extra=BEARER,
            responses=documented(401, 403, 404, 422, 503))
async def get_job(job_id: str = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$"),
                  jobs=Depends(deps.jobs)) -> JobInfo:
    """State (queued, running, done, failed), progress and the stored artifact id when done (needs the token)."""
    return jobs.get(job_id)
