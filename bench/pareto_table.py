"""Print a report's Pareto summary as a Markdown table (the README tables come from this).

    .venv/bin/python bench/pareto_table.py artifacts/reports/test-L512-n16/report.json
"""

from __future__ import annotations

import argparse
import json


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def best_recall(settings: list[dict], min_sparsity: float) -> float | None:
    ok = [s["recall"] for s in settings if s["sparsity"] >= min_sparsity]
    return max(ok) if ok else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    args = parser.parse_args()
    report = json.loads(open(args.report).read())
    print("| predictor | source | sparsity @ recall ≥ 0.95 | @ ≥ 0.99 | AUC | best recall @ sparsity ≥ 0.875 "
          "| @ ≥ 0.9375 | fit s | predict ms / seq (all layers) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = sorted(report["predictors"], key=lambda p: -p["summary"]["auc"])
    for p in rows:
        s = p["summary"]
        predict = sum(x["predict_seconds_per_sequence"] for x in p["settings"]) / len(p["settings"]) * 1000
        name = f"`{p['spec']}`" + (" (reference)" if p["reference"] else "")
        print(f"| {name} | {p['source']} | {fmt(s['sparsity_at_recall_0.95'])} | {fmt(s['sparsity_at_recall_0.99'])} "
              f"| {fmt(s['auc'])} | {fmt(best_recall(p['settings'], 0.875))} | {fmt(best_recall(p['settings'], 0.9375))} "
              f"| {fmt(p['fit_seconds'], 1)} | {predict:.0f} |")
    print(f"\ngold sparsity {report['gold']['sparsity']:.4f}; {report['dataset']['sequences']} sequences, "
          f"L = {report['dataset']['max_length']}; {report['averaging']}")


if __name__ == "__main__":
    main()
