"""``sparsefinder serve``: run the HTTP service with uvicorn (:mod:`sparsefinder.service.serve`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import get_settings
from ..service.serve import serve
from .arguments import MODEL_HELP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = get_settings()
    parser.add_argument("--host", default=s.host, help=f"interface to listen on (default {s.host})")
    parser.add_argument("--port", type=int, default=s.port, help=f"TCP port (default {s.port})")
    parser.add_argument("--store", default=s.store, help=f"artifact store folder or URL (default {s.store})")
    parser.add_argument("--reports", default=str(s.reports), help=f"reports folder (default {s.reports})")
    parser.add_argument("--model", default=s.model, help=MODEL_HELP)


def run(args: argparse.Namespace) -> int:
    serve(get_settings().model_copy(update={"host": args.host, "port": args.port, "store": args.store,
                                            "reports": Path(args.reports), "model": args.model}))
    return 0
