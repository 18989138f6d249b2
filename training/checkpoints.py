"""Checkpoints of the training commands (``adapt``, ``distil-long``): one atomic file beside the output.

A run writing the folder ``out`` keeps its state in ``<out>.checkpoint/state.pt`` (weights,
optimizer and scheduler state, RNG state, step, losses) and a *key*: the options that define
the run. Resuming with different options is refused, naming the options that differ, so no
run continues on someone else's trajectory; the checkpoint goes once the output is written.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..errors import ConflictError, SparsefinderError
from ..files import atomic_write_bytes

__all__ = ["CHECKPOINT_FILE", "check_output", "checkpoint_dir", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FILE = "state.pt"


def checkpoint_dir(out: str | Path) -> Path:
    """Folder of the checkpoint of a run writing ``out``: ``<out>.checkpoint`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".checkpoint")


def check_output(out: Path) -> None:
    """Fail early unless ``out`` can be created: absent or empty, and its parent writable."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConflictError(f"output {out} already exists and is not an empty folder; choose another")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".{out.name}.probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SparsefinderError(f"cannot write the output {out}: {exc.strerror or exc}") from None


def save_checkpoint(folder: Path, state: dict) -> None:
    """Write ``state`` (with its ``key``) to ``folder/state.pt`` atomically."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(folder / CHECKPOINT_FILE, buf.getvalue())


def load_checkpoint(folder: Path, key: dict, resume: bool) -> dict | None:
    """The saved state of the run ``key`` when resuming (``None`` when there is none yet).

    Without ``resume`` an existing checkpoint is an error, so no run is silently thrown away;
    with it, a checkpoint of other options is an error naming them.
    """
    file = folder / CHECKPOINT_FILE
    if not file.is_file():
        return None
    if not resume:
        raise ConflictError(f"a checkpoint of an unfinished run exists in {folder}: pass --resume, or delete it")
    state = torch.load(file, map_location="cpu", weights_only=False)
    if state["key"] != key:
        diff = sorted(k for k in key if state["key"].get(k) != key[k])
        raise ConflictError(f"checkpoint {file} is from a different run (differs in {', '.join(diff)}); "
                            f"delete it or repeat the same options")
    return state
