"""Imports every built-in predictor module so that each registers itself."""

from . import attention_pruning  # noqa: F401
from . import breaking_bert  # noqa: F401
from . import fixed  # noqa: F401
from . import lsh  # noqa: F401
from . import oracle  # noqa: F401
from . import routing  # noqa: F401
from . import sparsebert_dam  # noqa: F401
from . import sparsefinder_family  # noqa: F401
