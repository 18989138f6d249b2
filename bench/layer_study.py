"""Layer study (issue 18): does sparse attention cost little at later layers and much throughout?

Breaking BERT (Brahma et al. 2022) reports that attention at least 78 % sparse costs little
when applied only at later layers and a lot when applied throughout. This script packs
consecutive paragraphs of two plain-text files (WikiText-2 ``test.txt`` and a non-Wikipedia
English text, by default the GPL-3 licence text) into texts of about ``--tokens`` tokens,
runs ``sparsefinder fidelity --layer-study`` on each (:func:`training.fidelity.fidelity`, the
one fidelity function) and prints Markdown tables: the embedding cosine to dense entmax with
the predictor applied from layer k on and on each layer alone, the share of attention work
skipped, and each layer's own attention-output error when it alone is sparse.

Example (the figures in ``docs/layers.md``)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/layer_study.py \\
        --model /work/main/artifacts/models/minilm-entmax15 --store artifacts/store \\
        --out artifacts/reports/layer-study
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from sparsefinder.config import default_data_dir, get_settings
from sparsefinder.encoder import SparseEncoder
from sparsefinder.training.fidelity import fidelity_report, study_layer_sets

DEFAULT_PREDICTORS = ["window16", "random33", "proj16-score-knn33-adapt-ep0", "pruning0.15"]


def paragraphs(path: Path) -> list[str]:
    """Blocks of non-blank lines, each joined into one line (hard-wrapped text and one-paragraph-per-line alike)."""
    blocks = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
    return [" ".join(line.strip() for line in b.splitlines() if line.strip()) for b in blocks if b.strip()]


def pack(paras: list[str], tokenizer, tokens: int, count: int) -> list[str]:
    """The first ``count`` texts of ``tokens`` tokens (special tokens included): consecutive paragraphs
    joined, the last one cut at a token boundary."""
    texts, current, length = [], [], 0
    for p in paras:
        current.append(p)
        length += len(tokenizer(p, add_special_tokens=False)["input_ids"])
        if length >= tokens:
            text = " ".join(current)
            offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            texts.append(text[:offsets[tokens - 3][1]])
            current, length = [], 0
            if len(texts) == count:
                break
    return texts


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def tables(reports: dict[str, dict], num_layers: int) -> str:
    """Markdown: cosine from layer k on / each layer alone, work skipped, and each layer's own error alone."""
    sets = study_layer_sets(num_layers)
    names = [f"from {s[0]}" if len(s) > 1 or s[0] == num_layers - 1 else f"only {s[0]}" for s in sets]
    names = [n if n != f"from {num_layers - 1}" else f"from/only {num_layers - 1}" for n in names]
    cos, work, own = [], [], []
    for corpus, report in reports.items():
        by = {(r["predictor"], tuple(r["layers"])): r for r in report["rows"] if r["layers"] is not None}
        for spec in dict.fromkeys(r["predictor"] for r in report["rows"] if r["layers"] is not None):
            rows = [by[(spec, s)] for s in sets]
            cos.append([f"`{spec}`", corpus] + [f"{r['cosine_mean']:.4f}" for r in rows])
            work.append([f"`{spec}`", corpus] + [f"{r['work_skipped']:.3f}" for r in rows])
            own.append([f"`{spec}`", corpus] + [f"{by[(spec, (layer,))]['rel_error'][layer]:.3f}"
                                                for layer in range(num_layers)])
    header = ["predictor", "corpus"] + names
    return "\n".join([
        _table("Embedding cosine to dense entmax (mean over texts)", header, cos),
        _table("Share of attention work skipped (pairs not computed / all pairs of all layers)", header, work),
        _table("Attention-output relative error of layer l when only layer l is sparse",
               ["predictor", "corpus"] + [f"layer {i}" for i in range(num_layers)], own),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="local encoder folder (default: settings)")
    parser.add_argument("--store", default=None, help="artifact store with the fitted predictors")
    parser.add_argument("--out", required=True, help="folder for the packed corpora and the two reports")
    parser.add_argument("--predictors", nargs="+", default=DEFAULT_PREDICTORS)
    parser.add_argument("--wikitext", default=str(default_data_dir() / "test.txt"))
    parser.add_argument("--other", default="/usr/share/common-licenses/GPL-3", help="non-Wikipedia English text")
    parser.add_argument("--texts", type=int, default=16, help="texts per corpus")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per packed text (special tokens included)")
    args = parser.parse_args()

    out = Path(args.out)
    encoder = SparseEncoder(args.model or get_settings().model, device=get_settings().device)
    reports = {}
    for name, path in (("wikitext-test", args.wikitext), ("gpl-3", args.other)):
        texts = pack(paragraphs(Path(path)), encoder.tokenizer, args.tokens, args.texts)
        corpus = out / "corpora" / f"{name}.txt"
        corpus.parent.mkdir(parents=True, exist_ok=True)
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        reports[name] = fidelity_report(corpus, args.predictors, out / name, limit=args.texts, store=args.store,
                                 encoder=encoder, layer_study=True)
        dense = next(r for r in reports[name]["rows"] if r["mode"] == "dense")
        print(json.dumps({"corpus": name, "texts": len(texts), "dense_vs_softmax_cosine": dense["cosine_mean"],
                          "seconds": sum(r["seconds"] for r in reports[name]["rows"])}))
    print(tables(reports, encoder.info.num_layers))


if __name__ == "__main__":
    main()
