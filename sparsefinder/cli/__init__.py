"""The ``sparsefinder`` command line: one thin module per command over the library and training code."""

from .dispatch import main

__all__ = ["main"]
