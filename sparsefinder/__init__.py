"""sparsefinder: predict the sparsity graph of α-entmax attention and compute attention on it."""

from .hf.attention import register_attention
from .errors import NotFittedError, SparsefinderError
from .pattern import Pattern
from .version import __version__

# `import sparsefinder` makes attn_implementation="sparsefinder_entmax" / "sparsefinder_sparse" loadable
register_attention()

__all__ = ["NotFittedError", "Pattern", "SparsefinderError", "__version__"]
