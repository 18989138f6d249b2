"""The layer choice: which encoder layers a predictor is applied to (issue 18).

Listed layers compute attention on the predictor's pattern; the others run dense α-entmax
and skip nothing (sparsity 0). The choice travels as the ``attention_layers`` forward
keyword (a sequence of layer indices, ``None`` for all layers); without it, an exported
model's ``config.sparsefinder_layers`` is the default. Written as text it is a comma list
of indices and inclusive ranges: ``3-5``, ``0,2,4-5``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import SparsefinderError

__all__ = ["CONFIG_KEY", "LAYERS_KWARG", "applies_to_layer", "check_layers", "format_layers", "parse_layers"]

#: Forward keyword carrying the chosen layers to the attention function.
LAYERS_KWARG = "attention_layers"
#: Key of an exported model's ``config.json`` with its default layer choice.
CONFIG_KEY = "sparsefinder_layers"


def parse_layers(text: str, name: str = "--layers") -> list[int]:
    """``"0,2,4-5"`` → ``[0, 2, 4, 5]``: indices and inclusive ranges, each layer at most once.

    Raises :class:`SparsefinderError` naming ``name`` on anything else (empty parts, negative
    or reversed ranges, duplicates). The range against the model is checked by :func:`check_layers`.
    """
    layers: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdecimal() or (sep and not hi.isdecimal()):
            raise SparsefinderError(f"{name}: {text!r} is not a list of layers such as 3-5 or 0,2,4-5")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise SparsefinderError(f"{name}: range {part.strip()!r} ends before it starts")
        layers.extend(range(first, last + 1))
    return list(check_layers(layers, None, name))


def check_layers(layers: Sequence[int] | None, num_layers: int | None, name: str = "layers") -> tuple[int, ...] | None:
    """Sorted, validated layer indices (``None`` stays ``None``: all layers).

    Each must be an int in ``0 .. num_layers − 1`` (any non-negative int when ``num_layers`` is
    ``None``) and appear once; errors name ``name`` (``layers``, ``--layers``, a config key).
    """
    if layers is None:
        return None
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise SparsefinderError(f"{name}: expected a list of layer indices, got {layers!r}")
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise SparsefinderError(f"{name}: layer {layer!r} is not an integer")
        if layer < 0 or (num_layers is not None and layer >= num_layers):
            bound = f"0..{num_layers - 1}" if num_layers is not None else "≥ 0"
            raise SparsefinderError(f"{name}: layer {layer} is out of range ({bound})")
    if len(set(layers)) != len(layers):
        twice = sorted({x for x in layers if list(layers).count(x) > 1})
        raise SparsefinderError(f"{name}: layer {twice[0]} is listed more than once")
    return tuple(sorted(int(x) for x in layers))


def format_layers(layers: Sequence[int]) -> str:
    """``[0, 2, 4, 5]`` → ``"0,2,4-5"`` (the inverse of :func:`parse_layers`; ``""`` for no layers)."""
    parts: list[str] = []
    for layer in sorted(layers):
        if parts and layer == int(parts[-1].rpartition("-")[2]) + 1:
            parts[-1] = f"{parts[-1].partition('-')[0]}-{layer}"
        else:
            parts.append(str(layer))
    return ",".join(parts)


def applies_to_layer(layer: int, kwargs: Mapping, config: object) -> bool:
    """Whether the predictor is applied at ``layer``: the ``attention_layers`` keyword, else
    ``config.sparsefinder_layers``, else every layer."""
    chosen = kwargs.get(LAYERS_KWARG)
    if chosen is None:
        chosen = getattr(config, CONFIG_KEY, None)
    return chosen is None or layer in chosen
