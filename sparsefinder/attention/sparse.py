"""Exact α-entmax attention on the kept pairs of a :class:`~sparsefinder.pattern.Pattern` (method.md §5).

For each query only the kept scores ``z_ij = q_i·k_j·s`` (``j`` in the pattern row) are
computed, α-entmax (Peters, Niculae & Martins 2019) is taken over them and the kept values
are summed with those weights. When the pattern contains the gold support the result is
dense α-entmax attention up to float rounding, because keys outside the support get
exactly zero probability (method.md §1).

Layout: the pattern's padded form ``(H, n, k_max)``; keys and values are gathered into
``(H, c, k_max, d)`` blocks for a chunk of ``c`` queries at a time, so memory grows with
the number of kept pairs (at most :data:`~sparsefinder.config.SPARSE_CHUNK_PAIRS` gathered
pairs live at once), never with ``n²``. α = 1.5 uses the exact sort-based threshold of
the ``entmax`` package over the ``k_max`` entries of each row; other α bisection
(:func:`sparsefinder.alpha_entmax.entmax`). Autograd flows through every step.

Three layers as in ``entmax``: :func:`kept_scores` / :func:`padded_entmax_attention`
(building blocks the certified mode reuses), :func:`sparse_entmax_attention` (the function
users call) and :class:`SparseEntmaxAttention` (a thin ``nn.Module``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..alpha_entmax import check_alpha, entmax
from ..config import DEFAULT_ALPHA, SPARSE_CHUNK_PAIRS
from ..pattern import Pattern

__all__ = ["SparseEntmaxAttention", "kept_scores", "padded_entmax_attention", "sparse_entmax_attention"]


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """Rows of ``x`` ``(H, n, d)`` at ``index`` ``(H, c, k)`` → ``(H, c, k, d)`` (one flat ``index_select``)."""
    heads, n, d = x.shape
    offsets = (torch.arange(heads, device=x.device) * n).view(heads, 1, 1)
    return x.reshape(heads * n, d).index_select(0, (index + offsets).reshape(-1)).view(*index.shape, d)


def kept_scores(q: Tensor, k: Tensor, index: Tensor, scaling: float) -> Tensor:
    """Scores of the indexed pairs: ``q`` ``(H, c, d)``, ``k`` ``(H, n, d)``, ``index`` ``(H, c, w)`` → ``(H, c, w)``."""
    keys = _gather(k, index)  # (H, c, w, d)
    return torch.matmul((q * scaling).unsqueeze(-2), keys.transpose(-1, -2)).squeeze(-2)


def padded_entmax_attention(
    q: Tensor, k: Tensor, v: Tensor, index: Tensor, valid: Tensor, alpha: float, scaling: float,
) -> tuple[Tensor, Tensor]:
    """α-entmax attention of a chunk of queries over their indexed keys.

    Parameters
    ----------
    q : Tensor, shape (H, c, d)
        Queries of the chunk.
    k, v : Tensor, shape (H, n, d)
        All keys and values.
    index : Tensor, int64, shape (H, c, w)
        Key indices per query; entries where ``valid`` is false are ignored.
    valid : Tensor, bool, shape (H, c, w)
        Real entries; a row without any gives a zero output.

    Returns
    -------
    out : Tensor, shape (H, c, d)
    scores : Tensor, shape (H, c, w)
        Kept scores with ``-inf`` at ignored entries (the certified mode reads them).
    """
    scores = kept_scores(q, k, index, scaling).masked_fill(~valid, float("-inf"))
    empty = ~valid.any(-1, keepdim=True)  # entmax needs a finite entry per row
    probs = entmax(scores.masked_fill(empty & (torch.arange(scores.shape[-1], device=q.device) == 0), 0.0), alpha)
    probs = probs.masked_fill(empty, 0.0)
    out = torch.matmul(probs.unsqueeze(-2), _gather(v, index)).squeeze(-2)
    return out, scores


def sparse_entmax_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, alpha: float = DEFAULT_ALPHA,
    scaling: float | None = None, chunk_pairs: int = SPARSE_CHUNK_PAIRS,
) -> Tensor:
    """α-entmax attention restricted to the pairs kept by ``pattern``, for one sequence.

    Parameters
    ----------
    q, k, v : Tensor, shape (H, n, d)
        Queries, keys and values of the ``n`` valid tokens (no padding).
    pattern : Pattern
        Kept pairs, shape ``(H, n, n)``.
    alpha : float
        α > 1 (1.5 exact by sorting, 2 sparsemax, others by bisection).
    scaling : float, optional
        Score scale; default ``d ** -0.5``.
    chunk_pairs : int
        At most this many (query, key-slot) pairs are gathered at once (memory bound).

    Returns
    -------
    Tensor, shape (H, n, d)
        ``out_i = Σ_j p_ij v_j`` over the kept keys; a query with no kept key gets zeros.
    """
    alpha = check_alpha(alpha)
    heads, n, d = q.shape
    if pattern.shape != (heads, n, n):
        raise ValueError(f"pattern shape {pattern.shape} does not match queries {(heads, n, n)}")
    scaling = d**-0.5 if scaling is None else scaling
    if q.is_cuda and not (torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))):
        from .triton_entmax import triton_available, triton_sparse_entmax_attention

        if triton_available():
            return triton_sparse_entmax_attention(q, k, v, pattern, alpha, scaling)
    index, lengths = pattern.to(q.device).to_padded()
    width = index.shape[-1]
    valid = torch.arange(width, device=q.device) < lengths.unsqueeze(-1)
    step = max(1, chunk_pairs // (heads * width))
    outs = [padded_entmax_attention(q[:, s:s + step], k, v, index[:, s:s + step], valid[:, s:s + step],
                                    alpha, scaling)[0] for s in range(0, n, step)]
    return outs[0] if len(outs) == 1 else torch.cat(outs, 1)


class SparseEntmaxAttention(nn.Module):
    """``nn.Module`` form of :func:`sparse_entmax_attention`; stores ``alpha`` and ``scaling`` only."""

    def __init__(self, alpha: float = DEFAULT_ALPHA, scaling: float | None = None) -> None:
        super().__init__()
        self.alpha = check_alpha(alpha)
        self.scaling = scaling

    def forward(self, q: Tensor, k: Tensor, v: Tensor, pattern: Pattern) -> Tensor:
        """``(H, n, d)`` inputs and an ``(H, n, n)`` pattern → ``(H, n, d)``."""
        return sparse_entmax_attention(q, k, v, pattern, self.alpha, self.scaling)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, scaling={self.scaling}"
