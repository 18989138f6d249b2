"""Fit Sparsefinder predictors on one dataset and sweep their knob on another (run by hand).

    .venv/bin/python bench/projection_sweep.py --fit DIR --eval DIR --specs proj8-score-knn [--fit-limit N]
        [--eval-limit N] [--values 32,64] [--toggle adapt]

Prints one line per (spec, knob value): mean over heads of the macro-averaged recall and sparsity,
and the fit and predict times (2-core CPU figures in the README come from this script).
"""

from __future__ import annotations

import argparse
import copy
import time

from sparsefinder.dataset import GoldDataset
from sparsefinder.evaluation import Candidate, evaluate
from sparsefinder.predictors.registry import predictor_from_spec, sweep_values
from sparsefinder.store import ArtifactStore, resolve_predictor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--specs", nargs="+", required=True)
    parser.add_argument("--fit-limit", type=int, default=64)
    parser.add_argument("--eval-limit", type=int, default=16)
    parser.add_argument("--values", default=None, help="comma-separated knob values (default: the class grid)")
    parser.add_argument("--store", default=None, help="load fitted specs from this store instead of fitting")
    parser.add_argument("--toggle", default=None, help="a boolean parameter to evaluate both off and on (same fit)")
    args = parser.parse_args()
    fit_data = GoldDataset(args.fit, limit=args.fit_limit)
    eval_data = GoldDataset(args.eval)
    for spec in args.specs:
        if args.store:
            predictor = resolve_predictor(spec, ArtifactStore(args.store))
            fit_s = next(i.fit_seconds for i in ArtifactStore(args.store).list() if i.spec == predictor.family_spec)
        else:
            predictor = predictor_from_spec(spec)
            start = time.perf_counter()
            predictor.fit(fit_data)
            fit_s = time.perf_counter() - start
        knob = type(predictor).knob
        cast = type(getattr(predictor, knob))
        values = [cast(v) for v in args.values.split(",")] if args.values else (sweep_values(spec) or
                                                                                [getattr(predictor, knob)])
        variants = [copy.deepcopy(predictor).set_params(**{args.toggle: t}) for t in (False, True)] \
            if args.toggle else [predictor]
        report = evaluate(eval_data, [Candidate(p, values) for p in variants], limit=args.eval_limit, progress=False)
        for entry in report["predictors"]:
            for s in entry["settings"]:
                per_layer_ms = 1000 * s["predict_seconds_per_sequence"] / eval_data.num_layers
                print(f"{s['spec']:32s} recall {s['recall']:.4f} sparsity {s['sparsity']:.4f} "
                      f"gold_sparsity {report['gold']['sparsity']:.4f} fit {fit_s:.0f}s predict/layer {per_layer_ms:.1f}ms",
                      flush=True)


if __name__ == "__main__":
    main()
