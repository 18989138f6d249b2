"""Where a long-document encoder's attention goes by query–key offset, run by hand (issue 13).

A position table extended by copying (``extend-positions``: row ``p`` copies row ``p mod 512``) gives
positions 512 apart the same embedding, so a head that attends to its neighbours at ``±1`` also
attends to ``±1 ± 512``, ``±1 ± 1024``, … For one WikiText-2 ``test.txt`` article cut to ``--tokens``
tokens, read with exact α-entmax (the gold graph's probabilities, computed per head from the captured
queries and keys), prints per layer the attention mass (averaged over queries and heads) on

- ``local``: keys ``1 … band`` positions away;
- ``alias``: keys within ``band`` positions of a nonzero multiple of ``--period`` away (the copies of
  the local offsets); ``alias_share`` is the share of the far pairs these are, the mass a spread
  that ignores position would give them;
- ``far``: keys more than ``--period`` positions away.

    python bench/attention_offsets.py --model artifacts/models/minilm-entmax15-long4k --tokens 4096
"""

from __future__ import annotations

import argparse
import json
from itertools import islice

import torch

from sparsefinder.alpha_entmax import entmax
from sparsefinder.capture import capture
from sparsefinder.config import DEFAULT_ALPHA, default_data_dir
from sparsefinder.corpus import long_article_ids
from sparsefinder.hf.attention import SPARSE_ENTMAX
from sparsefinder.model import load_encoder


def offset_masks(n: int, period: int, band: int) -> dict[str, torch.Tensor]:
    """Boolean ``(n, n)`` masks of the local, alias and far query–key offsets."""
    off = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs()
    near = off % period
    return {"local": (off >= 1) & (off <= band),
            "alias": (off >= period - band) & ((near <= band) | (near >= period - band)),
            "far": off > period}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="long-document encoder folder")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--period", type=int, default=512, help="rows of the table that was copied")
    parser.add_argument("--band", type=int, default=4)
    parser.add_argument("--article", type=int, default=0, help="which article of at least --tokens tokens")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, info = load_encoder(args.model, SPARSE_ENTMAX, "cpu")
    body = next(islice(long_article_ids(default_data_dir() / "test.txt", tokenizer, args.tokens - 2), args.article, None))
    seq = next(capture(model, [[tokenizer.cls_token_id, *body, tokenizer.sep_token_id]], DEFAULT_ALPHA))
    masks = offset_masks(args.tokens, args.period, args.band)
    alias_share = float(masks["alias"].sum() / masks["far"].sum())
    for layer in range(seq.queries.shape[0]):
        q, k = seq.queries[layer].float(), seq.keys[layer].float()
        mass = dict.fromkeys(masks, 0.0)
        for h in range(q.shape[0]):
            p = entmax(q[h] @ k[h].T / q.shape[-1] ** 0.5, DEFAULT_ALPHA)
            for name, mask in masks.items():
                mass[name] += float(p[mask].sum()) / args.tokens / q.shape[0]
        print(json.dumps({"model": info.id, "layer": layer, **{m: round(v, 4) for m, v in mass.items()},
                          "alias_share": round(alias_share, 4)}), flush=True)


if __name__ == "__main__":
    main()
