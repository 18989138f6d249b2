"""k-means for the clustering predictors: FAISS when installed, a pure-torch Lloyd fallback otherwise.

This is the only module that imports FAISS (lazily: its torch interop patches globals, and
``omp_set_num_threads`` is process-wide). FAISS receives float32, C-contiguous arrays.
Centroids come back as plain float32 tensors, stored with safetensors rather than as FAISS
index files (FAISS, Johnson et al. 2019; Lloyd 1982 for the fallback).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["faiss_available", "kmeans", "kmeans_plus_plus", "kmeans_torch"]


def faiss_available() -> bool:
    """Whether ``import faiss`` works here."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def kmeans(points: Tensor, clusters: int, *, iterations: int = 20, seed: int = 0,
           backend: str = "auto") -> Tensor:
    """Cluster ``points`` and return the centroids.

    Parameters
    ----------
    points : Tensor, shape (m, r)
        Points to cluster (any float dtype; converted to float32).
    clusters : int
        Number of centroids ``C`` (at most ``m``).
    iterations : int
        Lloyd iterations.
    seed : int
        Seed of the initial centroids; same seed and points give the same centroids.
    backend : {"auto", "faiss", "torch"}
        ``auto`` uses FAISS when installed.

    Returns
    -------
    Tensor, float32, shape (C, r)
    """
    if backend not in ("auto", "faiss", "torch"):
        raise ValueError(f"unknown k-means backend {backend!r}")
    if backend == "torch" or (backend == "auto" and not faiss_available()):
        return kmeans_torch(points, clusters, iterations=iterations, seed=seed)
    try:
        import faiss
    except ImportError:  # pragma: no cover - only when backend="faiss" is forced without FAISS
        raise ImportError("FAISS is not installed: pip install faiss-cpu (or the 'gpu' extra for faiss-gpu)") from None
    x = points.detach().to("cpu", torch.float32).contiguous()
    init = kmeans_plus_plus(x, clusters, seed=seed).contiguous().numpy()
    km = faiss.Kmeans(x.shape[1], clusters, niter=iterations, seed=seed, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=1 << 20)
    km.train(x.numpy(), init_centroids=init)
    return torch.from_numpy(km.centroids.copy())


def kmeans_plus_plus(points: Tensor, clusters: int, *, seed: int = 0) -> Tensor:
    """Seeded k-means++ initial centroids (Arthur & Vassilvitskii 2007): (m, r) → float32 (C, r).

    Each new centroid is drawn with probability proportional to the squared distance to the
    nearest one chosen so far, so well-separated groups each get a centroid.
    """
    x = points.detach().to("cpu", torch.float32)
    gen = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(x.shape[0], (1,), generator=gen))]
    nearest = (x - x[chosen[0]]).square().sum(-1)
    for _ in range(1, clusters):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        chosen.append(int(torch.multinomial(weights, 1, generator=gen)))
        nearest = torch.minimum(nearest, (x - x[chosen[-1]]).square().sum(-1))
    return x[chosen].clone()


def kmeans_torch(points: Tensor, clusters: int, *, iterations: int = 20, seed: int = 0) -> Tensor:
    """Pure-torch Lloyd k-means (same contract as :func:`kmeans`); empty clusters keep their centroid."""
    x = points.detach().to("cpu", torch.float32)
    centroids = kmeans_plus_plus(x, clusters, seed=seed)
    for _ in range(iterations):
        assign = torch.cdist(x, centroids).argmin(-1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=clusters).to(x.dtype)
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None]
    return centroids
