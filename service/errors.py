"""One error type and its handlers: every error answer has the same JSON envelope.

``{"error": {"status": int, "message": str, "field": str | null}}`` — for user errors
(:class:`~sparsefinder.errors.SparsefinderError` and its subclasses), request validation
(422, naming the first offending field), unknown routes and methods, and anything
unexpected (500, without a traceback). Follows michaelfeil/infinity's single error handler.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sparsefinder.errors import SparsefinderError

from .schemas import ErrorBody

__all__ = ["ApiError", "documented", "error_body", "field_name", "install_error_handlers"]

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


_MEANING = {400: "bad request", 401: "missing bearer token", 403: "wrong bearer token or disabled route",
            404: "not found", 405: "method not allowed", 409: "conflict", 413: "request body too large",
            422: "invalid request (the field is named)", 429: "queue full: retry after `Retry-After` seconds",
            500: "internal error", 503: "the model is loading or failed to load"}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def documented(*statuses: int) -> dict[int | str, dict]:
    """The ``responses=`` of a route: each error status with the envelope's schema (and ``Retry-After`` on 429)."""
    return {status: {"model": ErrorBody, "description": _MEANING[status],
                     **({"headers": _RETRY_AFTER} if status == 429 else {})} for status in statuses}


def field_name(loc: tuple | list) -> str | None:
    """A validation error's location as the request field: ``("body", "texts", 2)`` → ``texts[2]``."""
    name = ""
    for part in loc:
        if part in ("body", "query", "path", "header"):
            continue
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or None


def _allowed(request: Request) -> list[str]:
    """The methods the API documents for this path (its OpenAPI path templates), for ``Allow``."""
    methods = set()
    for template, operations in request.app.openapi()["paths"].items():
        if re.fullmatch(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)), request.url.path):
            methods |= {m.upper() for m in operations}
    return sorted(methods | ({"HEAD"} if "GET" in methods else set()))


def _response(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, field), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the envelope."""

    @app.exception_handler(SparsefinderError)
    async def _user_error(request: Request, exc: SparsefinderError) -> JSONResponse:
        return _response(exc.status, str(exc), getattr(exc, "field", None), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid":  # the location is a byte offset: name the body instead
            return _response(422, f"body: invalid JSON ({first.get('ctx', {}).get('error', first['msg'])} "
                                  f"at byte {first['loc'][-1]})", "body")
        loc = tuple(first.get("loc", ()))
        field = field_name(loc) or ("body" if loc[:1] == ("body",) else None)
        message = first["msg"].removeprefix("Value error, ")
        return _response(422, f"{field}: {message}" if field else message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 400 and request.method in ("POST", "PUT"):  # FastAPI: a body it cannot decode
            return _response(422, f"body: {exc.detail} (send UTF-8 JSON)", "body")
        if exc.status_code == 405:  # the router names one route's methods; several routes may share the path
            headers = {**(headers or {}), "Allow": ", ".join(_allowed(request))}
        if exc.status_code == 404:  # no route: the path itself is at fault
            return _response(404, f"path: no route {request.url.path!r}; see /docs", "path")
        return _response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _response(500, f"internal error ({type(exc).__name__}); see the server log")
