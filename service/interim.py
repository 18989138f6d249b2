"""INTERIM stand-ins for APIs written in parallel; delete this module at merge.

The service talks to the artifact store (``sparsefinder.store``, issue 4), the sparse
encoder (``sparsefinder.encoder``, issue 6) and the reports (``sparsefinder.report``,
the lead) through :mod:`.backends` only. Until those modules exist there, these minimal
versions with the same signatures let the service run and its tests pass:

- :class:`ArtifactStore`: a local folder, one sub-folder per fitted predictor
  (``meta.json`` + ``state.safetensors``);
- :class:`SparseEncoder`: α-entmax attention restricted to the predicted pairs by
  masking the dense scores (same output as sparse attention, none of its savings);
- ``list_reports`` / ``load_report`` / ``report_csv`` / ``render_pareto``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sparsefinder.alpha_entmax import entmax
from sparsefinder.errors import NotFoundError, SparsefinderError
from sparsefinder.files import atomic_dir, atomic_write_json
from sparsefinder.model import load_encoder, mean_pool
from sparsefinder.predictors.base import AttentionInputs, Predictor, predictor_from_spec

# ------------------------------------------------------------------ store


@dataclass
class ArtifactInfo:
    id: str
    spec: str
    name: str
    params: dict
    model_id: str | None
    alpha: float | None
    created: str
    fit_seconds: float | None = None
    fit_metrics: dict = field(default_factory=dict)
    dataset: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class ArtifactStore:
    """Fitted predictors in a local folder."""

    def __init__(self, url: str | Path) -> None:
        self.root = Path(url)
        self.root.mkdir(parents=True, exist_ok=True)

    def _folders(self):
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def list(self) -> list[ArtifactInfo]:
        out = []
        for p in self._folders():
            try:
                out.append(ArtifactInfo(**json.loads((p / "meta.json").read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return out

    def problems(self) -> dict[str, str]:
        bad = {}
        for p in self._folders():
            try:
                ArtifactInfo(**json.loads((p / "meta.json").read_text()))
            except (OSError, ValueError, TypeError) as exc:
                bad[p.name] = f"unreadable meta.json ({type(exc).__name__})"
        return bad

    def info(self, artifact_id: str) -> ArtifactInfo:
        matches = [a for a in self.list() if a.id == artifact_id] or \
                  [a for a in self.list() if a.id.startswith(artifact_id)]
        if len(matches) != 1:
            raise NotFoundError(f"no stored predictor {artifact_id!r}" if not matches
                                else f"predictor id prefix {artifact_id!r} is ambiguous")
        return matches[0]

    def load(self, artifact_id: str) -> Predictor:
        info = self.info(artifact_id)
        predictor = predictor_from_spec(info.spec).set_params(**info.params)
        return predictor.load_state_dict(load_file(self.root / info.id / "state.safetensors"))

    def delete(self, artifact_id: str) -> None:
        shutil.rmtree(self.root / self.info(artifact_id).id)

    def save(self, predictor: Predictor, *, dataset: Any = None, fit_seconds: float | None = None,
             fit_metrics: dict | None = None) -> ArtifactInfo:
        state = predictor.state_dict()
        params = predictor.get_params()
        model_id = getattr(dataset, "model_id", None)
        digest = hashlib.sha256(json.dumps([predictor.family_spec, params, model_id, time.time()],
                                           default=str).encode()).hexdigest()[:8]
        info = ArtifactInfo(id=f"{predictor.family_spec}-{digest}", spec=predictor.family_spec, name=predictor.name,
                            params=params, model_id=model_id, alpha=getattr(dataset, "alpha", None),
                            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            fit_seconds=fit_seconds, fit_metrics=fit_metrics or {},
                            dataset=str(getattr(dataset, "folder", "")) or None)
        with atomic_dir(self.root / info.id) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "state.safetensors"))
            atomic_write_json(tmp / "meta.json", info.to_dict())
        return info


def resolve_predictor(name: str, store: ArtifactStore, model_id: str | None = None,
                      alpha: float | None = None) -> Predictor:
    """A stored predictor by id or id prefix, else a stateless spec (learned specs need an artifact)."""
    try:
        return store.load(name)
    except NotFoundError:
        pass
    predictor = predictor_from_spec(name)
    if predictor.learns:
        raise NotFoundError(f"no fitted artifact for {name!r}: fit it first (POST /v1/predictors)")
    return predictor.fit(None)


# ------------------------------------------------------------------ encoder
_MASKED = "sparsefinder_interim_masked"


def _masked_entmax_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """α-entmax over the predicted pairs only (plus the diagonal): ``(B,H,n,d)`` → ``(B,n,H,d)``."""
    predictor: Predictor = kwargs["sparsefinder_predictor"]
    lengths: list[int] = kwargs["sparsefinder_lengths"]
    used: list = kwargs["sparsefinder_used"]
    scores = torch.matmul(query, key.transpose(2, 3)) * (scaling or query.shape[-1] ** -0.5)
    if attention_mask is not None:
        scores = scores + attention_mask
    keep = torch.ones_like(scores, dtype=torch.bool)  # padding rows and keys: left to the mask
    for b, n in enumerate(lengths):
        inputs = AttentionInputs(module.layer_idx, query[b, :, :n].float(), key[b, :, :n].float(),
                                 torch.zeros(n, dtype=torch.long))
        pattern = predictor.predict(inputs)
        used.append((module.layer_idx, float(pattern.sparsity().mean())))
        keep[b, :, :n, :n] = pattern.to_dense() | torch.eye(n, dtype=torch.bool)
    probs = entmax(scores.masked_fill(~keep, float("-inf")), float(kwargs.get("entmax_alpha", 1.5)))
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


@dataclass
class EncodeResult:
    embeddings: torch.Tensor
    sparsity: list[float]
    keys_added: int
    seconds: float


class SparseEncoder:
    """Sentence embeddings with dense entmax, softmax, or entmax restricted to a predictor's pattern."""

    def __init__(self, model: str | None = None, device: str | None = None, alpha: float = 1.5) -> None:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask

        AttentionInterface.register(_MASKED, _masked_entmax_attention)
        AttentionMaskInterface.register(_MASKED, eager_mask)
        self.alpha = alpha
        self.model, self.tokenizer, self.info = load_encoder(model, "sparsefinder_entmax", device or "cpu")

    @torch.no_grad()
    def encode(self, texts: list[str], predictor: Predictor | str, certified: bool = False,
               truncate: bool = False) -> EncodeResult:
        start = time.perf_counter()
        limit = self.info.max_positions
        if not truncate:
            for i, t in enumerate(texts):
                n = len(self.tokenizer(t)["input_ids"])
                if n > limit:
                    raise SparsefinderError(f"texts[{i}] has {n} tokens, over the model's {limit}; "
                                            "shorten it or ask for truncate")
        if certified and not isinstance(predictor, str):
            raise SparsefinderError("certified mode needs the sparse compute path (sparsefinder.encoder)")
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        layers = self.model.config.num_hidden_layers
        kwargs: dict[str, Any] = {"entmax_alpha": self.alpha}
        used: list = []
        if predictor == "softmax":
            self.model.set_attn_implementation("eager")
        elif predictor == "dense":
            self.model.set_attn_implementation("sparsefinder_entmax")
        else:
            self.model.set_attn_implementation(_MASKED)
            kwargs.update(sparsefinder_predictor=predictor, sparsefinder_used=used,
                          sparsefinder_lengths=batch["attention_mask"].sum(1).tolist())
        hidden = self.model(**batch, **kwargs).last_hidden_state
        sparsity = [0.0] * layers
        for layer in range(layers):
            vals = [s for lay, s in used if lay == layer]
            sparsity[layer] = sum(vals) / len(vals) if vals else 0.0
        return EncodeResult(mean_pool(hidden, batch["attention_mask"]).cpu(), sparsity, 0,
                            time.perf_counter() - start)


