"""``sparsefinder encode``: one JSON line per text with its embedding and the sparsity used per layer.

The attention mode is a predictor ID in the artifact store, a predictor spec, ``auto`` (the
stored setting the newest report shows reaching ``--recall`` at the highest sparsity), ``dense``
(dense α-entmax) or ``softmax`` (the original model); see :mod:`sparsefinder.encoder` and
:mod:`sparsefinder.choice`.
``--layers 3-5`` applies the predictor to those layers only (:mod:`sparsefinder.layers`).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from tqdm.auto import tqdm

from ..choice import resolve_mode
from ..config import DEFAULT_ALPHA, DEFAULT_RECALL_TARGET, ENCODE_BATCH, get_settings
from ..corpus import check_corpus, iter_texts
from ..encoder import SparseEncoder
from ..files import atomic_write_text
from ..model import model_info
from .arguments import MODEL_HELP, add_layers_argument, layers_of


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", help="plain-text file, one text per non-blank line")
    src.add_argument("--text", action="append", help="a text to encode (repeatable)")
    parser.add_argument("--predictor", required=True,
                        help="predictor ID or spec, 'auto' (the best stored setting for --recall), 'dense', 'exact' or 'softmax'")
    parser.add_argument("--recall", type=float, default=None,
                        help="share of the gold graph to keep, e.g. 0.99 (sets the predictor's knob; with 'auto' "
                             f"picks the setting; default for auto {DEFAULT_RECALL_TARGET})")
    parser.add_argument("--certified", action="store_true", help="add the keys the predictor provably missed")
    parser.add_argument("--store", default=None, help="artifact store (default: $SPARSEFINDER_STORE)")
    parser.add_argument("--out", required=True, help="JSON-lines file to write")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="alpha of alpha-entmax (> 1)")
    parser.add_argument("--truncate", action="store_true", help="cut texts longer than the model's positions")
    parser.add_argument("--limit", type=int, default=None, help="encode only the first N texts")
    parser.add_argument("--batch-size", type=int, default=ENCODE_BATCH,
                        help="texts per encode call (each runs forward passes of at most SPARSEFINDER_BATCH_TOKENS "
                             "padded tokens)")
    add_layers_argument(parser)


def run(args: argparse.Namespace) -> int:
    layers = layers_of(args)
    if args.corpus is not None:
        info = check_corpus(args.corpus)
        texts, total = iter_texts(args.corpus), info.texts
    else:
        texts, total = iter(args.text), len(args.text)
    if args.limit is not None:
        texts, total = itertools.islice(texts, args.limit), min(total, args.limit)
    settings = get_settings()
    mode = resolve_mode(args.predictor, args.store, model_id=model_info(args.model).id, alpha=args.alpha,
                        recall=args.recall)  # a bad name fails before the weights load
    encoder = SparseEncoder(args.model, device=settings.device, alpha=args.alpha, batch_tokens=settings.batch_tokens,
                            dtype=settings.dtype)
    lines, index = [], 0
    with tqdm(total=total, desc="encode", unit="text") as bar:
        while batch := list(itertools.islice(texts, max(1, args.batch_size))):
            res = encoder.encode(batch, mode, certified=args.certified, truncate=args.truncate, layers=layers)
            for b in range(len(batch)):
                lines.append(json.dumps({
                    "index": index, "tokens": res.num_tokens[b], "embedding": res.embeddings[b].tolist(),
                    "sparsity": res.text_sparsity[b]}))
                index += 1
            bar.update(len(batch))
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    spec = mode if isinstance(mode, str) else mode.spec
    print(json.dumps({"out": args.out, "texts": index, "predictor": args.predictor, "spec": spec, "certified": args.certified,
                      "layers": layers, "model": encoder.info.id, "dtype": encoder.dtype}))
    return 0
