"""Arguments that several commands share, and their checks."""

from __future__ import annotations

import argparse
import sys

from ..layers import check_layers, parse_layers
from ..model import model_info
from ..training.checkpoints import checkpoint_dir
from ..training.engine import ENGINES, Engine

#: Help text of every ``--model`` option (the default is resolved by :func:`sparsefinder.model.resolve_model`).
MODEL_HELP: str = ("local Hugging Face encoder folder (default: $SPARSEFINDER_MODEL, else the adapted encoder "
                   "<work_dir>/models/minilm-entmax15 that `make run` writes, else the packaged all-MiniLM-L6-v2)")


def interrupted_training(command: str, out: str) -> int:
    """Say on stderr what an interrupted training command writing ``out`` kept; return the exit code 130."""
    ckpt = checkpoint_dir(out)
    kept = f"the last checkpoint in {ckpt} is kept; add --resume to continue" if ckpt.exists() else "nothing kept"
    print(f"sparsefinder {command}: interrupted; {kept}", file=sys.stderr)
    return 130


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine`` and ``--ray-address`` (read back by :func:`engine_of`)."""
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="run here (local, the default) or on Ray (needs sparsefinder[distributed])")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join with --engine ray, e.g. ray://head:10001 "
                             "(default: start one on this machine)")


def engine_of(args: argparse.Namespace) -> Engine:
    """The :class:`Engine` that ``--engine`` / ``--ray-address`` name."""
    return Engine(args.engine, args.ray_address)


def add_layers_argument(parser: argparse.ArgumentParser) -> None:
    """``--layers 3-5`` / ``0,2,4-5``: the layers the predictor is applied to (checked by :func:`layers_of`)."""
    parser.add_argument("--layers", default=None, metavar="LIST",
                        help="apply the predictor only to these layers, e.g. 3-5 or 0,2,4-5; the others run "
                             "dense entmax (default: the model config's sparsefinder_layers, else all)")


def layers_of(args: argparse.Namespace) -> list[int] | None:
    """The parsed ``--layers`` value (``None`` when absent), checked against ``--model``'s layer count
    before the model loads; a bad value raises a one-line error naming ``--layers``."""
    if args.layers is None:
        return None
    return list(check_layers(parse_layers(args.layers, "--layers"), model_info(args.model).num_layers, "--layers"))
