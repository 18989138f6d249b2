"""``sparsefinder serve``: run the HTTP service with uvicorn."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sparsefinder.config import MODEL_HELP, get_settings


def redact_query(record: logging.LogRecord) -> bool:
    """Access-log filter: drop query strings (a token pasted there must not reach the log)."""
    if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
        record.args = record.args[:2] + (record.args[2].split("?", 1)[0],) + record.args[3:]
    return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = get_settings()
    parser.add_argument("--host", default=s.host, help=f"interface to listen on (default {s.host})")
    parser.add_argument("--port", type=int, default=s.port, help=f"TCP port (default {s.port})")
    parser.add_argument("--store", default=s.store, help=f"artifact store folder or URL (default {s.store})")
    parser.add_argument("--reports", default=str(s.reports), help=f"reports folder (default {s.reports})")
    parser.add_argument("--model", default=s.model, help=MODEL_HELP)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app

    settings = get_settings().model_copy(update={"host": args.host, "port": args.port, "store": args.store,
                                                 "reports": Path(args.reports), "model": args.model})
    logging.getLogger("uvicorn.access").addFilter(redact_query)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
    return 0
