"""Pareto reports: ``report.json``, ``report.csv`` and plots, and reading them back.

A report folder holds ``report.json`` (schema below), ``report.csv`` (one row per predictor,
setting, layer and head), ``pareto.png`` / ``pareto.svg`` (mean recall against mean
sparsity, every predictor on the same axes, the gold point and reference curves included)
and ``pareto_layers.png`` (one panel per layer, mean over that layer's heads). A reports
root holds one such folder per report; the folder name is the report id.

``report.json``::

    {"id", "created", "sparsefinder_version", "num_layers", "num_heads", "averaging",
     "dataset": {"path", "model_id", "alpha", "max_length", "sequences", "corpus_sha256"},
     "gold": {"sparsity", "per_head": {"gold_sparsity": [[L][H]]}},
     "predictors": [{"spec", "name", "artifact_id", "knob", "description", "source", "reference",
                     "fit_seconds",
                     "settings": [{"spec", "knob_value", "recall", "sparsity", "precision",
                                   "predict_seconds_per_sequence",
                                   "per_head": {"recall" | "sparsity" | "precision": [[L][H]]}}],
                     "pareto": [indices into settings, by increasing sparsity],
                     "summary": {"sparsity_at_recall_0.95", "sparsity_at_recall_0.99", "auc"}}]}

Plots use matplotlib's ``Figure`` API (no global ``pyplot`` state), so the service can
render them from worker threads.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .errors import NotFoundError, SparsefinderError
from .files import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["list_reports", "load_report", "render_pareto", "render_layers", "report_csv", "write_report"]

CSV_COLUMNS = ("predictor", "setting", "knob", "knob_value", "layer", "head", "recall", "sparsity", "precision",
               "gold_sparsity")
REPORT_FILE = "report.json"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def report_csv(report: dict[str, Any]) -> str:
    """The CSV text of a report: one row per predictor, setting, layer and head."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    gold = report["gold"]["per_head"]["gold_sparsity"]
    for p in report["predictors"]:
        for s in p["settings"]:
            ph = s["per_head"]
            for layer, row in enumerate(ph["recall"]):
                for head in range(len(row)):
                    writer.writerow([p["spec"], s["spec"], p["knob"] or "", "" if s["knob_value"] is None else
                                     s["knob_value"], layer, head, f"{ph['recall'][layer][head]:.6f}",
                                     f"{ph['sparsity'][layer][head]:.6f}", f"{ph['precision'][layer][head]:.6f}",
                                     f"{gold[layer][head]:.6f}"])
    return buf.getvalue()


def _draw(ax: Any, report: dict[str, Any], layer: int | None) -> None:
    """Recall against sparsity on ``ax``: all predictors, the gold point; ``layer=None`` means all layers."""
    def pick(setting: dict, metric: str) -> float:
        if layer is None:
            return setting[metric]
        row = setting["per_head"][metric][layer]
        return sum(row) / len(row)

    for p in report["predictors"]:
        pts = [(pick(s, "sparsity"), pick(s, "recall")) for s in p["settings"]]
        front = sorted(pts)
        style = {"linestyle": "--", "color": "0.4"} if p["reference"] else {}
        ax.plot([x for x, _ in front], [y for _, y in front], marker="o", markersize=3, linewidth=1.2,
                label=p["spec"], **style)
    gold_rows = report["gold"]["per_head"]["gold_sparsity"]
    gs = report["gold"]["sparsity"] if layer is None else sum(gold_rows[layer]) / len(gold_rows[layer])
    ax.plot([gs], [1.0], marker="*", markersize=12, color="gold", markeredgecolor="k", linestyle="none",
            label="gold")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("sparsity (share of pairs not computed)")
    ax.set_ylabel("recall (share of gold edges kept)")
    ax.grid(alpha=0.3)


def render_pareto(report: dict[str, Any], fmt: str = "png") -> bytes:
    """The report's recall–sparsity plot (means over all heads) as PNG or SVG bytes."""
    if fmt not in ("png", "svg"):
        raise SparsefinderError(f"plot format must be png or svg, got {fmt!r}")
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    _draw(ax, report, None)
    ds = report["dataset"]
    ax.set_title(f"recall vs sparsity, L={ds['max_length']}, α={ds['alpha']}, {ds['sequences']} sequences")
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=120)
    return buf.getvalue()


def render_layers(report: dict[str, Any]) -> bytes:
    """A PNG grid with one recall–sparsity panel per layer (mean over that layer's heads)."""
    layers = report["num_layers"]
    cols = min(3, layers)
    rows = (layers + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for layer in range(rows * cols):
        ax = axes[layer // cols][layer % cols]
        if layer >= layers:
            ax.set_visible(False)
            continue
        _draw(ax, report, layer)
        ax.set_title(f"layer {layer}")
    axes[0][0].legend(fontsize=6, loc="lower left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``report`` into ``out_dir`` (json, csv, plots), each file atomically; returns the folder."""
    out = Path(out_dir)
    report = {**report, "id": out.name}
    atomic_write_json(out / REPORT_FILE, report)
    atomic_write_text(out / "report.csv", report_csv(report))
    atomic_write_bytes(out / "pareto.png", render_pareto(report, "png"))
    atomic_write_bytes(out / "pareto.svg", render_pareto(report, "svg"))
    atomic_write_bytes(out / "pareto_layers.png", render_layers(report))
    return out


def load_report(root: str | Path, report_id: str) -> dict[str, Any]:
    """The report ``report_id`` under ``root``; :class:`NotFoundError` if absent, a user error if corrupt."""
    if not _ID.match(report_id):
        raise NotFoundError(f"no report {report_id!r}")
    path = Path(root) / report_id / REPORT_FILE
    if not path.is_file():
        raise NotFoundError(f"no report {report_id!r}")
    try:
        report = json.loads(path.read_text())
        report["predictors"]  # noqa: B018 - presence check
    except (ValueError, KeyError, TypeError):
        raise SparsefinderError(f"report {report_id!r} is corrupt") from None
    report["id"] = report_id
    return report


def list_reports(root: str | Path) -> list[dict[str, Any]]:
    """Summaries (id, created, dataset, predictor specs) of the readable reports under ``root``, newest first."""
    rootp = Path(root)
    out = []
    for folder in sorted(rootp.iterdir()) if rootp.is_dir() else []:
        if not (folder / REPORT_FILE).is_file() or not _ID.match(folder.name):
            continue
        try:
            r = load_report(rootp, folder.name)
        except SparsefinderError:
            continue
        out.append({"id": r["id"], "created": r["created"], "dataset": r["dataset"],
                    "predictors": [p["spec"] for p in r["predictors"]]})
    return sorted(out, key=lambda r: r["created"], reverse=True)
