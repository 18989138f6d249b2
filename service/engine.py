"""What the service loads once at start-up and the blocking work it does with it.

:class:`Engine` holds the :class:`~sparsefinder.encoder.SparseEncoder` (whose model, in its
dense mode, also captures gold graphs for ``/v1/attention``), the artifact store and a cache
of resolved predictors. Its methods block and run on the model thread (:mod:`.worker`).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import torch

from sparsefinder.capture import capture
from sparsefinder.config import Settings
from sparsefinder.errors import SparsefinderError
from sparsefinder.metrics import compare
from sparsefinder.encoder import EncodeResult, SparseEncoder
from sparsefinder.predictors.base import Predictor
from sparsefinder.store import ArtifactStore, resolve_predictor

from .errors import ApiError
from .schemas import AttentionResponse

__all__ = ["Engine", "pick_device"]

log = logging.getLogger("sparsefinder.service")

REFERENCE_NAMES = ("dense", "softmax")
#: Resolved predictors kept in memory (least recently used dropped first).
CACHE_SIZE = 64


def pick_device(setting: str | None) -> str:
    """``setting`` if given, else ``cuda`` when present, else ``cpu``."""
    return setting or ("cuda" if torch.cuda.is_available() else "cpu")


class Engine:
    """Model, store and predictors of one service process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.device = pick_device(settings.device)
        self.store = ArtifactStore(settings.store)
        self.encoder = SparseEncoder(model=settings.model, device=self.device, alpha=settings.alpha)
        self.model, self.tokenizer, self.info = self.encoder.model, self.encoder.tokenizer, self.encoder.info
        self._cache: OrderedDict[str, Predictor] = OrderedDict()
        self._lock = threading.Lock()
        infos, problems = self.store.scan()
        for artifact_id, reason in problems.items():
            log.warning("skipping stored predictor %s: %s", artifact_id, reason)
        for artifact in infos[:CACHE_SIZE]:
            try:
                self.predictor(artifact.id)
            except SparsefinderError as exc:  # served as an error when asked for, not a failed start
                log.warning("stored predictor %s does not load: %s", artifact.id, exc)

    # ------------------------------------------------------------ predictors
    def predictor(self, name: str) -> Predictor:
        """The predictor named by an artifact id (or prefix) or a spec; errors name the ``predictor`` field."""
        with self._lock:
            if name not in self._cache:
                try:
                    self._cache[name] = resolve_predictor(name, self.store, model_id=self.info.id,
                                                          alpha=self.settings.alpha)
                except SparsefinderError as exc:  # not a stored id nor a valid spec: no such predictor
                    raise ApiError(404 if exc.status == 400 else exc.status, str(exc), "predictor") from None
                if len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(name)
            return self._cache[name]

    def forget(self, artifact_id: str) -> None:
        """Drop cached predictors of a deleted artifact."""
        with self._lock:
            for key in [k for k, p in self._cache.items() if k == artifact_id or artifact_id.startswith(k)]:
                del self._cache[key]

    # ------------------------------------------------------------ work
    def encode(self, texts: list[str], predictor: str, certified: bool, truncate: bool) -> EncodeResult:
        """Embeddings ``(B, D)`` and per-text sparsity of ``texts``; blocking. Errors name the field at fault."""
        chosen = predictor if predictor in REFERENCE_NAMES else self.predictor(predictor)
        certified = certified and predictor not in REFERENCE_NAMES  # the reference modes miss no pair
        try:
            return self.encoder.encode(texts, chosen, certified=certified, truncate=truncate)
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
        m = {k: float(v[0]) for k, v in compare(predicted, gold).items()}
        return AttentionResponse(predictor=predictor, layer=layer, head=head,
                                 tokens=self.tokenizer.convert_ids_to_tokens(ids),
                                 predicted=_rows(predicted), gold=_rows(gold), **m)


def _rows(pattern) -> list[list[int]]:
    crow, col = pattern.crow.tolist(), pattern.col.tolist()
    return [col[crow[i]:crow[i + 1]] for i in range(len(crow) - 1)]
