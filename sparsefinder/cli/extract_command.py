"""``sparsefinder extract``: queries, keys and gold graphs of a corpus (:func:`sparsefinder.training.extract.extract`)."""

from __future__ import annotations

import argparse
import json

import torch

from ..config import DEFAULT_ALPHA, DEFAULT_MAX_LENGTH
from ..training.extract import extract
from .arguments import MODEL_HELP, add_engine_arguments, engine_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="plain-text file, one document or paragraph per line")
    parser.add_argument("--out", required=True, help="dataset folder to create")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--max-length", type=int, default=DEFAULT_MAX_LENGTH, help="tokens per sequence, L")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="alpha of alpha-entmax (> 1)")
    parser.add_argument("--limit", type=int, default=None, help="stop after N sequences")
    add_engine_arguments(parser)


def gold_sparsity_table(manifest: dict) -> str:
    """Markdown table: gold sparsity per layer (mean over heads, and the range over heads)."""
    rows = ["| layer | mean | min | max |", "|---|---|---|---|"]
    per_head = torch.tensor(manifest["gold_sparsity"])
    for layer, heads in enumerate(per_head):
        rows.append(f"| {layer} | {heads.mean():.4f} | {heads.min():.4f} | {heads.max():.4f} |")
    rows.append(f"| all | {per_head.mean():.4f} | {per_head.min():.4f} | {per_head.max():.4f} |")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    ds = extract(args.corpus, args.out, model=args.model, max_length=args.max_length, alpha=args.alpha,
                 limit=args.limit, engine=engine_of(args))
    m = ds.manifest
    print(json.dumps({"dataset": str(ds.folder), "sequences": m["sequences"], "tokens": m["tokens"],
                      "gold_edges": m["gold_edges"], "model": m["model"]["id"]}))
    print(f"gold sparsity per layer (macro over sequences; mean and range over heads), L={m['max_length']}:")
    print(gold_sparsity_table(m))
    return 0
