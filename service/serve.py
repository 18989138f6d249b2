"""Run the HTTP service with uvicorn (the ``sparsefinder serve`` command parses its arguments)."""

from __future__ import annotations

import logging

import uvicorn

from sparsefinder.config import Settings

from .app import create_app

__all__ = ["redact_query", "serve"]


def redact_query(record: logging.LogRecord) -> bool:
    """Access-log filter: drop query strings (a token pasted there must not reach the log)."""
    if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
        record.args = record.args[:2] + (record.args[2].split("?", 1)[0],) + record.args[3:]
    return True


def serve(settings: Settings) -> None:
    """Serve ``create_app(settings)`` on ``settings.host:settings.port`` until interrupted."""
    logging.getLogger("uvicorn.access").addFilter(redact_query)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
