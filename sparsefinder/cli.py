"""The ``sparsefinder`` command line.

Each subcommand lives in its own module with ``add_arguments(parser)`` and ``run(args)``.
User errors print one line on stderr and exit with code 2 (argparse does the same for
malformed arguments); no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from .errors import SparsefinderError

#: subcommand → (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("sparsefinder.training.extract", "extract queries, keys and gold graphs of a corpus"),
    "evaluate": ("sparsefinder.training.evaluate", "evaluate predictors and write a Pareto report"),
    "fit": ("sparsefinder.training.fit", "fit a predictor on an extracted dataset and store it"),
    "predictors": ("sparsefinder.list_predictors", "list registered predictors and stored artifacts"),
    "pipeline": ("sparsefinder.training.pipeline", "the main job: extract, fit, evaluate, report"),
    "adapt": ("sparsefinder.training.adapt", "distil the softmax encoder into an alpha-entmax encoder"),
    "adapt-eval": ("sparsefinder.training.adapt_eval", "fidelity of an entmax encoder to the softmax one"),
    "encode": ("sparsefinder.encode", "sentence embeddings with attention on a predictor's pairs"),
    "fidelity": ("sparsefinder.training.fidelity", "embedding and attention-output fidelity of predictors"),
    "serve": ("sparsefinder.service.serve", "run the HTTP service (API, web page, metrics)"),
    "export": ("sparsefinder.export", "write a model folder that carries a predictor (sentence-transformers ready)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparsefinder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # clean up temporary files on `kill` as on Ctrl-C
    parser = build_parser()
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
