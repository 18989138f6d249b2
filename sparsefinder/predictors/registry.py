"""The registry of built-in predictors and their spec strings.

Spec strings name a predictor in the CLI, in artifacts and over HTTP, in the spirit of
FAISS's ``index_factory`` (see :mod:`sparsefinder.predictors.base`). The registry is the one
place that knows every predictor class: it imports them, so the classes never import it.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import SparsefinderError, UnknownSpecError
from .attention_pruning import AttentionPruningPredictor
from .base import Predictor
from .breaking_bert import LexicalPredictor, NeighbourDegreePredictor
from .fixed import (AttendedGlobalPredictor, BigBirdPredictor, GlobalPredictor, LongformerPredictor,
                    RandomPredictor, StridedPredictor, WindowPredictor)
from .lsh import LSHPredictor
from .oracle import OracleSupport, OracleTopK
from .routing import RoutingPredictor
from .sparsebert_dam import SparseBertDAMPredictor
from .sparsefinder_family import (KMeansPredictor, KNNPredictor, QuantizationPredictor, RadiusPredictor,
                                  ThresholdPredictor)

__all__ = ["available_predictors", "get_predictor_class", "parse_spec", "predictor_from_spec", "sweep_values"]

#: Every built-in predictor class, in the order listings show them.
BUILTIN: tuple[type[Predictor], ...] = (
    WindowPredictor, RandomPredictor, GlobalPredictor, AttendedGlobalPredictor, StridedPredictor,
    BigBirdPredictor, LongformerPredictor, LexicalPredictor, NeighbourDegreePredictor, LSHPredictor,
    RoutingPredictor, AttentionPruningPredictor, SparseBertDAMPredictor, OracleTopK, OracleSupport,
    KNNPredictor, RadiusPredictor, QuantizationPredictor, KMeansPredictor, ThresholdPredictor,
)


def _registry(classes: tuple[type[Predictor], ...]) -> dict[str, type[Predictor]]:
    """Name → class, checking that names are unique and spec keys are tokens of their class."""
    out: dict[str, type[Predictor]] = {}
    for cls in classes:
        if cls.name in out:
            raise ValueError(f"predictor name {cls.name!r} is used twice")
        for letters in cls.spec_key:
            if letters not in cls.spec_tokens:
                raise ValueError(f"{cls.__name__}.spec_key token {letters!r} is not in spec_tokens")
        out[cls.name] = cls
    return out


_REGISTRY: dict[str, type[Predictor]] = _registry(BUILTIN)


def available_predictors() -> dict[str, type[Predictor]]:
    """Every built-in predictor class by name."""
    return dict(_REGISTRY)


def get_predictor_class(name: str) -> type[Predictor]:
    """The class registered as ``name``; unknown names raise a user error listing the known ones."""
    registry = available_predictors()
    if name not in registry:
        raise SparsefinderError(f"unknown predictor {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


_TOKEN = re.compile(r"^([a-z]+)(-?[0-9]+(?:\.[0-9]+)?)?$")


def _tokens(spec: str) -> list[tuple[str, str | None]]:
    out = []
    for raw in spec.strip().lower().split("-"):
        m = _TOKEN.match(raw)
        if not m:
            raise SparsefinderError(f"bad predictor spec {spec!r}: token {raw!r} is not letters followed by a number")
        out.append((m.group(1), m.group(2)))
    return out


def parse_spec(spec: str) -> tuple[type[Predictor], dict[str, Any]]:
    """Resolve a spec string to its class and the parameters it sets.

    >>> parse_spec("window16")  # doctest: +SKIP
    (WindowPredictor, {'width': 16})
    """
    tokens = _tokens(spec)
    letters = {t for t, _ in tokens}
    if len(letters) != len(tokens):
        raise SparsefinderError(f"bad predictor spec {spec!r}: a token appears twice")
    matches = [c for c in available_predictors().values()
               if set(c.spec_key) <= letters <= set(c.spec_tokens)]
    if not matches:
        raise UnknownSpecError(
            f"unknown predictor spec {spec!r}; known names: {', '.join(sorted(available_predictors()))}")
    cls = max(matches, key=lambda c: len(c.spec_key))
    defaults = cls.defaults()
    params: dict[str, Any] = {}
    for letters_, number in tokens:
        param = cls.spec_tokens[letters_]
        if param is None:
            if number is not None:
                raise SparsefinderError(f"bad predictor spec {spec!r}: token {letters_!r} takes no value")
            continue
        if number is None:
            if isinstance(defaults.get(param), bool):
                params[param] = True
            elif letters_ not in cls.spec_key:
                raise SparsefinderError(f"bad predictor spec {spec!r}: token {letters_!r} needs a value")
        else:
            params[param] = float(number) if "." in number else int(number)
    return cls, params


def predictor_from_spec(spec: str) -> Predictor:
    """A new, unfitted predictor for ``spec`` (parameters validated)."""
    cls, params = parse_spec(spec)
    try:
        predictor = cls(**params)
    except TypeError as exc:
        raise SparsefinderError(f"bad predictor spec {spec!r}: {exc}") from None
    predictor._validate_params()
    return predictor


def sweep_values(spec: str) -> list[Any] | None:
    """Knob values to sweep for ``spec``: the class grid when the spec leaves the knob out, else ``None``."""
    cls, params = parse_spec(spec)
    if cls.knob is None or cls.knob in params:
        return None
    return list(cls.grid)
