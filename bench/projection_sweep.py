"""Fit Sparsefinder predictors on one dataset and sweep their knob on another (run by hand).

    .venv/bin/python bench/projection_sweep.py --fit DIR --eval DIR --specs proj8-score-knn [--fit-limit N]
        [--eval-limit N] [--values 32,64] [--toggle adapt]

Prints one line per (spec, knob value): mean over heads of the macro-averaged recall and sparsity,
and the fit and predict times (2-core CPU figures in the README come from this script).
"""

from __future__ import annotations

import argparse
import time

from sparsefinder.dataset import GoldDataset
from sparsefinder.metrics import MetricsAccumulator, compare
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
        toggles = [False, True] if args.toggle else [None]
        settings = [(v, t) for t in toggles for v in values]
        acc = {s: MetricsAccumulator(eval_data.num_layers, eval_data.num_heads) for s in settings}
        predict_s, calls = 0.0, 0
        for seq in eval_data.sequences(args.eval_limit):
            for layer in range(eval_data.num_layers):
                inputs = seq.inputs(layer)
                for v, t in settings:
                    predictor.set_params(**{knob: v}, **({args.toggle: t} if args.toggle else {}))
                    start = time.perf_counter()
                    pattern = predictor.predict(inputs)
                    predict_s += time.perf_counter() - start
                    calls += 1
                    acc[v, t].add(layer, compare(pattern, seq.gold[layer]))
        for v, t in settings:
            m = acc[v, t].mean()
            predictor.set_params(**{knob: v}, **({args.toggle: t} if args.toggle else {}))
            print(f"{predictor.spec:32s} recall {m['recall']:.4f} sparsity {m['sparsity']:.4f} "
                  f"gold_sparsity {m['gold_sparsity']:.4f} fit {fit_s:.0f}s predict/layer {1000 * predict_s / calls:.1f}ms",
                  flush=True)


if __name__ == "__main__":
    main()
