"""``sparsefinder export``: a model folder that carries its predictor.

The folder holds the encoder's weights and tokenizer, the predictor artifact (as the store
writes it, under ``predictor/<id>/``), sentence-transformers' own files (``modules.json``,
``sentence_bert_config.json``, ``1_Pooling`` mean pooling, ``2_Normalize``) and these
``config.json`` entries:

- ``sparsefinder_predictor``: the artifact folder, relative to the model folder;
- ``sparsefinder_certified``: run the predictor in certified (exact) mode;
- ``sparsefinder_recall_target``: the recall the knob was chosen for (``null`` if none);
- ``entmax_alpha``: α of α-entmax.

After ``import sparsefinder``, ``AutoModel.from_pretrained(DIR, attn_implementation="sparsefinder_sparse")``
and ``SentenceTransformer(DIR, model_kwargs={"attn_implementation": "sparsefinder_sparse"})``
run attention on the predictor's pairs with no forward keywords
(:mod:`sparsefinder.hf.attached`). Lexical predictors see no token ids there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from .hf.attached import CONFIG_CERTIFIED, CONFIG_PREDICTOR
from .hf.attention import REFERENCE_MODES
from .config import DEFAULT_ALPHA, get_settings
from .choice import check_recall, resolve_choice
from .errors import SparsefinderError
from .files import atomic_dir, atomic_write_json
from .model import load_encoder, model_info
from .report import load_report
from .store import ArtifactStore

__all__ = ["export_model"]

#: Folder (inside the exported model folder) that is the artifact store of its predictor.
PREDICTOR_DIR = "predictor"


@dataclass
class _Provenance:
    """What :meth:`ArtifactStore.save` reads from a fit dataset, rebuilt from the predictor's origin."""

    model_id: str
    alpha: float
    max_length: int
    manifest: dict[str, Any] = field(default_factory=dict)
    sequences: int = 0

    def __len__(self) -> int:
        return self.sequences


def _report_in(folder: str) -> dict:
    """The report in ``folder``."""
    return load_report(Path(folder).parent, Path(folder).name)


def _sentence_transformers_files(out: Path, hidden_size: int, max_length: int) -> None:
    """sentence-transformers' configuration: transformer, mean pooling, L2 normalisation."""
    atomic_write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    atomic_write_json(out / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    atomic_write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden_size, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    (out / "2_Normalize").mkdir()


def export_model(out: str | Path, predictor: str, *, model: str | None = None, store: str | None = None,
                 certified: bool = False, recall: float | None = None, report: str | None = None) -> dict:
    """Write a model folder ``out`` that carries ``predictor`` (a stored id, a unique prefix or a spec).

    ``model`` defaults to the default model (:func:`sparsefinder.model.resolve_model`); a
    stored predictor must come from that model and its α. ``recall`` sets the knob to the
    sparsest setting reaching that mean recall in ``report`` (default: the newest report on
    the model). Returns the ``config.json`` entries written.
    """
    recall = check_recall(recall, "--recall")
    if predictor in REFERENCE_MODES:
        raise SparsefinderError("export needs a predictor (an id or a spec); 'dense' and 'softmax' carry none")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SparsefinderError(f"output folder {out} exists and is not empty; choose another folder")
    info = model_info(model)
    alpha = float(getattr(AutoConfig.from_pretrained(info.path), "entmax_alpha", None) or DEFAULT_ALPHA)
    fitted = resolve_choice(predictor, ArtifactStore(store or get_settings().store), model_id=info.id, alpha=alpha,
                            recall=recall, report=_report_in(report) if report else None)
    origin = getattr(fitted, "artifact_", None)
    provenance = _Provenance(
        model_id=info.id, alpha=alpha, max_length=origin.max_length if origin else info.max_positions,
        manifest={"model": {"path": info.path}, "corpus": {"sha256": origin.fit_corpus_sha256 if origin else ""}},
        sequences=origin.fit_sequences if origin else 0)
    encoder, tokenizer, _ = load_encoder(info.path)
    with atomic_dir(out) as tmp:
        saved = ArtifactStore(tmp / PREDICTOR_DIR).save(
            fitted, dataset=provenance, fit_seconds=origin.fit_seconds if origin else 0.0,
            fit_metrics=origin.fit_metrics if origin else None)
        entries = {CONFIG_PREDICTOR: f"{PREDICTOR_DIR}/{saved.id}", CONFIG_CERTIFIED: bool(certified),
                   "sparsefinder_recall_target": recall, "sparsefinder_predictor_spec": fitted.spec,
                   "entmax_alpha": alpha}
        encoder.config.update(entries)
        encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _sentence_transformers_files(tmp, int(encoder.config.hidden_size), info.max_positions)
    return entries
