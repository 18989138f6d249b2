"""The predictor a model folder carries (``sparsefinder export``), read from the model's config.

An exported folder's ``config.json`` names its predictor artifact by a path relative to the
folder (``sparsefinder_predictor``, e.g. ``"predictor/window-…"``: an artifact as the store
writes it) and the mode (``sparsefinder_certified``). The ``sparsefinder_sparse`` attention
function uses that predictor whenever the forward carries no ``attention_predictor``
keyword, so sentence-transformers, pipelines and other servers run it without knowing
about sparsefinder. The artifact is loaded once per config object and cached.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from ..errors import SparsefinderError
from ..store import ArtifactStore

__all__ = ["CONFIG_CERTIFIED", "CONFIG_PREDICTOR", "attached_certified", "attached_predictor"]

#: ``config.json`` key: path of the predictor artifact folder, relative to the model folder.
CONFIG_PREDICTOR = "sparsefinder_predictor"
#: ``config.json`` key: ``true`` runs the attached predictor in certified (exact) mode.
CONFIG_CERTIFIED = "sparsefinder_certified"

_cache: dict[int, Any] = {}
_lock = threading.Lock()


def _load(config: Any, relative: str) -> Any:
    base = getattr(config, "_name_or_path", "") or ""
    folder = (Path(base) / relative) if base else Path(relative)
    if not (folder / "artifact.json").is_file():
        raise SparsefinderError(f"the model's config names predictor {relative!r}, but {folder} holds no artifact; "
                                "export the model again with 'sparsefinder export'")
    return ArtifactStore(folder.parent).load(folder.name)


def attached_predictor(config: Any) -> Any:
    """The fitted :class:`~sparsefinder.predictors.base.Predictor` attached to ``config``, or ``None``.

    ``config.sparsefinder_predictor`` is resolved against the folder the config was loaded
    from (``config._name_or_path``). Loaded on first use and cached for the config object's
    lifetime; a missing or damaged artifact raises :class:`SparsefinderError`.
    """
    relative = getattr(config, CONFIG_PREDICTOR, None)
    if not relative:
        return None
    key = id(config)
    with _lock:
        if key not in _cache:
            _cache[key] = _load(config, str(relative))
            weakref.finalize(config, _cache.pop, key, None)
        return _cache[key]


def attached_certified(config: Any) -> bool:
    """Whether ``config`` asks for the certified mode (``sparsefinder_certified``; default ``False``)."""
    return bool(getattr(config, CONFIG_CERTIFIED, False))
