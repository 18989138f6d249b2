"""Time of the main job's evaluation per sequence (issue 11: evaluation at the speed of the data), run by hand.

Evaluates every stored predictor compatible with the dataset and every stateless baseline at every
knob value (``--predictors all``, as ``sparsefinder pipeline`` does) on the first ``--sequences``
sequences of an extracted dataset, and prints the wall time per sequence and each predictor's
prediction time per sequence it actually predicted (positional patterns are predicted once per
layer and length in a chunk of sequences).

    python bench/bench_evaluate.py --data artifacts/datasets/test-<…>-L512-a1.5-n16 --sequences 16
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sparsefinder.config import get_settings
from sparsefinder.dataset import GoldDataset
from sparsefinder.evaluation import evaluate
from sparsefinder.store import ArtifactStore
from sparsefinder.training.evaluate import build_candidates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="extracted dataset folder")
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--store", default=None, help="artifact store (default: settings)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = GoldDataset(args.data)
    candidates = build_candidates(["all"], data, store=ArtifactStore(args.store or get_settings().store), progress=False)
    start = time.perf_counter()
    report = evaluate(data, candidates, limit=args.sequences, progress=False)
    seconds = time.perf_counter() - start
    sequences = report["dataset"]["sequences"]
    print(json.dumps({"sequences": sequences, "candidates": len(candidates), "threads": args.threads,
                      "seconds_per_sequence": round(seconds / sequences, 2)}))
    for p in sorted(report["predictors"], key=lambda p: -sum(s["predict_seconds_per_sequence"] for s in p["settings"])):
        print(json.dumps({"predictor": p["spec"], "settings": len(p["settings"]),
                          "predict_seconds_per_sequence": round(sum(s["predict_seconds_per_sequence"]
                                                                    for s in p["settings"]), 3)}))


if __name__ == "__main__":
    main()
