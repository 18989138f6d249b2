"""``sparsefinder predictors``: the registered predictor families and the stored artifacts."""

from __future__ import annotations

import argparse
import json

from ..config import get_settings
from ..predictors.registry import available_predictors
from ..store import ArtifactStore


def listing(store: str | None = None) -> dict:
    """Registered predictors, stored artifacts (newest first) and refused artifacts, as one JSON-ready dict."""
    target = ArtifactStore(store or get_settings().store)
    registered = [{"name": c.name, "knob": c.knob, "grid": list(c.grid), "learns": c.learns,
                   "description": c.description, "source": c.source}
                  for _, c in sorted(available_predictors().items())]
    artifacts, problems = target.scan()
    return {"store": target.url, "registered": registered, "artifacts": [a.to_dict() for a in artifacts],
            "problems": problems}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", default=None, help="artifact store: folder or fsspec URL (default: settings)")


def run(args: argparse.Namespace) -> int:
    print(json.dumps(listing(args.store), indent=2))
    return 0
