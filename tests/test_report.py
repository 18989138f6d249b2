"""The evaluate command end to end on a real tiny dataset: report files agree with each other."""

import csv
import io
import json

from sparsefinder.cli import main
from sparsefinder.predictors.fixed import WindowPredictor
from sparsefinder.report import list_reports, load_report, report_csv


def test_evaluate_window_writes_consistent_report(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "reports" / "tiny-window"
    assert main(["evaluate", "--data", str(tiny_dataset.folder), "--predictors", "window", "oracle-topk",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    window = next(p for p in report["predictors"] if p["name"] == "window")
    assert [s["knob_value"] for s in window["settings"]] == list(WindowPredictor.grid)
    # a window of 32 or more covers every pair of a sequence of at most 32 tokens: recall 1, sparsity 0
    wide = next(s for s in window["settings"] if s["knob_value"] >= 32)
    assert wide["recall"] == 1.0 and wide["sparsity"] == 0.0
    assert window["settings"][0]["knob_value"] == 0
    # width 0 keeps exactly the diagonal: sparsity 1 - 1/n per sequence
    lengths = [s.length for s in tiny_dataset]
    expected = sum(1 - 1 / n for n in lengths) / len(lengths)
    assert abs(window["settings"][0]["sparsity"] - expected) < 1e-9
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert len(rows) == sum(len(p["settings"]) for p in report["predictors"]) * 6 * 12
    by_setting = {}
    for r in rows:
        by_setting.setdefault(r["setting"], []).append(float(r["recall"]))
    for p in report["predictors"]:
        for s in p["settings"]:
            assert abs(sum(by_setting[s["spec"]]) / 72 - s["recall"]) < 1e-5
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "pareto.svg").read_text().lstrip().startswith("<?xml")
    assert (out / "pareto_layers.png").stat().st_size > 1000
    assert [r["id"] for r in list_reports(out.parent)] == ["tiny-window"]
    assert report_csv(load_report(out.parent, "tiny-window")) == (out / "report.csv").read_text()


def test_positional_patterns_reused_across_a_chunk_give_the_same_report(tiny_dataset):
    from sparsefinder.dataset import InMemoryDataset
    from sparsefinder.evaluation import Candidate, evaluate
    from sparsefinder.predictors.registry import predictor_from_spec, sweep_values

    seqs = list(tiny_dataset.sequences())
    data = InMemoryDataset([seqs[0], seqs[1], seqs[0], seqs[1], seqs[0]])  # lengths repeat inside the chunk
    specs = ["window", "bigbird", "longformer", "lexical", "oracle-topk"]

    def run(chunk: int) -> tuple[list, list[int]]:
        candidates = [Candidate(predictor_from_spec(s).fit(None), sweep_values(s)) for s in specs]
        report = evaluate(data, candidates, progress=False, chunk=chunk)
        numbers = [[(s["recall"], s["sparsity"], s["per_head"]) for s in p["settings"]] for p in report["predictors"]]
        return numbers, [c._predicted for c in candidates]

    fast, predicted = run(chunk=16)
    slow, every = run(chunk=1)  # one sequence per chunk: every pattern predicted afresh
    assert fast == slow
    assert every == [5 * 6] * 5  # sequences × layers
    assert predicted == [2 * 6, 2 * 6, 2 * 6, 5 * 6, 5 * 6]  # positional ones once per length and layer


def test_long_inputs_sweep_one_knob_value_at_a_time_with_the_same_report(tiny_dataset, monkeypatch):
    import sparsefinder.evaluation as evaluation
    from sparsefinder.evaluation import Candidate, evaluate
    from sparsefinder.predictors.registry import predictor_from_spec, sweep_values

    specs = ["window", "oracle-topk", "proj4-score-thr-ep0"]
    fitted = predictor_from_spec(specs[2]).fit(tiny_dataset)

    def run() -> list:
        candidates = [Candidate(predictor_from_spec(s).fit(None), sweep_values(s)) for s in specs[:2]]
        candidates.append(Candidate(fitted, sweep_values(specs[2])))
        report = evaluate(tiny_dataset, candidates, progress=False)
        return [[(s["recall"], s["sparsity"], s["per_head"]) for s in p["settings"]] for p in report["predictors"]]

    together = run()
    monkeypatch.setattr(evaluation, "EVAL_SWEEP_PAIRS", 0)  # every batch counts as long
    assert run() == together


def test_a_banded_models_patterns_are_scored_within_its_band(tiny_dataset):
    """Gold graphs of a model that declares a ±2 band: every window of 2 or more is cut to that band (the pairs its
    attention reads), so all of them score as the window of 2; narrower windows are unchanged."""
    from sparsefinder.dataset import InMemoryDataset
    from sparsefinder.evaluation import Candidate, evaluate

    def run(window: int) -> list[tuple[float, float]]:
        data = InMemoryDataset(list(tiny_dataset.sequences()))
        data.manifest["model"]["attention_window"] = window
        report = evaluate(data, [Candidate(WindowPredictor().fit(None), [0, 1, 2, 3, 8, 32])], progress=False)
        return [(s["recall"], s["sparsity"]) for s in report["predictors"][0]["settings"]]

    every, banded = run(0), run(2)
    assert banded[:3] == every[:3] and banded[3:] == [every[2]] * 3
    assert every[5] == (1.0, 0.0) and every[3][1] > every[4][1] > every[5][1]
