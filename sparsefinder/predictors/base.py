"""The predictor interface, its registry and spec strings.

A predictor forecasts the attention pattern of one layer before attention is computed.
The contract follows scikit-learn's estimators:

- the constructor only stores keyword parameters (all JSON-serialisable);
- ``fit(data)`` learns from a :class:`~sparsefinder.dataset.GoldDataset`, sets attributes
  ending in ``_`` and returns ``self``; predictors that learn nothing still accept it;
- ``predict(inputs)`` returns a :class:`~sparsefinder.pattern.Pattern` of shape
  ``(B, H, n, n)`` for one layer of a padded batch of sequences
  (:class:`~sparsefinder.inputs.AttentionInputs`), in one call; predictors whose method is
  naturally per sequence implement ``predict_sequence`` instead and the base stacks the
  results; calling either before ``fit`` raises :class:`~sparsefinder.errors.NotFittedError`;
- ``predict_sweep(inputs, values)`` gives the patterns of several knob values; predictors
  whose knob only cuts a ranking (top-k, a threshold) compute the ranking once;
- ``get_params()`` / ``set_params()`` round-trip the parameters; ``state_dict()`` /
  ``load_state_dict()`` round-trip the fitted tensors (safetensors in the store).

Each predictor has a *knob* (one parameter, read at predict time only) that the evaluation
sweeps to trace a recall–sparsity curve without refitting.

Spec strings name a predictor in the CLI, in artifacts and over HTTP, in the spirit of
FAISS's ``index_factory``: ``-``-separated tokens, each letters then an optional number,
for example ``window16`` or ``proj4-kmeans16-top2``. A class declares ``spec_tokens``
(token letters → parameter) and ``spec_key`` (the letters that identify it). A token
without a number sets a boolean parameter. A spec that leaves the knob out means "sweep
the knob over ``grid``".
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from typing import Any, ClassVar

from torch import Tensor

from ..errors import NotFittedError, SparsefinderError
from ..inputs import AttentionInputs
from ..pattern import Pattern

__all__ = ["Predictor", "format_spec"]


@functools.cache
def _init_defaults(cls: type) -> dict[str, Any]:
    """:meth:`Predictor.defaults` of ``cls``, read from the ``__init__`` signatures once per class
    (``set_params`` runs on every prediction; ``inspect.signature`` cost 0.24 ms each time)."""
    out: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.kind == p.KEYWORD_ONLY:
                out.setdefault(p.name, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return out

class Predictor:
    """Base class: parameter handling, fitted-state checks and spec strings."""

    #: Registry name (also the default spec when nothing else is given).
    name: ClassVar[str]
    #: Token letters that identify the class in a spec.
    spec_key: ClassVar[tuple[str, ...]]
    #: Token letters → parameter name (``None``: a name-only token), in canonical order.
    spec_tokens: ClassVar[dict[str, str | None]]
    #: The parameter swept to trace a curve (read at predict time only), or ``None``.
    knob: ClassVar[str | None] = None
    #: Default values of the knob for a sweep.
    grid: ClassVar[tuple[Any, ...]] = ()
    #: One-line description for reports and the README.
    description: ClassVar[str] = ""
    #: Paper the predictor implements.
    source: ClassVar[str] = ""
    #: Whether ``fit`` learns state from data (stateless predictors are not stored).
    learns: ClassVar[bool] = False
    #: Reference curves (oracles that read the true scores) are drawn apart in reports.
    reference: ClassVar[bool] = False
    #: Whether the pattern depends only on the layer and the sequence lengths (not on queries, keys or tokens):
    #: evaluations then predict it once per layer and length.
    positional: ClassVar[bool] = False
    #: Whether evaluations of ``all`` include it (not the gold graph itself: recall 1 at gold sparsity by definition).
    in_reports: ClassVar[bool] = True
    #: Fitted attributes ``<name>_`` that :meth:`state_dict` saves under ``<name>``: tensors, or
    #: dicts int → tensor (saved as ``<name>_<key>``).
    fitted_tensors: ClassVar[tuple[str, ...]] = ()

    @property
    def reach(self) -> int | None:
        """The largest ``|query − key|`` of any pair its patterns keep, where the predictor bounds it (``None``: any
        pair): a banded model whose band covers it reads its patterns without cutting them."""
        return None

    # -------------------------------------------------------------- parameters
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Constructor parameters and their defaults, in order; an ``__init__`` with ``**kwargs`` passes
        the rest on to its parent's, whose parameters are added (a subclass's defaults win)."""
        return dict(_init_defaults(cls))

    @classmethod
    def _param_names(cls) -> list[str]:
        return list(cls.defaults())

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters as a JSON-serialisable dict."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Predictor:
        """Set constructor parameters; unknown names raise a user error. Returns ``self``."""
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise SparsefinderError(f"{self.name} has no parameter {key!r} (it has: {', '.join(sorted(valid))})")
            setattr(self, key, value)
        self._validate_params()
        return self

    def _validate_params(self) -> None:
        """Raise :class:`SparsefinderError` when a parameter is out of range (override)."""

    def _require_int(self, *names: str, minimum: int) -> None:
        """Raise a user error unless each parameter in ``names`` is an integer ≥ ``minimum``."""
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise SparsefinderError(f"{self.name} {name} must be an integer ≥ {minimum}, got {value!r}")

    def _require_bool(self, *names: str) -> None:
        """Raise a user error unless each parameter in ``names`` is ``True`` or ``False``."""
        for name in names:
            if not isinstance(getattr(self, name), bool):
                raise SparsefinderError(f"{self.name} {name} must be true or false, got {getattr(self, name)!r}")

    # -------------------------------------------------------------- fitting
    def fit(self, data: Any, progress: bool = False) -> Predictor:
        """Learn from a :class:`~sparsefinder.dataset.GoldDataset`; stateless predictors just validate."""
        self._validate_params()
        self.fitted_ = True
        return self

    def predict(self, inputs: AttentionInputs) -> Pattern:
        """Pattern of shape ``(B, H, n, n)`` for one layer of a padded batch.

        This default runs :meth:`predict_sequence` on each sequence and stacks the results;
        predictors that work on the whole batch override it.
        """
        self.check_is_fitted()
        return Pattern.stack([self.predict_sequence(inputs.sequence(b)) for b in range(inputs.batch_size)],
                             length=inputs.length)

    def predict_sequence(self, inputs: AttentionInputs) -> Pattern:  # pragma: no cover - abstract
        """Pattern of one unpadded sequence (``inputs`` with ``B = 1``), shape ``(1, H, n, n)``."""
        raise NotImplementedError(f"{type(self).__name__} implements neither predict nor predict_sequence")

    def predict_rows(self, inputs: AttentionInputs) -> Iterator[tuple[int, Tensor, Tensor]]:
        """The pattern of :meth:`predict` by chunks of queries, for consumers that attend chunk by chunk:
        ``(start, index (B, H, c, w), counts (B, H, c))`` in order, covering the ``n`` queries, each
        chunk padded to its own widest row only. This default yields the whole pattern as one chunk;
        predictors that compute by chunks anyway yield them (at 4,096 tokens the widest row of a layer is
        tens of times the mean). Consumers split chunks further to bound their own memory."""
        pattern = self.predict(inputs)
        yield 0, pattern.index, pattern.counts

    def attend_rows(self, inputs: AttentionInputs, values: Tensor, alpha: float, scaling: float,
                    certified: bool = False) -> tuple[Tensor, Tensor, Tensor] | None:
        """α-entmax attention on :meth:`predict`'s pairs (``certified``: exact, seeded by them) with the prediction
        fused into the compute, where this predictor has such a route: output ``(B, H, n, dv)`` for ``values``
        ``(B, H, n, dv)`` (zeros for rows with no key), the kept pairs (certified: the certified pattern's) and the
        support pairs the prediction missed (certified; else zeros), ``(B, H)`` each. ``None`` (this default):
        predict, then attend (:meth:`predict_rows`, then ``sparse_entmax_rows`` or ``certified_entmax_rows``)."""
        return None

    def predict_sweep(self, inputs: AttentionInputs, values: list[Any]) -> list[Pattern]:
        """Patterns for each value of the knob (the knob is left at the last value)."""
        out = []
        for value in values:
            if self.knob is not None:
                self.set_params(**{self.knob: value})
            out.append(self.predict(inputs))
        return out

    def is_fitted(self) -> bool:
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def check_is_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless ``fit`` has run."""
        if not self.is_fitted():
            raise NotFittedError(f"predictor {self.spec} is not fitted: call fit() first or load a fitted artifact")

    def state_dict(self) -> dict[str, Tensor]:
        """The :attr:`fitted_tensors`, for the store (empty for stateless predictors)."""
        self.check_is_fitted()
        state: dict[str, Tensor] = {}
        for name in self.fitted_tensors:
            value = getattr(self, f"{name}_")
            if isinstance(value, dict):
                state.update({f"{name}_{key}": tensor.contiguous() for key, tensor in value.items()})
            else:
                state[name] = value.contiguous()
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> Predictor:
        """Restore the :attr:`fitted_tensors` from :meth:`state_dict`'s output; returns ``self``.

        A missing tensor, or one that does not fit the parameters (:meth:`_check_state`), raises a
        :class:`SparsefinderError`.
        """
        for name in self.fitted_tensors:
            if name in state:
                setattr(self, f"{name}_", state[name])
                continue
            prefix = f"{name}_"
            items = {int(key[len(prefix):]): tensor for key, tensor in state.items()
                     if key.startswith(prefix) and key[len(prefix):].isdigit()}
            if not items:
                raise SparsefinderError(f"{self.name}: fitted state lacks tensor {name!r}")
            setattr(self, f"{name}_", items)
        self.fitted_ = True
        self._check_state()
        return self

    def _check_state(self) -> None:
        """Raise :class:`SparsefinderError` when loaded tensors do not fit the parameters (override)."""

    # -------------------------------------------------------------- specs
    @property
    def spec(self) -> str:
        """Canonical spec string of this predictor and its current parameters, knob included."""
        return format_spec(type(self), self.get_params())

    @property
    def family_spec(self) -> str:
        """Spec without the knob: names the fitted artifact that serves every knob value."""
        return format_spec(type(self), self.get_params(), with_knob=False)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def format_spec(cls: type[Predictor], params: dict[str, Any], with_knob: bool = True) -> str:
    """Canonical spec: key tokens always, the knob unless ``with_knob`` is false, others when not default."""
    defaults = cls.defaults()
    parts = []
    for letters, param in cls.spec_tokens.items():
        if param is None:
            parts.append(letters)
            continue
        value = params.get(param, defaults.get(param))
        is_key = letters in cls.spec_key
        if param == cls.knob and not with_knob:
            value = None
        elif param == cls.knob:
            is_key = True
        if isinstance(value, bool):
            if value and not defaults.get(param):
                parts.append(letters)
        elif value is None:
            if is_key:
                parts.append(letters)
        elif is_key or value != defaults.get(param):
            parts.append(f"{letters}{value:g}" if isinstance(value, float) else f"{letters}{value}")
    return "-".join(parts)
