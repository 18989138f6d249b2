"""The ``sparsefinder`` command line.

This module dispatches; each subcommand is a module ``<name>_command`` of this package with
``add_arguments(parser)`` and ``run(args)``: argument parsing and printing only, over
functions of the library (``sparsefinder``), of ``sparsefinder.training`` and of
``sparsefinder.service`` (the suffix keeps a command's module from sharing its name with the
training module that does its work, e.g. ``extract_command`` over ``sparsefinder.training.extract``).
User errors print one line on stderr and exit with code 2 (argparse does the same for
malformed arguments); no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from ..errors import SparsefinderError

#: subcommand → (module of this package, without its ``_command`` suffix; one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("extract", "extract queries, keys and gold graphs of a corpus"),
    "evaluate": ("evaluate", "evaluate predictors and write a Pareto report"),
    "fit": ("fit", "fit a predictor on an extracted dataset and store it"),
    "predictors": ("predictors", "list registered predictors and stored artifacts"),
    "pipeline": ("pipeline", "the main job: extract, fit, evaluate, report"),
    "adapt": ("adapt", "distil the softmax encoder into an alpha-entmax encoder"),
    "adapt-eval": ("adapt_eval", "fidelity of an entmax encoder to the softmax one"),
    "extend-positions": ("extend_positions", "copy an encoder with a longer position table (Longformer's copy)"),
    "distil-long": ("distil_long", "train an entmax encoder on long documents from its windowed softmax teacher"),
    "encode": ("encode", "sentence embeddings with attention on a predictor's pairs"),
    "fidelity": ("fidelity", "embedding and attention-output fidelity of predictors"),
    "serve": ("serve", "run the HTTP service (API, web page, metrics)"),
    "export": ("export", "write a model folder that carries a predictor (sentence-transformers ready)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsefinder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(f"{__package__}.{module}_command")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # clean up temporary files on `kill` as on Ctrl-C
    try:
        parser = build_parser()  # option defaults come from the settings, which may not parse
    except SparsefinderError as exc:
        print(f"sparsefinder: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except SparsefinderError as exc:
        print(f"sparsefinder {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparsefinder {args.command}: interrupted; nothing partial was kept", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
