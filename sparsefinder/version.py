"""The installed version of sparsefinder (recorded in manifests, artifacts and reports)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sparsefinder")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
