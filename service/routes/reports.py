"""``/v1/reports``: evaluation reports as JSON, CSV and Pareto plots."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from sparsefinder.report import list_reports, load_report, render_pareto, report_csv

from .. import deps
from ..errors import documented
from ..schemas import ReportList

router = APIRouter(prefix="/v1/reports", tags=["reports"])

REPORT_ID = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@router.get("", response_model=ReportList, operation_id="list_reports", responses=documented(500))
async def reports(settings=Depends(deps.settings)) -> ReportList:
    """Every report in the reports folder: id, created, dataset, predictors."""
    return ReportList(reports=list_reports(settings.reports))


@router.get("/{report_id}", operation_id="get_report",
            responses={200: {"content": {"application/json": {}, "text/csv": {}},
                             "description": "report.json, or its settings table as CSV"},
                       **documented(400, 404, 422)})
async def report(report_id: str = REPORT_ID, format: Literal["json", "csv"] = Query("json"),
                 settings=Depends(deps.settings)) -> Response:
    """One report (schema: report.json) or, with ``?format=csv``, one row per setting, layer and head."""
    data = load_report(settings.reports, report_id)
    if format == "csv":
        return PlainTextResponse(report_csv(data), media_type="text/csv")
    return JSONResponse(data)


@router.get("/{report_id}/pareto.{fmt}", operation_id="get_pareto", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}, **documented(400, 404, 422)})
async def pareto(report_id: str = REPORT_ID, fmt: Literal["png", "svg"] = Path(),
                 settings=Depends(deps.settings)) -> Response:
    """The report's recall–sparsity Pareto plot as PNG or SVG."""
    data = load_report(settings.reports, report_id)
    return Response(render_pareto(data, fmt), media_type="image/png" if fmt == "png" else "image/svg+xml")
