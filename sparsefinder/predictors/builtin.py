"""Imports every built-in predictor module so that each registers itself."""

from . import fixed  # noqa: F401
from . import oracle  # noqa: F401
from . import sparsefinder_family  # noqa: F401
