"""sparsefinder: predict the sparsity graph of α-entmax attention and compute attention on it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sparsefinder")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

from .errors import NotFittedError, SparsefinderError  # noqa: E402
from .pattern import Pattern  # noqa: E402

from .attention.hf import register_attention  # noqa: E402

# `import sparsefinder` makes attn_implementation="sparsefinder_entmax" / "sparsefinder_sparse" loadable
register_attention()

__all__ = ["NotFittedError", "Pattern", "SparsefinderError", "__version__"]
