"""Model cards (``README.md``) and run records of the encoders the project trains.

``adapt.json`` holds the structured record written by ``sparsefinder adapt``; the card is
rendered from it, and re-rendered when ``sparsefinder adapt-eval`` adds test-set fidelity.
``long.json`` is the record of ``sparsefinder distil-long`` (long documents), with its own card.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SparsefinderError
from ..files import atomic_write_json, atomic_write_text

__all__ = ["ADAPT_JSON", "LONG_JSON", "record_fidelity", "render_long_model_card", "render_model_card",
           "write_long_model_card", "write_model_card"]

ADAPT_JSON = "adapt.json"
LONG_JSON = "long.json"


def _fid_rows(fid: dict) -> list[str]:
    rows = []
    for name in ("unadapted", "adapted"):
        f = fid.get(name)
        if f:
            retr = f.get("retrieval", {})
            top1, top5 = (f"{retr[k]:.3f}" if k in retr else "–" for k in ("top1", "top5"))
            rows.append(f"| {name} entmax | {f['cosine_mean']:.4f} | {f['cosine_worst']:.4f} | {top1} | {top5} |")
    return rows


def render_model_card(record: dict) -> str:
    """Markdown model card of the run ``record`` (the content of ``adapt.json``)."""
    t, c, base = record["training"], record["cost"], record["base_model"]
    lines = [
        "---", "library_name: transformers", "tags: [sparsefinder, entmax, distillation]", "---", "",
        f"# {base['id'].split('@')[0]} with α-entmax attention (α = {record['alpha']})", "",
        f"Distilled by `sparsefinder adapt` from the softmax encoder `{base['id']}`: same architecture, "
        f"attention replaced by dense α-entmax (α = {record['alpha']}, stored as `config.entmax_alpha`), "
        "trained to reproduce the softmax model's last hidden states and mean-pooled sentence embeddings.", "",
        "Load it with our attention (plain `AutoModel.from_pretrained` loads the weights but runs softmax):", "",
        "```python", "from sparsefinder.model import load_encoder",
        "model, tokenizer, info = load_encoder(PATH, attn_implementation=\"sparsefinder_entmax\")", "```", "",
        "## Training", "",
        f"- data: `{record['corpus']['path']}` (sha256 {record['corpus']['sha256'][:12]}), "
        f"{record['corpus']['train_texts']} texts (one per line, truncated to {t['max_length']} tokens); "
        f"last {record['corpus']['holdout_texts']} texts held out",
        f"- {t['steps']} steps × batch {t['batch_size']}, {t['optimizer']} lr {t['lr']} ({t['schedule']}, "
        f"warm-up {t['warmup']:.0%}), seed {t['seed']}, dropout {t['dropout']}",
        f"- loss `(1 − cos) + {t['hidden_weight']} · MSE(hidden)`: {t['loss_first']:.4f} → {t['loss_last']:.4f}",
        f"- time: {c['elapsed_s'] / 60:.1f} min on {c['machine']} ({c['device']})", "",
        "## Fidelity to the softmax model", "",
        "| model | cosine mean | cosine worst | NN top-1 | NN top-5 |", "|---|---|---|---|---|",
    ]
    held = record.get("holdout_fidelity")
    test = record.get("test_fidelity")
    sections = []
    if held:
        sections.append((f"held-out training-corpus texts ({held['texts']}, L = {held['max_length']})", held))
    if test:
        sections.append((f"`{Path(test['corpus']).name}` ({test['texts']} texts, L = {test['max_length']})", test))
    if not sections:
        lines.append("| not measured | | | | |")
    for title, fid in sections:
        lines.append(f"| *{title}* | | | | |")
        lines.extend(_fid_rows(fid))
    if test and test.get("gold_sparsity"):
        gs = test["gold_sparsity"]
        lines += ["", f"Gold sparsity at L = {test['max_length']} ({gs['sequences']} sequences): "
                  + ", ".join(f"layer {i} {s:.3f}" for i, s in enumerate(gs["per_layer"]))
                  + f"; overall {gs['overall']:.3f}."]
    lines += ["", f"Produced by sparsefinder {record['sparsefinder_version']} on {record['created']}.", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, record: dict) -> None:
    """Write ``README.md`` of ``folder`` from ``record``."""
    atomic_write_text(Path(folder) / "README.md", render_model_card(record))


def record_fidelity(folder: str | Path, result: dict) -> None:
    """Store the evaluation ``result`` of ``adapt-eval`` in ``folder``'s ``adapt.json`` and card."""
    file = Path(folder) / ADAPT_JSON
    if not file.is_file():
        raise SparsefinderError(f"{folder} has no {ADAPT_JSON}: not a folder written by `sparsefinder adapt`")
    record = json.loads(file.read_text())
    record["test_fidelity"] = result
    atomic_write_json(file, record)
    write_model_card(folder, record)


