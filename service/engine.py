"""What the service loads once at start-up and the blocking work it does with it.

:class:`Engine` holds the :class:`~sparsefinder.encoder.SparseEncoder` (whose model, in its
dense mode, also captures gold graphs for ``/v1/attention``), the artifact store and a cache
of resolved predictors. Its methods block and run on the model thread (:mod:`.worker`), except
:meth:`Engine.token_counts`, which the batcher calls on a helper thread to tell long requests from short.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict

import torch

from sparsefinder.attention import cpu_rows
from sparsefinder.capture import capture
from sparsefinder.config import PREDICTOR_CACHE_SIZE, Settings
from sparsefinder.errors import SparsefinderError
from sparsefinder.metrics import compare
from sparsefinder.model import pick_device
from sparsefinder.encoder import EncodeResult, SparseEncoder
from sparsefinder.layers import check_layers
from sparsefinder.predictors.base import Predictor
from sparsefinder.choice import REFERENCE_MODES, resolve_choice
from sparsefinder.store import ArtifactStore

from .errors import ApiError
from .schemas import AttentionResponse

__all__ = ["Engine"]

log = logging.getLogger("sparsefinder.service")


class Engine:
    """Model, store and predictors of one service process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = pick_device(settings.device)
        self.store = ArtifactStore(settings.store)
        self.encoder = SparseEncoder(model=settings.model, device=self.device, alpha=settings.alpha,
                                     max_tokens=settings.max_tokens, batch_tokens=settings.batch_tokens,
                                     dtype=settings.dtype)
        self.model, self.tokenizer, self.info = self.encoder.model, self.encoder.tokenizer, self.encoder.info
        self._cache: OrderedDict[tuple[str, float | None], Predictor] = OrderedDict()
        self._lock = threading.Lock()
        # a fast tokenizer sets its truncation state on each call: counting uses its own copy, one call at a time
        self._counter = copy.deepcopy(self.tokenizer)
        self._counter_lock = threading.Lock()
        cpu_rows.warm_up()  # the first sparse request should not pay the kernels' compilation
        infos, problems = self.store.scan()
        for artifact_id, reason in problems.items():
            log.warning("skipping stored predictor %s: %s", artifact_id, reason)
        for artifact in infos[:PREDICTOR_CACHE_SIZE]:
            try:
                self.predictor(artifact.id)
            except SparsefinderError as exc:  # served as an error when asked for, not a failed start
                log.warning("stored predictor %s does not load: %s", artifact.id, exc)

    # ------------------------------------------------------------ predictors
    def predictor(self, name: str, recall: float | None = None) -> Predictor:
        """The predictor named by an artifact id (or prefix), a spec or ``auto``, at a ``recall`` target.

        Errors name the ``predictor`` field (or ``recall`` when no setting reaches it). Each
        (name, recall) is resolved once and kept (least recently used dropped first).
        """
        key = (name, recall)
        with self._lock:
            if key not in self._cache:
                try:
                    self._cache[key] = resolve_choice(name, self.store, model_id=self.info.id,
                                                      alpha=self.settings.alpha, recall=recall,
                                                      reports=self.settings.reports)
                except SparsefinderError as exc:  # not a stored id nor a valid spec: no such predictor
                    field = "recall" if recall is not None and "recall" in str(exc) else "predictor"
                    raise ApiError(404 if exc.status == 400 else exc.status, str(exc), field) from None
                if len(self._cache) > PREDICTOR_CACHE_SIZE:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(key)
            return self._cache[key]

    def forget(self, artifact_id: str) -> None:
        """Drop cached predictors of a deleted artifact."""
        with self._lock:
            for key in [k for k in self._cache if k[0] == artifact_id or artifact_id.startswith(k[0])]:
                del self._cache[key]

    # ------------------------------------------------------------ work
    def token_counts(self, texts: list[str], truncate: bool) -> list[int]:
        """Tokens of each text (special tokens included) as :meth:`encode` runs it: with ``truncate``, at most
        the encoder's longest input (:attr:`~sparsefinder.encoder.SparseEncoder.max_length`); without, uncut.

        Blocking and thread-safe (its own tokenizer copy, one call at a time); not a model call, so it runs off
        the model thread.
        """
        with self._counter_lock:
            ids = self._counter(texts)["input_ids"]
        limit = self.encoder.max_length if truncate else None
        return [len(row) if limit is None else min(len(row), limit) for row in ids]

    def encode(self, texts: list[str], predictor: str, certified: bool, truncate: bool,
               layers: tuple[int, ...] | None = None, recall: float | None = None) -> EncodeResult:
        """Embeddings ``(B, D)`` and per-text sparsity of ``texts``, the predictor applied to ``layers``
        (``None``: the model's default) at a ``recall`` target; blocking. Errors name the field at fault."""
        try:
            layers = check_layers(layers, self.info.num_layers, "layers")
        except SparsefinderError as exc:  # schema-valid (unique, ≥ 0) yet beyond the model: no such layer
            raise ApiError(404, str(exc), "layers") from None
        chosen = predictor if predictor in REFERENCE_MODES else self.predictor(predictor, recall)
        certified = certified and predictor not in REFERENCE_MODES  # the reference modes miss no pair
        try:
            return self.encoder.encode(texts, chosen, certified=certified, truncate=truncate, layers=layers)
        except SparsefinderError as exc:
            raise ApiError(exc.status, str(exc), "texts") from None

    def attention(self, text: str, predictor: str, layer: int, head: int, truncate: bool) -> AttentionResponse:
        """Predicted and gold graph of one head for one text; blocking."""
        if layer >= self.info.num_layers:
            raise ApiError(404, f"layer: the model has {self.info.num_layers} layers (0..{self.info.num_layers - 1})",
                           "layer")
        if head >= self.info.num_heads:
            raise ApiError(404, f"head: the model has {self.info.num_heads} heads (0..{self.info.num_heads - 1})",
                           "head")
        chosen = self.predictor(predictor)
        ids = self.tokenizer(text)["input_ids"]
        if len(ids) > self.info.max_positions:
            if not truncate:
                raise ApiError(422, f"text: {len(ids)} tokens, over the model's {self.info.max_positions}; "
                                    "shorten it or ask for truncate", "text")
            ids = ids[:self.info.max_positions - 1] + ids[-1:]
        seq = next(capture(self.model, [ids], self.settings.alpha))
        predicted = chosen.predict(seq.inputs(layer)).to("cpu").head(head)
        gold = seq.gold[layer].head(head)
        m = {k: float(v[0, 0]) for k, v in compare(predicted, gold).items()}
        return AttentionResponse(predictor=predictor, layer=layer, head=head,
                                 tokens=self.tokenizer.convert_ids_to_tokens(ids),
                                 predicted=_rows(predicted), gold=_rows(gold), **m)


def _rows(pattern) -> list[list[int]]:
    """Sorted kept keys of each query of a one-sequence, one-head pattern."""
    counts, col = pattern.csr()
    return [part.tolist() for part in torch.split(col, counts.tolist())]
