"""Fidelity report: how far sparse attention moves the model (method.md §3, "Fidelity").

For each predictor setting the encoder runs with attention restricted to the predicted
pairs (α-entmax renormalised over the kept keys, optionally certified) and is compared with
the dense α-entmax model: cosine of the sentence embeddings and, per layer, the relative
error ``‖A_sparse − A_dense‖_F / ‖A_dense‖_F`` of the attention output over valid tokens
(errors compound through the layers, as in use). The dense-entmax model is also compared
with the original softmax model, so both gaps are visible. Writes ``fidelity.json``,
``fidelity.csv`` and ``fidelity.png`` (cosine against the share of attention work skipped).

``--layers`` applies the predictors to some layers only; ``--layer-study`` runs each of them
sparse from layer k on (k = 0 … L−1) and on each layer alone, to check Breaking BERT's finding
(Brahma et al. 2022) that sparse attention costs little at later layers and much throughout.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from sparsefinder.config import DEFAULT_ALPHA, ENCODE_BATCH, FIDELITY_TEXTS, get_settings
from sparsefinder.corpus import check_corpus, iter_texts
from sparsefinder.choice import resolve_mode
from sparsefinder.encoder import EncodeResult, SparseEncoder
from sparsefinder.errors import SparsefinderError
from sparsefinder.files import atomic_dir
from sparsefinder.layers import check_layers, format_layers
from sparsefinder.predictors.base import Predictor

__all__ = ["fidelity_report", "study_layer_sets"]


def _relative_errors(res: EncodeResult, ref: EncodeResult) -> torch.Tensor:
    """Per text and layer ``‖A − A_ref‖ / ‖A_ref‖`` over valid tokens, shape ``(B, L)``."""
    errs = []
    for a, r in zip(res.attention_outputs, ref.attention_outputs):
        valid = (torch.arange(a.shape[1])[None, :] < torch.tensor(ref.num_tokens)[:, None]).float()
        diff = ((a - r).pow(2).sum((2, 3)) * valid).sum(1)
        norm = (r.pow(2).sum((2, 3)) * valid).sum(1)
        errs.append((diff / norm.clamp(min=1e-30)).sqrt())
    return torch.stack(errs, 1)


def study_layer_sets(num_layers: int) -> list[tuple[int, ...]]:
    """The layer study's choices: sparse from layer k on (k = 0 … L−1), then each layer alone (the last
    layer alone is already "from L−1")."""
    return ([tuple(range(k, num_layers)) for k in range(num_layers)]
            + [(layer,) for layer in range(num_layers - 1)])


@dataclass(frozen=True)
class _Mode:
    """One report row: a predictor (or reference), whether certified, and the layers it is applied to."""

    name: str
    spec: str
    predictor: Predictor | str
    certified: bool = False
    layers: tuple[int, ...] | None = None


def _modes(specs: list[tuple[str, Predictor | str]], layer_sets: list[tuple[int, ...] | None],
           certified: bool) -> list[_Mode]:
    """Every (predictor, layer choice) row, then the same rows certified when asked."""
    modes = []
    for cert in ([False, True] if certified else [False]):
        for spec, predictor in specs:
            for chosen in layer_sets:
                name = spec + ("+certified" if cert else "")
                name += f" layers {format_layers(chosen)}" if chosen is not None else ""
                modes.append(_Mode(name, spec, predictor, cert, chosen))
    return modes


def _work_skipped(res: EncodeResult) -> torch.Tensor:
    """Per text: pairs not computed and all valid pairs, summed over layers and heads, ``(B, 2)``."""
    pairs = torch.tensor(res.num_tokens, dtype=torch.float64).pow(2)
    skipped = torch.tensor(res.text_sparsity, dtype=torch.float64).mean(1) * pairs
    return torch.stack([skipped, pairs], 1)


def fidelity_report(corpus: str | Path, predictors: list[str], out: str | Path, *, limit: int = FIDELITY_TEXTS,
             certified: bool = False, store: str | None = None, model: str | None = None,
             alpha: float = DEFAULT_ALPHA, batch_size: int = ENCODE_BATCH,
             encoder: SparseEncoder | None = None, layers: Sequence[int] | None = None,
             layer_study: bool = False) -> dict:
    """Compare each predictor's sparse model with the dense-entmax model on the first ``limit`` texts.

    Returns the report dict also written to ``out/fidelity.json``; each row has ``mode``
    (spec, ``dense`` or ``+certified``, with `` layers 3-5`` when not all layers), ``predictor``,
    ``certified``, ``layers`` (``None``: all), ``reference``, ``cosine_mean``/``cosine_min``, ``rel_error`` per
    layer, ``sparsity`` per layer (0 at dense layers), ``work_skipped`` (pairs not computed over
    all valid pairs of all layers and texts) and ``seconds``. ``layers`` applies every predictor to
    those layers only; ``layer_study`` instead runs each predictor on every set of
    :func:`study_layer_sets`. An already loaded ``encoder`` is used as is (then ``model`` and
    ``alpha`` are its own).
    """
    check_corpus(corpus)
    if layer_study and layers is not None:
        raise SparsefinderError("--layers and --layer-study exclude each other: the study chooses the layers")
    texts = list(itertools.islice(iter_texts(corpus), limit))
    settings = get_settings()
    encoder = encoder or SparseEncoder(model, device=settings.device, alpha=alpha, dtype=settings.dtype)
    layers = check_layers(layers, encoder.info.num_layers, "--layers")
    layer_sets = study_layer_sets(encoder.info.num_layers) if layer_study else [layers]
    specs = [(spec, resolve_mode(spec, store, model_id=encoder.info.id, alpha=encoder.alpha)) for spec in predictors]
    modes = [_Mode("dense", "dense", "dense")] + _modes(specs, layer_sets, certified)
    rows = {m.name: {"cos": [], "err": [], "sp": [], "work": [], "added": [], "seconds": 0.0} for m in modes}
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    for batch in tqdm(batches, desc="fidelity", unit="batch"):
        dense = encoder.encode(batch, "dense", truncate=True, keep_attention=True)
        runs = [("dense", encoder.encode(batch, "softmax", truncate=True, keep_attention=True))]
        rows["dense"]["seconds"] += dense.seconds
        runs += [(m.name, encoder.encode(batch, m.predictor, certified=m.certified, truncate=True,
                                         keep_attention=True, layers=m.layers)) for m in modes[1:]]
        for name, res in runs:
            row = rows[name]
            # dense row: the dense-entmax model against the softmax model (the other gap)
            a, b = (dense, res) if name == "dense" else (res, dense)
            row["cos"].append((a.embeddings * b.embeddings).sum(-1))
            row["err"].append(_relative_errors(a, b))
            row["sp"].append(torch.tensor(a.text_sparsity))
            row["work"].append(_work_skipped(a))
            row["added"].append(torch.tensor(a.keys_added, dtype=torch.float64))
            if name != "dense":
                row["seconds"] += res.seconds
    report_rows = []
    for m in modes:
        row = rows[m.name]
        cos = torch.cat(row["cos"])
        work = torch.cat(row["work"]).sum(0)
        report_rows.append({
            "mode": m.name,
            "predictor": m.spec,
            "certified": m.certified,
            "layers": list(m.layers) if m.layers is not None else None,
            "reference": "softmax" if m.name == "dense" else "dense",
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "rel_error": torch.cat(row["err"]).mean(0).tolist(),
            "sparsity": torch.cat(row["sp"]).mean(0).tolist(),
            "work_skipped": float(work[0] / work[1]),
            "keys_added_per_text": (torch.stack(row["added"]).sum(0) / len(texts)).tolist(),
            "seconds": row["seconds"],
        })
    report = {"corpus": str(corpus), "texts": len(texts), "alpha": encoder.alpha, "model": encoder.info.id,
              "layer_study": layer_study, "rows": report_rows}
    _write(report, Path(out))
    return report


def _series(report: dict) -> dict[str, dict[str, list[dict]]]:
    """Rows by predictor (``+certified`` kept apart): ``"from"`` (all layers or from layer k on, by k) and
    ``"single"`` (one layer alone, not the last)."""
    layers = len(report["rows"][0]["rel_error"])
    series: dict[str, dict[str, list[dict]]] = {}
    for r in report["rows"]:
        key = r["predictor"] + ("+certified" if r["certified"] else "")
        chosen = r["layers"] if r.get("layers") is not None else list(range(layers))
        is_from = chosen == list(range(chosen[0], layers)) if chosen else False
        kind = "from" if is_from else "single" if len(chosen) == 1 else "other"
        series.setdefault(key, {"from": [], "single": [], "other": []})[kind].append(r)
    return series


def _plot(report: dict):
    """Figure of cosine against work skipped: a line per predictor through "sparse from layer k on"
    (k marked), hollow markers for single layers."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for i, (name, kinds) in enumerate(_series(report).items()):
        color = f"C{i % 10}"
        ref = "softmax" if name == "dense" else "dense"
        pts = sorted(kinds["from"] + kinds["other"], key=lambda r: r["work_skipped"])
        ax.plot([r["work_skipped"] for r in pts], [r["cosine_mean"] for r in pts], "o-", color=color,
                label=f"{name} vs {ref}", markersize=4)
        for r in kinds["from"]:
            if r.get("layers") is not None:
                ax.annotate(str(r["layers"][0]), (r["work_skipped"], r["cosine_mean"]), fontsize=6,
                            xytext=(2, 2), textcoords="offset points", color=color)
        if kinds["single"]:
            ax.scatter([r["work_skipped"] for r in kinds["single"]], [r["cosine_mean"] for r in kinds["single"]],
                       facecolors="none", edgecolors=color, s=18)
    ax.set_xlabel("share of attention work skipped (pairs not computed / all pairs, all layers)")
    ax.set_ylabel("mean cosine of sentence embeddings")
    if report.get("layer_study"):
        ax.set_title("lines: sparse from layer k on (k marked); hollow: one layer alone", fontsize=8)
    ax.legend(fontsize=7)
    return fig


def _write(report: dict, out: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    layers = len(report["rows"][0]["rel_error"])
    writer.writerow(["mode", "predictor", "layers", "reference", "cosine_mean", "cosine_min", "sparsity_mean",
                     "work_skipped", "seconds"] + [f"rel_error_l{i}" for i in range(layers)])
    for r in report["rows"]:
        writer.writerow([r["mode"], r["predictor"], "all" if r["layers"] is None else format_layers(r["layers"]),
                         r["reference"], f"{r['cosine_mean']:.6f}", f"{r['cosine_min']:.6f}",
                         f"{sum(r['sparsity']) / layers:.4f}", f"{r['work_skipped']:.4f}", f"{r['seconds']:.2f}"]
                        + [f"{e:.6f}" for e in r["rel_error"]])
    fig = _plot(report)
    with atomic_dir(out) as tmp:
        (tmp / "fidelity.json").write_text(json.dumps(report, indent=2))
        (tmp / "fidelity.csv").write_text(buf.getvalue())
        fig.savefig(tmp / "fidelity.png", dpi=100, bbox_inches="tight")