def render_long_model_card(record: dict) -> str:
    """Markdown model card of a ``distil-long`` run ``record`` (the content of ``long.json``)."""
    t, c, base = record["training"], record["cost"], record["base_model"]
    lines = [
        "---", "library_name: transformers", "tags: [sparsefinder, entmax, distillation, long-context]", "---", "",
        f"# {base['id'].split('@')[0]} for {t['max_positions']:,} tokens (α-entmax, α = {record['alpha']})", "",
        f"Trained by `sparsefinder distil-long` from `{base['id']}`: the position table extended to "
        f"{t['max_positions']:,} rows by copying the learned ones (Longformer), then distilled on whole documents of "
        f"up to {t['doc_tokens']:,} tokens from the softmax teacher `{record['teacher']['id']}` reading them in windows "
        f"of {t['window']} tokens (stride {t['stride']}): each token's state in the window where it is most central, "
        "and the mean of the window embeddings.", "",
        ("Load it with our attention; past 512 tokens use the sparse path (`--predictor`):" if not t.get("attention_window")
         else f"It attends within ±{t['attention_window']} positions (its config declares "
              f"`sparsefinder_attention_window: {t['attention_window']}`): every mode reads it through that band, and "
              "`--predictor exact` computes exact α-entmax within it at the cost of the band:"), "",
        "```python", "from sparsefinder.model import load_encoder",
        "model, tokenizer, info = load_encoder(PATH, attn_implementation=\"sparsefinder_sparse\")", "```", "",
        "## Training", "",
        f"- data: `{record['corpus']['path']}` (sha256 {record['corpus']['sha256'][:12]}), "
        f"{record['corpus']['train_documents']} documents; last {record['corpus']['holdout_documents']} held out",
        f"- {t['steps']} steps × 1 document, {t['optimizer']} lr {t['lr']} ({t['schedule']}, warm-up {t['warmup']:.0%}), "
        f"seed {t['seed']}, dropout {t['dropout']}, attention: {t['attention']}"
        + (f"; plus {t['short_batch']} corpus lines of ≤ {t['short_max_length']} tokens per step under `adapt`'s loss "
           "(short texts keep their fidelity)" if t.get("short_batch") else ""),
        f"- loss `(1 − cos) + {t['hidden_weight']} · MSE(hidden)"
        + (f" + {t['token_weight']} · mean token (1 − cos)" if t.get("token_weight") else "")
        + f"`: {t['loss_first']:.4f} → {t['loss_last']:.4f}",
        f"- time: {c['elapsed_s'] / 60:.1f} min on {c['machine']} ({c['device']})", "",
        "## Fidelity to the windowed teacher (held-out documents)", "",
        "| model | token cosine mean | token cosine worst | embedding cosine | nearest is own |", "|---|---|---|---|---|",
    ]
    held = record.get("holdout_fidelity")
    if not held:
        lines.append("| not measured | | | | |")
    else:
        for name in ("before", "after"):
            f = held[name]
            lines.append(f"| {name} training | {f['token_cosine_mean']:.4f} | {f['token_cosine_worst']:.4f} | "
                         f"{f['embedding_cosine_mean']:.4f} | {f['nearest_own']}/{f['documents']} |")
    lines += ["", f"Produced by sparsefinder {record['sparsefinder_version']} on {record['created']}.", ""]
    return "\n".join(lines)


def write_long_model_card(folder: str | Path, record: dict) -> None:
    """Write ``README.md`` of ``folder`` from a ``distil-long`` ``record``."""
    atomic_write_text(Path(folder) / "README.md", render_long_model_card(record))
