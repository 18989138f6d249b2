"""α-entmax and its support (method.md §1), on top of the ``entmax`` package.

``p_j = [(α-1)·z_j − τ]_+^(1/(α-1))`` with ``τ`` chosen so that ``Σ p = 1``. The
*support* ``{j : p_j > 0}`` of a head's attention is its gold graph. α = 1.5 and α = 2 use
the package's exact sort-based algorithms; other α use bisection with
:data:`~sparsefinder.config.BISECT_ITERATIONS` iterations (recorded in manifests).

``entmax`` 1.3 does not expose the threshold of α ≠ 1.5, 2, so :func:`threshold` carries
its own short bisection for those (the only hand-written numerics here).
"""

from __future__ import annotations

import torch
from entmax import entmax15, entmax_bisect, sparsemax
from entmax.activations import _entmax_threshold_and_support, _sparsemax_threshold_and_support
from torch import Tensor

from .config import BISECT_ITERATIONS, ENTMAX_TOPK
from .errors import SparsefinderError

__all__ = ["check_alpha", "entmax", "support", "threshold"]


def _partial(width: int) -> int | None:
    """Entries the exact threshold search sorts first (``None``: all); rows whose support fills them are redone
    with twice as many, by the ``entmax`` package, so the result stays exact."""
    return ENTMAX_TOPK if width > 2 * ENTMAX_TOPK else None


def check_alpha(alpha: float) -> float:
    """Return ``alpha`` as a float, or raise a user error unless ``alpha > 1``."""
    alpha = float(alpha)
    if not alpha > 1.0:
        raise SparsefinderError(f"alpha must be greater than 1 (1.5 is entmax, 2 sparsemax), got {alpha}")
    return alpha


def entmax(scores: Tensor, alpha: float, dim: int = -1) -> Tensor:
    """α-entmax probabilities of ``scores`` along ``dim`` (same shape; ``-inf`` entries get 0).

    Computed in float32 at least (half precision is unreliable for the threshold). For
    α ∈ {1.5, 2} the threshold search partially sorts the top :data:`ENTMAX_TOPK` scores and
    doubles that where a support is larger (exact, the ``entmax`` package's ``k`` schedule).
    """
    dtype = scores.dtype
    x = scores.float() if dtype in (torch.float16, torch.bfloat16) else scores
    k = _partial(x.shape[dim])
    if alpha == 1.5:
        p = entmax15(x, dim=dim, k=k)
    elif alpha == 2.0:
        p = sparsemax(x, dim=dim, k=k)
    else:
        p = entmax_bisect(x, alpha=alpha, dim=dim, n_iter=BISECT_ITERATIONS)
    return p.to(dtype)


def support(scores: Tensor, alpha: float, dim: int = -1) -> Tensor:
    """Boolean support ``entmax(scores) > 0`` (same shape as ``scores``): the gold graph."""
    return entmax(scores, alpha, dim) > 0


def threshold(scores: Tensor, alpha: float) -> Tensor:
    """Score threshold ``t`` along the last axis: ``p_j > 0 ⇔ z_j > t``; shape ``scores.shape[:-1] + (1,)``.

    ``t = τ / (α − 1)``. Used by the certified-exact mode: a key whose score (or score
    bound) is at most ``t`` computed on a subset of keys cannot enter the full support.
    """
    z = scores.float()
    zmax = z.max(-1, keepdim=True).values
    if alpha == 1.5:
        tau, _ = _entmax_threshold_and_support((z - zmax) / 2, dim=-1, k=_partial(z.shape[-1]))
        return zmax + 2 * tau
    if alpha == 2.0:
        tau, _ = _sparsemax_threshold_and_support(z - zmax, dim=-1, k=_partial(z.shape[-1]))
        return zmax + tau
    # bisection on t in score units: f(t) = Σ [(α-1)(z - t)]_+^(1/(α-1)) - 1 is decreasing
    x = (alpha - 1) * (z - zmax)
    lo = torch.full_like(zmax, -1.0 / (alpha - 1))  # f(lo) >= 0: the max term alone is 1 there
    hi = torch.zeros_like(zmax)  # f(hi) = -1
    for _ in range(BISECT_ITERATIONS):
        mid = (lo + hi) / 2
        f = torch.clamp(x - (alpha - 1) * mid, min=0).pow(1 / (alpha - 1)).sum(-1, keepdim=True) - 1
        lo = torch.where(f >= 0, mid, lo)
        hi = torch.where(f >= 0, hi, mid)
    return zmax + lo
