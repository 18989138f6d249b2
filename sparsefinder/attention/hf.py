"""Our attention functions in transformers' attention-function registry.

After :func:`register_attention`, ``AutoModel.from_pretrained(path,
attn_implementation="sparsefinder_entmax")`` runs the unchanged encoder with dense
α-entmax in place of softmax. α comes from the ``entmax_alpha`` keyword given to the
model's forward, else ``config.entmax_alpha``, else the default 1.5. An
``attention_recorder`` keyword (a callable) receives, per layer, the attention inputs and
probabilities: that is how extraction captures queries, keys, values and gold graphs
without patching modules. Masks use transformers' additive ``eager`` mask function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from ..alpha_entmax import entmax
from ..config import DEFAULT_ALPHA

__all__ = ["DENSE_ENTMAX", "AttentionRecorder", "alpha_of", "entmax_attention", "register_attention"]

DENSE_ENTMAX = "sparsefinder_entmax"

#: ``recorder(layer, query, key, value, probs)``; tensors ``(B, H, n, d)`` and probs ``(B, H, n, n)``.
AttentionRecorder = Callable[[int, Tensor, Tensor, Tensor, Tensor], None]


def alpha_of(module: nn.Module, kwargs: dict) -> float:
    """α for this call: the ``entmax_alpha`` keyword, else ``config.entmax_alpha``, else the default."""
    alpha = kwargs.get("entmax_alpha")
    if alpha is None:
        alpha = getattr(module.config, "entmax_alpha", None)
    return float(alpha if alpha is not None else DEFAULT_ALPHA)


def entmax_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    """Dense α-entmax attention: ``(B, H, n, d)`` inputs → output ``(B, n, H, d)`` and probabilities ``(B, H, n, n)``."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = entmax(scores, alpha_of(module, kwargs))
    recorder: AttentionRecorder | None = kwargs.get("attention_recorder")
    if recorder is not None:
        recorder(module.layer_idx, query, key, value, probs)
    probs_dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs_dropped, value).transpose(1, 2).contiguous()
    return out, probs


def register_attention() -> None:
    """Register every sparsefinder attention function (idempotent)."""
    AttentionInterface.register(DENSE_ENTMAX, entmax_attention)
    AttentionMaskInterface.register(DENSE_ENTMAX, eager_mask)
