"""Run by ``test_triton.py`` in a fresh process: ``TRITON_INTERPRET`` must be set before triton is imported.

Prints one JSON object: the maximum absolute error of each case.
"""

import json
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from sparsefinder.alpha_entmax import entmax  # noqa: E402
from sparsefinder.attention.sparse import sparse_entmax_attention  # noqa: E402
from sparsefinder.attention.triton_entmax import triton_sparse_entmax_attention  # noqa: E402
from sparsefinder.pattern import Pattern  # noqa: E402


def qkv(heads, n, d, seed):
    g = torch.Generator().manual_seed(seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return [(torch.randn(heads, n, d, generator=g) * 2).to(dev) for _ in range(3)]


errors = {}
q, k, v = qkv(2, 20, 8, 0)
for alpha in (1.5, 1.25, 2.0):
    dense = entmax(q @ k.transpose(1, 2) * 8**-0.5, alpha) @ v
    out = triton_sparse_entmax_attention(q, k, v, Pattern.full(2, 20, device=q.device), alpha)
    errors[f"full-{alpha}"] = float((out - dense).abs().max())
q, k, v = qkv(2, 24, 6, 1)  # d not a power of two: masked lanes
mask = torch.rand(2, 24, 24, generator=torch.Generator().manual_seed(3)) < 0.3
mask[0, 5] = False  # an empty row gives zeros
pattern = Pattern.from_dense(mask)
out = triton_sparse_entmax_attention(q, k, v, pattern)
errors["ragged"] = float((out - sparse_entmax_attention(q, k, v, pattern)).abs().max())
errors["empty_row"] = float(out[0, 5].abs().max())
qb, kb, vb = (torch.stack([t, t.flip(1)]) for t in (q, k, v))  # a padded batch: sequences of 24 and 15 tokens
batched = Pattern.from_mask(torch.stack([mask, mask.flip(1)]), [24, 15])
out = triton_sparse_entmax_attention(qb, kb, vb, batched)
errors["batched"] = float((out - sparse_entmax_attention(qb, kb, vb, batched)).abs().max())
print(json.dumps(errors))
