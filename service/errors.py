"""One error type and its handlers: every error answer has the same JSON envelope.

``{"error": {"status": int, "message": str, "field": str | null}}`` — for user errors
(:class:`~sparsefinder.errors.SparsefinderError` and its subclasses), request validation
(422, naming the first offending field), unknown routes and methods, and anything
unexpected (500, without a traceback). Follows michaelfeil/infinity's single error handler.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparsefinder.errors import SparsefinderError

__all__ = ["ApiError", "error_body", "install_error_handlers"]

log = logging.getLogger("sparsefinder.service")


class ApiError(SparsefinderError):
    """A user error with an explicit HTTP status and, optionally, the request field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.headers = headers


def error_body(status: int, message: str, field: str | None = None) -> dict:
    """The JSON envelope of every error answer."""
    return {"error": {"status": status, "message": message, "field": field}}


def _response(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, field), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the envelope."""

    @app.exception_handler(SparsefinderError)
    async def _user_error(request: Request, exc: SparsefinderError) -> JSONResponse:
        return _response(exc.status, str(exc), getattr(exc, "field", None), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = f"{field}: {first['msg']}" if field else str(first["msg"])
        return _response(422, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _response(500, f"internal error ({type(exc).__name__}); see the server log")
