"""The sparsefinder HTTP service (FastAPI): ``create_app(settings)``, started by ``sparsefinder serve``."""

from .app import create_app

__all__ = ["create_app"]
