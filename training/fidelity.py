"""Fidelity report: how far sparse attention moves the model (method.md §3, "Fidelity").

For each predictor setting the encoder runs with attention restricted to the predicted
pairs (α-entmax renormalised over the kept keys, optionally certified) and is compared with
the dense α-entmax model: cosine of the sentence embeddings and, per layer, the relative
error ``‖A_sparse − A_dense‖_F / ‖A_dense‖_F`` of the attention output over valid tokens
(errors compound through the layers, as in use). The dense-entmax model is also compared
with the original softmax model, so both gaps are visible. Writes ``fidelity.json``,
``fidelity.csv`` and ``fidelity.png`` (cosine against sparsity).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sparsefinder.config import DEFAULT_ALPHA, ENCODE_BATCH, MODEL_HELP, get_settings
from sparsefinder.corpus import check_corpus, iter_texts
from sparsefinder.encode import resolve_mode
from sparsefinder.encoder import EncodeResult, SparseEncoder
from sparsefinder.files import atomic_dir

__all__ = ["add_arguments", "fidelity", "run"]


def _relative_errors(res: EncodeResult, ref: EncodeResult) -> torch.Tensor:
    """Per text and layer ``‖A − A_ref‖ / ‖A_ref‖`` over valid tokens, shape ``(B, L)``."""
    errs = []
    for a, r in zip(res.attention_outputs, ref.attention_outputs):
        valid = (torch.arange(a.shape[1])[None, :] < torch.tensor(ref.num_tokens)[:, None]).float()
        diff = ((a - r).pow(2).sum((2, 3)) * valid).sum(1)
        norm = (r.pow(2).sum((2, 3)) * valid).sum(1)
        errs.append((diff / norm.clamp(min=1e-30)).sqrt())
    return torch.stack(errs, 1)


def fidelity(corpus: str | Path, predictors: list[str], out: str | Path, *, limit: int = 64,
             certified: bool = False, store: str | None = None, model: str | None = None,
             alpha: float = DEFAULT_ALPHA, batch_size: int = ENCODE_BATCH,
             encoder: SparseEncoder | None = None) -> dict:
    """Compare each predictor's sparse model with the dense-entmax model on the first ``limit`` texts.

    Returns the report dict also written to ``out/fidelity.json``; each row has ``mode``
    (spec, ``dense`` or ``+certified``), ``reference``, ``cosine_mean``/``cosine_min``,
    ``rel_error`` per layer, ``sparsity`` per layer and ``seconds``. An already loaded
    ``encoder`` is used as is (then ``model`` and ``alpha`` are its own).
    """
    check_corpus(corpus)
    texts = list(itertools.islice(iter_texts(corpus), limit))
    encoder = encoder or SparseEncoder(model, device=get_settings().device, alpha=alpha)
    modes = [(spec, resolve_mode(spec, store, model_id=encoder.info.id, alpha=encoder.alpha), False)
             for spec in predictors]
    if certified:
        modes += [(f"{spec}+certified", mode, True) for spec, mode, _ in modes]
    rows = {name: {"cos": [], "err": [], "sp": [], "added": [], "seconds": 0.0}
            for name in ["dense"] + [m[0] for m in modes]}
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    for batch in tqdm(batches, desc="fidelity", unit="batch"):
        dense = encoder.encode(batch, "dense", truncate=True, keep_attention=True)
        runs = [("dense", encoder.encode(batch, "softmax", truncate=True, keep_attention=True))]
        rows["dense"]["seconds"] += dense.seconds
        runs += [(name, encoder.encode(batch, mode, certified=cert, truncate=True, keep_attention=True))
                 for name, mode, cert in modes]
        for name, res in runs:
            row = rows[name]
            # dense row: the dense-entmax model against the softmax model (the other gap)
            a, b = (dense, res) if name == "dense" else (res, dense)
            row["cos"].append((a.embeddings * b.embeddings).sum(-1))
            row["err"].append(_relative_errors(a, b))
            row["sp"].append(torch.tensor(a.text_sparsity))
            row["added"].append(torch.tensor(a.keys_added, dtype=torch.float64))
            if name != "dense":
                row["seconds"] += res.seconds
    report_rows = []
    for name, row in rows.items():
        cos = torch.cat(row["cos"])
        report_rows.append({
            "mode": name,
            "reference": "softmax" if name == "dense" else "dense",
            "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "rel_error": torch.cat(row["err"]).mean(0).tolist(),
            "sparsity": torch.cat(row["sp"]).mean(0).tolist(),
            "keys_added_per_text": (torch.stack(row["added"]).sum(0) / len(texts)).tolist(),
            "seconds": row["seconds"],
        })
    report = {"corpus": str(corpus), "texts": len(texts), "alpha": encoder.alpha, "model": encoder.info.id,
              "rows": report_rows}
    _write(report, Path(out))
    return report


def _write(report: dict, out: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    layers = len(report["rows"][0]["rel_error"])
    writer.writerow(["mode", "reference", "cosine_mean", "cosine_min", "sparsity_mean", "seconds"]
                    + [f"rel_error_l{i}" for i in range(layers)])
    for r in report["rows"]:
        writer.writerow([r["mode"], r["reference"], f"{r['cosine_mean']:.6f}", f"{r['cosine_min']:.6f}",
                         f"{sum(r['sparsity']) / layers:.4f}", f"{r['seconds']:.2f}"]
                        + [f"{e:.6f}" for e in r["rel_error"]])
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for r in report["rows"]:
        ax.scatter(sum(r["sparsity"]) / layers, r["cosine_mean"], label=f"{r['mode']} vs {r['reference']}")
    ax.set_xlabel("mean sparsity (share of pairs not computed)")
    ax.set_ylabel("mean cosine of sentence embeddings")
    ax.legend(fontsize=7)
    with atomic_dir(out) as tmp:
        (tmp / "fidelity.json").write_text(json.dumps(report, indent=2))
        (tmp / "fidelity.csv").write_text(buf.getvalue())
        fig.savefig(tmp / "fidelity.png", dpi=100, bbox_inches="tight")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, help="plain-text file, one text per non-blank line")
    parser.add_argument("--predictors", nargs="+", required=True, help="predictor IDs or specs")
    parser.add_argument("--out", required=True, help="report folder to create")
    parser.add_argument("--limit", type=int, default=64, help="first N texts of the corpus")
    parser.add_argument("--certified", action="store_true", help="also run each predictor in certified mode")
    parser.add_argument("--store", default=None, help="artifact store (default: $SPARSEFINDER_STORE)")
    parser.add_argument("--model", default=None, help=MODEL_HELP)
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="alpha of alpha-entmax (> 1)")


def run(args: argparse.Namespace) -> int:
    report = fidelity(args.corpus, args.predictors, args.out, limit=args.limit, certified=args.certified,
                      store=args.store, model=args.model, alpha=args.alpha)
    for r in report["rows"]:
        print(json.dumps({k: r[k] for k in ("mode", "reference", "cosine_mean", "cosine_min")}
                         | {"sparsity": round(sum(r["sparsity"]) / len(r["sparsity"]), 4),
                            "rel_error_last": r["rel_error"][-1]}))
    return 0