# ------------------------------------------------------------------ reports
def list_reports(root: str | Path) -> list[dict]:
    out = []
    for f in sorted(Path(root).glob("*/report.json")):
        try:
            r = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        out.append({"id": r.get("id", f.parent.name), "created": r.get("created"), "dataset": r.get("dataset"),
                    "predictors": [p["spec"] for p in r.get("predictors", [])]})
    return out


def load_report(root: str | Path, report_id: str) -> dict:
    f = Path(root) / report_id / "report.json"
    if "/" in report_id or report_id.startswith(".") or not f.is_file():
        raise NotFoundError(f"no report {report_id!r}")
    return json.loads(f.read_text())


def report_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["predictor", "spec", "knob_value", "recall", "sparsity", "precision", "predict_seconds_per_sequence"])
    for p in report["predictors"]:
        for s in p["settings"]:
            w.writerow([p["spec"], s["spec"], s["knob_value"], s["recall"], s["sparsity"], s["precision"],
                        s["predict_seconds_per_sequence"]])
    return buf.getvalue()


def render_pareto(report: dict, fmt: str = "png") -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for p in report["predictors"]:
        ax.plot([s["sparsity"] for s in p["settings"]], [s["recall"] for s in p["settings"]], "o-", label=p["spec"])
    ax.set_xlabel("sparsity")
    ax.set_ylabel("recall")
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return buf.getvalue()
