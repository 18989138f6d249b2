"""Report plots and the web page share kinds and colours; the PNG marks the gold sparsity and the Pareto front."""

from __future__ import annotations

import json

from conftest import hand_report
from matplotlib.figure import Figure

from sparsefinder.predictors.registry import available_predictors, get_predictor_class
from sparsefinder.report import _draw, load_report, predictor_kind, style_predictors


def _entry(name: str) -> dict:
    cls = get_predictor_class(name)
    return {"spec": name, "name": name, "reference": cls.reference, "artifact_id": None}


def test_kinds_of_the_registered_predictors():
    kinds = {name: predictor_kind(_entry(name)) for name in available_predictors()}
    assert kinds["proj-knn"] == kinds["routing"] == kinds["sparsebert-dam"] == "learned"
    assert kinds["attention-pruning"] == kinds["neighbour-degree"] == kinds["attended-global"] == "data-informed"
    assert kinds["window"] == kinds["lsh"] == kinds["bigbird"] == "fixed"
    assert kinds["oracle-topk"] == "reference"
    # an unknown predictor falls back on the report's own flags
    assert predictor_kind({"name": "gone", "reference": False, "artifact_id": "gone-1"}) == "learned"


def test_every_registered_predictor_gets_its_own_colour():
    report = {"predictors": [_entry(name) for name in available_predictors()]}
    colours = [s["color"] for s in style_predictors(report)]
    assert len(colours) == len(set(colours)) == len(available_predictors())


def test_png_axes_have_gold_line_front_and_grouped_legend():
    report = hand_report()
    ax = Figure().add_subplot()
    _draw(ax, report, None)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels.index("— fixed —") < labels.index("window") < labels.index("— reference —") < labels.index("oracle")
    gold = next(line for line in ax.get_lines() if line.get_label().startswith("gold sparsity"))
    assert list(gold.get_xdata()) == [0.9, 0.9]
    front = next(line for line in ax.get_lines() if line.get_label() == "Pareto front (all)")
    assert list(front.get_xdata()) == [0.5, 0.85, 0.95]  # window's three settings; the reference is left out
    styles = style_predictors(report)
    window = next(line for line in ax.get_lines() if line.get_label() == "window")
    assert window.get_color() == styles[0]["color"]


def test_load_report_adds_kind_and_colour(tmp_path):
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "report.json").write_text(json.dumps(hand_report()))
    report = load_report(tmp_path, "r1")
    assert [(p["kind"], p["color"]) for p in report["predictors"]] == [
        (s["kind"], s["color"]) for s in style_predictors(hand_report())]
    assert [p["kind"] for p in report["predictors"]] == ["fixed", "reference"]
