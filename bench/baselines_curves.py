"""Recall–sparsity curves of the literature baselines (issue 5), run by hand.

Fits each predictor on one extracted dataset, sweeps its knob over ``grid`` on another and
prints, per knob value, recall and sparsity (macro over sequences, mean over heads), plus
the gold-graph frequency of the diagonal against other offsets (SparseBERT's claim).

    python bench/baselines_curves.py --fit /tmp/valid512 --eval /tmp/test512 --limit 32
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sparsefinder.dataset import GoldDataset
from sparsefinder.evaluation import Candidate, evaluate
from sparsefinder.predictors.registry import predictor_from_spec
from sparsefinder.predictors.position_stats import position_counts
from sparsefinder.predictors.sparsebert_dam import SparseBertDAMPredictor

BASELINES = ("window", "random", "global", "attended-global", "strided", "bigbird", "longformer", "lsh",
             "routing", "pruning", "pruning-abs", "dam", "lexical", "degree")


def curve(spec: str, fit: GoldDataset, evaluation: GoldDataset, limit: int) -> list[dict]:
    predictor = predictor_from_spec(spec)
    start = time.perf_counter()
    predictor.fit(fit)
    fit_s = time.perf_counter() - start
    report = evaluate(evaluation, [Candidate(predictor, list(type(predictor).grid))], limit=limit, progress=False)
    points = [{"knob": s["knob_value"], "recall": round(s["recall"], 4), "sparsity": round(s["sparsity"], 4)}
              for s in report["predictors"][0]["settings"]]
    print(json.dumps({"spec": spec, "fit_s": round(fit_s, 1), "points": points}), flush=True)
    return points


def diagonal_check(fit: GoldDataset) -> None:
    counts = position_counts(fit)
    freq = counts.frequency()  # (layers, H, 2L-1)
    centre = counts.length - 1
    near = torch.cat([freq[..., centre - 8:centre], freq[..., centre + 1:centre + 9]], -1)  # |δ| in 1..8
    rank = (freq[..., centre - 8:centre + 9] > freq[..., centre:centre + 1]).sum(-1)  # offsets above δ=0
    dam = SparseBertDAMPredictor().fit(fit)
    sigma = torch.sigmoid(dam.logits_)
    sigma_rank = (sigma[..., centre - 8:centre + 9] > sigma[..., centre:centre + 1]).sum(-1)
    print(json.dumps({
        "diag_freq_mean": round(float(freq[..., centre].mean()), 4),
        "diag_freq_min_max": [round(float(freq[..., centre].min()), 4), round(float(freq[..., centre].max()), 4)],
        "offsets_1to8_freq_mean": round(float(near.mean()), 4),
        "all_pairs_gold_density": round(float(counts.gold.sum((-1)).mean() / counts.total.sum()), 4),
        "heads_diag_in_gold_more_often_than_every_|d|<=8": int((rank == 0).sum()),
        "heads_diag_least_frequent_of_|d|<=8": int((rank == 16).sum()),
        "heads": int(rank.numel()),
        "diag_rank_among_17_offsets_mean": round(float(rank.float().mean()) + 1, 2),
        "dam_sigma_diag_mean": round(float(sigma[..., centre].mean()), 4),
        "dam_diag_rank_mean": round(float(sigma_rank.float().mean()) + 1, 2),
    }), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", required=True)
    parser.add_argument("--eval", required=True)
    parser.add_argument("--limit", type=int, default=32)
    parser.add_argument("--specs", nargs="*", default=list(BASELINES))
    args = parser.parse_args()
    fit, evaluation = GoldDataset(args.fit), GoldDataset(args.eval)
    diagonal_check(fit)
    for spec in args.specs:
        curve(spec, fit, evaluation, args.limit)


if __name__ == "__main__":
    main()
