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

``predict_seconds_per_sequence`` is a setting's share of the prediction time per sequence actually predicted
(positional patterns are predicted once per layer and length in a chunk and reused).

Predictors are grouped by kind (:func:`predictor_kind`: learned, data-informed, fixed,
reference), each kind with its own palette, marker and line style (:func:`style_predictors`;
:func:`load_report` adds ``kind`` and ``color`` to every predictor, so the web page draws with
the same colours). Plots mark the gold sparsity (the perfect predictor's sparsity) with a
vertical line and highlight the Pareto front over all non-reference predictors.

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
from .evaluation import pareto_front
from .files import atomic_write_bytes, atomic_write_json, atomic_write_text
from .predictors.registry import get_predictor_class

__all__ = ["KINDS", "list_reports", "load_report", "overall_front", "predictor_kind", "render_pareto", "render_layers",
           "report_csv", "style_predictors", "write_report"]

CSV_COLUMNS = ("predictor", "setting", "knob", "knob_value", "layer", "head", "recall", "sparsity", "precision",
               "gold_sparsity")
REPORT_FILE = "report.json"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

#: Kinds in legend order → (palette, matplotlib marker, line style). Colours within a kind are
#: distinct; kinds differ by hue family, marker and dash.
KINDS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "learned": (("#1d4ed8", "#7c3aed", "#db2777", "#0ea5e9", "#a21caf", "#312e81", "#60a5fa", "#f472b6"), "o", "-"),
    "data-informed": (("#15803d", "#84cc16", "#0d9488", "#4d7c0f"), "s", "-"),
    "fixed": (("#ea580c", "#b91c1c", "#92400e", "#ca8a04", "#f43f5e", "#78716c", "#fb923c", "#7f1d1d"), "^", ":"),
    "reference": (("#111827", "#6b7280"), "D", "--"),
}
#: Predictors fitted on gold-graph statistics (positions, degrees) rather than trained on queries and keys.
DATA_INFORMED = frozenset({"attention-pruning", "neighbour-degree", "attended-global"})


def predictor_kind(entry: dict[str, Any]) -> str:
    """``reference``, ``fixed`` (learns nothing), ``data-informed`` (gold-graph statistics) or ``learned``."""
    if entry.get("reference"):
        return "reference"
    try:
        learns = get_predictor_class(entry["name"]).learns
    except (SparsefinderError, KeyError):  # a predictor this version does not know
        learns = entry.get("artifact_id") is not None
    if not learns:
        return "fixed"
    return "data-informed" if entry.get("name") in DATA_INFORMED else "learned"


def style_predictors(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per predictor (report order): ``kind``, ``color``, ``marker``, ``linestyle``; colours cycle within a kind."""
    seen: dict[str, int] = {}
    styles = []
    for p in report["predictors"]:
        kind = predictor_kind(p)
        palette, marker, linestyle = KINDS[kind]
        i = seen[kind] = seen.get(kind, -1) + 1
        styles.append({"kind": kind, "color": palette[i % len(palette)], "marker": marker, "linestyle": linestyle})
    return styles


def overall_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated ``(sparsity, recall)`` points of ``points``, by increasing sparsity."""
    return [points[i] for i in pareto_front(points)]


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

    styles = style_predictors(report)
    learned_points = []
    for kind in KINDS:
        members = [(p, st) for p, st in zip(report["predictors"], styles) if st["kind"] == kind]
        if members:  # a legend heading per kind
            ax.plot([], [], linestyle="none", label=f"— {kind} —")
        for p, st in members:
            pts = sorted((pick(s, "sparsity"), pick(s, "recall")) for s in p["settings"])
            if kind != "reference":
                learned_points += pts
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker=st["marker"], markersize=3.5, linewidth=1.3,
                    color=st["color"], linestyle=st["linestyle"], label=p["spec"])
    if learned_points:
        front = overall_front(learned_points)
        ax.plot([x for x, _ in front], [y for _, y in front], color="#facc15", linewidth=8, alpha=0.6, zorder=0,
                solid_capstyle="round", label="Pareto front (all)")
    gold_rows = report["gold"]["per_head"]["gold_sparsity"]
    gs = report["gold"]["sparsity"] if layer is None else sum(gold_rows[layer]) / len(gold_rows[layer])
    ax.axvline(gs, color="#b45309", linewidth=1.2, linestyle="-.",
               label=f"gold sparsity {gs:.3f}" if layer is None else "gold sparsity of the layer")
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
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.add_subplot()
    _draw(ax, report, None)
    ds = report["dataset"]
    ax.set_title(f"recall vs sparsity, L={ds['max_length']}, α={ds['alpha']}, {ds['sequences']} sequences")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
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
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=6, loc="outside right upper", frameon=False)
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
    for p, style in zip(report["predictors"], style_predictors(report)):
        p.setdefault("kind", style["kind"])
        p.setdefault("color", style["color"])
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
